import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor
import Logging
import SystemPackage

/// Keeps each start-up catch-up's checkpoint current (`CatchUpCheckpoint`): a sink that compacts the events of
/// the sources it tracks as they are published, and at each housekeeping tick (and once the start-up fold has
/// given it the earlier history) saves them at the last published seq on a helper thread (`kevd-checkpoint`),
/// never the loop: one small file per source, rewritten once a tick at most.
///
/// It is also a journal consumer: retention spares the records after the oldest saved checkpoint (they are what
/// the next start folds) while the disk allows; past the hard ceiling the fold finds the hole and a `kevd`/`gap`
/// (key `catchup:SOURCE`) names it.
final class CatchUpCheckpointer: EventSink {
    private final class Tracked {
        /// This run's events, compacted; once `ready`, over the earlier history too.
        var history: CompactedHistory
        /// The start-up fold gave the earlier history: from here on, `history` is the whole compaction.
        var ready = false
        var changed = false
        /// The seq the next start folds from (retention spares it and what follows); nil until known.
        var needed: UInt64?
        init(_ source: EventSource) { history = CompactedHistory(source: source) }
    }

    private let stateDirectory: String
    private let inbox: LoopInbox
    private let logger: Logger
    private var tracked: [EventSource: Tracked] = [:]
    private var lastSeq: UInt64 = 0
    private var lastID = EventID(high: 0, low: 0)
    private var writer: WorkerThread?
    private var writing = false
    private var retentionToken: Int?
    /// Saves done, and the seq of the last one (`status`).
    private(set) var saves = 0
    private(set) var savedSeq: UInt64?
    /// Called on the loop when a save fails (the daemon reports it once per episode).
    var onSaveFailure: ((String) -> Void)?
    private var failing = false

    init(stateDirectory: String, inbox: LoopInbox, logger: Logger) {
        self.stateDirectory = stateDirectory
        self.inbox = inbox
        self.logger = logger
    }

    /// Starts compacting `source`'s events (before its fold starts, so that none of this run's is missed).
    func track(_ source: EventSource, consumers: JournalConsumers) {
        guard CompactedHistory.tracks(source), tracked[source] == nil else { return }
        tracked[source] = Tracked(source)
        if retentionToken == nil {
            // Until a fold says where it started, its source needs the whole journal.
            retentionToken = consumers.register { [unowned self] in
                self.tracked.values.map { $0.needed ?? 0 }.min()
            }
        }
    }

    /// The source's fold failed: no checkpoint for it this run, and retention no longer waits for one.
    func untrack(_ source: EventSource) {
        tracked[source] = nil
    }

    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        lastSeq = event.seq
        lastID = event.id
        guard let entry = tracked[event.source] else { return }
        entry.history.apply(event, line: line)
        entry.changed = true
    }

    /// On the loop: the start-up fold of `source` read the earlier history (`outcome`). Saves a first
    /// checkpoint at once.
    func foldFinished(_ source: EventSource, outcome: JournalFold.Outcome) {
        guard let entry = tracked[source], !entry.ready else { return }
        entry.history = entry.history.merged(over: outcome.history)
        entry.ready = true
        entry.changed = true
        entry.needed = outcome.checkpointSeq.map { $0 + 1 } ?? 0
        saveIfDue()
    }

    /// On the loop (housekeeping): saves the checkpoints that changed or that the journal has moved past (an
    /// unchanged history saved at a later seq lets retention delete what the next start no longer folds), when
    /// no save is under way. An idle journal saves nothing.
    func saveIfDue() {
        guard !writing, lastSeq > 0 else { return }
        let due = tracked.values.filter { $0.ready && ($0.changed || ($0.needed ?? 0) <= lastSeq) }
        guard !due.isEmpty else { return }
        let seq = lastSeq
        let checkpoints = due.map { CatchUpCheckpoint(seq: seq, id: lastID.string, history: $0.history) }
        for entry in due { entry.changed = false }
        writer?.join()  // It posted its result, so it is ending.
        writing = true
        let stateDirectory = stateDirectory
        let inbox = inbox
        nonisolated(unsafe) weak let checkpointer = self
        do {
            writer = try WorkerThread(name: "kevd-checkpoint") {
                var failure: String?
                for checkpoint in checkpoints where !checkpoint.save(stateDirectory: stateDirectory) {
                    let path = CatchUpCheckpoint.path(stateDirectory: stateDirectory, source: checkpoint.history.source)
                    failure = "\(path): \(SyscallError(call: "save", errno: Errno(rawValue: errno)))"
                }
                let sources = checkpoints.map(\.history.source)
                let result = failure
                inbox.post { checkpointer?.saved(sources, seq: seq, failure: result) }
            }
        } catch {
            writing = false
            for entry in due { entry.changed = true }
            onSaveFailure?("cannot start the checkpoint writer: \(error)")
        }
    }

    private func saved(_ sources: [EventSource], seq: UInt64, failure: String?) {
        writing = false
        if let failure {
            for source in sources { tracked[source]?.changed = true }
            logger.error("catch-up checkpoint not saved", metadata: ["error": "\(failure)"])
            if !failing { onSaveFailure?(failure) }
            failing = true
            return
        }
        failing = false
        saves += 1
        savedSeq = seq
        for source in sources { tracked[source]?.needed = seq + 1 }
    }

    /// Waits for a save under way: for shutdown.
    func stop() {
        writer?.join()
        writer = nil
    }
}
