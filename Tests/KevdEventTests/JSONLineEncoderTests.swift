import Foundation
import KevdTestSupport
import Testing

@testable import KevdEvent

@Suite struct JSONLineEncoderTests {
    static let topKeys = ["seq", "id", "time", "mono", "source", "type", "key", "data"]

    static func event(
        seq: UInt64 = 1, time: Int64 = 0, mono: UInt64 = 0, source: EventSource = .inotify,
        type: String = "t", key: String = "k", data: EventData = EventData()
    ) -> Event {
        let base = EventIDBase(randA: 0xABC, randB: 0x1234_5678_9ABC_DEF0)
        let id = EventID(unixMilliseconds: UInt64(max(0, time / 1_000_000)), seq: seq, base: base)
        return Event(seq: seq, id: id, time: WallTime(nanoseconds: time), mono: mono, source: source, type: type,
            key: key, data: data)
    }

    static func line(_ event: Event) -> [UInt8] {
        var out: [UInt8] = []
        JSONLineEncoder.append(event, to: &out)
        return out
    }

    static func string(_ s: String) -> String {
        var out: [UInt8] = []
        JSONLineEncoder.appendString(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses the line with Foundation and checks every field against the event.
    static func checkRoundTrip(_ event: Event, _ line: [UInt8]) throws {
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.filter { $0 == UInt8(ascii: "\n") }.count == 1)
        let object = try JSONCheck.object(line.dropLast())
        #expect(object.count == 8)
        #expect(JSONCheck.uint64(object["seq"]) == event.seq)
        #expect(JSONCheck.string(object["id"], equals: event.id.string))
        #expect(EventID(object["id"] as? String ?? "") == event.id)
        #expect(JSONCheck.string(object["time"], equals: event.time.rfc3339))
        #expect(WallTime(rfc3339: object["time"] as? String ?? "") == event.time)
        #expect(JSONCheck.uint64(object["mono"]) == event.mono)
        #expect(JSONCheck.string(object["source"], equals: event.source.name))
        #expect(JSONCheck.string(object["type"], equals: event.type))
        #expect(JSONCheck.string(object["key"], equals: event.key))
        let data = try #require(object["data"] as? [String: Any])
        #expect(data.count == event.data.count)
        for field in event.data {
            #expect(
                JSONCheck.value(data[field.name], equals: field.value),
                "data field \(field.name.debugDescription): \(String(describing: data[field.name])) vs \(field.value)")
        }
        let order = JSONCheck.keyOrder(line)
        #expect(order.top == topKeys)
        #expect(order.nested.map { Array($0.unicodeScalars) } == event.data.map { Array($0.name.unicodeScalars) })
    }

    @Test func exactBytesOfAKnownEvent() {
        var data = EventData()
        data.append("path", "/tmp/a \"b\"")
        data.append("size", 42)
        data.append("neg", .int(-7))
        data.append("ratio", .double(0.5))
        data.append("nan", .double(.nan))
        data.append("dir", true)
        data.append("gone", false)
        let event = Event(
            seq: 12_345, id: EventID(high: 0x0190_0000_0000_7abc, low: 0x8000_0000_0000_0001),
            time: WallTime(nanoseconds: 1_795_417_883_123_456_789), mono: 987_654_321, source: .inotify,
            type: "modify", key: "/tmp", data: data)
        let expected = #"{"seq":12345,"id":"01900000-0000-7abc-8000-000000000001","#
            + #""time":"2026-11-23T07:11:23.123456789Z","mono":987654321,"source":"inotify","type":"modify","#
            + #""key":"/tmp","data":{"path":"/tmp/a \"b\"","#
            + #""size":42,"neg":-7,"ratio":0.5,"nan":null,"dir":true,"gone":false}}"# + "\n"
        #expect(String(decoding: Self.line(event), as: UTF8.self) == expected)
    }

    @Test func emptyDataIsAnEmptyObject() {
        let line = String(decoding: Self.line(Self.event(seq: 0, type: "", key: "")), as: UTF8.self)
        #expect(line.hasPrefix(#"{"seq":0,"id":""#))
        #expect(line.hasSuffix(#","source":"inotify","type":"","key":"","data":{}}"# + "\n"))
    }

    @Test func escapesEveryControlCharacter() {
        let controls = String(String.UnicodeScalarView((0...0x1F).map { Unicode.Scalar(UInt8($0)) }))
        let expected = #""\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f"#
            + #"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f""#
        #expect(Self.string(controls) == expected)
        #expect(Self.string("a\"b\\c/d\u{7F}") == "\"a\\\"b\\\\c/d\u{7F}\"")
        #expect(Self.string("") == "\"\"")
        #expect(Self.string("é😀\u{2028}") == "\"é😀\u{2028}\"")
    }

    static let trickyStrings: [String] = [
        "", "plain", "quote \" inside", "back\\slash", "\\\"", "\"\"\"", "trailing\\",
        String(String.UnicodeScalarView((0...0x1F).map { Unicode.Scalar(UInt8($0)) })),
        "nul\u{0}in the middle", "\u{7F}del", "emoji 😀👨‍👩‍👧 flags 🇫🇷",
        "line\u{2028}sep\u{2029}para", "e\u{301} vs \u{E9}", "\u{FFFD}", "\u{10FFFF}",
        "日本語のファイル名.txt", "tab\tnew\nret\r", "/dev/bus/usb/001/002",
        String(repeating: "long/", count: 500),
    ]

    @Test(arguments: trickyStrings)
    func trickyStringsRoundTrip(_ s: String) throws {
        var data = EventData()
        data.append(s, s)
        data.append("x" + s, .int(1))
        let event = Self.event(source: EventSource(s), type: s, key: s, data: data)
        try Self.checkRoundTrip(event, Self.line(event))
    }

    /// U+FEFF is ordinary text inside a JSON string. Checked with JSONDecoder and the raw bytes, because
    /// JSONSerialization on Linux drops it at the start of a string and after an escape.
    @Test func byteOrderMarkPassesThrough() throws {
        struct Line: Decodable {
            let seq: UInt64, id: String, time: String, mono: UInt64, source: String, type: String, key: String
            let data: [String: String]
        }
        for s in ["\u{FEFF}", "\u{FEFF}bom", "a\u{FEFF}b", "\n\u{FEFF}", "\u{FEFF}\u{FEFF}\"\u{FEFF}"] {
            var data = EventData()
            data.append(s, s)
            let event = Self.event(source: EventSource(s), type: s, key: s, data: data)
            let line = Self.line(event)
            let decoded = try JSONDecoder().decode(Line.self, from: Data(line))
            for text in [decoded.source, decoded.type, decoded.key, decoded.data[s] ?? "<missing>"] {
                #expect(text.unicodeScalars.elementsEqual(s.unicodeScalars))
            }
            #expect(decoded.data.keys.map { Array($0.unicodeScalars) } == [Array(s.unicodeScalars)])
            #expect(decoded.seq == event.seq && decoded.mono == event.mono && decoded.id == event.id.string)
            let marks = s.unicodeScalars.filter { $0 == "\u{FEFF}" }.count
            #expect(Self.string(s).utf8.filter { $0 == 0xEF }.count == marks)
        }
    }

    @Test func invalidUTF8FileNameIsRepairedAndKeptAsBase64() throws {
        let bytes: [UInt8] = [0x66, 0xFF, 0xFE, 0x0A, 0x24, 0x28]
        var data = EventData()
        data.appendBytes("name", bytes)
        data.appendBytes("ok", Array("fine\u{FFFD}.txt".utf8))
        #expect(data.map(\.name) == ["name", "name_base64", "ok"])
        let event = Self.event(data: data)
        let line = Self.line(event)
        try Self.checkRoundTrip(event, line)
        let object = try JSONCheck.object(line.dropLast())
        let fields = try #require(object["data"] as? [String: Any])
        #expect(JSONCheck.string(fields["name"], equals: "f\u{FFFD}\u{FFFD}\n$("))
        let encoded = try #require(fields["name_base64"] as? String)
        #expect(encoded == "Zv/+CiQo")
        #expect(Data(base64Encoded: encoded).map(Array.init) == bytes)
        #expect(JSONCheck.string(fields["ok"], equals: "fine\u{FFFD}.txt"))
        #expect(fields["ok_base64"] == nil)
    }

    @Test func integersAtTheirBoundaries() {
        let unsigned: [UInt64] = [0, 1, 9, 10, 11, 99, 100, 101, 999_999, 1_000_000, UInt64(Int64.max), .max - 1, .max]
        // Every digit count's first and last value (the encoder counts digits, then writes two at a time).
        let powers = (1...19).map { (0..<$0).reduce(UInt64(1)) { n, _ in n * 10 } }
        for n in unsigned + powers + powers.map({ $0 - 1 }) + powers.map({ $0 + 1 }) {
            var out: [UInt8] = [UInt8(ascii: "x")]
            JSONLineEncoder.appendUInt(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == "x" + String(n))
        }
        let signed: [Int64] = [0, 1, -1, 9, -9, 10, -10, 12_345, -12_345, .max, .min, .min + 1]
        for n in signed {
            var out: [UInt8] = []
            JSONLineEncoder.appendInt(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
        }
        var rng = SplitMix64(seed: 7)
        for _ in 0..<10_000 {
            let n = Int64(bitPattern: rng.next()) >> Int64.random(in: 0...63, using: &rng)
            var out: [UInt8] = []
            JSONLineEncoder.appendInt(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
        }
    }

    @Test func timeFormattedWithTheSecondCacheIsTheSameText() {
        // Within one second, across seconds, days and years, before 1970, and backwards.
        let base: Int64 = 1_795_000_000_999_999_999
        let times: [Int64] = [
            base, base + 1, base - 1, base - 999_999_999, base + 1, base + 86_400_000_000_000, 0, -1, 1,
            -1_000_000_000, -999_999_999, 1_704_067_199_999_999_999, 1_704_067_200_000_000_000, base, base,
        ]
        var cache = RFC3339SecondCache()
        for time in times {
            let event = Self.event(time: time)
            let plain = ByteBuffer(), cached = ByteBuffer()
            JSONLineEncoder.append(event, to: plain)
            JSONLineEncoder.append(event, to: cached, timeCache: &cache)
            #expect(Array(cached.bytes) == Array(plain.bytes), "time \(time)")
        }
    }

    @Test func doubles() {
        let cases: [(Double, String)] = [
            (0, "0.0"), (-0.0, "-0.0"), (0.1, "0.1"), (1e16, "1e+16"), (1e-5, "1e-05"), (-2.5, "-2.5"),
            (.nan, "null"), (.infinity, "null"), (-.infinity, "null"), (.signalingNaN, "null"),
            (.leastNonzeroMagnitude, "5e-324"), (.greatestFiniteMagnitude, "1.7976931348623157e+308"),
        ]
        for (value, text) in cases {
            var out: [UInt8] = []
            JSONLineEncoder.appendDouble(value, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == text)
        }
    }

    @Test func appendsToAReusedBufferAndTheEncoderMatches() throws {
        let a = Self.event(seq: 1, key: "a")
        let b = Self.event(seq: 2, key: "b\nc")
        var buffer: [UInt8] = Array("prefix|".utf8)
        JSONLineEncoder.append(a, to: &buffer)
        JSONLineEncoder.append(b, to: &buffer)
        #expect(buffer == Array("prefix|".utf8) + Self.line(a) + Self.line(b))

        var encoder = JSONLineEncoder(capacity: 16)
        #expect(encoder.encode(a) == Self.line(a))
        #expect(encoder.encode(b) == Self.line(b))
        let kept = encoder.encode(a)
        _ = encoder.encode(b)
        #expect(kept == Self.line(a))
    }

    /// The fallback for strings without contiguous UTF-8 must write the same bytes as the bulk path.
    @Test func slowPathMatchesFastPath() {
        var rng = SplitMix64(seed: 99)
        for s in Self.trickyStrings + (0..<2000).map({ _ in RandomText.string(using: &rng, maxLength: 40) }) {
            var fast: [UInt8] = []
            var slow: [UInt8] = []
            s.utf8.withContiguousStorageIfAvailable { JSONLineEncoder.appendEscaped($0, to: &fast) }
            JSONLineEncoder.appendEscapedSlow(s.utf8, to: &slow)
            #expect(!fast.isEmpty || s.isEmpty)
            #expect(fast == slow)
        }
    }

    @Test func randomEventsRoundTripThroughFoundation() throws {
        var rng = SplitMix64(seed: 0x5EED_0001)
        let specialInts: [Int64] = [.min, .max, 0, -1, 1, .min + 1, .max - 1]
        let specialDoubles: [Double] = [
            0, -0.0, .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude,
            .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .pi, 0.1, 1e16, 1e-7, 0.1 + 0.2, .ulpOfOne,
            9_007_199_254_740_992, 1e22, 123_456.789e-300, .nan, .infinity, -.infinity,
        ]
        let specialUInts: [UInt64] = [0, 1, .max, UInt64(Int64.max), UInt64(Int64.max) + 1]
        func randomUInt() -> UInt64 {
            Bool.random(using: &rng) ? specialUInts.randomElement(using: &rng)! : rng.next() >> (rng.next() % 64)
        }

        var events: [Event] = []
        var buffer: [UInt8] = []
        for _ in 0..<3000 {
            var data = EventData()
            for index in 0..<Int.random(in: 0...6, using: &rng) {
                // Suffix the index: JSON objects cannot hold two equal names, EventData.append does not check.
                let name = RandomText.string(using: &rng, maxLength: 8) + "#\(index)"
                let value: EventValue
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: value = .string(RandomText.string(using: &rng))
                case 1: value = .int(Int64(bitPattern: rng.next()) >> (rng.next() % 64))
                case 2: value = .int(specialInts.randomElement(using: &rng)!)
                case 3: value = .double(Double(bitPattern: rng.next()))
                case 4: value = .double(specialDoubles.randomElement(using: &rng)!)
                default: value = .bool(Bool.random(using: &rng))
                }
                data.append(name, value)
            }
            let time =
                Bool.random(using: &rng)
                ? Int64(bitPattern: rng.next()) : [Int64.min, .max, 0, -1].randomElement(using: &rng)!
            let event = Event(
                seq: randomUInt(), id: EventID(high: rng.next(), low: rng.next()),
                time: WallTime(nanoseconds: time), mono: randomUInt(),
                source: EventSource(RandomText.string(using: &rng)), type: RandomText.string(using: &rng),
                key: RandomText.string(using: &rng, maxLength: 64), data: data)
            events.append(event)
            JSONLineEncoder.append(event, to: &buffer)
        }

        let lines = buffer.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        #expect(lines.count == events.count + 1)
        #expect(lines.last?.isEmpty == true)
        for (event, line) in zip(events, lines) {
            try Self.checkRoundTrip(event, Array(line) + [UInt8(ascii: "\n")])
        }
    }
}
