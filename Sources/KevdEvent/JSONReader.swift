/// Why a document is not JSON, and where.
public struct JSONParseError: Error, Equatable, CustomStringConvertible {
    public let message: String
    /// The byte offset in the input where the problem was found.
    public let offset: Int

    /// An error at byte `offset`.
    public init(message: String, offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict JSON parser (RFC 8259) for input kevd does not trust: socket requests from any local user and
/// journal lines that may have been damaged.
///
/// Strict means: exactly one value with only JSON whitespace around it (no byte order mark, no trailing
/// bytes), no leading zeros, no trailing commas, no comments, no raw control characters in strings, only valid
/// UTF-8 (no overlong forms, no encoded surrogates), `\u` escapes paired into scalars (a lone surrogate is an
/// error), no duplicate member names (two readers could otherwise pick different ones), and no number too large
/// for a Double. Nesting is limited to `maximumDepth` so hostile input cannot exhaust the stack; every step
/// consumes input, so parsing ends in time linear in the input size.
public enum JSONReader {
    /// The deepest nesting of arrays and objects accepted: `[[1]]` has depth 2.
    public static let maximumDepth = 64

    /// Parses `bytes` as one JSON document.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes)
        return try parser.document()
    }

    /// Parses `bytes` as one JSON document.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        // withUnsafeBytes does not forward a typed error; carry it out in a Result.
        let result = bytes.withUnsafeBytes { raw in Result { () throws(JSONParseError) in try parse(raw) } }
        return try result.get()
    }

    /// Parses the UTF-8 of `text` as one JSON document; offsets count its UTF-8 bytes.
    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var text = text
        let result = text.withUTF8 { utf8 in
            Result { () throws(JSONParseError) in try parse(UnsafeRawBufferPointer(utf8)) }
        }
        return try result.get()
    }
}

/// The recursive-descent parser behind `JSONReader`. Reads through a raw pointer: `bytes` outlives it.
struct JSONParser {
    private let bytes: UnsafeRawBufferPointer
    private var i = 0
    private var depth = 0
    /// Unescaped string bytes, reused across strings so only the final String allocates.
    private var scratch: [UInt8] = []

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func document() throws(JSONParseError) -> JSONValue {
        let value = try value()
        skipWhitespace()
        guard i == bytes.count else { throw failure("unexpected \(describe(i)) after the value") }
        return value
    }

    // MARK: - Values

    private mutating func value() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        guard i < bytes.count else { throw failure("unexpected end of input, expected a value") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("unexpected \(describe(i)), expected a value")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let start = i
        for k in 0..<word.utf8CodeUnitCount {
            guard i < bytes.count, bytes[i] == word.utf8Start[k] else {
                throw JSONParseError(message: "invalid literal, expected '\(word)'", offset: start)
            }
            i += 1
        }
    }

    private mutating func enter() throws(JSONParseError) {
        depth += 1
        guard depth <= JSONReader.maximumDepth else {
            throw failure("nesting deeper than \(JSONReader.maximumDepth) levels")
        }
        i += 1
    }

    private mutating func array() throws(JSONParseError) -> JSONValue {
        try enter()
        var elements: [JSONValue] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") {
            i += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            elements.append(try value())
            skipWhitespace()
            guard i < bytes.count else { throw failure("unexpected end of input in an array") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "]") {
                i += 1
                depth -= 1
                return .array(elements)
            } else {
                throw failure("unexpected \(describe(i)) in an array, expected ',' or ']'")
            }
        }
    }

    private mutating func object() throws(JSONParseError) -> JSONValue {
        try enter()
        var members: [(String, JSONValue)] = []
        // Small objects (all of kevd's) check for duplicates by a scan; a hash set takes over for big ones, so
        // a hostile object with many members costs linear time, not quadratic.
        var names: Set<[UInt8]>? = nil
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") {
            i += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard i < bytes.count else { throw failure("unexpected end of input in an object") }
            guard bytes[i] == UInt8(ascii: "\"") else {
                throw failure("unexpected \(describe(i)) in an object, expected a member name")
            }
            let nameOffset = i
            let name = try string()
            let duplicate: Bool
            // The set holds bytes, not Strings: String equality is canonical equivalence, and JSON names that
            // differ in their scalars are different names.
            if names != nil {
                duplicate = !names!.insert(Array(name.utf8)).inserted
            } else {
                duplicate = members.contains { $0.0.utf8.elementsEqual(name.utf8) }
                if members.count >= 16 {
                    var set = Set<[UInt8]>(minimumCapacity: 64)
                    for member in members { set.insert(Array(member.0.utf8)) }
                    set.insert(Array(name.utf8))
                    names = set
                }
            }
            guard !duplicate else {
                throw JSONParseError(message: "duplicate member name \(quoted(name))", offset: nameOffset)
            }
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else {
                throw failure("unexpected \(describe(i)) after a member name, expected ':'")
            }
            i += 1
            members.append((name, try value()))
            skipWhitespace()
            guard i < bytes.count else { throw failure("unexpected end of input in an object") }
            if bytes[i] == UInt8(ascii: ",") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "}") {
                i += 1
                depth -= 1
                return .object(members)
            } else {
                throw failure("unexpected \(describe(i)) in an object, expected ',' or '}'")
            }
        }
    }

    // MARK: - Numbers

    private func isDigit(_ k: Int) -> Bool { k < bytes.count && bytes[k] &- UInt8(ascii: "0") < 10 }

    private mutating func number() throws(JSONParseError) -> JSONValue {
        let start = i
        let negative = bytes[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        guard isDigit(i) else { throw failure("expected a digit after '-'") }
        let integerStart = i
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
            guard !isDigit(i) else { throw JSONParseError(message: "leading zero in a number", offset: integerStart) }
        } else {
            while isDigit(i) { i += 1 }
        }
        let integerEnd = i
        var isInteger = true
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            guard isDigit(i) else { throw failure("expected a digit after '.'") }
            while isDigit(i) { i += 1 }
            isInteger = false
        }
        if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard isDigit(i) else { throw failure("expected a digit in the exponent") }
            while isDigit(i) { i += 1 }
            isInteger = false
        }

        if isInteger, let magnitude = decimal(integerStart..<integerEnd) {
            if !negative {
                return magnitude <= UInt64(Int64.max) ? .int(Int64(magnitude)) : .uint(magnitude)
            }
            if magnitude <= UInt64(Int64.max) { return .int(-Int64(magnitude)) }
            if magnitude == UInt64(Int64.max) + 1 { return .int(.min) }
        }
        // The grammar is checked, so the text is a plain decimal that the stdlib converts correctly rounded and
        // independent of the C locale.
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else {
            throw JSONParseError(message: "number out of range", offset: start)
        }
        return .double(d)
    }

    /// The digits in `range` as a UInt64; nil on overflow.
    private func decimal(_ range: Range<Int>) -> UInt64? {
        var v: UInt64 = 0
        for k in range {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(bytes[k] &- UInt8(ascii: "0")))
            guard !o1, !o2 else { return nil }
            v = s
        }
        return v
    }

    // MARK: - Strings

    /// Parses a string starting at its opening quote.
    private mutating func string() throws(JSONParseError) -> String {
        let open = i
        i += 1
        let start = i
        // Fast path: most strings have no escapes, so validate in place and decode the slice once.
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
                i += 1
                return text
            }
            if b == UInt8(ascii: "\\") { break }
            try plainCharacter()
        }
        guard i < bytes.count else { throw JSONParseError(message: "unterminated string", offset: open) }

        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if b == UInt8(ascii: "\\") {
                try escape()
            } else {
                let from = i
                try plainCharacter()
                scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[from..<i]))
            }
        }
        throw JSONParseError(message: "unterminated string", offset: open)
    }

    /// Steps over one unescaped character at `i`: a printable ASCII byte or a valid UTF-8 sequence.
    @inline(__always)
    private mutating func plainCharacter() throws(JSONParseError) {
        let b = bytes[i]
        if b >= 0x20 && b < 0x80 {
            i += 1
            return
        }
        guard b >= 0x80 else { throw failure("control character \(describe(i)) in a string, must be escaped") }
        let length = utf8SequenceLength(at: i)
        guard length > 0 else { throw failure("invalid UTF-8 in a string") }
        i += length
    }

    /// The length of the well-formed UTF-8 sequence at `k` (RFC 3629 table 3-7), 0 when ill-formed.
    private func utf8SequenceLength(at k: Int) -> Int {
        let b0 = bytes[k]
        func continuation(_ offset: Int, _ low: UInt8 = 0x80, _ high: UInt8 = 0xBF) -> Bool {
            k + offset < bytes.count && (low...high).contains(bytes[k + offset])
        }
        switch b0 {
        case 0xC2...0xDF: return continuation(1) ? 2 : 0
        case 0xE0: return continuation(1, 0xA0) && continuation(2) ? 3 : 0
        case 0xE1...0xEC, 0xEE...0xEF: return continuation(1) && continuation(2) ? 3 : 0
        case 0xED: return continuation(1, 0x80, 0x9F) && continuation(2) ? 3 : 0  // no UTF-16 surrogates
        case 0xF0: return continuation(1, 0x90) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF1...0xF3: return continuation(1) && continuation(2) && continuation(3) ? 4 : 0
        case 0xF4: return continuation(1, 0x80, 0x8F) && continuation(2) && continuation(3) ? 4 : 0
        default: return 0
        }
    }

    /// Decodes the escape at `i` (a backslash) into `scratch`.
    private mutating func escape() throws(JSONParseError) {
        let start = i
        i += 1
        guard i < bytes.count else { throw failure("unterminated escape") }
        let c = bytes[i]
        i += 1
        switch c {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(c)
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "n"): scratch.append(0x0A)
        case UInt8(ascii: "r"): scratch.append(0x0D)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            let unit = try hex4()
            var scalar = UInt32(unit)
            if (0xDC00...0xDFFF).contains(unit) {
                throw JSONParseError(message: "lone low surrogate in a \\u escape", offset: start)
            }
            if (0xD800...0xDBFF).contains(unit) {
                guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                    throw JSONParseError(message: "lone high surrogate in a \\u escape", offset: start)
                }
                i += 2
                let low = try hex4()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw JSONParseError(message: "lone high surrogate in a \\u escape", offset: start)
                }
                scalar = 0x10000 + (UInt32(unit) - 0xD800) << 10 + (UInt32(low) - 0xDC00)
            }
            appendUTF8(scalar)
        default:
            throw JSONParseError(message: "invalid escape \(describe(i - 1))", offset: start)
        }
    }

    /// Appends a scalar (never a surrogate: `escape` pairs them) as UTF-8.
    private mutating func appendUTF8(_ scalar: UInt32) {
        switch scalar {
        case ..<0x80:
            scratch.append(UInt8(scalar))
        case ..<0x800:
            scratch.append(0xC0 | UInt8(scalar >> 6))
            scratch.append(0x80 | UInt8(scalar & 0x3F))
        case ..<0x10000:
            scratch.append(0xE0 | UInt8(scalar >> 12))
            scratch.append(0x80 | UInt8(scalar >> 6 & 0x3F))
            scratch.append(0x80 | UInt8(scalar & 0x3F))
        default:
            scratch.append(0xF0 | UInt8(scalar >> 18))
            scratch.append(0x80 | UInt8(scalar >> 12 & 0x3F))
            scratch.append(0x80 | UInt8(scalar >> 6 & 0x3F))
            scratch.append(0x80 | UInt8(scalar & 0x3F))
        }
    }

    private mutating func hex4() throws(JSONParseError) -> UInt16 {
        var v: UInt16 = 0
        for _ in 0..<4 {
            guard i < bytes.count else { throw failure("unexpected end of input in a \\u escape") }
            let b = bytes[i]
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: throw failure("expected a hex digit in a \\u escape, found \(describe(i))")
            }
            v = v << 4 | UInt16(digit)
            i += 1
        }
        return v
    }

    // MARK: - Helpers

    @inline(__always)
    private mutating func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x0A, 0x0D, 0x09: i += 1
            default: return
            }
        }
    }

    private func failure(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

    /// Names the byte at `k` for a message: printable ASCII quoted, anything else in hex.
    private func describe(_ k: Int) -> String {
        guard k < bytes.count else { return "end of input" }
        let b = bytes[k]
        if b > 0x20 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
        let hex: StaticString = "0123456789ABCDEF"
        return "byte 0x" + String(Character(Unicode.Scalar(hex.utf8Start[Int(b >> 4)])))
            + String(Character(Unicode.Scalar(hex.utf8Start[Int(b & 0xF)])))
    }

    private func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        JSONLineEncoder.appendString(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
