import Glibc
import KevdConfig
import KevdEvent
import KevdForward
import KevdInput
import KevdJournal
import KevdKernel
import KevdReactor
import KevdRules
import KevdServer
import KevdSources
import KevdSpec
import Logging

/// The running daemon: builds the loop and its sources from a config, reloads on HUP, stops on TERM/INT.
///
/// Start-up order matters: the pipeline and its sinks exist before any source, so the first kernel event
/// already has somewhere to go; `kevd`/`started` is published only once every source is armed, so a client
/// that sees it knows nothing after it can be missed.
///
/// One job per file: `+Startup` (the consumers in order, `started`), `+Reload` (SIGHUP and rules-directory
/// reloads), `+JournalFailure` (the journal failure episode), `+Retention` (housekeeping and retention reports),
/// `+Status` (STATUS=, the status reply, stats).
public final class Daemon {
    public struct Options {
        public var configFile: String
        public var writeStdout: Bool
        public init(configFile: String, writeStdout: Bool) {
            self.configFile = configFile
            self.writeStdout = writeStdout
        }
    }

    public internal(set) var config: Config
    /// The rule files in force: the last set that loaded without a problem (at start-up, the valid part).
    public internal(set) var ruleSet = RuleSet()
    var ruleProblems: [ConfigError] = []
    let options: Options
    let logger: Logger
    public let loop: EventLoop
    public let pipeline: EventPipeline
    public let journal: Journal
    var housekeeping: TimerFD?
    /// The journal write failure in progress (disk full, EIO), since when; nil while it writes.
    var journalFailure: (error: String, since: UInt64)?
    /// Wakes the loop to retry a failed journal write: nothing else might (a quiet system, emits refused).
    var journalRetry: TimerFD?
    /// `kevd`/`stats` every `[daemon] stats_interval`: the counts, and the timer (disarmed at 0).
    let stats: StatsCollector
    var statsTimer: TimerFD?
    var statsInterval: Int64 = -1
    var server: Server?
    /// `[journald] mirror`: a copy of the events in the systemd journal, sent from a thread of its own.
    var journaldMirror: JournaldMirror?
    var signals: SignalSource?
    var inotify: InotifySource?
    /// `[[watch]]` roots on the fanotify backend, and which backend each root got (Daemon+WatchBackends.swift).
    var fanotify: FanotifySource?
    var watchBackends = WatchBackends()
    var timers: TimerSource?
    /// `[[timer]] persistent = true`: the start-up fold of the journal into the timers' last fires.
    var timerCatchUp: TimerCatchUpFold?
    /// `[udev] catchup = true`: the start-up fold of the journal and /sys into the devices that changed.
    var deviceCatchUp: DeviceCatchUpFold?
    /// Keeps the catch-ups' checkpoints (with `[udev] catchup` or a persistent timer).
    var checkpointer: CatchUpCheckpointer?
    /// `[[watch]] catchup = true`: the tree diffs and snapshots (Daemon+FileCatchUp.swift).
    var fileCatchUp: FileCatchUpRunner?
    var fileCatchUpTimer: TimerFD?
    var fileCatchUpOverflowsPending = 0
    var udev: UdevSource?
    /// `[input]`: evdev devices and logind inhibitor locks; `[acpi]`: the acpi_event netlink family.
    var input: InputSource?
    var acpi: AcpiSource?
    var rules: RulesEngine?
    var ruleWatcher: RuleDirectoryWatcher?
    /// `[[forward]]`: each on its own thread; the journal tells them how far it is durable.
    var forwarders: Forwarders?
    var exitCode: Int32 = 0
    /// READY/RELOADING/STOPPING/STATUS/WATCHDOG for systemd; inert without NOTIFY_SOCKET.
    let systemd: SystemdNotifier
    /// `/etc/machine-id` and this boot's id: in `started`, `status` and the forwarded messages' headers.
    let identity = MachineIdentity.read()

    /// Signals must already be blocked (`Daemon.prepareSignals()`), before any thread exists.
    public init(config: Config, options: Options, logger: Logger) throws {
        self.config = config
        self.options = options
        self.logger = logger
        systemd = SystemdNotifier(logger: logger)
        loop = try EventLoop(logger: logger)
        try DirectorySafety.check([(config.daemon.stateDir, "state directory")])
        journal = try Journal(directory: config.journalDirectory, options: Self.journalOptions(config.journal), logger: logger)
        // The flusher's news (durable progress, a failed sync) wake the loop: durable progress is applied at
        // once, a failed sync by the turn's journal write. Its observers are the server and the forwarders.
        try loop.register(fd: journal.flusherReports.fd.rawValue, events: .readable, priority: .inbox) { [journal] _ in
            journal.applyFlusherReports()
        }
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
            let mirror = try JournaldMirror(filter: filter, pipeline: pipeline)
            pipeline.add(sink: mirror)
            journaldMirror = mirror
        }
        // The turn's events reach the journal and subscribers first; then the journal's state is looked at
        // (a failure episode's events), and only then do rules start runs (a spawn takes the loop a few hundred
        // µs). What each step publishes goes out before the next (`EventPipeline.finishTurn`).
        pipeline.addTurnEndStep { [unowned self] in self.watchJournal() }
        pipeline.addTurnEndStep { [unowned self] in self.rules?.dispatch() }
        pipeline.finishTurns(of: loop)
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
        startCheckpointer()
        // The watchdog hears from kevd from the start: the start-up crawl of a big tree takes a while.
        try systemd.startWatchdog(loop: loop)
        try startForwarders()
        try startServer()
        try startRules()
        let (loaded, problems) = loadRules(config)
        ruleProblems = problems
        try apply(config, rules: loaded)
        try startTimerCatchUp()
        try startDeviceCatchUp()
        untrackIdleCheckpoints()
        try startFileCatchUp()
        try startHousekeeping()
        reportRecovery()
        // At start-up there is no running set to keep: the valid rules run, and each problem is reported.
        for problem in problems { reportError("invalid rule file; its bad parts are not loaded", error: "\(problem)", component: "rules") }
        try announceStartedWhenArmed()
        try loop.run()
        timerCatchUp?.stop()
        deviceCatchUp?.stop()
        checkpointer?.stop()
        fileCatchUp?.stop()
        server?.close()
        // The only blocking sync kevd does: after the loop, so that a clean stop leaves nothing unsynced. When it
        // cannot, what is not synced is in doubt: a non-zero exit, and the next start's recovery judges the files.
        if !journal.close() && exitCode == 0 { exitCode = 1 }
        if exitCode == 0 { writeFinalFileSnapshots() }
        // After the journal: a stored position never passes what is durable, and now everything is.
        rules?.stop()
        journaldMirror?.stop()
        // Waits (bounded) for acknowledgements in flight and stores each forwarder's position.
        forwarders?.stop()
        return exitCode
    }

    func handle(_ request: SignalSource.Request) {
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
            reloadRequested(senderPID: pid, senderUID: uid)
        case .childExited:
            rules?.childrenExited()
        }
    }

    func reportError(_ message: String, error: String, component: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        logger.error("\(message)", metadata: ["error": "\(error)"])
        pipeline.publishKevd("error", component: component, data)
    }
}
