/// A JSON value (RFC 8259) as `JSONReader` parses it: socket protocol requests and event lines read back.
///
/// Numbers keep their integer exactness: a seq may be any UInt64, which a Double cannot hold past 2^53. Objects
/// keep their members in document order, as the event line format is ordered and replies echo it.
public enum JSONValue: Sendable {
    case null
    case bool(Bool)
    /// An integer written without fraction or exponent that fits Int64.
    case int(Int64)
    /// An integer above `Int64.max` that fits UInt64. The reader uses `int` for everything that fits it.
    case uint(UInt64)
    /// A number with a fraction or an exponent, or an integer outside both Int64 and UInt64 (rounded).
    case double(Double)
    case string(String)
    case array([JSONValue])
    /// Members in document order. The reader rejects duplicate names, so a name finds at most one member.
    case object([(String, JSONValue)])
}

extension JSONValue: Equatable {
    /// Structural equality. Strings and names compare by their exact scalars (`"é"` and `"e\u0301"` are
    /// different JSON text), objects by their members in order, `int` and `uint` by mathematical value; an
    /// integer never equals a double (`1` and `1.0` are kept apart on purpose: kevd's data values do).
    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.int(let x), .int(let y)): return x == y
        case (.uint(let x), .uint(let y)): return x == y
        case (.int(let x), .uint(let y)), (.uint(let y), .int(let x)): return x >= 0 && UInt64(x) == y
        case (.double(let x), .double(let y)): return x == y
        case (.string(let x), .string(let y)): return x.utf8.elementsEqual(y.utf8)
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)):
            guard x.count == y.count else { return false }
            for (p, q) in zip(x, y) where !p.0.utf8.elementsEqual(q.0.utf8) || p.1 != q.1 { return false }
            return true
        default: return false
        }
    }
}

extension JSONValue {
    /// The member named `key` of an object (exact scalar match); nil when absent or when this is no object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0.utf8.elementsEqual(key.utf8) }?.1
    }

    /// The element at `index` of an array; nil when out of range or when this is no array.
    public subscript(index: Int) -> JSONValue? {
        guard case .array(let elements) = self, elements.indices.contains(index) else { return nil }
        return elements[index]
    }

    /// Whether this is `null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The value of a boolean; nil for anything else (no truthiness).
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The text of a string; nil for anything else.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The value of an integer that fits Int64; nil for doubles, even integral ones.
    public var int64Value: Int64? {
        switch self {
        case .int(let n): return n
        case .uint(let n): return Int64(exactly: n)
        default: return nil
        }
    }

    /// The value of a non-negative integer; nil for negative integers and for doubles.
    public var uint64Value: UInt64? {
        switch self {
        case .int(let n): return UInt64(exactly: n)
        case .uint(let n): return n
        default: return nil
        }
    }

    /// Any number as a Double (integers above 2^53 round).
    public var doubleValue: Double? {
        switch self {
        case .int(let n): return Double(n)
        case .uint(let n): return Double(n)
        case .double(let d): return d
        default: return nil
        }
    }

    /// The elements of an array; nil for anything else.
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The members of an object in document order; nil for anything else.
    public var objectValue: [(String, JSONValue)]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// Appends the compact JSON text (no whitespace, members in order). Strings are escaped as event lines
    /// are; a non-finite double, which JSON cannot express, is written as `null` like in event data.
    public func appendJSON(to out: inout [UInt8]) {
        switch self {
        case .null: JSONLineEncoder.appendNull(to: &out)
        case .bool(let b): JSONLineEncoder.appendBool(b, to: &out)
        case .int(let n): JSONLineEncoder.appendInt(n, to: &out)
        case .uint(let n): JSONLineEncoder.appendUInt(n, to: &out)
        case .double(let d): JSONLineEncoder.appendDouble(d, to: &out)
        case .string(let s): JSONLineEncoder.appendString(s, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                element.appendJSON(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, (name, value)) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONLineEncoder.appendString(name, to: &out)
                out.append(UInt8(ascii: ":"))
                value.appendJSON(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// The compact JSON text, as `appendJSON` writes it.
    public var jsonText: String {
        var out: [UInt8] = []
        appendJSON(to: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

extension JSONValue {
    /// The JSON form of an event data value.
    public init(_ value: EventValue) {
        switch value {
        case .string(let s): self = .string(s)
        case .int(let n): self = .int(n)
        case .double(let d): self = .double(d)
        case .bool(let b): self = .bool(b)
        }
    }
}
