import KevdEvent
import KevdKernel

/// The journal failure episode: a failed write or sync becomes one `kevd`/`error`, a retry timer, kernel input
/// paused past a memory bound, and one `kevd`/`resumed` when the journal writes again. A turn-end step
/// (`EventPipeline.addTurnEndStep`), after the journal's write.
extension Daemon {
    /// While the journal cannot write, appended events wait in memory; past this many bytes kernel input is
    /// paused so that memory stays bounded (the kernel's queues overflow instead, which is reported).
    static let journalPendingLimit = 4 << 20

    /// The journal keeps the bytes written since its last good sync, to write them again should that sync fail;
    /// past this many (a disk slow to sync) kernel input is paused too, so that this copy stays bounded.
    static let journalUnsyncedLimit = 64 << 20

    static let journalRetryNanoseconds: Int64 = 1_000_000_000

    /// Runs after every turn's journal write. A write failure (ENOSPC, EIO) starts an episode: one
    /// `kevd`/`error` (not one per turn), emits refused by the server (`Journal.lastError`), a retry every
    /// second, and kernel input paused once the pending batch reaches `journalPendingLimit`: inotify's and
    /// the uevent socket's queues then overflow and are reported as `overflow` when input resumes, so loss is
    /// never silent. The first write that succeeds ends it with `kevd`/`resumed`. A failed sync is the same
    /// episode (`Journal.syncFailure`): the event names the errno and the seqs in doubt, and the episode ends
    /// once those are durable in a new segment. A turn-end step: what it publishes goes out in the same turn.
    @discardableResult
    func watchJournal() -> Bool {
        let error = journal.lastError
        loop.withhold(
            .kernelInput,
            (error != nil && journal.pendingBytes >= Self.journalPendingLimit)
                || journal.unsyncedBytes >= Self.journalUnsyncedLimit)
        switch (error, journalFailure) {
        case (nil, nil):
            return false
        case (let error?, nil):
            journalFailure = (error, Clock.monotonicNanoseconds())
            armJournalRetry(true)
            var data = EventData()
            if let sync = journal.syncFailure {
                data.append(
                    "message",
                    "a journal sync failed; the events in doubt are written again to a new segment and acknowledged once that is synced, and emits are refused meanwhile")
                data.append("errno", sync.errnoName)
                data.append("call", sync.call)
                data.append("from", .int(Int64(clamping: sync.firstSeq)))
                data.append("to", .int(Int64(clamping: sync.lastSeq)))
            } else {
                data.append("message", "cannot write the journal; emits are refused and events wait in memory until it can")
            }
            data.append("error", error)
            data.append("journal", journal.directory)
            data.append("pending_bytes", journal.pendingBytes)
            pipeline.publishKevd("error", component: "journal", data)
            return true
        case (_?, _?):
            return false
        case (nil, let failure?):
            journalFailure = nil
            armJournalRetry(false)
            let elapsed = Clock.monotonicNanoseconds() &- failure.since
            var data = EventData()
            data.append("message", "the journal is written again; emits are accepted")
            data.append("error", failure.error)
            data.append("journal", journal.directory)
            data.append("failed_ms", Int(elapsed / 1_000_000))
            data.append("durable", .int(Int64(clamping: journal.durableSeq)))
            logger.warning("journal writable again", metadata: ["error": "\(failure.error)", "failed_ms": "\(elapsed / 1_000_000)"])
            pipeline.publishKevd("resumed", component: "journal", data)
            return true
        }
    }

    func armJournalRetry(_ on: Bool) {
        do {
            if journalRetry == nil {
                let timer = try TimerFD(clock: .monotonic)
                // The turn-end write is the retry; the timer only makes sure a turn happens.
                try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { _ in _ = try? timer.read() }
                journalRetry = timer
            }
            if on {
                try journalRetry?.arm(delay: Self.journalRetryNanoseconds, interval: Self.journalRetryNanoseconds)
            } else {
                try journalRetry?.disarm()
            }
        } catch {
            // Without the timer, any other wakeup (an event, a client) still retries.
            logger.error("cannot arm the journal retry timer", metadata: ["error": "\(error)"])
        }
    }
}
