import KevdEvent
import KevdFuzzSupport
import KevdSpec

/// One client request line, as the server's `request(_:_:)` takes it apart (Sources/KevdServer/Server.swift):
/// the JSON reader, then the checks each op makes of its fields that need no daemon state (filter terms,
/// subscription names, `from`, emit data). What reaches the journal must read back; every reply must be JSON.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    reply(handle(bytes))
    return 0
}

/// The error a request gets, or nil when it passes.
func handle(_ bytes: UnsafeRawBufferPointer) -> String? {
    let value: JSONValue
    do {
        value = try JSONReader.parse(bytes)
    } catch {
        Fuzz.check(error.offset >= 0 && error.offset <= bytes.count, "error offset \(error.offset) outside the line")
        return "malformed JSON: \(error)"
    }
    // What the reader accepted, written again, reads back the same (the replies and `jsonText` rely on it).
    var text: [UInt8] = []
    value.appendJSON(to: &text)
    let again = try? JSONReader.parse(text)
    Fuzz.check(again == value, "JSON does not survive a round trip: \(String(decoding: text, as: UTF8.self))")

    guard value.objectValue != nil else { return "a request must be a JSON object" }
    guard let op = value["op"]?.stringValue else { return "missing \"op\"" }
    switch op {
    case "subscribe": return subscribe(value)
    case "emit": return emit(value)
    case "ack": return value["seq"]?.uint64Value == nil ? "ack needs a \"seq\"" : nil
    case "status": return nil
    default: return "unknown op '\(op)' (expected subscribe, ack, emit or status)"
    }
}

func subscribe(_ value: JSONValue) -> String? {
    var terms: [String] = []
    if let f = value["filter"] {
        guard let array = f.arrayValue else { return "\"filter\" must be a list of terms" }
        for term in array {
            guard let text = term.stringValue else { return "filter terms must be strings" }
            terms.append(text)
        }
    }
    do {
        _ = try EventFilter(terms: terms)
    } catch {
        return "\(error)"
    }
    if let n = value["name"] {
        guard let text = n.stringValue, PositionName.isValid(text) else { return "bad name" }
    }
    if let from = value["from"], let text = from.stringValue, text != "new", text != "all" {
        guard let time = WallTime(rfc3339: text) else { return "bad from" }
        // A time a client names is written back in replies and events: it must print and read back.
        Fuzz.check(WallTime(rfc3339: time.rfc3339) == time, "RFC 3339 time does not round-trip: \(text) -> \(time.rfc3339)")
    }
    return nil
}

func emit(_ value: JSONValue) -> String? {
    guard let type = value["type"]?.stringValue, !type.isEmpty else { return "emit needs a type" }
    var key = ""
    if let k = value["key"] {
        guard let text = k.stringValue else { return "\"key\" must be a string" }
        key = text
    }
    var data = EventData()
    if let d = value["data"] {
        guard let fields = d.objectValue else { return "\"data\" must be an object" }
        for (name, v) in fields {
            guard !name.isEmpty, !name.hasPrefix("_") else { return "reserved name" }
            switch v {
            case .string(let s): data.append(name, .string(s))
            case .bool(let b): data.append(name, .bool(b))
            case .int(let n): data.append(name, .int(n))
            case .uint(let n):
                guard n <= UInt64(Int64.max) else { return "number too large" }
                data.append(name, .int(Int64(n)))
            case .double(let d): data.append(name, .double(d))
            default: return "values must be strings, numbers or booleans"
            }
        }
    }
    data.append("_uid", .int(1000))
    data.append("_gid", .int(1000))
    data.append("_pid", .int(4242))
    Fuzz.checkRoundTrip(Fuzz.stamp(EventDraft(source: EventSource("emit"), type: type, key: key, data: data)))
    return nil
}

/// The server's error reply quotes what the client sent: it must still be one valid JSON line.
func reply(_ error: String?) {
    guard let error else { return }
    var line: [UInt8] = []
    JSONValue.object([("ok", .bool(false)), ("error", .string(error))]).appendJSON(to: &line)
    Fuzz.check(!line.contains(UInt8(ascii: "\n")), "a reply spans lines")
    Fuzz.check((try? JSONReader.parse(line)) != nil, "a reply is not JSON: \(String(decoding: line, as: UTF8.self))")
}

@_cdecl("FuzzRequest_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzRequest)
}
