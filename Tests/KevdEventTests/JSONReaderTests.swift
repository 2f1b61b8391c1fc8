import Foundation
import KevdTestSupport
import Testing

@testable import KevdEvent

@Suite struct JSONReaderTests {
    static func parse(_ text: String) throws(JSONParseError) -> JSONValue { try JSONReader.parse(text) }

    /// The error for `bytes`, or a recorded failure when they parse.
    static func error(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> JSONParseError? {
        do {
            let value = try JSONReader.parse(bytes)
            Issue.record("parsed \(String(decoding: bytes, as: UTF8.self).debugDescription) as \(value)",
                sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Valid documents

    @Test(arguments: [
        ("null", JSONValue.null), ("true", .bool(true)), ("false", .bool(false)), ("0", .int(0)), ("-0", .int(0)),
        ("42", .int(42)), ("-7", .int(-7)), ("\"\"", .string("")), ("[]", .array([])), ("{}", .object([])),
        (" \t\r\n[ 1 , \"a\" , null ]\n", .array([.int(1), .string("a"), .null])),
        (#"{"b":1,"a":[true,{}]}"#, .object([("b", .int(1)), ("a", .array([.bool(true), .object([])]))])),
        (#"{"x" : { "y" : [ [ ] ] } }"#, .object([("x", .object([("y", .array([.array([])]))]))])),
    ] as [(String, JSONValue)])
    func parsesValidDocuments(_ text: String, _ expected: JSONValue) throws {
        #expect(try Self.parse(text) == expected)
    }

    @Test func objectsKeepMemberOrderAndAnswerBySubscript() throws {
        let value = try Self.parse(#"{"z":1,"a":"two","m":[3]}"#)
        #expect(value.objectValue?.map(\.0) == ["z", "a", "m"])
        #expect(value["a"] == .string("two"))
        #expect(value["m"]?[0] == .int(3))
        #expect(value["m"]?[1] == nil)
        #expect(value["nope"] == nil)
        #expect(JSONValue.int(1)["a"] == nil)
        // Names are exact scalars: a canonically equivalent spelling is another name.
        let accents = try Self.parse(#"{"\u00e9":1,"e\u0301":2}"#)
        #expect(accents["\u{E9}"] == .int(1))
        #expect(accents["e\u{301}"] == .int(2))
    }

    @Test(arguments: [
        ("0", JSONValue.int(0)), ("9223372036854775807", .int(.max)), ("-9223372036854775808", .int(.min)),
        ("9223372036854775808", .uint(9_223_372_036_854_775_808)), ("18446744073709551615", .uint(.max)),
        ("18446744073709551616", .double(0x1p64)),
        ("-9223372036854775809", .double(-0x1p63)),
        ("1.0", .double(1)), ("-0.0", .double(-0.0)), ("1e2", .double(100)), ("1E+2", .double(100)),
        ("25e-1", .double(2.5)), ("0.1", .double(0.1)), ("5e-324", .double(.leastNonzeroMagnitude)),
        ("1e-400", .double(0)),
        ("1.7976931348623157e308", .double(.greatestFiniteMagnitude)), ("0e99999999999999999999", .double(0)),
        ("123456789012345678901234567890", .double(1.2345678901234568e29)),
    ] as [(String, JSONValue)])
    func numbersKeepIntegersExact(_ text: String, _ expected: JSONValue) throws {
        let value = try Self.parse(text)
        #expect(value == expected)
        if case .double(let d) = expected { #expect(value.doubleValue?.sign == d.sign) }
    }

    @Test func integerAndDoubleAreDistinctButIntAndUIntCompareByValue() {
        #expect(JSONValue.int(1) != .double(1))
        #expect(JSONValue.int(5) == .uint(5))
        #expect(JSONValue.uint(5) == .int(5))
        #expect(JSONValue.int(-1) != .uint(.max))
        #expect(JSONValue.uint(.max).uint64Value == .max)
        #expect(JSONValue.uint(.max).int64Value == nil)
        #expect(JSONValue.int(-1).uint64Value == nil)
        #expect(JSONValue.double(1).int64Value == nil)
    }

    @Test(arguments: [
        (#""\"\\\/\b\f\n\r\t""#, "\"\\/\u{8}\u{C}\n\r\t"),
        (#""\u0000\u001f\u0041\u00e9\u20AC\uFFFF""#, "\u{0}\u{1F}A\u{E9}\u{20AC}\u{FFFF}"),
        (#""\ud83d\ude00 \uD83D\uDE00 \udbff\udfff \ud800\udc00""#, "\u{1F600} \u{1F600} \u{10FFFF} \u{10000}"),
        ("\"raw é 😀 \u{7F} \u{2028}\"", "raw é 😀 \u{7F} \u{2028}"),
        (#""plain then \n escape and é""#, "plain then \n escape and é"),
    ])
    func stringEscapes(_ text: String, _ expected: String) throws {
        let value = try Self.parse(text)
        #expect(value.stringValue.map { Array($0.unicodeScalars) } == Array(expected.unicodeScalars))
    }

    @Test func depthLimit() throws {
        let ok = String(repeating: "[", count: JSONReader.maximumDepth) + String(repeating: "]", count: 64)
        _ = try Self.parse(ok)
        let deepObjects = String(repeating: #"{"a":"#, count: 64) + "1" + String(repeating: "}", count: 64)
        _ = try Self.parse(deepObjects)

        let tooDeep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(Self.error(Array(tooDeep.utf8)) == JSONParseError(message: "nesting deeper than 64 levels", offset: 64))
        // Far deeper input fails at the same place, without recursing further.
        let hostile = [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        #expect(Self.error(hostile)?.offset == 64)
    }

    @Test func largeObjectsDetectDuplicatesToo() throws {
        let members = (0..<1000).map { "\"k\($0)\":\($0)" }
        let value = try Self.parse("{" + members.joined(separator: ",") + "}")
        #expect(value["k999"] == .int(999))
        let duplicated = "{" + (members + ["\"k500\":0"]).joined(separator: ",") + "}"
        let error = Self.error(Array(duplicated.utf8))
        #expect(error?.message == #"duplicate member name "k500""#)
        #expect(error?.offset == duplicated.utf8.count - #""k500":0}"#.utf8.count)
        // Canonically equivalent names are different JSON names, in the set as in the scan.
        let accents = (0..<20).map { "\"n\($0)\":0" } + [#""\u00e9":1"#, #""e\u0301":2"#]
        #expect(try Self.parse("{" + accents.joined(separator: ",") + "}")["e\u{301}"] == .int(2))
    }

    // MARK: - Invalid documents

    @Test(arguments: [
        ("", "unexpected end of input, expected a value", 0),
        ("   ", "unexpected end of input, expected a value", 3),
        ("\u{FEFF}1", "unexpected byte 0xEF, expected a value", 0),
        ("1 2", "unexpected '2' after the value", 2),
        ("{} x", "unexpected 'x' after the value", 3),
        ("01", "leading zero in a number", 0),
        ("-01", "leading zero in a number", 1),
        ("00", "leading zero in a number", 0),
        ("-", "expected a digit after '-'", 1),
        ("-a", "expected a digit after '-'", 1),
        ("+1", "unexpected '+', expected a value", 0),
        (".5", "unexpected '.', expected a value", 0),
        ("1.", "expected a digit after '.'", 2),
        ("1.e5", "expected a digit after '.'", 2),
        ("1e", "expected a digit in the exponent", 2),
        ("1e+", "expected a digit in the exponent", 3),
        ("1e400", "number out of range", 0),
        ("-1e400", "number out of range", 0),
        ("NaN", "unexpected 'N', expected a value", 0),
        ("Infinity", "unexpected 'I', expected a value", 0),
        ("tru", "invalid literal, expected 'true'", 0),
        ("nul", "invalid literal, expected 'null'", 0),
        ("fals e", "invalid literal, expected 'false'", 0),
        ("True", "unexpected 'T', expected a value", 0),
        ("[1,]", "unexpected ']', expected a value", 3),
        ("[1 2]", "unexpected '2' in an array, expected ',' or ']'", 3),
        ("[1", "unexpected end of input in an array", 2),
        ("[", "unexpected end of input, expected a value", 1),
        (#"{"a":1,}"#, "unexpected '}' in an object, expected a member name", 7),
        (#"{"a" 1}"#, "unexpected '1' after a member name, expected ':'", 5),
        (#"{"a":1 "b":2}"#, "unexpected '\"' in an object, expected ',' or '}'", 7),
        ("{a:1}", "unexpected 'a' in an object, expected a member name", 1),
        ("{1:1}", "unexpected '1' in an object, expected a member name", 1),
        (#"{"a":1,"a":2}"#, #"duplicate member name "a""#, 7),
        (#"{"a""#, "unexpected end of input after a member name, expected ':'", 4),
        (#"{"a":"#, "unexpected end of input, expected a value", 5),
        ("\"abc", "unterminated string", 0),
        ("\"ab\\n", "unterminated string", 0),
        ("\"a\tb\"", "control character byte 0x09 in a string, must be escaped", 2),
        ("\"a\nb\"", "control character byte 0x0A in a string, must be escaped", 2),
        ("\"\\x\"", "invalid escape 'x'", 1),
        ("\"\\'\"", "invalid escape '''", 1),
        ("\"\\", "unterminated escape", 2),
        ("\"\\u12\"", "expected a hex digit in a \\u escape, found '\"'", 5),
        ("\"\\u12", "unexpected end of input in a \\u escape", 5),
        ("\"\\ud800\"", "lone high surrogate in a \\u escape", 1),
        ("\"\\ud800x\"", "lone high surrogate in a \\u escape", 1),
        ("\"\\ud800\\n\"", "lone high surrogate in a \\u escape", 1),
        ("\"\\ud800\\ud800\"", "lone high surrogate in a \\u escape", 1),
        ("\"\\ud800\\u0041\"", "lone high surrogate in a \\u escape", 1),
        ("\"a\\udc00\"", "lone low surrogate in a \\u escape", 2),
        ("/* c */ 1", "unexpected '/', expected a value", 0),
        ("'a'", "unexpected ''', expected a value", 0),
        ("\u{0}", "unexpected byte 0x00, expected a value", 0),
        ("1\u{0}", "unexpected byte 0x00 after the value", 1),
        ("\u{A0}1", "unexpected byte 0xC2, expected a value", 0),
    ] as [(String, String, Int)])
    func rejectsInvalidDocuments(_ text: String, _ message: String, _ offset: Int) {
        #expect(Self.error(Array(text.utf8)) == JSONParseError(message: message, offset: offset))
    }

    @Test(arguments: [
        [0x22, 0xFF, 0x22], [0x22, 0x80, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xC1, 0xBF, 0x22],
        [0x22, 0xE0, 0x80, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xED, 0xBF, 0xBF, 0x22],
        [0x22, 0xF0, 0x80, 0x80, 0xAF, 0x22], [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],
        [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22],
        [0x22, 0xE2, 0x82, 0x22], [0x22, 0xF0, 0x9F, 0x98, 0x22], [0x22, 0xC3], [0x22, 0x61, 0x5C, 0x6E, 0xFE, 0x22],
    ] as [[UInt8]])
    func rejectsInvalidUTF8InStrings(_ bytes: [UInt8]) {
        let error = Self.error(bytes)
        #expect(error?.message == "invalid UTF-8 in a string")
        #expect(error?.offset == bytes.firstIndex { $0 >= 0x80 })
    }

    /// Strings of random bytes are accepted exactly when they are valid UTF-8 without controls, quotes or
    /// backslashes, and then read back byte for byte.
    @Test func stringValidationAgreesWithTheStdlibOnRandomBytes() throws {
        var rng = SplitMix64(seed: 0x0017_F008)
        let alphabet: [UInt8] = [0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC2, 0xC0, 0xDF, 0xE0, 0xED, 0xEF,
            0xF0, 0xF4, 0xF5, 0xFF]
        var accepted = 0
        for _ in 0..<20_000 {
            let body = (0..<Int.random(in: 0...8, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let valid = String(validatingUTF8: body.map { CChar(bitPattern: $0) } + [0]) != nil
            do {
                let value = try JSONReader.parse([0x22] + body + [0x22])
                #expect(valid, "accepted \(body)")
                #expect(value.stringValue.map { Array($0.utf8) } == body)
                accepted += 1
            } catch {
                #expect(!valid, "rejected \(body): \(error)")
                #expect(error.message == "invalid UTF-8 in a string")
            }
        }
        #expect(accepted > 1000)
    }

    // MARK: - Hostile input

    /// Random bytes and mutations of valid documents: the parser must return or throw, never trap or hang, and
    /// whatever it accepts Foundation must accept too, with the same content.
    @Test func survivesRandomAndMutatedInput() throws {
        var rng = SplitMix64(seed: 0xF022)
        let seeds = Self.corpus.map { Array($0.utf8) }
        let interesting: [UInt8] = Array(#"{}[]",:\-+.eE0123456789 tfnu"#.utf8) + [0x00, 0x0A, 0x80, 0xC3, 0xED, 0xFF]
        var accepted = 0
        for round in 0..<30_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = (0..<Int.random(in: 0...24, using: &rng)).map { _ in
                    Bool.random(using: &rng)
                        ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
                }
            } else {
                bytes = seeds.randomElement(using: &rng)!
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let position = Int.random(in: 0...bytes.count, using: &rng)
                    let byte = interesting.randomElement(using: &rng)!
                    switch Int.random(in: 0..<4, using: &rng) {
                    case 0 where position < bytes.count: bytes[position] = byte
                    case 1 where position < bytes.count: bytes.remove(at: position)
                    case 2: bytes.insert(byte, at: position)
                    default: bytes = Array(bytes[..<position])
                    }
                }
            }
            guard let value = try? JSONReader.parse(bytes) else { continue }
            accepted += 1
            let theirs = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
            #expect(FoundationJSON.agrees(value, theirs), "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
            // What is accepted re-encodes to a document that parses to the same value.
            #expect(try JSONReader.parse(Array(value.jsonText.utf8)) == value)
        }
        #expect(accepted > 3000)
    }

    // MARK: - Cross-checks with Foundation

    static let corpus: [String] = [
        "null", "true", "false", "0", "-0", "1", "-1", "3.25", "-2.5e-3", "1E10", "6.02214076e23", "1e-7",
        "9007199254740993", "18446744073709551615", "9223372036854775807", "-9223372036854775808", #""""#,
        #""\u00e9\ud83d\ude00\n\t\"\\\/""#, "[]", "{}", "[[[[]]]]", "[1,2.5,\"x\",null,true,false,{},[]]",
        #"{"seq":18446744073709551615,"id":"01900000-0000-7abc-8000-000000000001","data":{"a":1.5,"b":true}}"#,
        #"{"op":"subscribe","filter":["source=udev","key~^/dev/sd"],"since":42}"#,
        #"{ "nested" : { "deeper" : [ { "k" : "v" } , 1e2 ] } , "tail" : "\u0000" }"#,
        "\"\u{2028}\u{2029}\u{10FFFF}\u{7F}\"", "[\"a\u{301}\",\"\u{E9}\"]", "  [ 1 ,\n2 ]\r\n",
    ]

    @Test(arguments: corpus)
    func corpusAgreesWithFoundation(_ text: String) throws {
        let mine = try Self.parse(text)
        let theirs = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        #expect(FoundationJSON.agrees(mine, theirs))
        #expect(try Self.parse(mine.jsonText) == mine)
    }

    /// Random documents written with random whitespace, escapes and number spellings: the reader must return
    /// the value they were written from, and Foundation must read the same.
    @Test func randomDocumentsAgreeWithFoundation() throws {
        var rng = SplitMix64(seed: 0xD0C5)
        for _ in 0..<1500 {
            var text: [UInt8] = []
            let value = RandomJSON.value(depth: 0, using: &rng, writingTo: &text)
            let mine: JSONValue
            do {
                mine = try JSONReader.parse(text)
            } catch {
                Issue.record("\(error) in \(String(decoding: text, as: UTF8.self).debugDescription)")
                continue
            }
            #expect(mine == value, "\(String(decoding: text, as: UTF8.self).debugDescription)")
            let theirs = try JSONSerialization.jsonObject(with: Data(text), options: [.fragmentsAllowed])
            #expect(FoundationJSON.agrees(mine, theirs), "\(String(decoding: text, as: UTF8.self).debugDescription)")
            #expect(try JSONReader.parse(mine.jsonText) == mine)
        }
    }

    @Test func entryPointsAgree() throws {
        let text = #"{"a":[1,"é"]}"#
        let bytes = Array(text.utf8)
        let raw = try bytes.withUnsafeBytes { raw throws(JSONParseError) in try JSONReader.parse(raw) }
        #expect(try JSONReader.parse(text) == JSONReader.parse(bytes))
        #expect(raw == (try JSONReader.parse(bytes)))
        #expect(throws: JSONParseError.self) { try JSONReader.parse(UnsafeRawBufferPointer(start: nil, count: 0)) }
    }
}

/// Compares a `JSONValue` with what JSONSerialization made of the same text.
enum FoundationJSON {
    static func agrees(_ mine: JSONValue, _ theirs: Any) -> Bool {
        switch mine {
        case .null: return theirs is NSNull
        case .bool(let b): return JSONCheck.bool(theirs) == b
        case .int(let n): return JSONCheck.int64(theirs) == n
        case .uint(let n): return JSONCheck.uint64(theirs) == n
        case .double(let d):
            // Integers past UInt64 come back as NSDecimalNumber, whose text holds the exact digits.
            guard let other = JSONCheck.double(theirs) else { return false }
            return other == d && other.sign == d.sign
        case .string(let s): return JSONCheck.string(theirs, equals: s)
        case .array(let elements):
            guard let other = theirs as? [Any], other.count == elements.count else { return false }
            return zip(elements, other).allSatisfy { agrees($0, $1) }
        case .object(let members):
            guard let other = theirs as? [String: Any], other.count == members.count else { return false }
            return members.allSatisfy { name, value in other[name].map { agrees(value, $0) } ?? false }
        }
    }
}

/// Writes random JSON text together with the value it denotes.
enum RandomJSON {
    static func whitespace(using rng: inout SplitMix64, to out: inout [UInt8]) {
        guard Int.random(in: 0..<4, using: &rng) == 0 else { return }
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            out.append([0x20, 0x09, 0x0A, 0x0D].randomElement(using: &rng)!)
        }
    }

    static func value(depth: Int, using rng: inout SplitMix64, writingTo out: inout [UInt8]) -> JSONValue {
        whitespace(using: &rng, to: &out)
        defer { whitespace(using: &rng, to: &out) }
        let kinds = depth < 5 ? 9 : 7
        switch Int.random(in: 0..<kinds, using: &rng) {
        case 0:
            out.append(contentsOf: "null".utf8)
            return .null
        case 1:
            let b = Bool.random(using: &rng)
            out.append(contentsOf: (b ? "true" : "false").utf8)
            return .bool(b)
        case 2:
            let n = Int64(bitPattern: rng.next()) >> (rng.next() % 64)
            out.append(contentsOf: String(n).utf8)
            return .int(n)
        case 3:
            let n = UInt64(Int64.max) + 1 + rng.next() % UInt64(Int64.max)
            out.append(contentsOf: String(n).utf8)
            return .uint(n)
        case 4: return double(using: &rng, writingTo: &out)
        case 5, 6:
            let s = RandomText.string(using: &rng)
            string(s, using: &rng, writingTo: &out)
            return .string(s)
        case 7:
            out.append(UInt8(ascii: "["))
            var elements: [JSONValue] = []
            for i in 0..<Int.random(in: 0...4, using: &rng) {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                elements.append(value(depth: depth + 1, using: &rng, writingTo: &out))
            }
            if elements.isEmpty { whitespace(using: &rng, to: &out) }
            out.append(UInt8(ascii: "]"))
            return .array(elements)
        default:
            out.append(UInt8(ascii: "{"))
            var members: [(String, JSONValue)] = []
            for i in 0..<Int.random(in: 0...4, using: &rng) {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                // The index suffix keeps names distinct, also under Foundation's canonical-equivalence keys.
                let name = RandomText.string(using: &rng, maxLength: 6) + "#\(i)"
                whitespace(using: &rng, to: &out)
                string(name, using: &rng, writingTo: &out)
                whitespace(using: &rng, to: &out)
                out.append(UInt8(ascii: ":"))
                members.append((name, value(depth: depth + 1, using: &rng, writingTo: &out)))
            }
            if members.isEmpty { whitespace(using: &rng, to: &out) }
            out.append(UInt8(ascii: "}"))
            return .object(members)
        }
    }

    /// A finite double in one of several spellings; its value is whatever the stdlib reads from that text.
    static func double(using rng: inout SplitMix64, writingTo out: inout [UInt8]) -> JSONValue {
        var d = Double(bitPattern: rng.next())
        if !d.isFinite || Bool.random(using: &rng) { d = Double(Int64(bitPattern: rng.next()) >> 40) / 1024 }
        var text = d.description
        if !text.contains("e") && !text.contains(".") { text += ".0" }
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: text = text.replacingOccurrences(of: "e", with: "E")
        case 1 where !text.contains("e"): text += "e+0"
        case 2 where !text.contains("e"): text += "000"
        default: break
        }
        out.append(contentsOf: text.utf8)
        return .double(Double(text)!)
    }

    /// Writes `s` quoted, each scalar raw or escaped at random (as `\uXXXX`, surrogate pairs for astral ones).
    static func string(_ s: String, using rng: inout SplitMix64, writingTo out: inout [UInt8]) {
        func hex(_ unit: UInt16) {
            let upper = Bool.random(using: &rng)
            out.append(contentsOf: "\\u".utf8)
            let digits = String(unit, radix: 16)
            let padded = String(repeating: "0", count: 4 - digits.count) + digits
            out.append(contentsOf: (upper ? padded.uppercased() : padded).utf8)
        }
        out.append(UInt8(ascii: "\""))
        for scalar in s.unicodeScalars {
            let mustEscape = scalar.value < 0x20 || scalar == "\"" || scalar == "\\"
            if mustEscape || Int.random(in: 0..<4, using: &rng) == 0 {
                switch (scalar, Bool.random(using: &rng)) {
                case ("\n", true): out.append(contentsOf: "\\n".utf8)
                case ("\"", true): out.append(contentsOf: "\\\"".utf8)
                case ("\\", true): out.append(contentsOf: "\\\\".utf8)
                case ("/", true): out.append(contentsOf: "\\/".utf8)
                default:
                    for unit in String(scalar).utf16 { hex(unit) }
                }
            } else {
                out.append(contentsOf: String(scalar).utf8)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
