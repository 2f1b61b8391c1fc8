import KevdEvent

/// Request lines: parse, dispatch by `op`. A new request type is one more case here and its handler in a
/// `Server+Job.swift` file of its own.
extension Server {
    func request(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        let value: JSONValue
        do {
            value = try JSONReader.parse(bytes)
        } catch {
            return c.replyError("malformed JSON: \(error)")
        }
        guard let object = value.objectValue else { return c.replyError("a request must be a JSON object") }
        guard let op = value["op"]?.stringValue else { return c.replyError("missing \"op\" (subscribe, ack, emit, status)") }
        switch op {
        case "status": status(c, object)
        case "emit": emit(c, value, object)
        case "subscribe": subscribe(c, value, object)
        case "ack": ack(c, value, object)
        default: c.replyError("unknown op '\(op)' (expected subscribe, ack, emit or status)")
        }
    }

    func unknownFields(_ object: [(String, JSONValue)], allowed: [String]) -> String? {
        object.first { !allowed.contains($0.0) }.map { "unknown field '\($0.0)'" }
    }
}
