import KevdEvent
import Testing

@testable import KevdServer

@Suite("server: emit requests")
struct EmitRequestTests {
    static func parse(_ json: String, uid: UInt32 = 1000) throws -> Result<EmitRequest, RequestError> {
        EmitRequest.parse(try JSONReader.parse(json), uid: uid)
    }

    static func error(_ json: String) throws -> String? {
        if case .failure(let error) = try parse(json) { return error.message }
        return nil
    }

    @Test("a full request: its fields as given, numbers as integers, the idempotency key scoped by uid")
    func full() throws {
        let request = try Self.parse(
            #"{"op":"emit","type":"deploy","key":"/srv/app","data":{"n":3,"big":9000000000,"ok":true,"r":0.5,"s":"x"},"#
                + #""idempotency_key":"k1","cause":"0190e6a0-0000-7000-8000-000000000000","depth":2}"#,
            uid: 1234
        ).get()
        #expect(request.type == "deploy")
        #expect(request.key == "/srv/app")
        #expect(request.data.fields.map(\.name) == ["n", "big", "ok", "r", "s"])
        #expect(request.data.fields.map(\.value) == [.int(3), .int(9_000_000_000), .bool(true), .double(0.5), .string("x")])
        #expect(request.idempotencyKey == "1234:k1")
        #expect(request.cause == "0190e6a0-0000-7000-8000-000000000000")
        #expect(request.cascadeDepth == 2)
    }

    @Test("only a type is needed: the key is empty, no data, no cascade")
    func minimal() throws {
        let request = try Self.parse(#"{"op":"emit","type":"t"}"#).get()
        #expect(request.key == "")
        #expect(request.data.isEmpty)
        #expect(request.idempotencyKey == nil)
        #expect(request.cascadeDepth == nil)
    }

    @Test("two users' idempotency keys never collide")
    func idempotencyScope() throws {
        let a = try Self.parse(#"{"type":"t","idempotency_key":"same"}"#, uid: 1).get()
        let b = try Self.parse(#"{"type":"t","idempotency_key":"same"}"#, uid: 2).get()
        #expect(a.idempotencyKey != b.idempotencyKey)
    }

    @Test("a cause without a depth is one rule run deep")
    func causeWithoutDepth() throws {
        #expect(try Self.parse(#"{"type":"t","cause":"e1"}"#).get().cascadeDepth == 1)
        #expect(try Self.parse(#"{"type":"t","cause":"e1","depth":0}"#).get().cascadeDepth == 0)
    }

    @Test("malformed fields are refused with the error the client reads", arguments: [
        (#"{"op":"emit"}"#, #"emit needs a non-empty string "type""#),
        (#"{"type":""}"#, #"emit needs a non-empty string "type""#),
        (#"{"type":3}"#, #"emit needs a non-empty string "type""#),
        (#"{"type":"t","key":1}"#, #""key" must be a string"#),
        (#"{"type":"t","data":[1]}"#, #""data" must be an object"#),
        (#"{"type":"t","data":{"_uid":0}}"#, "data field '_uid': names starting with '_' are reserved for kevd"),
        (#"{"type":"t","data":{"":1}}"#, "data field '': names starting with '_' are reserved for kevd"),
        (#"{"type":"t","data":{"n":18446744073709551615}}"#, "data field 'n': number too large"),
        (#"{"type":"t","data":{"a":[1]}}"#, "data field 'a': values must be strings, numbers or booleans"),
        (#"{"type":"t","data":{"a":null}}"#, "data field 'a': values must be strings, numbers or booleans"),
        (#"{"type":"t","idempotency_key":""}"#, #""idempotency_key" must be a non-empty string"#),
        (#"{"type":"t","cause":""}"#, #""cause" must be a non-empty string of at most 64 bytes (an event id)"#),
        (#"{"type":"t","cause":""# + String(repeating: "x", count: 65) + #""}"#,
         #""cause" must be a non-empty string of at most 64 bytes (an event id)"#),
        (#"{"type":"t","cause":"e","depth":-1}"#, #""depth" must be an integer of at least 0"#),
        (#"{"type":"t","cause":"e","depth":"2"}"#, #""depth" must be an integer of at least 0"#),
        (#"{"type":"t","depth":2}"#, #""depth" needs a "cause": the event whose rule run is emitting"#),
    ])
    func refused(json: String, message: String) throws {
        #expect(try Self.error(json) == message)
    }

    @Test("a cause of exactly 64 bytes is accepted")
    func causeAtTheLimit() throws {
        let cause = String(repeating: "x", count: 64)
        #expect(try Self.parse(#"{"type":"t","cause":""# + cause + #""}"#).get().cause == cause)
    }
}
