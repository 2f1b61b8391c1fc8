import KevdEvent

/// One line the server sent, told apart by its first key as docs/PROTOCOL.md ("Lines the server sends") says.
public enum ServerMessage {
    /// `{"ok":…,…}`: the answer to one request, in request order.
    case reply(KevdReply)
    /// `{"seq":…,…}`: an event of this connection's subscription.
    case event(ReceivedEvent)
    /// `{"gap":{"from":A,"to":B},"reason":…}`: events A…B were deleted before they could be sent.
    case gap(KevdGap)

    /// The line as received, without its `\n`.
    public var line: [UInt8] {
        switch self {
        case .reply(let reply): return reply.line
        case .event(let event): return event.line
        case .gap(let gap): return gap.line
        }
    }

    /// Classifies and decodes one line (without `\n`).
    public static func parse(_ line: UnsafeRawBufferPointer) throws -> ServerMessage {
        // Event lines are the bulk of the traffic and the server writes them compactly: go straight to the
        // event decoder, which parses the line once, instead of parsing it generically first.
        if line.starts(with: eventPrefix) { return .event(try ReceivedEvent(line)) }
        let value: JSONValue
        do {
            value = try JSONReader.parse(line)
        } catch {
            throw KevdClientError.protocolViolation("\(error): \(excerpt(line))")
        }
        guard case .object(let members) = value, let first = members.first?.0 else {
            throw KevdClientError.protocolViolation("not a JSON object: \(excerpt(line))")
        }
        switch first {
        case "ok": return .reply(try KevdReply(value: value, line: Array(line)))
        case "seq": return .event(try ReceivedEvent(line))
        case "gap": return .gap(try KevdGap(value: value, line: Array(line)))
        default: throw KevdClientError.protocolViolation("unknown first key \"\(first)\": \(excerpt(line))")
        }
    }

    private static let eventPrefix = Array("{\"seq\":".utf8)

    /// The start of a bad line, for a message that stays readable.
    static func excerpt(_ line: UnsafeRawBufferPointer) -> String {
        let text = String(decoding: line.prefix(200), as: UTF8.self)
        return line.count > 200 ? text + "…" : text
    }
}

/// A reply line: `{"ok":true,"op":…,…}` or `{"ok":false,"error":…}`.
public struct KevdReply {
    /// The whole reply, members in the server's order.
    public let value: JSONValue
    /// The line as received, without `\n` (`status --json` prints it as is).
    public let line: [UInt8]

    init(value: JSONValue, line: [UInt8]) throws {
        guard value["ok"]?.boolValue != nil else {
            throw KevdClientError.protocolViolation("\"ok\" is not a boolean: \(value.jsonText)")
        }
        self.value = value
        self.line = line
    }

    public var ok: Bool { value["ok"]?.boolValue == true }
    /// The request's `op`, echoed in successful replies.
    public var op: String? { value["op"]?.stringValue }
    /// The server's explanation when `ok` is false.
    public var error: String? { value["error"]?.stringValue }

    /// A member of the reply.
    public subscript(name: String) -> JSONValue? { value[name] }
}

/// An event line: the decoded event and its exact bytes (as journaled).
public struct ReceivedEvent {
    public let event: Event
    /// The line as received, without `\n`: `--format json` prints exactly this.
    public let line: [UInt8]

    init(_ line: UnsafeRawBufferPointer) throws {
        do {
            event = try Event(jsonLine: line)
        } catch {
            throw KevdClientError.protocolViolation("bad event line (\(error)): \(ServerMessage.excerpt(line))")
        }
        self.line = Array(line)
    }
}

/// A gap line: events `from`…`to` (inclusive) were deleted by retention before this subscriber read them.
public struct KevdGap {
    public let from: UInt64
    public let to: UInt64
    public let reason: String
    /// The line as received, without `\n`.
    public let line: [UInt8]

    init(value: JSONValue, line: [UInt8]) throws {
        guard let from = value["gap"]?["from"]?.uint64Value, let to = value["gap"]?["to"]?.uint64Value else {
            throw KevdClientError.protocolViolation("a gap without from and to: \(value.jsonText)")
        }
        self.from = from
        self.to = to
        reason = value["reason"]?.stringValue ?? ""
        self.line = line
    }
}
