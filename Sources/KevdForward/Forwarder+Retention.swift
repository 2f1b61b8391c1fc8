import Glibc
import KevdJournal
import KevdKernel

extension Forwarder {
    /// The lowest seq this forwarder still needs from the journal: the one after its stored position (what a
    /// restart reads from; never ahead of what it has sent). Retention spares it below the hard ceiling.
    var lowestNeeded: UInt64 {
        let s = snapshot
        return min(s.position, s.stored) + 1
    }

    /// Seqs `from...to` are not in the journal any more: the reader goes on after them. `lost`: they were never
    /// forwarded (a stored position, or a jump mid-stream), so the loss is counted and reported as a
    /// `kevd`/`gap` with key `forward:NAME`; a new forwarder starting at the oldest record kept lost nothing.
    func skipDeleted(from: UInt64, to: UInt64, lost: Bool) {
        guard to >= from else { return }
        markRead(through: to, lost: lost ? to - from + 1 : 0)
        guard lost else { return }
        consumers.lost(consumerName, from: from, to: to)
        logger.error("events deleted by journal retention before they were forwarded", metadata: [
            "from": "\(from)", "to": "\(to)",
        ])
    }
}
