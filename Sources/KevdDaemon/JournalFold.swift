import KevdEvent
import KevdJournal
import Synchronization

/// What the start-up catch-ups share (persistent timers, devices): reading the events one source journaled in
/// earlier runs, on a helper thread that shutdown can stop at the next record.
enum JournalFold {
    /// Set by `stop` on the loop thread, read by the fold's thread at every record.
    final class StopFlag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    struct FoldError: Error, Sendable { let description: String }

    /// What a fold read besides its events: the source's compacted history up to `beforeSeq` (the
    /// checkpointer's base), the checkpoint it started from, the seqs retention deleted between that checkpoint
    /// and the journal's oldest record (lost to the catch-up), and stored checkpoints that were damaged.
    struct Outcome: Sendable {
        var history: CompactedHistory
        var checkpointSeq: UInt64? = nil
        var lost: ClosedRange<UInt64>? = nil
        var problems: [String] = []
    }

    /// Calls `body` with each event of `source` among the records before `beforeSeq` (earlier runs': this run's
    /// live events are not history), in journal order, until `stopping` is raised. Most records are another
    /// source's: a byte search first, a decode only for the few that can be this one's.
    ///
    /// With `stateDirectory`, it starts from the source's stored checkpoint where the journal agrees with it
    /// (`CatchUpCheckpoint`): the checkpoint's events first, then only the records after its seq.
    @discardableResult
    static func forEachEvent(
        of source: EventSource, in journalDirectory: String, from fromSeq: UInt64 = 0, before beforeSeq: UInt64,
        stopping: StopFlag, checkpointsIn stateDirectory: String? = nil, _ body: (Event) -> Void
    ) throws -> Outcome {
        let reader = try JournalReader(directory: journalDirectory)
        var outcome = Outcome(history: CompactedHistory(source: source))
        // File catch-up reads only the events after its snapshots (the seek skips whole segments).
        var from = fromSeq
        if let stateDirectory {
            let stored = CatchUpCheckpoint.load(stateDirectory: stateDirectory, source: source)
            outcome.problems = stored.problems
            for checkpoint in stored.candidates where try checkpoint.agrees(with: reader, before: beforeSeq) {
                checkpoint.history.forEachEvent(body)
                outcome.history = checkpoint.history
                outcome.checkpointSeq = checkpoint.seq
                from = checkpoint.seq + 1
                if let first = reader.firstAvailableSeq, first > from { outcome.lost = from...(first - 1) }
                break
            }
        }
        try reader.seek(from == 0 ? .first : .seq(from))
        let needle = Array("\"source\":\"\(source.name)\"".utf8)
        while let record = try reader.next() {
            if record.seq >= beforeSeq || stopping.raised.load(ordering: .relaxed) { break }
            guard record.payloadContains(needle), let event = try? Event(jsonLine: record.payload),
                event.source == source
            else { continue }
            outcome.history.apply(event, line: record.payload)
            body(event)
        }
        return outcome
    }
}
