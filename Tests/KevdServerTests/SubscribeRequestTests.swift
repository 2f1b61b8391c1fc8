import KevdEvent
import Testing

@testable import KevdServer

@Suite("server: subscribe requests")
struct SubscribeRequestTests {
    static func value(_ json: String) throws -> JSONValue { try JSONReader.parse(json) }

    static func message<T>(_ result: Result<T, RequestError>) -> String? {
        if case .failure(let error) = result { return error.message }
        return nil
    }

    @Test("filter terms are taken as written, in order; none without a filter")
    func terms() throws {
        #expect(try SubscribeRequest.terms(Self.value(#"{"filter":["source=udev","type~^add$"]}"#)).get()
            == ["source=udev", "type~^add$"])
        #expect(try SubscribeRequest.terms(Self.value(#"{"op":"subscribe"}"#)).get() == [])
        #expect(try Self.message(SubscribeRequest.terms(Self.value(#"{"filter":"source=udev"}"#)))
            == #""filter" must be a list of terms"#)
        #expect(try Self.message(SubscribeRequest.terms(Self.value(#"{"filter":["a",1]}"#)))
            == "filter terms must be strings")
    }

    @Test("a name is 1-64 letters, digits, '.', '_' or '-'", arguments: [
        ("backup-1.main_x", true), (String(repeating: "n", count: 64), true), ("", false),
        (String(repeating: "n", count: 65), false), ("a/b", false), ("..", false), ("has space", false),
    ])
    func names(name: String, valid: Bool) throws {
        let result = SubscribeRequest.name(.object([("name", .string(name))]))
        if valid {
            #expect(try result.get() == name)
        } else {
            #expect(Self.message(result) == #""name" must be 1-64 letters, digits, '.', '_' or '-'"#)
        }
    }

    @Test("no name is an anonymous subscription; a name that is not a string is refused")
    func anonymous() throws {
        #expect(try SubscribeRequest.name(Self.value("{}")).get() == nil)
        #expect(try Self.message(SubscribeRequest.name(Self.value(#"{"name":7}"#))) != nil)
    }

    @Test("from: new, all, a seq or an RFC 3339 time; nothing else")
    func from() throws {
        #expect(try SubscribeRequest.from(Self.value("{}")).get() == nil)
        #expect(try SubscribeRequest.from(Self.value(#"{"from":"new"}"#)).get() == .new)
        #expect(try SubscribeRequest.from(Self.value(#"{"from":"all"}"#)).get() == .all)
        #expect(try SubscribeRequest.from(Self.value(#"{"from":42}"#)).get() == .seq(42))
        let time = try SubscribeRequest.from(Self.value(#"{"from":"2026-01-02T03:04:05.5Z"}"#)).get()
        #expect(time == .time(WallTime(nanoseconds: 1_767_323_045_500_000_000)))
        let error = #""from" must be "new", "all", a seq or an RFC 3339 time"#
        for bad in [#""yesterday""#, #""2026-02-30T00:00:00Z""#, "-1", "1.5", "true", "[1]"] {
            #expect(try Self.message(SubscribeRequest.from(Self.value(#"{"from":"# + bad + "}"))) == error)
        }
    }
}
