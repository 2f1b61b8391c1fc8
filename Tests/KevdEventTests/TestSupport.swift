import Foundation
import KevdEvent
import KevdTestSupport

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum JSONCheck {
    /// Parses one line (without its `\n`) as a JSON object with Foundation, an independent parser.
    static func object(_ line: some Collection<UInt8>) throws -> [String: Any] {
        let value = try JSONSerialization.jsonObject(with: Data(line), options: [])
        guard let object = value as? [String: Any] else { throw TestFailure("not an object: \(value)") }
        return object
    }

    /// Booleans come back as NSNumber too; only their type encoding tells them from the integers 0 and 1.
    static func isBool(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    /// Integers are read from the number's text, so a value written as `1.0` or `true` does not pass for `1`.
    static func int64(_ value: Any?) -> Int64? {
        guard let value, let n = value as? NSNumber, !isBool(n) else { return nil }
        return Int64(n.description)
    }

    static func uint64(_ value: Any?) -> UInt64? {
        guard let value, let n = value as? NSNumber, !isBool(n) else { return nil }
        return UInt64(n.description)
    }

    /// NSDecimalNumber's doubleValue is not correctly rounded, its text is.
    static func double(_ value: Any?) -> Double? {
        guard let value, let n = value as? NSNumber, !isBool(n) else { return nil }
        return n is NSDecimalNumber ? Double(n.description) : n.doubleValue
    }

    static func bool(_ value: Any?) -> Bool? {
        guard let value, isBool(value) else { return nil }
        return (value as? NSNumber)?.boolValue
    }

    /// Exact scalar comparison: Swift's `==` on String would equate canonically equivalent forms.
    static func string(_ value: Any?, equals expected: String) -> Bool {
        guard let s = value as? String else { return false }
        return s.unicodeScalars.elementsEqual(expected.unicodeScalars)
    }

    static func value(_ value: Any?, equals expected: EventValue) -> Bool {
        switch expected {
        case .string(let s): return string(value, equals: s)
        case .int(let n): return int64(value) == n
        case .bool(let b): return bool(value) == b
        case .double(let d):
            guard d.isFinite else { return value is NSNull }
            return double(value)?.bitPattern == d.bitPattern
        }
    }

    /// The keys of the top-level object and of any object nested in it, in the order they appear in the bytes.
    static func keyOrder(_ line: [UInt8]) -> (top: [String], nested: [String]) {
        var top: [String] = []
        var nested: [String] = []
        var depth = 0
        var i = 0
        var expectingKey = false
        while i < line.count {
            let c = line[i]
            switch c {
            case UInt8(ascii: "{"):
                depth += 1
                expectingKey = true
                i += 1
            case UInt8(ascii: "}"):
                depth -= 1
                i += 1
            case UInt8(ascii: ","):
                expectingKey = true
                i += 1
            case UInt8(ascii: "\""):
                var j = i + 1
                while line[j] != UInt8(ascii: "\"") { j += line[j] == UInt8(ascii: "\\") ? 2 : 1 }
                if expectingKey {
                    // Decode through Foundation so escaped keys compare as text.
                    let text = (try? JSONSerialization.jsonObject(
                        with: Data(line[i...j]), options: [.fragmentsAllowed])) as? String ?? "<bad>"
                    if depth == 1 { top.append(text) } else { nested.append(text) }
                    expectingKey = false
                }
                i = j + 1
            default:
                i += 1
            }
        }
        return (top, nested)
    }
}

/// Random text for the JSONSerialization round trips. No U+FEFF: swift-corelibs-foundation's JSONSerialization
/// drops it at the start of a string or right after an escape (JSONDecoder keeps it), so it has its own test.
enum RandomText {
    static let specials: [Unicode.Scalar] = [
        "\u{2028}", "\u{2029}", "\u{FFFD}", "\u{0301}", "\u{200D}", "\u{FFFF}", "\u{10FFFF}",
        "\u{7F}", "\u{80}", "\u{1F600}", "\"", "\\", "/",
    ]

    static func scalar(using rng: inout SplitMix64) -> Unicode.Scalar {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: return Unicode.Scalar(UInt8.random(in: 0...0x1F, using: &rng))
        case 1: return Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &rng))
        case 2: return specials.randomElement(using: &rng)!
        case 3:
            while true {
                if let s = Unicode.Scalar(UInt32.random(in: 0x80...0xFFFF, using: &rng)), s != "\u{FEFF}" { return s }
            }
        case 4: return Unicode.Scalar(UInt32.random(in: 0x10000...0x10FFFF, using: &rng))!
        default: return Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &rng))
        }
    }

    static func string(using rng: inout SplitMix64, maxLength: Int = 24) -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<Int.random(in: 0...maxLength, using: &rng) { s.append(scalar(using: &rng)) }
        return String(s)
    }
}
