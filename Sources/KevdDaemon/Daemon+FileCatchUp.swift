import Glibc
import KevdEvent
import KevdKernel
import KevdSources
import KevdSpec

/// `[[watch]] catchup = true` (the default): at start, once the watches are armed, each root's tree is compared
/// with its snapshot and the differences are journaled as `inotify` events with `data.catchup = true`; the same
/// after an overflow of either backend (once inotify's rescan has re-armed its watches); and the snapshots are
/// refreshed off the loop when file events were journaled since (FileCatchUp, FileCatchUpRunner).
extension Daemon {
    /// How often the refresh timer looks whether a refresh is due, and the least time between two refreshes (also
    /// at least 20 times the last scan's duration, so a large tree is not rescanned for ever).
    /// `KEVD_FILE_CATCHUP_TICK_MS` shortens it for tests (a refresh in a test must not take 30 s).
    static let fileCatchUpTickNanoseconds: Int64 = {
        if let text = getenv("KEVD_FILE_CATCHUP_TICK_MS"), let ms = Int64(String(cString: text)), ms > 0 {
            return ms * 1_000_000
        }
        return 30_000_000_000
    }()

    var fileCatchUpSpecs: [WatchSpec] {
        ((inotify?.watchedSpecs ?? []) + (fanotify?.watchedSpecs ?? [])).filter(\.catchup)
    }

    func startFileCatchUp() throws {
        // The sources' roots: the config's and the rule files' `[[watch]]` tables (applied before this runs).
        guard !fileCatchUpSpecs.isEmpty else { return }
        // Weak and unchecked: the closures run on the loop thread (through the inbox), where the daemon lives.
        nonisolated(unsafe) weak let daemon = self
        fileCatchUp = FileCatchUpRunner(
            directory: config.daemon.stateDir + "/catchup", journalDirectory: journal.directory, inbox: loop.inbox,
            everythingJournaled: {
                guard let daemon else { return false }
                // Published is not yet journaled while the journal cannot write (a full disk): those events wait
                // in memory, where a SIGKILL takes them.
                return (daemon.inotify?.everythingPublished ?? true) && (daemon.fanotify?.everythingPublished ?? true)
                    && daemon.journal.pendingBytes == 0 && daemon.journal.lastError == nil
            }
        ) { batch in daemon?.publishCatchUp(batch) }
        let begin: () -> Void = {
            guard let daemon else { return }
            daemon.hookFileOverflows()
            daemon.runFileCatchUp(daemon.fileCatchUpSpecs, reason: .start)
        }
        if let inotify { inotify.whenWatchesArmed(begin) } else { begin() }
        let timer = try TimerFD(clock: .monotonic)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { _ in
            _ = try? timer.read()  // EAGAIN-only
            daemon?.fileCatchUpTick()
        }
        try timer.arm(delay: Self.fileCatchUpTickNanoseconds, interval: Self.fileCatchUpTickNanoseconds)
        fileCatchUpTimer = timer
    }

    /// Sources made since (a reload) report their overflows too.
    func hookFileOverflows() {
        nonisolated(unsafe) weak let daemon = self
        if let inotify {
            inotify.onOverflow = {
                guard let daemon, let inotify = daemon.inotify else { return }
                daemon.fileCatchUp?.overflowed()
                daemon.fileCatchUpOverflowsPending += 1
                // After the rescan: every watch re-armed, so what changes after the scan reads it is live.
                inotify.whenWatchesArmed {
                    daemon.fileCatchUpOverflowsPending -= 1
                    daemon.runFileCatchUp(inotify.watchedSpecs.filter(\.catchup), reason: .overflow)
                }
            }
        }
        if let fanotify {
            fanotify.onOverflow = {
                guard let daemon, let fanotify = daemon.fanotify else { return }
                daemon.fileCatchUp?.overflowed()
                daemon.runFileCatchUp(fanotify.watchedSpecs.filter(\.catchup), reason: .overflow)
            }
        }
    }

    func runFileCatchUp(_ specs: [WatchSpec], reason: FileCatchUpRunner.Job.Reason) {
        guard let runner = fileCatchUp else { return }
        if reason == .start && specs.isEmpty { runner.startUpDone = true }
        guard !specs.isEmpty else { return }
        // An overflow during an overflow's diff: one more diff after it is enough.
        if reason == .overflow && runner.queued.contains(where: { $0.reason == reason && $0.specs == specs }) { return }
        var job = FileCatchUpRunner.Job(specs: specs, seq: pipeline.nextSeq, reason: reason)
        if reason != .overflow { job.keep = configuredSnapshots }
        if runner.running == nil { runner.inotifyCountAtJobStart = stats.counter.counts.first ?? 0 }
        nonisolated(unsafe) weak let daemon = self
        do {
            try runner.run(job) { job, outcome in daemon?.fileCatchUpEnded(job, outcome) }
        } catch {
            if reason == .start { runner.startUpDone = true }
            reportError("cannot start the file catch-up", error: "\(error)", component: "inotify")
        }
    }

    /// The snapshot files of every root configured with catch-up (the config's and the rule files' `[[watch]]`,
    /// whether or not its backend could watch it now: a root whose file system is not mounted yet keeps its
    /// snapshot), or nil while a rule file has a problem: a broken file's roots may come back with its fix.
    var configuredSnapshots: Set<String>? {
        guard ruleProblems.isEmpty else { return nil }
        return Set((config.watches + ruleSet.watches).filter(\.catchup).map { FileCatchUp.snapshotName(root: $0.path) })
    }

    /// On the loop: one batch of a job's differences.
    func publishCatchUp(_ batch: [EventDraft]) {
        let start = Clock.monotonicNanoseconds()
        for draft in batch { pipeline.publish(draft) }
        guard let runner = fileCatchUp else { return }
        runner.published += batch.count
        runner.longestBatchNanoseconds = max(runner.longestBatchNanoseconds, Clock.monotonicNanoseconds() &- start)
    }

    func fileCatchUpEnded(_ job: FileCatchUpRunner.Job, _ outcome: FileCatchUpRunner.Outcome) {
        guard let runner = fileCatchUp else { return }
        switch job.reason {
        case .start: runner.startUpDone = true
        case .overflow: runner.overflowDiffs += 1
        case .refresh, .stop:
            if outcome.abandoned { runner.refreshesAbandoned += 1 } else { runner.refreshes += 1 }
        }
        runner.lastJobSeconds = outcome.seconds
        runner.lastJobEnded = Clock.monotonicNanoseconds()
        // An abandoned refresh is tried again at the next tick.
        // The count when the job began: events during its scan may be missing from its snapshot.
        if !outcome.abandoned {
            runner.inotifyCountAtLastJob = runner.inotifyCountAtJobStart
            // Also when a write failed (reported above): retried with the next refresh, not at every tick.
            runner.snapshotted.formUnion(job.specs.map(\.path))
        }
        for error in outcome.errors {
            reportError("file catch-up: some changes may be reported again, none is lost", error: error, component: "inotify")
        }
        for error in outcome.pruneErrors {
            logger.warning("file catch-up: an old snapshot was not deleted", metadata: ["error": "\(error)"])
        }
        logger.info(
            "files caught up",
            metadata: [
                "catchup.reason": "\(job.reason.rawValue)", "catchup.published": "\(outcome.published)",
                "catchup.seconds": "\(outcome.seconds)", "catchup.pruned": "\(outcome.pruned)",
            ])
        if let next = runner.next() {
            runFileCatchUp(next.specs, reason: next.reason)
        }
    }

    /// Every tick: a refresh of the snapshots when file events were journaled since the last job (so a restart
    /// after a SIGKILL reports again only what changed since the refresh), or when a root has none yet (added by
    /// a reload), not more often than the tick and 20 times the last job's duration.
    /// The file catch-up's runner when a refresh may replace the snapshots: the start-up diff is done, no job runs
    /// or waits, and no overflow's diff is owed (the old snapshots are what would report its differences).
    var idleFileCatchUp: FileCatchUpRunner? {
        guard let runner = fileCatchUp, runner.startUpDone, runner.running == nil, runner.queued.isEmpty,
            fileCatchUpOverflowsPending == 0
        else { return nil }
        return runner
    }

    func fileCatchUpTick() {
        guard let runner = idleFileCatchUp else { return }
        hookFileOverflows()
        let count = stats.counter.counts.first ?? 0
        let since = Clock.monotonicNanoseconds() &- runner.lastJobEnded
        let specs = fileCatchUpSpecs
        let unrecorded = specs.contains { !runner.snapshotted.contains($0.path) }
        guard count != runner.inotifyCountAtLastJob || unrecorded, Double(since) / 1e9 >= 20 * runner.lastJobSeconds
        else { return }
        runFileCatchUp(specs, reason: .refresh)
    }

    /// `sources.file_catchup` in `status`: null when no root has catch-up; else whether the start-up catch-up is
    /// done, whether a job runs, the events published, the overflow diffs and refreshes done, and the longest
    /// batch's publishing time (what a catch-up held a loop turn for at most).
    func fileCatchUpStatus() -> JSONValue {
        guard let runner = fileCatchUp else { return .null }
        return .object([
            ("done", .bool(runner.startUpDone)), ("running", .string(runner.running?.reason.rawValue ?? "")),
            ("published", .int(Int64(runner.published))), ("overflow_diffs", .int(Int64(runner.overflowDiffs))),
            ("refreshes", .int(Int64(runner.refreshes))), ("refreshes_abandoned", .int(Int64(runner.refreshesAbandoned))),
            ("longest_batch_seconds", .double(Double(runner.longestBatchNanoseconds) / 1e9)),
            ("last_seconds", .double(runner.lastJobSeconds)),
        ])
    }
}

extension Daemon {
    /// At a clean stop, after the journal's last sync: one more refresh, on this thread (the loop has ended), so
    /// that the next start reports what changes while kevd is down, not again what it reported live since the
    /// last snapshot (a restart within the refresh interval of live changes would otherwise repeat them as
    /// catch-up events). Only when no diff was cut short or is still owed (`idleFileCatchUp`), and, as every
    /// refresh, only if the kernel queues are empty after the scan: every change the scan took in was journaled.
    func writeFinalFileSnapshots() {
        guard let runner = idleFileCatchUp else { return }
        let specs = fileCatchUpSpecs.filter { runner.snapshotted.contains($0.path) }
        guard !specs.isEmpty else { return }
        let job = FileCatchUpRunner.Job(specs: specs, seq: journal.nextSeq, reason: .stop)
        let outcome = FileCatchUpRunner.work(
            job, directory: runner.directory, journalDirectory: journal.directory, stopping: JournalFold.StopFlag(),
            abandon: JournalFold.StopFlag(), send: { _ in false }, confirm: runner.everythingJournaled)
        if outcome.abandoned || !outcome.errors.isEmpty {
            logger.info("file catch-up snapshots not refreshed at stop", metadata: [
                "reason": "\(outcome.abandoned ? "events still queued" : outcome.errors.joined(separator: "; "))",
            ])
        }
    }
}
