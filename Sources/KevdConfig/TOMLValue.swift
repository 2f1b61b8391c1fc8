import CKevdTOML

/// A parsed TOML value, as the loaders read it: toml++'s tree (CKevdTOML) copied into Swift values at once, so
/// nothing of the C++ document outlives the parse.
enum TOMLValue {
    case table(TOMLTable)
    case array([TOMLValue])
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    /// A date, a time or a date-time: no setting takes one, so only that it is one is kept (a "must be a
    /// string" error is all it can give).
    case dateOrTime

    var table: TOMLTable? {
        if case .table(let t) = self { return t }
        return nil
    }

    var array: [TOMLValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// An integer (never a float, even a whole one).
    var int: Int? {
        if case .integer(let n) = self { return Int(n) }
        return nil
    }

    var bool: Bool? {
        if case .boolean(let b) = self { return b }
        return nil
    }
}

/// A TOML table: a document's root, a `[header]`'s table, one `[[header]]` element or an inline table.
struct TOMLTable {
    /// In toml++'s order (by the keys' bytes), which is the order unknown keys are reported in.
    let keys: [String]
    private let values: [String: TOMLValue]

    subscript(key: String) -> TOMLValue? { values[key] }
}

/// Why a document is not TOML, where toml++ found it (1-based; line 0 when memory ran out).
struct TOMLSyntaxError: Error {
    let line: Int
    let column: Int
    let message: String
}

extension TOMLTable {
    /// Parses a whole document with toml++.
    init(parsing source: String) throws(TOMLSyntaxError) {
        var error = kevd_toml_error()
        var text = source
        guard let document = text.withUTF8({ kevd_toml_parse($0.baseAddress, $0.count, &error) }) else {
            let message = withUnsafeBytes(of: &error.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw TOMLSyntaxError(line: Int(error.line), column: Int(error.column), message: message)
        }
        defer { kevd_toml_free(document) }
        self.init(node: kevd_toml_root(document))
    }

    fileprivate init(node: OpaquePointer) {
        let count = kevd_toml_count(node)
        var keyBytes = [UnsafePointer<CChar>?](repeating: nil, count: count)
        var keyLengths = [Int](repeating: 0, count: count)
        var nodes = [OpaquePointer?](repeating: nil, count: count)
        kevd_toml_table_entries(node, &keyBytes, &keyLengths, &nodes)
        var keys: [String] = []
        keys.reserveCapacity(count)
        var values: [String: TOMLValue] = [:]
        values.reserveCapacity(count)
        for i in 0..<count {
            let key = String(decoding: UnsafeRawBufferPointer(start: keyBytes[i], count: keyLengths[i]), as: UTF8.self)
            keys.append(key)
            values[key] = TOMLValue(node: nodes[i]!)
        }
        self.keys = keys
        self.values = values
    }
}

extension TOMLValue {
    fileprivate init(node: OpaquePointer) {
        switch kevd_toml_type_of(node) {
        case KEVD_TOML_TABLE:
            self = .table(TOMLTable(node: node))
        case KEVD_TOML_ARRAY:
            self = .array((0..<kevd_toml_count(node)).map { TOMLValue(node: kevd_toml_array_element(node, $0)) })
        case KEVD_TOML_STRING:
            var length = 0
            let bytes = kevd_toml_string(node, &length)
            self = .string(String(decoding: UnsafeRawBufferPointer(start: bytes, count: length), as: UTF8.self))
        case KEVD_TOML_INTEGER:
            self = .integer(kevd_toml_integer(node))
        case KEVD_TOML_FLOAT:
            self = .float(kevd_toml_float(node))
        case KEVD_TOML_BOOLEAN:
            self = .boolean(kevd_toml_boolean(node))
        default:
            self = .dateOrTime
        }
    }
}
