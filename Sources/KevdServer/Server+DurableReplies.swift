import KevdEvent
import KevdJournal

/// Replies that wait for the journal: an emit's `ok` and an ack's stored position are sent only once the event
/// is durable (and, for an ack, its position stored), in request order per connection.
extension Server {
    /// Replies are sent in request order: a reply that waits holds back later ones on the same connection.
    func replyWhenDurable(_ c: Connection, seq: UInt64, reply: JSONValue) {
        if c.replyQueue.isEmpty && seq <= context.journal.durableSeq { return c.reply(reply) }
        c.reply(reply, waitingFor: max(seq, 1))
        waiting.insert(c.id)
    }

    /// The journal made everything up to `seq` durable: release the replies that waited for it.
    public func durableAdvanced(_ seq: UInt64) {
        for id in waiting {
            guard let c = connections[id] else {
                waiting.remove(id)
                continue
            }
            if let store = c.releaseReplies(durable: seq) {
                let token = nextToken
                nextToken += 1
                storing[token] = (id, store.name, store.seq)
                positions.store(store.name, seq: store.seq, token: token)
            }
            if c.replyQueue.isEmpty { waiting.remove(id) }
            dirty.insert(id)
        }
    }

    func positionStored(token: UInt64, ok: Bool) {
        guard let job = storing.removeValue(forKey: token), let c = connections[job.connection] else { return }
        c.stored(failure: ok ? nil : .object([("ok", .bool(false)), ("error", .string("could not store the position of '\(job.name)'"))]))
        dirty.insert(c.id)
        durableAdvanced(context.journal.durableSeq)  // Release replies queued behind this one.
    }
}
