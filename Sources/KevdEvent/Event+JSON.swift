/// Why a line is not an event, naming the field at fault.
public struct EventDecodingError: Error, Equatable, CustomStringConvertible {
    /// The field: `seq`, `time`, `data`, `data.NAME`; empty when the line is not a JSON object at all.
    public let field: String
    public let message: String

    /// An error about `field` (empty for the line as a whole).
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

extension Event {
    /// Decodes one line as `JSONLineEncoder` writes it; the trailing `\n` is optional.
    ///
    /// The eight fields must all be there with their types; fields it does not know are skipped, so a reader
    /// can read journals written by a newer kevd. The encoder writes a non-finite double as `null`, so a
    /// `null` data value reads back as NaN: the only way a decoded event can differ from the one encoded.
    public init(jsonLine: UnsafeRawBufferPointer) throws(EventDecodingError) {
        let value: JSONValue
        do {
            value = try JSONReader.parse(jsonLine)
        } catch {
            throw EventDecodingError(field: "", message: "not JSON: \(error)")
        }
        guard case .object = value else { throw EventDecodingError(field: "", message: "not a JSON object") }

        func member(_ name: String) throws(EventDecodingError) -> JSONValue {
            guard let v = value[name] else { throw EventDecodingError(field: name, message: "missing") }
            return v
        }
        func unsigned(_ name: String) throws(EventDecodingError) -> UInt64 {
            let v = try member(name)
            guard let n = v.uint64Value else {
                throw EventDecodingError(field: name, message: "expected an unsigned integer, found \(v.jsonText)")
            }
            return n
        }
        func string(_ name: String) throws(EventDecodingError) -> String {
            let v = try member(name)
            guard let s = v.stringValue else {
                throw EventDecodingError(field: name, message: "expected a string, found \(v.jsonText)")
            }
            return s
        }

        let seq = try unsigned("seq")
        let idText = try string("id")
        guard let id = EventID(idText) else {
            throw EventDecodingError(
                field: "id", message: "expected a UUID, found \(JSONValue.string(idText).jsonText)")
        }
        let timeText = try string("time")
        guard let time = WallTime(rfc3339: timeText) else {
            throw EventDecodingError(
                field: "time", message: "expected an RFC 3339 time, found \(JSONValue.string(timeText).jsonText)")
        }
        let mono = try unsigned("mono")
        let source = try string("source")
        let type = try string("type")
        let key = try string("key")

        let dataValue = try member("data")
        guard case .object(let members) = dataValue else {
            throw EventDecodingError(field: "data", message: "expected an object, found \(dataValue.jsonText)")
        }
        var data = EventData(capacity: members.count)
        for (name, v) in members {
            let field = "data." + name
            switch v {
            case .string(let s): data.append(name, .string(s))
            case .int(let n): data.append(name, .int(n))
            case .uint(let n):
                throw EventDecodingError(field: field, message: "integer \(n) does not fit a signed 64-bit value")
            case .double(let d): data.append(name, .double(d))
            case .bool(let b): data.append(name, .bool(b))
            case .null: data.append(name, .double(.nan))
            case .array, .object:
                throw EventDecodingError(field: field, message: "expected a string, number or boolean")
            }
        }
        self.init(
            seq: seq, id: id, time: time, mono: mono, source: EventSource(source), type: type, key: key, data: data)
    }

    /// Decodes one line as `JSONLineEncoder` writes it; see `init(jsonLine:)` for raw bytes.
    public init(jsonLine: [UInt8]) throws(EventDecodingError) {
        let result = jsonLine.withUnsafeBytes { raw in
            Result { () throws(EventDecodingError) in try Event(jsonLine: raw) }
        }
        self = try result.get()
    }
}
