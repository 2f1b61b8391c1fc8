import KevdKernel

/// Told when the journal's durable position advances: the server (replies and positions that wait for it), the
/// forwarders (they read no further than it). One interface for all of them, registered on the journal.
///
/// Called on the thread that owns the journal (kevd's loop), in increasing seq order, whatever the sync policy:
/// from `Journal.applyFlusherReports` (the flusher's eventfd woke the loop) with `sync = batch`/`always`, from
/// `writePending` with `sync = none`.
public protocol JournalDurabilityObserver: AnyObject {
    /// Everything through `seq` survives a power cut (per the sync policy).
    func durableAdvanced(_ seq: UInt64)
}

/// The journal's durable position, advanced on the loop thread only.
///
/// The flusher thread never calls into the journal: it publishes how far it synced (an atomic) and signals
/// `flusherReports`, an eventfd the loop watches; the loop's handler calls `applyFlusherReports`, which moves
/// `durableSeq` and tells the observers. A failed sync signals the same eventfd, so the turn that follows
/// handles it (its `writePending`).
extension Journal {
    /// Adds `observer`, held weakly (observers hold the journal). It hears of advances from now on; the
    /// current position is `durableSeq`.
    public func addDurabilityObserver(_ observer: JournalDurabilityObserver) {
        durabilityObservers.append(WeakDurabilityObserver(observer))
    }

    /// Takes the flusher's news (loop thread): durable progress is applied and told to the observers. A failed
    /// sync is left to the next `writePending` (it only needs a turn, which this wakeup is).
    public func applyFlusherReports() {
        _ = try? flusherReports.drain()  // Non-blocking: 0 when nothing was signalled; it cannot fail otherwise.
        guard let flusher else { return }
        markDurable(flusher.durable)
    }

    /// Everything through `seq` is durable: trims what was kept for a rewrite, ends a repaired sync failure, and
    /// tells the observers. Loop thread only.
    func markDurable(_ seq: UInt64) {
        guard seq > durableSeq else { return }
        durableSeq = seq
        trimUnsynced(through: seq)
        if let failure = syncFailure, seq >= failure.lastSeq { syncRepaired(failure) }
        notifyDurable()
    }

    func notifyDurable() {
        let seq = durableSeq
        durabilityObservers.removeAll { $0.observer == nil }
        for entry in durabilityObservers { entry.observer?.durableAdvanced(seq) }
    }
}

struct WeakDurabilityObserver {
    weak var observer: JournalDurabilityObserver?
    init(_ observer: JournalDurabilityObserver) { self.observer = observer }
}
