import KevdTestSupport
import Testing

@testable import KevdEvent

@Suite struct EventJSONTests {
    static let knownLine = #"{"seq":12345,"id":"01900000-0000-7abc-8000-000000000001","#
        + #""time":"2026-11-23T07:11:23.123456789Z","mono":987654321,"source":"inotify","type":"modify","#
        + #""key":"/tmp","data":{"path":"/tmp/a \"b\"","size":42,"ratio":0.5,"dir":true}}"# + "\n"

    static func decode(_ text: String) throws(EventDecodingError) -> Event { try Event(jsonLine: Array(text.utf8)) }

    static func error(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> EventDecodingError? {
        do {
            let event = try decode(text)
            Issue.record("decoded \(event)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    /// `knownLine` with one top-level field's JSON text replaced (or the field removed for nil).
    static func line(replacing field: String, with json: String?) -> String {
        let fields = [
            ("seq", "12345"), ("id", #""01900000-0000-7abc-8000-000000000001""#),
            ("time", #""2026-11-23T07:11:23.123456789Z""#), ("mono", "987654321"), ("source", #""inotify""#),
            ("type", #""modify""#), ("key", #""/tmp""#), ("data", "{}"),
        ]
        let kept = fields.compactMap { name, value -> String? in
            let text = name == field ? json : value
            return text.map { "\"\(name)\":\($0)" }
        }
        return "{" + kept.joined(separator: ",") + "}"
    }

    @Test func decodesAKnownLine() throws {
        let event = try Self.decode(Self.knownLine)
        #expect(event.seq == 12_345)
        #expect(event.id == EventID(high: 0x0190_0000_0000_7abc, low: 0x8000_0000_0000_0001))
        #expect(event.time == WallTime(nanoseconds: 1_795_417_883_123_456_789))
        #expect(event.mono == 987_654_321)
        #expect(event.source == .inotify)
        #expect(event.type == "modify")
        #expect(event.key == "/tmp")
        #expect(event.data.map(\.name) == ["path", "size", "ratio", "dir"])
        #expect(event.data["path"] == .string("/tmp/a \"b\""))
        #expect(event.data["size"] == .int(42))
        #expect(event.data["ratio"] == .double(0.5))
        #expect(event.data["dir"] == .bool(true))
        // Without the newline, and through the raw-buffer entry point.
        #expect(try Self.decode(String(Self.knownLine.dropLast())) == event)
        let raw = try Array(Self.knownLine.utf8).withUnsafeBytes { raw throws(EventDecodingError) in
            try Event(jsonLine: raw)
        }
        #expect(raw == event)
    }

    @Test func extremesRoundTrip() throws {
        var data = EventData()
        data.append("min", .int(.min))
        data.append("max", .int(.max))
        data.append("one", .double(1))
        data.append("big", .double(1e16))
        data.append("tiny", .double(.leastNonzeroMagnitude))
        data.append("neg0", .double(-0.0))
        data.append("nul", .string("a\u{0}b"))
        let event = Event(
            seq: .max, id: EventID(high: .max, low: 0), time: WallTime(nanoseconds: .min), mono: .max,
            source: EventSource(""), type: "", key: "", data: data)
        let decoded = try Event(jsonLine: Self.encode(event))
        #expect(decoded == event)
        // 1.0 stays a double and -0.0 keeps its sign: equality alone would not tell.
        #expect(decoded.data["one"] == .double(1))
        if case .double(let d)? = decoded.data["neg0"] { #expect(d.sign == .minus) } else { Issue.record("neg0") }
    }

    static func encode(_ event: Event) -> [UInt8] {
        var out: [UInt8] = []
        JSONLineEncoder.append(event, to: &out)
        return out
    }

    @Test func nonFiniteDoublesReadBackAsNaN() throws {
        var data = EventData()
        data.append("nan", .double(.nan))
        data.append("inf", .double(-.infinity))
        let event = JSONLineEncoderTests.event(data: data)
        let decoded = try Event(jsonLine: Self.encode(event))
        for name in ["nan", "inf"] {
            guard case .double(let d)? = decoded.data[name] else {
                Issue.record("\(name): \(String(describing: decoded.data[name]))")
                continue
            }
            #expect(d.isNaN)
        }
    }

    /// The property: decoding what the encoder wrote gives the event back, for random events.
    @Test func randomEventsRoundTrip() throws {
        var rng = SplitMix64(seed: 0x0E7E_27)
        let specialDoubles: [Double] = [
            0, -0.0, .leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude,
            -.greatestFiniteMagnitude, .pi, 0.1, 1e16, 1e-7, 9_007_199_254_740_994, 1e22, 5,
        ]
        let specialUInts: [UInt64] = [0, 1, .max, UInt64(Int64.max), UInt64(Int64.max) + 1]
        func randomUInt() -> UInt64 {
            Bool.random(using: &rng) ? specialUInts.randomElement(using: &rng)! : rng.next() >> (rng.next() % 64)
        }
        var encoder = JSONLineEncoder()
        for _ in 0..<3000 {
            var data = EventData()
            for index in 0..<Int.random(in: 0...6, using: &rng) {
                let name = RandomText.string(using: &rng, maxLength: 8) + "#\(index)"
                let value: EventValue
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: value = .string(RandomText.string(using: &rng))
                case 1: value = .int(Int64(bitPattern: rng.next()) >> (rng.next() % 64))
                case 2:
                    var d = Double(bitPattern: rng.next())
                    if !d.isFinite { d = 0.25 }
                    value = .double(d)
                case 3: value = .double(specialDoubles.randomElement(using: &rng)!)
                case 4: value = .int([Int64.min, .max, 0, -1].randomElement(using: &rng)!)
                default: value = .bool(Bool.random(using: &rng))
                }
                data.append(name, value)
            }
            let event = Event(
                seq: randomUInt(), id: EventID(high: rng.next(), low: rng.next()),
                time: WallTime(nanoseconds: Int64(bitPattern: rng.next())), mono: randomUInt(),
                source: EventSource(RandomText.string(using: &rng)), type: RandomText.string(using: &rng),
                key: RandomText.string(using: &rng, maxLength: 64), data: data)
            let line = encoder.encode(event)
            let decoded = try Event(jsonLine: line)
            #expect(decoded == event)
            // Event's == compares strings by canonical equivalence; the round trip must keep exact scalars.
            #expect(decoded.key.unicodeScalars.elementsEqual(event.key.unicodeScalars))
            #expect(
                decoded.data.map { Array($0.name.unicodeScalars) } == event.data.map { Array($0.name.unicodeScalars) })
            #expect(encoder.encode(decoded) == line)
        }
    }

    /// Found while writing the round trip: `maximumLength(of:)` budgets 160 bytes for the fixed part of a line,
    /// which takes 182 when seq and mono have 20 digits and source, type and key are empty. The static
    /// `append(_:to: inout [UInt8])` then writes past its buffer before `commit`'s precondition traps; the
    /// hot-path `append(_:to: ByteBuffer)` can overrun a nearly full buffer. Measured here through `encode`,
    /// whose 1 KiB buffer has room, so the test does not crash.
    @Test func encoderLengthBoundCoversTheFixedFields() {
        var encoder = JSONLineEncoder()
        let event = Event(
            seq: .max, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: .max,
            source: EventSource(""), type: "", key: "", data: EventData())
        let line = encoder.encode(event)
        #expect(line.count == 182)
        #expect(line.count <= JSONLineEncoder.maximumLength(of: event))
    }

    @Test func unknownFieldsAreSkipped() throws {
        let line = #"{"future":[1,{"x":null}],"# + String(Self.knownLine.dropFirst())
        #expect(try Self.decode(line) == Self.decode(Self.knownLine))
    }

    @Test(arguments: [
        ("seq", nil, "seq: missing"),
        ("seq", "-1", "seq: expected an unsigned integer, found -1"),
        ("seq", "1.0", "seq: expected an unsigned integer, found 1.0"),
        ("seq", #""1""#, #"seq: expected an unsigned integer, found "1""#),
        ("id", nil, "id: missing"),
        ("id", "7", "id: expected a string, found 7"),
        ("id", #""not-a-uuid""#, #"id: expected a UUID, found "not-a-uuid""#),
        ("time", #""2026-02-30T00:00:00Z""#, #"time: expected an RFC 3339 time, found "2026-02-30T00:00:00Z""#),
        ("time", "null", "time: expected a string, found null"),
        ("mono", "18446744073709551616", "mono: expected an unsigned integer, found 1.8446744073709552e+19"),
        ("mono", nil, "mono: missing"),
        ("source", "true", "source: expected a string, found true"),
        ("type", "[]", "type: expected a string, found []"),
        ("key", nil, "key: missing"),
        ("data", nil, "data: missing"),
        ("data", "[]", "data: expected an object, found []"),
        ("data", #"{"a":[1]}"#, "data.a: expected a string, number or boolean"),
        ("data", #"{"a.b":{}}"#, "data.a.b: expected a string, number or boolean"),
        (
            "data", #"{"big":9223372036854775808}"#,
            "data.big: integer 9223372036854775808 does not fit a signed 64-bit value"
        ),
    ] as [(String, String?, String)])
    func errorsNameTheField(_ field: String, _ json: String?, _ expected: String) {
        #expect(Self.error(Self.line(replacing: field, with: json))?.description == expected)
    }

    @Test(arguments: [
        ("", #"not JSON: unexpected end of input, expected a value at byte 0"#),
        ("[1]", "not a JSON object"),
        (#"{"seq":1"#, "not JSON: unexpected end of input in an object at byte 8"),
        (#"{"seq":1,"seq":2}"#, #"not JSON: duplicate member name "seq" at byte 9"#),
        ("{} {}", "not JSON: unexpected '{' after the value at byte 3"),
    ])
    func errorsForLinesThatAreNotObjects(_ text: String, _ expected: String) {
        let error = Self.error(text)
        #expect(error?.description == expected)
        #expect(error?.field == "")
    }
}
