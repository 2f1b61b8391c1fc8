import Testing

@testable import KevdEvent

/// Inputs `scripts/fuzz` found (Fuzz/), kept as regression cases: each must get a clear error, promptly.
///
/// A subscriber's filter (any local user may subscribe) is compiled, and matched, on the event loop; glibc's
/// regcomp took minutes over each of these, stalling every client and source.
@Suite("Reliability: fuzz regressions (filter regexes)")
struct ReliabilityFuzzFilterRegressionTests {
    /// The filter target's inputs, as the term it made of them (invalid UTF-8 becomes U+FFFD).
    static let fuzzFound = [
        "key~^/dev+++++++++++++++++++++ices/.A*/block/sd[a-zdatI]+D$",
        "key~\u{FFFD}^A*++++++key~\u{FFFD}\u{FFFD}+\u{FFFD}",
    ]

    @Test("a regex glibc would take seconds over is refused with a reason", arguments: fuzzFound + [
        "key~a{1,32767}",  // 45 s
        "data.x~((a{1,255}){1,255}){1,255}",
        "key~(((((^A*)+)+)+)+)+",  // 13 s
        "key~^((a|b|)+){1,63}$",  // over 5 s
        "key~((((\\b)+)+)+)+",  // 2 minutes
        "key~(a|\\b){1,999}",  // over 5 s
        "key~^((a*){1,30}){1,30}$",  // 4 s
        "key~\\b(a*b*c*d*){1,124}\\b",  // 1.6 s
        "key~(.*)(.*)(.*)(.*)(.*)\\5\\4\\3\\2\\1x",  // regexec: minutes on a 100-byte key
    ])
    func explodingRegexIsRefused(_ term: String) {
        do {
            _ = try EventFilter(terms: ["source=udev", term])
            Issue.record("accepted \(term)")
        } catch {
            #expect(error.term == term)
            #expect(error.message.hasPrefix("bad regex: "), "\(error)")
            #expect(error.offset == 4 || error.offset == 7, "\(error)")
        }
    }

    @Test("ordinary regexes still compile", arguments: [
        "key~^/devices/.*/block/sd[a-z]+$", "data.ID_SERIAL~^WDC_[A-Z0-9]{4,12}", "key~^[0-9]{1,3}(\\.[0-9]{1,3}){3}$",
        "type~^(add|remove|change)$", "key~a{1,999}", "data.x~[]*+?{}()^$]+", "data.x~[[:alpha:]_]+[[:digit:]]*",
        "key~(^|/)\\.git(/|$)", "key~^([^/]*/){1,99}[^/]*$", "key~\\<word\\>", "key~(a|){1,99}", "key~^/srv/(in|out)box/.+\\.(jpe?g|png)$",
        "key~[\\1]", "key~a\\\\1",
    ])
    func ordinaryRegexCompiles(_ term: String) throws {
        _ = try EventFilter(terms: [term])
    }

    @Test("each rule names its reason")
    func reasons() {
        #expect(CompiledRegex.refusal("a{1,1001}")?.hasPrefix("too complex") == true)
        #expect(CompiledRegex.refusal("a*+")?.hasPrefix("a repetition of something that can match empty") == true)
        #expect(CompiledRegex.refusal("(a?b*)+")?.hasPrefix("a repetition of something that can match empty") == true)
        #expect(CompiledRegex.refusal("(a?b)+") == nil)
        #expect(CompiledRegex.refusal("(^a)*")?.hasPrefix("an anchor") == true)
        #expect(CompiledRegex.refusal("(a)\\1")?.hasPrefix("back-references") == true)
        #expect(CompiledRegex.refusal("(ab){3}c") == nil)
    }
}
