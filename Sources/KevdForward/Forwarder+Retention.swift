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

    /// The stored position, from the file or its backup (`PositionFile`). A file that cannot be read or is
    /// damaged is reported as a `kevd`/`error`; with its backup unreadable too, the forwarder starts at the
    /// oldest record kept, as a new one does: events are published again (JetStream's duplicate window
    /// collapses the recent ones), none is skipped.
    static func loadPosition(_ path: String, reportingTo consumers: JournalConsumers, as name: String) -> UInt64 {
        let loaded = PositionFile.load(path) { bytes -> UInt64? in
            guard bytes.last == UInt8(ascii: "\n") else { return nil }
            return UInt64(String(decoding: bytes.dropLast(), as: UTF8.self))
        }
        if let problem = loaded.problem {
            let resolution = loaded.value.map { "resuming after seq \($0)" }
                ?? "publishing again from the oldest record kept (duplicates, not gaps)"
            consumers.positionProblem(name, "stored position of \(name) unreadable: \(problem); \(resolution)")
        }
        return loaded.value ?? 0
    }
}
