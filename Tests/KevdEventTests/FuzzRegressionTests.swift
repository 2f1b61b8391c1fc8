import Testing

@testable import KevdEvent

/// Inputs `scripts/fuzz` found (Fuzz/), kept as regression cases: each must get a clear error, promptly.
@Suite("Reliability: fuzz regressions (filter terms)")
struct ReliabilityFuzzFilterRegressionTests {
    /// The filter fuzz target's input: glibc's regcomp needed minutes for the stacked `+`, on the event loop,
    /// when a subscriber sent it (any local user may subscribe).
    static let stackedQuantifiers = "key~^/dev+++++++++++++++++++++ices/.A*/block/sd[a-zdatI]+D$"

    @Test("a regex whose repetitions explode is refused with a reason, not compiled", arguments: [
        stackedQuantifiers,
        "key~a{1,32767}",
        "data.x~((a{1,255}){1,255}){1,255}",
        "key~(((((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+",
    ])
    func explodingRegexIsRefused(_ term: String) {
        do {
            _ = try EventFilter(terms: ["source=udev", term])
            Issue.record("accepted \(term)")
        } catch {
            #expect(error.term == term)
            #expect(error.message.hasPrefix("bad regex: too complex"), "\(error)")
        }
    }

    @Test("ordinary regexes, bounded repetitions included, still compile", arguments: [
        "key~^/devices/.*/block/sd[a-z]+$", "data.ID_SERIAL~^WDC_[A-Z0-9]{4,12}", "key~[0-9]{1,3}(\\.[0-9]{1,3}){3}",
        "type~^(add|remove|change)$", "key~a{1,1000}", "data.x~[]*+?{}()]+", "data.x~[[:alpha:]_]+[[:digit:]]*",
    ])
    func ordinaryRegexCompiles(_ term: String) throws {
        _ = try EventFilter(terms: [term])
    }

    @Test("the size estimate follows glibc's expansion")
    func expandedSize() {
        #expect(CompiledRegex.expandedSize("abc") == 3)
        #expect(CompiledRegex.expandedSize("a{1,10}") == 11)
        #expect(CompiledRegex.expandedSize("(ab){3}") == 8)
        #expect(CompiledRegex.expandedSize("a++") == 4)
        #expect(CompiledRegex.expandedSize("[a-z]*|b") == 3)
        #expect(CompiledRegex.expandedSize("a" + String(repeating: "+", count: 64)) > CompiledRegex.maximumExpandedSize)
    }
}

@Suite("Reliability: regex back-references")
struct ReliabilityRegexBackReferenceTests {
    /// glibc matches back-references by backtracking: this filter held regexec for minutes on a 100-byte key,
    /// blocking the event loop for every subscriber.
    @Test("a back-reference is refused; an escaped digit in brackets or a literal backslash is not one", arguments: [
        ("key~(.*)(.*)(.*)(.*)(.*)\\5\\4\\3\\2\\1x", false), ("key~(a)\\1", false), ("key~[\\1]", true),
        ("key~a\\\\1", true), ("key~\\.1", true),
    ])
    func backReference(_ term: String, _ accepted: Bool) {
        do {
            _ = try EventFilter(terms: [term])
            #expect(accepted, "accepted \(term)")
        } catch {
            #expect(!accepted, "\(error)")
            #expect(error.message.hasPrefix("bad regex: back-references"), "\(error)")
        }
    }
}
