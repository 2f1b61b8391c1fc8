import DequeModule

/// What a forwarder may store as its position, given acknowledgements that come back in any order: the
/// forwarder's core invariant. The position is the last seq such that every event up to it was acknowledged by
/// JetStream or read and not published (filtered out, not an event line, deleted by retention). It never passes
/// an event still in flight or one whose publish failed, so a restart from the stored position publishes again
/// whatever JetStream may not hold (duplicates, which its window collapses), and skips nothing it does not hold.
///
/// Pure: the forwarder keeps one behind its lock and calls it from its own thread and libnats's.
struct AcknowledgedPrefix {
    enum Outcome { case inFlight, acknowledged, failed }

    /// The last seq such that every event up to it is acknowledged (or filtered out): what may be stored.
    private(set) var position: UInt64
    /// The last seq read from the journal (published or filtered out).
    private(set) var readThrough: UInt64
    /// Published seqs in order, with what became of each.
    private var pending = Deque<(seq: UInt64, outcome: Outcome)>()

    /// Starting after `position` (the stored one): nothing read, nothing in flight.
    init(position: UInt64) {
        self.position = position
        readThrough = position
    }

    /// Nothing published since the last rewind is unresolved or held back by an unresolved one.
    var isSettled: Bool { pending.isEmpty }

    /// `seq` was handed to the connection; its acknowledgement is awaited.
    mutating func published(_ seq: UInt64) {
        pending.append((seq, .inFlight))
        readThrough = seq
    }

    /// `seq` was read but is not published (filtered out, or not an event line): it counts as done once
    /// everything before it is.
    mutating func skipped(_ seq: UInt64) {
        readThrough = seq
        if pending.isEmpty { position = seq }
    }

    /// Seqs up to `seq` will never be read (journal retention deleted them): the read point moves over them.
    mutating func markRead(through seq: UInt64) {
        readThrough = max(readThrough, seq)
        if pending.isEmpty { position = readThrough }
    }

    /// JetStream acknowledged `seq` (`failed` false) or refused it, or its acknowledgement was lost (true).
    /// False when no publish of `seq` is in flight: a report for an older connection's publish, or a second report
    /// for the same one; it changes nothing.
    mutating func resolve(_ seq: UInt64, failed: Bool) -> Bool {
        // Binary search: acknowledgements come mostly in order, so usually the first probe hits.
        var low = 0
        var high = pending.count
        while low < high {
            let mid = (low + high) / 2
            if pending[mid].seq < seq { low = mid + 1 } else { high = mid }
        }
        guard low < pending.count, pending[low].seq == seq, pending[low].outcome == .inFlight else { return false }
        if failed {
            pending[low].outcome = .failed
        } else {
            pending[low].outcome = .acknowledged
            if low == 0 { advance() }
        }
        return true
    }

    /// After a failure (once nothing is in flight) or a lost connection: forget what was published past the
    /// position; reading resumes after it, publishing again whatever was not acknowledged in order.
    mutating func rewind() {
        pending.removeAll()
        readThrough = position
    }

    private mutating func advance() {
        while let first = pending.first, first.outcome == .acknowledged { pending.removeFirst() }
        position = pending.first.map { $0.seq - 1 } ?? readThrough
    }
}
