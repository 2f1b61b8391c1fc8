import Glibc
import KevdEvent
import KevdJournal

/// `status`: the reply a client gets, and the counts the daemon's one-line status reads.
extension Server {
    /// Connections with a subscription, for the daemon's one-line status.
    public var subscriberCount: Int { connections.values.reduce(0) { $0 + ($1.subscription == nil ? 0 : 1) } }

    /// How many events the slowest subscriber is behind the head (its `lag` in `status`); 0 without any.
    public var maxSubscriberLag: UInt64 {
        let next = context.pipeline.nextSeq
        return connections.values.reduce(0) { max($0, $1.subscription?.lag(nextSeq: next) ?? 0) }
    }

    func status(_ c: Connection, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op"]) { return c.replyError(bad) }
        let journal = context.journal
        let segments = (try? JournalDirectory.segments(in: journal.directory)) ?? []
        let head = context.pipeline.nextSeq - 1
        var subscribers: [JSONValue] = []
        for connection in connections.values.sorted(by: { $0.id < $1.id }) {
            guard let sub = connection.subscription else { continue }
            subscribers.append(
                .object([
                    ("id", .uint(connection.id)), ("uid", .uint(UInt64(connection.credentials.uid))),
                    ("pid", .int(Int64(connection.credentials.pid))), ("name", sub.name.map { .string($0) } ?? .null),
                    ("filter", .array(sub.terms.map { .string($0) })), ("next", .uint(sub.next)),
                    ("lag", .uint(sub.lag(nextSeq: head + 1))), ("mode", .string(sub.mode.rawValue)),
                    ("buffered", .int(Int64(connection.output.count))),
                ]))
        }
        var fields: [(String, JSONValue)] = [
            ("ok", .bool(true)), ("op", .string("status")), ("pid", .int(Int64(getpid()))), ("head", .uint(head)),
            ("durable", .uint(journal.durableSeq)),
            (
                "journal",
                .object([
                    ("directory", .string(journal.directory)), ("segments", .int(Int64(segments.count))),
                    ("bytes", .int(Int64(segments.reduce(0) { $0 + $1.size }))),
                    ("first", segments.first.map { .uint($0.firstSeq) } ?? .null),
                    ("sync", .string(journal.options.sync.rawValue)),
                    ("error", journal.lastError.map { .string($0) } ?? .null),
                ])
            ),
            ("clients", .int(Int64(connections.count))),
        ]
        fields += context.statusFields()
        fields.append(("subscribers", .array(subscribers)))
        c.reply(.object(fields))
    }
}
