import KevdSpec
import Testing

@testable import KevdForward

@Suite("forward: subjects")
struct SubjectBuilderTests {
    static func subject(_ template: String, host: String, source: String, type: String) throws -> String {
        var builder = SubjectBuilder(template: try SubjectTemplate(template), host: host)
        builder.build(source: Array(source.utf8), type: Array(type.utf8))
        return String(decoding: builder.subject, as: UTF8.self)
    }

    @Test("the default template puts host, source and type in their places")
    func defaultTemplate() throws {
        let s = try Self.subject(SubjectTemplate.defaultText, host: "web-1", source: "inotify", type: "created")
        #expect(s == "kevd.web-1.inotify.created")
    }

    @Test("literal parts are kept and the placeholders can come in any order")
    func literals() throws {
        #expect(try Self.subject("site.eu.{type}.{host}", host: "h", source: "udev", type: "add") == "site.eu.add.h")
        #expect(try Self.subject("{source}", host: "h", source: "timer", type: "fired") == "timer")
    }

    @Test("a host name with dots becomes one token")
    func hostWithDots() throws {
        #expect(try Self.subject("kevd.{host}.{type}", host: "db.example.org", source: "s", type: "t")
            == "kevd.db_example_org.t")
    }

    @Test("separators, wildcards, whitespace, control and non-ASCII bytes in values become '_'")
    func illegalCharacters() throws {
        #expect(try Self.subject("k.{source}.{type}", host: "h", source: "my.app", type: "a b*c>d\te")
            == "k.my_app.a_b_c_d_e")
        // é is two UTF-8 bytes, each outside printable ASCII.
        #expect(try Self.subject("k.{type}", host: "h", source: "s", type: "é") == "k.__")
        #expect(try Self.subject("k.{type}", host: "h", source: "s", type: "\u{7F}\n") == "k.__")
    }

    @Test("an empty value is one '_', never an empty token")
    func emptyValue() throws {
        #expect(try Self.subject("k.{source}.{type}", host: "", source: "", type: "") == "k._._")
        #expect(try Self.subject("{host}", host: "", source: "s", type: "t") == "_")
    }

    @Test("the buffer is reused: a second subject does not carry the first")
    func reuse() throws {
        var builder = SubjectBuilder(template: try SubjectTemplate("k.{type}"), host: "h")
        builder.build(source: Array("s".utf8), type: Array("a-much-longer-type".utf8))
        builder.build(source: Array("s".utf8), type: Array("b".utf8))
        #expect(String(decoding: builder.subject, as: UTF8.self) == "k.b")
    }

    /// Whatever bytes an event carries, its subject has exactly the template's tokens, each a legal literal, so
    /// it falls under the stream's subject (`SubjectTemplate.streamSubject`) and cannot reach another stream.
    @Test("any bytes give a subject within the stream's subjects")
    func anyBytes() throws {
        let template = try SubjectTemplate("kevd.{host}.{source}.{type}")
        let stream = template.streamSubject.split(separator: ".", omittingEmptySubsequences: false)
        var random = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            func bytes() -> [UInt8] { (0..<Int(random.next() % 12)).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
            let host = String(decoding: bytes(), as: UTF8.self)
            var builder = SubjectBuilder(template: template, host: host)
            builder.build(source: bytes(), type: bytes())
            let tokens = builder.subject.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
            #expect(tokens.count == stream.count)
            for (token, pattern) in zip(tokens, stream) {
                #expect(!token.isEmpty)
                #expect(token.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "*") && $0 != UInt8(ascii: ">") })
                if pattern != "*" { #expect(String(decoding: token, as: UTF8.self) == pattern) }
            }
        }
    }
}
