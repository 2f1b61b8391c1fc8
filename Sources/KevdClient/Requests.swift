import KevdEvent

/// Where a subscription starts (`from` in docs/PROTOCOL.md).
public enum SubscribeStart: Equatable, Sendable {
    /// Events published after the reply (the server's default).
    case new
    /// The oldest event the journal still has.
    case all
    /// That seq.
    case seq(UInt64)
    /// The first event at or after this RFC 3339 time.
    case time(WallTime)

    /// The request's `from` value.
    var json: JSONValue {
        switch self {
        case .new: return .string("new")
        case .all: return .string("all")
        case .seq(let seq): return .uint(seq)
        case .time(let time): return .string(time.rfc3339)
        }
    }
}

/// Request lines, built as `JSONValue` objects so every string is escaped by the one JSON writer.
///
/// Optional members are left out rather than sent as `null`: the server treats an absent member as its
/// default, and unknown or malformed members as errors.
public enum KevdRequest {
    /// `{"op":"subscribe","filter":[…],"from":…,"name":…}`.
    public static func subscribe(filter: [String], from: SubscribeStart?, name: String?) -> JSONValue {
        var members: [(String, JSONValue)] = [("op", .string("subscribe"))]
        if !filter.isEmpty { members.append(("filter", .array(filter.map { .string($0) }))) }
        if let from { members.append(("from", from.json)) }
        if let name { members.append(("name", .string(name))) }
        return .object(members)
    }

    /// `{"op":"ack","seq":N}`.
    public static func ack(_ seq: UInt64) -> JSONValue {
        .object([("op", .string("ack")), ("seq", .uint(seq))])
    }

    /// `{"op":"emit","type":…,"key":…,"data":{…},"idempotency_key":…,"cause":…,"depth":…}`; `depth` is sent
    /// only with a `cause` (the server refuses it alone).
    public static func emit(
        type: String, key: String?, data: [(String, EventValue)], idempotencyKey: String?, cause: String? = nil,
        depth: Int? = nil
    ) -> JSONValue {
        var members: [(String, JSONValue)] = [("op", .string("emit")), ("type", .string(type))]
        if let key { members.append(("key", .string(key))) }
        if !data.isEmpty {
            members.append(("data", .object(data.map { name, value in (name, JSONValue(value)) })))
        }
        if let idempotencyKey { members.append(("idempotency_key", .string(idempotencyKey))) }
        if let cause {
            members.append(("cause", .string(cause)))
            if let depth { members.append(("depth", .int(Int64(depth)))) }
        }
        return .object(members)
    }

    /// `{"op":"status"}`.
    public static let status: JSONValue = .object([("op", .string("status"))])
}
