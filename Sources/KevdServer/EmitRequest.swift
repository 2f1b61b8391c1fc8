import KevdEvent

/// The fields of an `emit` request, checked (docs/PROTOCOL.md): what a client may say about the event it emits.
/// Pure: who may emit, the rate, the cascade limit and the idempotency window are the server's decisions
/// (Server+Emit.swift); this only says whether the request is well formed, and if not, the error the client reads.
struct EmitRequest {
    var type: String
    var key: String
    var data: EventData
    /// The client's `idempotency_key`, scoped by its uid: two users cannot collide, nor replay each other's emits.
    var idempotencyKey: String?
    /// Where the emit comes from in a chain of rule runs, as the client says (kevctl reads it from the
    /// KEVD_EVENT_ID and KEVD_DEPTH a rule's script runs with). Unlike _uid it is not verified: it is there to
    /// trace events and to stop runaway cascades, not to decide who may do what.
    var cause: String?
    var depth: Int64?

    /// How many rule runs deep the emit is, for `[rules] cascade_limit`: nil without a cause. A cause without a
    /// depth comes from a rule run whose depth the client did not know: one deep.
    var cascadeDepth: Int64? { cause == nil ? nil : (depth ?? 1) }

    /// Reads the request's fields (unknown ones are refused before this, by the caller); the error is the reply.
    static func parse(_ value: JSONValue, uid: UInt32) -> Result<EmitRequest, RequestError> {
        guard let type = value["type"]?.stringValue, !type.isEmpty else {
            return .failure("emit needs a non-empty string \"type\"")
        }
        let key: String
        if let k = value["key"] {
            guard let text = k.stringValue else { return .failure("\"key\" must be a string") }
            key = text
        } else {
            key = ""
        }
        var data = EventData()
        if let d = value["data"] {
            guard let fields = d.objectValue else { return .failure("\"data\" must be an object") }
            for (name, v) in fields {
                guard !name.isEmpty, !name.hasPrefix("_") else {
                    return .failure("data field '\(name)': names starting with '_' are reserved for kevd")
                }
                switch v {
                case .string(let s): data.append(name, .string(s))
                case .bool(let b): data.append(name, .bool(b))
                case .int(let n): data.append(name, .int(n))
                case .uint(let n):
                    guard n <= UInt64(Int64.max) else { return .failure("data field '\(name)': number too large") }
                    data.append(name, .int(Int64(n)))
                case .double(let d): data.append(name, .double(d))
                default: return .failure("data field '\(name)': values must be strings, numbers or booleans")
                }
            }
        }
        var idempotencyKey: String? = nil
        if let k = value["idempotency_key"] {
            guard let text = k.stringValue, !text.isEmpty else {
                return .failure("\"idempotency_key\" must be a non-empty string")
            }
            idempotencyKey = "\(uid):\(text)"
        }
        var cause: String? = nil
        if let v = value["cause"] {
            guard let text = v.stringValue, !text.isEmpty, text.utf8.count <= 64 else {
                return .failure("\"cause\" must be a non-empty string of at most 64 bytes (an event id)")
            }
            cause = text
        }
        var depth: Int64? = nil
        if let v = value["depth"] {
            guard let n = v.int64Value, n >= 0 else {
                return .failure("\"depth\" must be an integer of at least 0")
            }
            guard cause != nil else {
                return .failure("\"depth\" needs a \"cause\": the event whose rule run is emitting")
            }
            depth = n
        }
        return .success(
            EmitRequest(type: type, key: key, data: data, idempotencyKey: idempotencyKey, cause: cause, depth: depth))
    }
}

/// A request the server refuses as malformed: the text is the `error` of the reply.
struct RequestError: Error, Equatable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    let message: String
    init(_ message: String) { self.message = message }
    init(stringLiteral value: String) { message = value }
    init(stringInterpolation: DefaultStringInterpolation) { message = String(stringInterpolation: stringInterpolation) }
}
