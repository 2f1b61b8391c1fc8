import Glibc
import HeapModule
import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// Runs rules' scripts for the events they match, on the loop thread, without ever blocking it.
///
/// Events arrive as a sink, after the journal's, which appends them. A match becomes a job on the rule's per-key
/// queue; jobs start in `dispatch()`, at the end of each loop turn, once the journal has written their event
/// (`RuleRuntime.nextStartable(writtenThrough:)`). The loop prepares each run and a spawner thread starts it (a
/// vfork child, so the loop never waits for an exec); output is read through non-blocking pipes. `SIGCHLD`
/// (through the daemon's signalfd) reaps them; one timerfd serves every timeout, kill grace, debounce and retry.
/// Each run is journaled as `kevd` events `rule.started`, then `rule.succeeded` or `rule.failed` (and
/// `rule.dead` when it gives up).
///
/// At least once: a rule's position (everything matched through it has run) is stored; after a restart the
/// rule reads the journal on from there, so interrupted and queued runs happen again with the same event ids.
///
/// One job per file: this one holds configuration and matching; `+Runner` starting runs, `+Spawner` the spawner
/// thread, `+Outcomes` runs ending, `+Deadlines` the timer, `+CatchUp` reading from the journal, `+Positions`,
/// `+Retention` and `+Status`.
public final class RulesEngine: EventSink {
    public struct Context {
        public var loop: EventLoop
        public var pipeline: EventPipeline
        public var journal: Journal
        public var settings: RulesSettings
        /// Given to scripts as KEVD_SOCKET, for `kevctl emit`.
        public var socketPath: String
        public var stateDirectory: String
        public var logger: Logger

        public init(
            loop: EventLoop, pipeline: EventPipeline, journal: Journal, settings: RulesSettings, socketPath: String,
            stateDirectory: String, logger: Logger
        ) {
            self.loop = loop
            self.pipeline = pipeline
            self.journal = journal
            self.settings = settings
            self.socketPath = socketPath
            self.stateDirectory = stateDirectory
            self.logger = logger
        }
    }

    /// Jobs a rule holds in memory before it reads its matches from the journal instead.
    static let maxBacklog = 4096
    /// Runs started per loop turn, across rules (handed to the spawner thread: see `RulesEngine+Spawner.swift`).
    static let startsPerTurn = 4
    static let positionSaveInterval: Int64 = 1_000_000_000

    let context: Context
    var settings: RulesSettings
    var rules: [RuleRuntime] = []
    var runs: [Int32: RuleRun] = [:]
    /// Runs handed to the spawner thread whose pid has not come back yet (`RulesEngine+Spawner.swift`).
    var spawning = Spawning()
    var spawner: RuleSpawner!
    var deadlines = Heap<Deadline>()
    var deadlineOrder: UInt64 = 0
    let timer: TimerFD
    var armedAt = Int64.max
    let positions: RulePositions
    /// Positions read at start-up for rules not configured yet (taken when a rule of that name appears).
    var storedPositions: [String: UInt64]
    var lastSaved: [(String, UInt64)] = []
    var saveScheduled = false
    var firstRule = 0
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    public init(_ context: Context) throws {
        self.context = context
        settings = context.settings
        timer = try TimerFD(clock: .monotonic)
        let logger = context.logger
        positions = try RulePositions(stateDirectory: context.stateDirectory) { message in
            logger.error("rule positions not saved", metadata: ["error": "\(message)"])
        }
        storedPositions = positions.load(reportingTo: context.journal.consumers)
        spawner = try RuleSpawner.forEngine(self)
        do {
            try Children.becomeSubreaper()
        } catch {
            context.logger.warning("orphaned grandchildren of scripts will not be reaped by kevd", metadata: ["error": "\(error)"])
        }
        registerWithRetention()
        try context.loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? self.timer.read()
            self.armedAt = .max
            self.fireDeadlines()
            self.armTimer()
        }
    }

    deinit {
        spawner?.stop()
        context.loop.unregister(fd: timer.fd.rawValue)
        scratch.deallocate()
    }

    // MARK: Configuration

    /// Makes the active rules `specs`. A rule keeping its name keeps its queue, runs and position; a new rule
    /// starts at its stored position when there is one (and `catch_up`), else at the journal's end; a dropped
    /// rule's runs finish and report, its queued jobs are dropped.
    public func configure(_ specs: [RuleSpec], settings: RulesSettings) {
        self.settings = settings
        var old: [String: RuleRuntime] = [:]
        for rule in rules { old[rule.spec.name] = rule }
        var next: [RuleRuntime] = []
        var added = false
        for spec in specs {
            guard let filter = try? EventFilter(terms: spec.match) else { continue }  // RuleLoader checked them.
            if let rule = old.removeValue(forKey: spec.name) {
                rule.spec = spec
                rule.filter = filter
                next.append(rule)
                continue
            }
            let live = context.pipeline.nextSeq - 1
            let rule = RuleRuntime(spec: spec, filter: filter, seen: live)
            if let stored = storedPositions.removeValue(forKey: spec.name), spec.catchUp, stored < live {
                startCatchUp(rule, from: stored + 1, reason: .restart)
            }
            next.append(rule)
            added = true
        }
        for rule in old.values {
            rule.active = false
            rule.dropPending()
        }
        rules = next
        // A new rule's first position is stored at once: a crash before the periodic save would otherwise
        // find no position after the restart, and the rule would start at the journal's end, past its matches.
        if added { savePositions() } else { schedulePositionSave() }
    }

    // MARK: Events in

    public func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        for rule in rules where rule.catchUp == nil {
            rule.seen = event.seq
            if rule.filter.matches(event) { matched(rule, event, line) }
        }
    }

    func matched(_ rule: RuleRuntime, _ event: Event, _ line: UnsafeRawBufferPointer) {
        let depth = Self.depth(of: event)
        if depth >= settings.cascadeLimit { return refuse(rule, event, depth: depth + 1) }
        let key = event.key
        if rule.spec.debounceNanoseconds > 0 {
            let now = Self.monotonicNow()
            if var entry = rule.debouncing[key] {
                entry.job = Job(event: event, line: Array(line), heldSeq: entry.job.heldSeq, events: entry.job.events + 1)
                entry.due = Self.debounceDue(rule.spec, now: now, firstSeen: entry.firstSeen)
                rule.debouncing[key] = entry  // The heap entry stays; when it fires early it re-arms for `due`.
                return
            }
            if rule.spec.catchUp && rule.backlog >= Self.maxBacklog { return startCatchUp(rule, from: event.seq, reason: .backlog) }
            rule.hold(event.seq)
            let due = Self.debounceDue(rule.spec, now: now, firstSeen: now)
            rule.debouncing[key] = Debounce(job: Job(event: event, line: Array(line), heldSeq: event.seq), firstSeen: now, due: due)
            schedule(at: due, .debounce(rule, key))
            return
        }
        if !rule.spec.catchUp && rule.isBusy(key: key) {
            rule.counters.skipped += 1
            return
        }
        if rule.backlog >= Self.maxBacklog { return startCatchUp(rule, from: event.seq, reason: .backlog) }
        rule.hold(event.seq)
        rule.enqueue(Job(event: event, line: Array(line), heldSeq: event.seq))
    }

    /// CLOCK_MONOTONIC as a signed count: deadlines add durations (Int64) to it.
    static func monotonicNow() -> Int64 { Int64(clamping: Clock.monotonicNanoseconds()) }

    static func debounceDue(_ spec: RuleSpec, now: Int64, firstSeen: Int64) -> Int64 {
        let quiet = now + spec.debounceNanoseconds
        return spec.maxWaitNanoseconds > 0 ? min(quiet, firstSeen + spec.maxWaitNanoseconds) : quiet
    }

    /// How many rule runs deep an event is: 0 for kernel events; a rule's own events and what its scripts emit
    /// carry the depth of the run that caused them.
    static func depth(of event: Event) -> Int {
        let field: String
        switch event.source {
        case .kevd: field = "depth"
        case EventSource("emit"): field = "_depth"
        default: return 0
        }
        if case .int(let n)? = event.data[field] { return Int(clamping: n) }
        return 0
    }

    func refuse(_ rule: RuleRuntime, _ event: Event, depth: Int) {
        rule.counters.refused += 1
        let message = "cascade limit: rule '\(rule.spec.name)' not run for event \(event.seq): it would be \(depth) runs deep (limit \(settings.cascadeLimit), [rules] cascade_limit)"
        context.logger.warning("\(message)", metadata: ["rule": "\(rule.spec.name)", "cause": "\(event.id.string)"])
        // A refusal report is not reported again when a rule matches it: that would be a loop of its own.
        if event.source == .kevd, case .string("cascade_limit")? = event.data["reason"] { return }
        var data = EventData()
        data.append("message", message)
        data.append("reason", "cascade_limit")
        data.append("rule", rule.spec.name)
        data.append("cause", event.id.string)
        data.append("cause_seq", .int(Int64(clamping: event.seq)))
        data.append("depth", depth)
        context.pipeline.publishKevd("error", component: "rules", data)
    }
}
