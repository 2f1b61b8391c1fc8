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

    /// Calls `body` with each event of `source` among the records before `beforeSeq` (earlier runs': this run's
    /// live events are not history), in journal order, until `stopping` is raised. Most records are another
    /// source's: a byte search first, a decode only for the few that can be this one's.
    static func forEachEvent(
        of source: EventSource, in journalDirectory: String, from fromSeq: UInt64 = 0, before beforeSeq: UInt64,
        stopping: StopFlag, _ body: (Event) -> Void
    ) throws {
        let reader = try JournalReader(directory: journalDirectory)
        // File catch-up reads only the events after its snapshots (the seek skips whole segments).
        if fromSeq > 0 { try reader.seek(.seq(fromSeq)) }
        let needle = Array("\"source\":\"\(source.name)\"".utf8)
        while let record = try reader.next() {
            if record.seq >= beforeSeq || stopping.raised.load(ordering: .relaxed) { break }
            guard record.payloadContains(needle), let event = try? Event(jsonLine: record.payload),
                event.source == source
            else { continue }
            body(event)
        }
    }
}
