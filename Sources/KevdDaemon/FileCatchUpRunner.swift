import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import KevdSources
import KevdSpec
import Logging
import Synchronization

/// Runs file catch-up jobs (FileCatchUp) on a helper thread, `kevd-filecatch`, one job at a time: read the
/// snapshots, fold the journal, scan the trees, hand the differences to the loop in batches of `batchSize`
/// events (the thread waits for each batch to be published before it sends the next, so a large difference
/// neither holds a loop turn nor piles up in memory), and write the new snapshots.
final class FileCatchUpRunner {
    struct Job: Sendable {
        /// Why a job runs (also `running` in `status`, and the log's `catchup.reason`).
        enum Reason: String, Sendable {
            /// The start-up diff, once the watches are armed.
            case start
            /// The diff after a queue overflow (inotify's once its rescan re-armed the watches).
            case overflow
            /// A tick's snapshot refresh: nothing to report, the snapshots brought up to date.
            case refresh
            /// The clean stop's last refresh (on the main thread, after the loop).
            case stop
        }

        var specs: [WatchSpec]
        /// The journal's next seq when the job began: the new snapshots' seq, and the end of the journal fold.
        var seq: UInt64
        var reason: Reason
        /// The snapshot files (names in `directory`) of every root configured with catch-up now: when set, the
        /// job deletes every other snapshot there once it has written its own (see `FileCatchUp.pruneSnapshots`).
        var keep: Set<String>? = nil

        /// Publish the differences (start-up, overflow); a refresh only writes the snapshots.
        var report: Bool { reason == .start || reason == .overflow }
    }

    /// What a job's thread posts to the loop when it ends.
    struct Outcome: Sendable {
        var published = 0
        var errors: [String] = []
        var seconds: Double = 0
        /// A refresh that wrote nothing (events were still queued after its scan, or an overflow came).
        var abandoned = false
        /// Snapshots of roots no longer configured, deleted.
        var pruned = 0
        /// What could not be deleted: logged, not reported as an error event (nothing is lost or reported twice
        /// for it; the file is tried again at the next start or refresh).
        var pruneErrors: [String] = []
    }

    static let batchSize = 256

    /// Wakes the thread when the loop published a batch (or when shutdown stops it).
    final class Gate: @unchecked Sendable {
        private var semaphore = sem_t()
        init() { sem_init(&semaphore, 0, 0) }
        deinit { sem_destroy(&semaphore) }
        func signal() { sem_post(&semaphore) }
        func wait() { while sem_wait(&semaphore) != 0 && errno == EINTR {} }
    }

    let directory: String
    let journalDirectory: String
    let inbox: LoopInbox
    private var thread: WorkerThread?
    private let stopping = JournalFold.StopFlag()
    private let gate = Gate()
    /// Raised when an overflow came during a refresh: its scan may have taken in changes whose events were lost,
    /// so it must not replace the snapshot the overflow's diff compares with.
    private let abandonRefresh = JournalFold.StopFlag()
    /// Publishes one batch on the loop.
    let publish: @Sendable ([EventDraft]) -> Void
    /// On the loop, after a refresh's scan: whether every change the kernels queued so far is journaled (so the
    /// scan took in nothing a SIGKILL could still take from the journal). If not, the refresh writes nothing.
    let everythingJournaled: @Sendable () -> Bool

    var running: Job?
    /// Jobs asked for while one ran (an overflow during the start-up catch-up): run next, in order.
    var queued: [Job] = []

    // What `status` shows (`sources.file_catchup`).
    var startUpDone = false
    var published = 0
    var overflowDiffs = 0
    var refreshes = 0
    var refreshesAbandoned = 0
    var longestBatchNanoseconds: UInt64 = 0
    var lastJobSeconds: Double = 0
    var lastJobEnded: UInt64 = 0
    /// The `inotify` events counted (by the stats counter) when the last job ended: a refresh is due when more came.
    var inotifyCountAtLastJob: UInt64 = 0
    var inotifyCountAtJobStart: UInt64 = 0
    /// The roots a finished job wrote a snapshot for: a root added by a reload gets its first at the next tick.
    var snapshotted: Set<String> = []

    init(
        directory: String, journalDirectory: String, inbox: LoopInbox,
        everythingJournaled: @escaping @Sendable () -> Bool, publish: @escaping @Sendable ([EventDraft]) -> Void
    ) {
        self.everythingJournaled = everythingJournaled
        self.directory = directory
        self.journalDirectory = journalDirectory
        self.inbox = inbox
        self.publish = publish
    }

    /// On the loop: runs `job` now, or after the running one. `done` runs on the loop when it ended.
    func run(_ job: Job, done: @escaping @Sendable (Job, Outcome) -> Void) throws {
        guard running == nil else {
            queued.append(job)
            return
        }
        thread?.join()  // the previous job's thread has posted its outcome: it is ending.
        running = job
        abandonRefresh.raised.store(false, ordering: .relaxed)
        let directory = directory
        let journalDirectory = journalDirectory
        let inbox = inbox
        let publish = publish
        let everythingJournaled = everythingJournaled
        let confirmed = Confirmation()
        thread = try WorkerThread(name: "kevd-filecatch") { [stopping, gate, abandonRefresh] in
            let outcome = Self.work(
                job, directory: directory, journalDirectory: journalDirectory, stopping: stopping,
                abandon: abandonRefresh
            ) { batch in
                inbox.post {
                    publish(batch)
                    gate.signal()
                }
                gate.wait()
                return !stopping.raised.load(ordering: .relaxed)
            } confirm: {
                inbox.post {
                    confirmed.value.store(everythingJournaled(), ordering: .relaxed)
                    gate.signal()
                }
                gate.wait()
                return !stopping.raised.load(ordering: .relaxed) && confirmed.value.load(ordering: .relaxed)
            }
            guard !stopping.raised.load(ordering: .relaxed) else { return }
            inbox.post { done(job, outcome) }
        }
    }

    final class Confirmation: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// On the loop, at an overflow: a refresh running now keeps the snapshots it has (see `abandonRefresh`).
    func overflowed() {
        if let running, !running.report { abandonRefresh.raised.store(true, ordering: .relaxed) }
    }

    /// On the loop, when a job's outcome was applied: the next queued job, if any.
    func next() -> Job? {
        running = nil
        return queued.isEmpty ? nil : queued.removeFirst()
    }

    /// Stops the thread (at its next entry or batch) and waits for it: for shutdown.
    func stop() {
        stopping.raised.store(true, ordering: .relaxed)
        gate.signal()
        thread?.join()
        thread = nil
    }

    /// The job itself, on the helper thread. `send` hands a batch to the loop and returns once it is published
    /// (false: stop).
    static func work(
        _ job: Job, directory: String, journalDirectory: String, stopping: JournalFold.StopFlag,
        abandon: JournalFold.StopFlag, send: ([EventDraft]) -> Bool, confirm: () -> Bool
    ) -> Outcome {
        let started = Clock.monotonicNanoseconds()
        var outcome = Outcome()
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            outcome.errors.append("cannot make \(directory): \(String(cString: strerror(errno)))")
            return outcome
        }
        var old: [FileCatchUp.Snapshot?] = []
        for spec in job.specs {
            do {
                old.append(try FileCatchUp.read(FileCatchUp.snapshotPath(directory: directory, root: spec.path), root: spec.path))
            } catch {
                // Damaged: this root starts again from a new snapshot; what changed meanwhile cannot be told.
                outcome.errors.append("\(error)")
                old.append(nil)
            }
        }
        // What the live stream reported gone since each snapshot.
        var gone = [Set<String>](repeating: [], count: job.specs.count)
        var createdDirectories = [Set<String>](repeating: [], count: job.specs.count)
        if job.report, let since = old.compactMap({ $0?.seq }).min(), since < job.seq {
            do {
                try JournalFold.forEachEvent(
                    of: .inotify, in: journalDirectory, from: since, before: job.seq, stopping: stopping
                ) { event in
                    guard event.seq >= since else { return }
                    for (i, spec) in job.specs.enumerated() {
                        guard let snapshot = old[i], event.seq >= snapshot.seq else { continue }
                        FileCatchUp.fold(event, root: spec.path, into: &gone[i], createdDirectories: &createdDirectories[i])
                    }
                }
            } catch {
                // Without the fold, paths deleted live are reported again (marked catchup): a duplicate, not a miss.
                outcome.errors.append("cannot read the journal's file events: \(error)")
            }
        }
        // A refresh scans every root first, then asks the loop whether all changes queued meanwhile are journaled.
        var scanned: [[FileCatchUp.Entry]] = []
        if !job.report {
            for spec in job.specs {
                if stopping.raised.load(ordering: .relaxed) { return outcome }
                scanned.append(FileCatchUp.scan(spec, exclusion: WatchExclusion(spec), stopping: stopping))
            }
            guard confirm() else {
                outcome.abandoned = true
                return outcome
            }
        }
        for (i, spec) in job.specs.enumerated() {
            if stopping.raised.load(ordering: .relaxed) { return outcome }
            let entries = job.report ? FileCatchUp.scan(spec, exclusion: WatchExclusion(spec), stopping: stopping) : scanned[i]
            if stopping.raised.load(ordering: .relaxed) { return outcome }
            if job.report, let before = old[i] {
                let changes = FileCatchUp.diff(
                    old: before.entries, new: entries, goneLive: gone[i], createdLive: createdDirectories[i])
                let drafts = FileCatchUp.drafts(changes, spec: spec)
                var start = 0
                while start < drafts.count {
                    let end = min(start + batchSize, drafts.count)
                    guard send(Array(drafts[start..<end])) else { return outcome }
                    outcome.published += end - start
                    start = end
                }
            }
            old[i] = nil  // the old snapshot's memory goes before the new one is written
            if !job.report && abandon.raised.load(ordering: .relaxed) {
                outcome.abandoned = true
                return outcome
            }
            do {
                try FileCatchUp.write(
                    FileCatchUp.Snapshot(root: spec.path, seq: job.seq, entries: entries),
                    to: FileCatchUp.snapshotPath(directory: directory, root: spec.path))
            } catch {
                outcome.errors.append("cannot write the snapshot of \(spec.path): \(error)")
            }
        }
        if let keep = job.keep, !stopping.raised.load(ordering: .relaxed) {
            outcome.pruned = FileCatchUp.pruneSnapshots(in: directory, keeping: keep, errors: &outcome.pruneErrors)
        }
        outcome.seconds = Double(Clock.monotonicNanoseconds() &- started) / 1e9
        // The diff's tables are transient (about 300 bytes an entry at their peak): back to the kernel, here on
        // the helper thread rather than on the loop.
        Heap.trim()
        return outcome
    }
}
