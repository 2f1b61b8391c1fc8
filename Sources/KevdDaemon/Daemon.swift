import Glibc
import KevdConfig
import KevdEvent
import KevdForward
import KevdJournal
import KevdKernel
import KevdLoop
import KevdRules
import KevdServer
import Logging

/// The running daemon: builds the loop and its sources from a config, reloads on HUP, stops on TERM/INT.
///
/// Start-up order matters: the pipeline and its sinks exist before any source, so the first kernel event
/// already has somewhere to go; `kevd`/`started` is published only once every source is armed, so a client
/// that sees it knows nothing after it can be missed.
public final class Daemon {
    public struct Options {
        public var configFile: String
        public var writeStdout: Bool
        public init(configFile: String, writeStdout: Bool) {
            self.configFile = configFile
            self.writeStdout = writeStdout
        }
    }

    public private(set) var config: Config
    /// The rule files in force: the last set that loaded without a problem (at start-up, the valid part).
    public private(set) var ruleSet = RuleSet()
    private var ruleProblems: [ConfigError] = []
    let options: Options
    let logger: Logger
    public let loop: EventLoop
    public let pipeline: EventPipeline
    public let journal: Journal
    private var housekeeping: TimerFD?
    /// The journal write failure in progress (disk full, EIO), since when; nil while it writes.
    private var journalFailure: (error: String, since: UInt64)?
    /// Wakes the loop to retry a failed journal write: nothing else might (a quiet system, emits refused).
    private var journalRetry: TimerFD?
    /// `kevd`/`stats` every `[daemon] stats_interval`: the counts, and the timer (disarmed at 0).
    private let stats: StatsCollector
    private var statsTimer: TimerFD?
    private var statsInterval: Int64 = -1
    private var server: Server?
    /// `[journald] mirror`: a copy of the events in the systemd journal, sent from a thread of its own.
    private var journaldMirror: JournaldMirror?
    private var signals: SignalSource?
    private var inotify: InotifySource?
    private var timers: TimerSource?
    private var udev: UdevSource?
    let inputSources = InputSources()
    private var rules: RulesEngine?
    private var ruleWatcher: RuleDirectoryWatcher?
    /// `[[forward]]`: each on its own thread, started before the server so the durable hook can reach them.
    private var forwarders: Forwarders?
    private var exitCode: Int32 = 0
    /// READY/RELOADING/STOPPING/STATUS/WATCHDOG for systemd; inert without NOTIFY_SOCKET.
    private let systemd: SystemdNotifier

    /// Signals must already be blocked (`Daemon.prepareSignals()`), before any thread exists.
    public init(config: Config, options: Options, logger: Logger) throws {
        self.config = config
        self.options = options
        self.logger = logger
        systemd = SystemdNotifier(logger: logger)
        loop = try EventLoop(logger: logger)
        try DirectorySafety.check([(config.daemon.stateDir, "state directory")])
        journal = try Journal(directory: config.journalDirectory, options: Self.journalOptions(config.journal), logger: logger)
        // A failed sync is handled by the journal's next write, at a turn's end: wake the loop for it.
        journal.onSyncFailure = { [loop] in loop.inbox.post {} }
        // seq continues where the journal ends; ids get a fresh random base per run, so a seq given again after
        // an operating-system crash lost the journal's unsynced tail never repeats an id.
        pipeline = EventPipeline(
            firstSeq: journal.nextSeq, idBase: EventIDBase(randA: try randomUInt64(), randB: try randomUInt64()))
        pipeline.add(sink: JournalSink(journal: journal))
        stats = StatsCollector(journal: journal, loop: loop)
        pipeline.add(sink: stats.counter)
        if options.writeStdout { pipeline.add(sink: StdoutSink(loop: loop, pipeline: pipeline)) }
        if config.journald.mirror {
            // The terms were checked when the configuration was read.
            let filter = config.journald.filter.isEmpty ? nil : try EventFilter(terms: config.journald.filter)
            let mirror = try JournaldMirror(filter: filter, loop: loop, pipeline: pipeline)
            pipeline.add(sink: mirror)
            journaldMirror = mirror
        }
        // The turn's events reach the journal and subscribers first; only then do rules start runs (a spawn
        // takes the loop a few hundred µs), and what those runs published (`rule.started`) goes out after them.
        loop.onTurnEnd { [unowned self] in
            self.pipeline.endOfTurn()
            if self.watchJournal() { self.pipeline.endOfTurn() }
            guard let rules = self.rules, rules.dispatch() else { return }
            self.pipeline.endOfTurn()
        }
    }

    static func journalOptions(_ settings: JournalSettings) -> Journal.Options {
        var options = Journal.Options()
        options.sync = Journal.Options.Sync(rawValue: settings.sync.rawValue) ?? .batch
        options.batchIntervalNanoseconds = settings.batchIntervalNanoseconds
        options.segmentBytes = Int(settings.segmentBytes)
        options.maxBytes = settings.maxBytes
        options.maxAgeNanoseconds = settings.maxAgeNanoseconds
        options.maxBytesHard = settings.effectiveMaxBytesHard
        options.minFreeBytes = settings.minFreeBytes
        return options
    }

    /// Sets the process's signal state before any thread exists: the handled signals go to the signalfd only,
    /// and SIGPIPE is ignored, because a subscriber or script pipe closing while kevd writes to it is an EPIPE to
    /// handle for that one peer, never a reason for the daemon to die.
    public static func prepareSignals() throws {
        try SignalFD.setMaskInAllThreads(blocking: SignalSource.handledSignals)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Arms every source, announces `started`, and runs until TERM/INT. Returns the process exit code.
    public func run() throws -> Int32 {
        signals = try SignalSource(loop: loop, pipeline: pipeline) { [unowned self] request in
            self.handle(request)
        }
        // The watchdog hears from kevd from the start: the start-up crawl of a big tree takes a while.
        try systemd.startWatchdog(loop: loop)
        try startForwarders()
        try startServer()
        try startRules()
        let (loaded, problems) = loadRules(config)
        ruleProblems = problems
        try apply(config, rules: loaded)
        try startHousekeeping()
        reportRecovery()
        // At start-up there is no running set to keep: the valid rules run, and each problem is reported.
        for problem in problems { reportError("invalid rule file; its bad parts are not loaded", error: "\(problem)", component: "rules") }
        // `started` and READY mean every watch is armed: they wait for the start-up crawl, which runs in slices
        // on the loop (clients are answered, timers and signals handled meanwhile; `status` shows its progress).
        let announceStarted: () -> Void = { [unowned self] in
            var data = EventData()
            data.append("pid", Int(getpid()))
            data.append("config", config.file)
            data.append("watches", config.watches.count)
            data.append("timers", config.timers.count)
            data.append("rules", ruleSet.rules.count)
            data.append("udev", udev?.sourceName ?? "off")
            data.append("journal", journal.directory)
            data.append("inotify_watches", inotify?.watchCount ?? 0)
            pipeline.publishKevd("started", component: "daemon", data)
            logger.info("kevd started", metadata: ["config": "\(config.file)", "pid": "\(getpid())"])
            // The journal is recovered, the rules are loaded, every source is armed and the socket listens.
            do {
                try systemd.ready(loop: loop) { [unowned self] in self.statusSummary() }
            } catch {
                reportError("cannot start the systemd status timer", error: "\(error)", component: "daemon")
            }
        }
        if let inotify { inotify.whenWatchesArmed(announceStarted) } else { announceStarted() }
        if let inotify, inotify.crawlProgress.running {
            try systemd.starting(loop: loop) {
                let crawl = inotify.crawlProgress
                return "watching \(inotify.watchCount) directories, \(crawl.queued) more found"
            }
        }
        try loop.run()
        server?.close()
        // The only blocking sync kevd does: after the loop, so that a clean stop leaves nothing unsynced. When it
        // cannot, what is not synced is in doubt: a non-zero exit, and the next start's recovery judges the files.
        if !journal.close() && exitCode == 0 { exitCode = 1 }
        // After the journal: a stored position never passes what is durable, and now everything is.
        rules?.stop()
        journaldMirror?.stop()
        // Waits (bounded) for acknowledgements in flight and stores each forwarder's position.
        forwarders?.stop()
        return exitCode
    }

    /// The client socket: a sink after the journal (and stdout), so clients only see journaled events.
    private func startServer() throws {
        // Socket activation: systemd bound and listens; clients that connected before kevd ran are in the backlog.
        let activated = SystemdNotifier.activationSocket(expectedPath: config.daemon.socket, logger: logger)
        // A socket systemd bound is systemd's to protect; one kevd binds itself must not sit where anyone can swap it.
        if activated == nil { try DirectorySafety.check([(PathText.directory(of: config.daemon.socket), "socket directory")]) }
        let server = try Server(
            .init(
                loop: loop, pipeline: pipeline, journal: journal, settings: config.server,
                socketPath: config.daemon.socket, stateDirectory: config.daemon.stateDir, logger: logger,
                statusFields: { [unowned self] in self.statusFields() }, cascadeLimit: config.rules.cascadeLimit,
                listenFD: activated))
        pipeline.add(sink: server)
        self.server = server
        journal.onDurable = { [loop, journal, forwarders] seq in
            // Straight from the flusher: forwarders read the journal files themselves, and need not wait a turn.
            forwarders?.durableAdvanced(seq)
            loop.inbox.post { [weak server] in
                journal.markDurable(seq)
                server?.durableAdvanced(journal.durableSeq)
            }
        }
        logger.info(
            "listening", metadata: ["socket": "\(config.daemon.socket)", "activated": "\(activated != nil)"])
    }

    /// `[[forward]]`: forwarders read the journal from their stored positions on their own threads; the loop
    /// only tells them how far it is durable.
    private func startForwarders() throws {
        guard !config.forwards.isEmpty else { return }
        forwarders = try Forwarders(
            specs: config.forwards, stateDirectory: config.daemon.stateDir, journalDirectory: journal.directory,
            durable: journal.durableSeq, consumers: journal.consumers, logger: logger)
    }

    /// The rules engine: a sink after the server, so a script's `kevctl subscribe` never lags its trigger.
    private func startRules() throws {
        let engine = try RulesEngine(
            .init(
                loop: loop, pipeline: pipeline, journal: journal, settings: config.rules,
                socketPath: config.daemon.socket, stateDirectory: config.daemon.stateDir, logger: logger))
        engine.onRulesChanged = { [unowned self] in self.reloadRules() }
        pipeline.add(sink: engine)
        rules = engine
    }

    private func loadRules(_ config: Config) -> (RuleSet, [ConfigError]) {
        RuleLoader.load(directories: config.rules.directories, baseTimers: config.timers.map(\.name))
    }

    /// Watches the rules directories that exist now (rebuilt on every reload, to pick up new ones).
    private func watchRuleDirectories(_ directories: [String]) {
        ruleWatcher = nil
        do {
            ruleWatcher = try RuleDirectoryWatcher(directories: directories, loop: loop, logger: logger) { [unowned self] in
                self.rules?.rulesDirectoryChanged()
            }
        } catch {
            reportError("cannot watch the rules directories; reload with SIGHUP", error: "\(error)", component: "rules")
        }
    }

    /// One line for systemd's `STATUS=`: what is armed, who listens, where the stream is.
    private func statusSummary() -> String {
        let watches = config.watches.count + ruleSet.watches.count
        let timerCount = timers?.names.count ?? 0
        let subscribers = server?.subscriberCount ?? 0
        let head = pipeline.nextSeq > 0 ? pipeline.nextSeq - 1 : 0
        return "\(watches) watches, \(timerCount) timers, \(ruleSet.rules.count) rules, \(subscribers) subscribers; seq \(head)"
    }

    private func statusFields() -> [(String, JSONValue)] {
        [
            ("config", .string(config.file)),
            ("forward", forwarders?.status(head: pipeline.nextSeq > 0 ? pipeline.nextSeq - 1 : 0) ?? .array([])),
            ("stats", statsSnapshot(endingInterval: false).json),
            ("retention", retentionStatus()),
            (
                "rules",
                .object([
                    ("active", .array(rules?.statusRules() ?? [])),
                    ("files", .array(ruleSet.files.map { .string($0.path) })),
                    ("masked", .array(ruleSet.masked.map { .string($0.path) })),
                    ("directories", .array(config.rules.directories.map { .string($0) })),
                    ("error", ruleProblems.isEmpty ? .null : .string(ruleProblems.map(\.description).joined(separator: "\n"))),
                ])
            ),
            (
                "sources",
                .object([
                    ("inotify", inotifyStatus()),
                    ("timers", .array((timers?.names ?? []).map { .string($0) })),
                    ("udev", udev.map { .object([("monitor", .string($0.sourceName)), ("overflows", .int(Int64($0.overflowCount)))]) } ?? .null),
                ])
            ),
        ]
    }

    /// The inotify source in `status`: its roots, watches and overflows, and the crawl (start-up, new roots, a
    /// rescan) in progress or last done.
    private func inotifyStatus() -> JSONValue {
        let crawl = inotify?.crawlProgress
        return .object([
            ("roots", .int(Int64(config.watches.count))), ("watches", .int(Int64(inotify?.watchCount ?? 0))),
            ("overflows", .int(Int64(inotify?.overflowCount ?? 0))),
            (
                "crawl",
                .object([
                    ("running", .bool(crawl?.running ?? false)), ("rescan", .bool(crawl?.rescan ?? false)),
                    ("listed", .int(Int64(crawl?.listed ?? 0))), ("queued", .int(Int64(crawl?.queued ?? 0))),
                    ("seconds", .double(crawl?.seconds ?? 0)), ("completed", .int(Int64(crawl?.completed ?? 0))),
                    ("longest_slice_seconds", .double(crawl?.longestSliceSeconds ?? 0)),
                ])
            ),
        ])
    }

    /// Says what start-up repaired, so a client resuming by seq knows which seqs are given again.
    private func reportRecovery() {
        let recovery = journal.recovery
        guard recovery.truncatedBytes > 0 || !recovery.removedSegments.isEmpty else { return }
        var data = EventData()
        data.append("truncated_bytes", recovery.truncatedBytes)
        data.append("segment", recovery.truncatedSegment ?? "")
        data.append("removed_segments", recovery.removedSegments.count)
        data.append("next_seq", .int(Int64(clamping: recovery.nextSeq)))
        data.append("message", "the journal's tail was torn or damaged and was cut; seqs from next_seq are given again")
        logger.warning(
            "journal tail repaired",
            metadata: ["journal.truncated_bytes": "\(recovery.truncatedBytes)", "journal.next_seq": "\(recovery.nextSeq)"])
        pipeline.publishKevd("recovered", component: "journal", data)
    }

    /// kevd's own periodic work (journal retention), on a timerfd of its own.
    private func startHousekeeping() throws {
        watchRetention()
        journal.enforceRetention()
        let timer = try TimerFD(clock: .monotonic)
        let interval = config.journal.retentionIntervalNanoseconds
        try timer.arm(delay: interval, interval: interval)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? timer.read()  // Only EAGAIN is possible on a monotonic timer; the work below is what matters.
            let deleted = self.journal.enforceRetention().deleted
            if !deleted.isEmpty {
                self.logger.info("journal retention", metadata: ["journal.deleted": "\(deleted.joined(separator: " "))"])
            }
        }
        housekeeping = timer
    }

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
    /// once those are durable in a new segment. Returns true when it published an event (the caller ends the
    /// turn again so it goes out).
    private func watchJournal() -> Bool {
        let error = journal.lastError
        loop.pause(
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

    private func armJournalRetry(_ on: Bool) {
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

    /// Arms the stats timer for `interval` (0 disarms it). An unchanged interval keeps its phase across reloads.
    private func configureStats(interval: Int64) throws {
        guard interval != statsInterval else { return }
        if statsTimer == nil {
            let timer = try TimerFD(clock: .monotonic)
            try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
                // A reload in this same turn may have disarmed it: only a real expiry publishes.
                guard case .expired = (try? timer.read()) ?? .none else { return }
                self.pipeline.publishKevd("stats", component: "stats", self.statsSnapshot(endingInterval: true).eventData)
            }
            statsTimer = timer
        }
        if interval > 0 {
            try statsTimer?.arm(delay: interval, interval: interval)
        } else {
            try statsTimer?.disarm()
        }
        statsInterval = interval
    }

    private func statsSnapshot(endingInterval: Bool) -> StatsSnapshot {
        let ruleTotals = rules?.totals ?? (runs: 0, failed: 0, running: 0)
        let inputs = StatsInputs(
            inotifyOverflows: inotify?.overflowCount ?? 0, udevOverflows: udev?.overflowCount ?? 0,
            subscribers: server?.subscriberCount ?? 0, maxSubscriberLag: server?.maxSubscriberLag ?? 0,
            ruleRuns: ruleTotals.runs, ruleFailures: ruleTotals.failed, rulesRunning: ruleTotals.running)
        return stats.snapshot(inputs, endingInterval: endingInterval)
    }

    /// Makes the sources and rules match `new` and `ruleSet` (whose files may declare sources of their own).
    /// A source that fails to start is reported and the rest still applies.
    private func apply(_ new: Config, rules ruleSet: RuleSet) throws {
        let watches = new.watches + ruleSet.watches
        if inotify == nil && !watches.isEmpty {
            inotify = try InotifySource(loop: loop, pipeline: pipeline, logger: logger)
        }
        inotify?.configure(watches)

        if timers == nil { timers = TimerSource(loop: loop, pipeline: pipeline, logger: logger) }
        try timers?.configure(new.timers + ruleSet.timers)

        if !new.udev.enabled {
            udev = nil
        } else if udev?.spec != new.udev {
            udev = nil  // Close the old monitor first: one netlink socket at a time.
            do {
                udev = try UdevSource(spec: new.udev, loop: loop, pipeline: pipeline, logger: logger)
            } catch {
                // A source that cannot start is reported and left off; the others keep working.
                reportError("cannot start the udev monitor", error: "\(error)", component: "udev")
            }
        }
        rules?.configure(ruleSet.rules, settings: new.rules)
        applyInput(new)  // After the rules: a switch's position at start is published now, and rules see it.
        watchRuleDirectories(new.rules.directories)
        try configureStats(interval: new.daemon.statsIntervalNanoseconds)
        self.ruleSet = ruleSet
        config = new
    }

    private func handle(_ request: SignalSource.Request) {
        switch request {
        case .stop(let signal, let pid, let uid):
            var data = EventData()
            data.append("signal", SignalFD.name(of: signal))
            data.append("pid", Int(pid))
            data.append("uid", Int(uid))
            pipeline.publishKevd("stopping", component: "daemon", data)
            systemd.stopping(signal: SignalFD.name(of: signal))
            logger.info("kevd stopping", metadata: ["signal": "\(SignalFD.name(of: signal))"])
            loop.stop()
        case .reload(let pid, let uid):
            systemd.reloading()
            reload(senderPID: pid, senderUID: uid)
            // Also after a failed reload: the running configuration is still in force. Once new roots are crawled.
            let reloaded: () -> Void = { [unowned self] in self.systemd.reloaded(status: self.statusSummary()) }
            if let inotify { inotify.whenWatchesArmed(reloaded) } else { reloaded() }
        case .childExited:
            rules?.childrenExited()
        }
    }

    /// Re-reads the config and the rule files atomically: a bad config keeps the running config, a bad rule file
    /// keeps the running rules; each problem is reported with file:line:col.
    public func reload(senderPID: UInt32 = 0, senderUID: UInt32 = 0) {
        let new: Config
        do {
            new = try ConfigLoader.load(file: config.file)
        } catch {
            reportError("reload failed; keeping the running configuration", error: "\(error)", component: "config")
            return
        }
        let ruleSet = checkedRules(new) ?? self.ruleSet
        do {
            try apply(new, rules: ruleSet)
        } catch {
            reportError("reload failed while applying", error: "\(error)", component: "config")
            return
        }
        var data = EventData()
        data.append("config", new.file)
        data.append("watches", new.watches.count)
        data.append("timers", new.timers.count)
        data.append("pid", Int(senderPID))
        data.append("uid", Int(senderUID))
        data.append("rules", ruleSet.rules.count)
        pipeline.publishKevd("reloaded", component: "config", data)
        logger.info("configuration reloaded", metadata: ["config": "\(new.file)"])
        if new.forwards != (forwarders?.specs ?? []) {
            // Stopping a forwarder waits for its acknowledgements, which the loop must not do.
            reportError("[[forward]] changes take effect when kevd restarts", error: "forward configuration changed", component: "forward")
        }
    }

    /// The rule files as they are now, or nil (reported) when any has a problem: all or nothing.
    private func checkedRules(_ config: Config) -> RuleSet? {
        let (loaded, problems) = loadRules(config)
        ruleProblems = problems
        guard problems.isEmpty else {
            for problem in problems {
                reportError("invalid rule file; keeping the running rules", error: "\(problem)", component: "rules")
            }
            return nil
        }
        return loaded
    }

    /// A rules directory changed: re-read the rule files (the config stays as it is).
    private func reloadRules() {
        guard let ruleSet = checkedRules(config) else { return }
        do {
            try apply(config, rules: ruleSet)
        } catch {
            reportError("rule reload failed while applying", error: "\(error)", component: "rules")
            return
        }
        var data = EventData()
        data.append("rules", ruleSet.rules.count)
        data.append("files", ruleSet.files.count)
        pipeline.publishKevd("reloaded", component: "rules", data)
        logger.info("rules reloaded", metadata: ["rules": "\(ruleSet.rules.count)"])
    }

    private func reportError(_ message: String, error: String, component: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        logger.error("\(message)", metadata: ["error": "\(error)"])
        pipeline.publishKevd("error", component: component, data)
    }
}
