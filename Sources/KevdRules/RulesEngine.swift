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
    private var deadlines = Heap<Deadline>()
    private var deadlineOrder: UInt64 = 0
    private let timer: TimerFD
    private var armedAt = Int64.max
    private let positions: RulePositions
    /// Positions read at start-up for rules not configured yet (taken when a rule of that name appears).
    private var storedPositions: [String: UInt64]
    var lastSaved: [(String, UInt64)] = []
    private var saveScheduled = false
    private var turnRequested = false
    private var firstRule = 0
    private var reloadScheduled = false
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// Called (on the loop) when a rules directory changed and settled: the daemon re-reads the rule files.
    public var onRulesChanged: (() -> Void)?

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
                startCatchUp(rule, from: stored + 1, reason: "restart")
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

    private func matched(_ rule: RuleRuntime, _ event: Event, _ line: UnsafeRawBufferPointer) {
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
            if rule.spec.catchUp && rule.backlog >= Self.maxBacklog { return startCatchUp(rule, from: event.seq, reason: "backlog") }
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
        if rule.backlog >= Self.maxBacklog { return startCatchUp(rule, from: event.seq, reason: "backlog") }
        rule.hold(event.seq)
        rule.enqueue(Job(event: event, line: Array(line), heldSeq: event.seq))
    }

    /// CLOCK_MONOTONIC as a signed count: deadlines add durations (Int64) to it.
    static func monotonicNow() -> Int64 { Int64(clamping: Clock.monotonicNanoseconds()) }

    private static func debounceDue(_ spec: RuleSpec, now: Int64, firstSeen: Int64) -> Int64 {
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

    private func refuse(_ rule: RuleRuntime, _ event: Event, depth: Int) {
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

    // MARK: Catching up from the journal

    private func startCatchUp(_ rule: RuleRuntime, from seq: UInt64, reason: String) {
        do {
            let reader = try JournalReader(directory: context.journal.directory)
            reader.onProblem = { [logger = context.logger, name = rule.spec.name] problem in
                logger.error("damaged journal record skipped", metadata: ["rule": "\(name)", "problem": "\(problem)"])
            }
            try reader.seek(.seq(CatchUpSlice.seekTarget(for: seq, in: context.journal.directory)))
            rule.catchUp = reader
            rule.catchUpNext = seq
            if let startsAt = reader.startsAt { reportRetentionGap(rule, from: seq, to: startsAt) }
            context.logger.info("rule reads its matches from the journal", metadata: [
                "rule": "\(rule.spec.name)", "from_seq": "\(seq)", "reason": "\(reason)",
            ])
            requestTurn()
        } catch {
            context.logger.error("cannot read the journal", metadata: ["rule": "\(rule.spec.name)", "error": "\(error)"])
            reportError("rule '\(rule.spec.name)' cannot read the journal from seq \(seq); those events are not run", "\(error)")
        }
    }

    private func reportRetentionGap(_ rule: RuleRuntime, from: UInt64, to: UInt64) {
        // A journaled `kevd`/`gap` with key `rule:NAME`, published from the loop's inbox (RulesEngine+Retention).
        context.journal.consumers.lost("rule:" + rule.spec.name, from: from, to: to - 1)
    }

    /// Reads on for catching-up rules while they have room; a rule that reaches the journal's end takes events
    /// live again.
    private func catchUp() {
        // One slice of reading per turn, shared by the rules (the one after last turn's first goes first): a long
        // catch-up, or a cold disk under it, never holds the loop longer than that.
        var slice = CatchUpSlice(now: Self.monotonicNow())
        for i in rules.indices {
            let rule = rules[(firstRule + 1 + i) % rules.count]
            guard let reader = rule.catchUp else { continue }
            var drained = false
            while rule.backlog < Self.maxBacklog / 2 && slice.hasRoom {
                let record: JournalReader.Record?
                do {
                    record = try reader.next()
                } catch {
                    reportError("rule '\(rule.spec.name)' stopped reading the journal at seq \(rule.catchUpNext)", "\(error)")
                    rule.catchUp = nil
                    break
                }
                guard let record else {
                    drained = true
                    break
                }
                slice.spend(recordBytes: record.payload.count)
                guard record.seq >= rule.catchUpNext else { continue }
                if record.seq > rule.catchUpNext { reportRetentionGap(rule, from: rule.catchUpNext, to: record.seq) }
                rule.catchUpNext = record.seq + 1
                rule.seen = record.seq
                let quick = rule.filter.matches(line: record.payload)
                if quick == false { continue }
                guard let event = try? Event(jsonLine: record.payload) else {
                    context.logger.error("unreadable journal record skipped", metadata: ["rule": "\(rule.spec.name)", "seq": "\(record.seq)"])
                    continue
                }
                if quick == nil && !rule.filter.matches(event) { continue }
                matched(rule, event, record.payload)
            }
            guard rule.catchUp != nil else { continue }
            if drained && rule.catchUpNext >= context.pipeline.nextSeq {
                rule.catchUp = nil
                context.logger.info("rule caught up", metadata: ["rule": "\(rule.spec.name)", "seq": "\(rule.seen)"])
            } else if drained && context.journal.lastError != nil && rule.catchUpNext > context.journal.writtenSeq {
                // The journal cannot write what the rule needs next: nothing to read until it can, and the turn
                // whose write succeeds dispatches (asking for turns now would spin the loop for the whole failure).
            } else if rule.backlog < Self.maxBacklog / 2 {
                // More to read (or events of this turn not yet written): come back next turn, even if idle.
                requestTurn()
            }
        }
    }

    private func requestTurn() {
        guard !turnRequested else { return }
        turnRequested = true
        context.loop.inbox.post {}
    }

    // MARK: Starting runs

    /// The loop's end-of-turn work, after the turn's events went out: read on for catching-up rules, start
    /// what may start (a few per turn), arm the timer. Returns whether it published anything.
    @discardableResult
    public func dispatch() -> Bool {
        turnRequested = false
        let before = context.pipeline.nextSeq
        catchUp()
        // A start costs the loop only its pipes, strings and bookkeeping (the spawner thread waits in vfork), but
        // a burst of them would still hold every subscriber's next event: a few per turn, then the loop looks at
        // its fds again and comes back for the rest.
        var starts = 0
        // Only events the journal has written start runs (docs/RULES.md): while it cannot write (disk full), the
        // runs wait in their queues, and the turn that writes their events starts them.
        let written = context.journal.writtenSeq
        // Rules take turns at going first, so a busy rule cannot keep the others from ever starting.
        firstRule = rules.isEmpty ? 0 : (firstRule + 1) % rules.count
        for i in rules.indices {
            let rule = rules[(firstRule + i) % rules.count]
            guard rule.active else { continue }
            while starts < Self.startsPerTurn, let job = rule.nextStartable(writtenThrough: written) {
                start(rule, job)
                starts += 1
            }
        }
        if starts == Self.startsPerTurn && rules.contains(where: { $0.active && $0.hasStartable(writtenThrough: written) }) {
            requestTurn()
        }
        if !rules.isEmpty { schedulePositionSave() }
        armTimer()
        return context.pipeline.nextSeq != before
    }

    func watchOutput(_ run: RuleRun, _ fd: OwnedFD, isStderr: Bool) {
        do {
            try context.loop.register(fd: fd.rawValue, events: .readable, priority: .clients) { [unowned self] _ in
                self.readOutput(run, isStderr: isStderr, toEnd: false)
            }
        } catch {
            // Unwatched, it is still read when the run ends; a script that fills the pipe first stalls until
            // its timeout. Registration fails only when epoll is out of memory.
            context.logger.error("cannot watch a script's output", metadata: ["error": "\(error)"])
        }
    }

    /// Reads what a run's stdout or stderr has. `toEnd`: the run has exited, take everything left and close.
    private func readOutput(_ run: RuleRun, isStderr: Bool, toEnd: Bool) {
        guard let fd = isStderr ? run.stderr : run.stdout else { return }
        var reads = 0
        // A bounded number of reads per wakeup: a script printing without pause must not hold the loop.
        while toEnd || reads < 16 {
            reads += 1
            let n: Int?
            do {
                n = try Pipes.readAvailable(fd.rawValue, into: scratch)
            } catch {
                n = 0
            }
            guard let n else { break }
            if n == 0 {
                closeOutput(run, isStderr: isStderr)
                return
            }
            let chunk = UnsafeRawBufferPointer(rebasing: scratch[..<n])
            if isStderr { run.stderrTail.append(chunk) } else { run.stdoutTail.append(chunk) }
        }
        if toEnd { closeOutput(run, isStderr: isStderr) }
    }

    func closeOutput(_ run: RuleRun, isStderr: Bool) {
        guard let fd = isStderr ? run.stderr : run.stdout else { return }
        context.loop.unregister(fd: fd.rawValue)
        fd.close()
        if isStderr { run.stderr = nil } else { run.stdout = nil }
    }

    // MARK: Runs ending

    /// Reaps every exited child (the daemon calls this on SIGCHLD). Processes the script left behind in its
    /// process group get SIGTERM (SIGKILL after a timeout) first, while the zombie still reserves the group's
    /// number.
    public func childrenExited() {
        while let (pid, status) = Children.nextExited() {
            // An exit no run claims may be a run whose pid is still on its way from the spawner: reaped later.
            if runs[pid] == nil && !mayReapUnclaimed(pid) { return }
            if let run = runs[pid] {
                // A run that timed out was already sent SIGTERM, group and all: what is left ignored it, and the
                // kill grace would never come for it once the leader is gone.
                Children.signalGroup(pid, run.timedOut ? SIGKILL : SIGTERM)
            }
            Children.reap(pid)
            guard let run = runs.removeValue(forKey: pid) else { continue }
            finish(run, status)
        }
        spawning.unclaimed = nil
    }

    private func finish(_ run: RuleRun, _ status: ChildStatus) {
        readOutput(run, isStderr: false, toEnd: true)
        readOutput(run, isStderr: true, toEnd: true)
        run.finished = true
        let rule = run.rule
        rule.running -= 1
        var data = EventData()
        data.append("pid", Int(run.pid))
        switch status {
        case .exited(let code): data.append("exit_status", Int(code))
        case .signaled(let signal, _): data.append("signal", SignalFD.name(of: signal))
        }
        let elapsed = Self.monotonicNow() - run.started
        data.append("duration_ms", .double(Double(elapsed / 1000) / 1000))
        if run.timedOut { data.append("timed_out", true) }
        data.append("stdout", run.stdoutTail.text)
        data.append("stderr", run.stderrTail.text)
        if status == .exited(0) && !run.timedOut {
            rule.counters.succeeded += 1
            publish("succeeded", rule, run.job, depth: run.depth, data)
            done(rule, run.job)
        } else {
            if run.timedOut {
                let seconds = Double(rule.spec.timeoutNanoseconds / 1_000_000) / 1000
                data.append("error", "timed out after \(seconds)s")
            } else {
                data.append("error", status.description)
            }
            attemptFailed(rule, run.job, depth: run.depth, data, retryable: true)
        }
    }

    /// A failed attempt: retry after a backoff while retries remain (the key stays busy, so later events for
    /// it wait), else a dead letter.
    func attemptFailed(_ rule: RuleRuntime, _ job: Job, depth: Int, _ report: EventData, retryable: Bool) {
        rule.counters.failed += 1
        var data = report
        let willRetry = retryable && rule.active && job.attempt <= rule.spec.retries
        data.append("will_retry", willRetry)
        var delay: Int64 = 0
        if willRetry {
            let doublings = min(job.attempt - 1, 40)
            delay = min(rule.spec.backoffNanoseconds.multipliedReportingOverflow(by: 1 << doublings).partialValue, RuleSpec.maxBackoff)
            if delay <= 0 { delay = RuleSpec.maxBackoff }
            data.append("retry_in_ms", .int(delay / 1_000_000))
        }
        publish("failed", rule, job, depth: depth, data)
        if willRetry {
            var next = job
            next.attempt += 1
            rule.retrying[job.event.key] = next
            schedule(at: Self.monotonicNow() + delay, .retry(rule, job.event.key))
            return
        }
        rule.counters.dead += 1
        var dead = EventData()
        dead.append("attempts", job.attempt)
        if case .string(let error)? = report["error"] { dead.append("error", error) }
        publish("dead", rule, job, depth: depth, dead)
        done(rule, job)
    }

    private func done(_ rule: RuleRuntime, _ job: Job) {
        rule.release(job.heldSeq)
        rule.keyFreed(job.event.key)
    }

    /// `rule.<type>`, key the rule's name, with what ties it to its trigger first.
    func publish(_ type: String, _ rule: RuleRuntime, _ job: Job, depth: Int, _ extra: EventData) {
        var data = EventData(capacity: 8 + extra.count)
        data.append("rule", rule.spec.name)
        data.append("cause", job.event.id.string)
        data.append("cause_seq", .int(Int64(clamping: job.event.seq)))
        data.append("cause_key", job.event.key)
        data.append("attempt", job.attempt)
        data.append("depth", depth)
        if job.events > 1 { data.append("debounced_events", job.events) }
        for field in extra { data.append(field.name, field.value) }
        context.pipeline.publish(EventDraft(source: .kevd, type: "rule." + type, key: rule.spec.name, data: data))
    }

    private func reportError(_ message: String, _ error: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        context.logger.error("\(message)", metadata: ["error": "\(error)"])
        context.pipeline.publishKevd("error", component: "rules", data)
    }

    // MARK: Deadlines

    struct Deadline: Comparable {
        enum Action {
            case timeout(RuleRun)
            case kill(RuleRun)
            case debounce(RuleRuntime, String)
            case retry(RuleRuntime, String)
            case savePositions
            case reloadRules
        }

        let at: Int64
        /// Insertion order: equal times fire first-come first-served.
        let order: UInt64
        let action: Action

        static func < (a: Deadline, b: Deadline) -> Bool { (a.at, a.order) < (b.at, b.order) }
        static func == (a: Deadline, b: Deadline) -> Bool { a.at == b.at && a.order == b.order }
    }

    func schedule(at time: Int64, _ action: Deadline.Action) {
        deadlineOrder += 1
        deadlines.insert(Deadline(at: time, order: deadlineOrder, action: action))
    }

    private func armTimer() {
        guard let first = deadlines.min, first.at < armedAt else { return }
        do {
            try timer.arm(atAbsolute: max(first.at, 1), cancelOnClockChange: false)
            armedAt = first.at
        } catch {
            context.logger.error("cannot arm the rules timer", metadata: ["error": "\(error)"])
        }
    }

    private func fireDeadlines() {
        let now = Self.monotonicNow()
        while let first = deadlines.min, first.at <= now {
            _ = deadlines.removeMin()
            switch first.action {
            case .timeout(let run):
                guard !run.finished else { continue }
                run.timedOut = true
                // A run still starting (pid 0) gets the signal as soon as its pid arrives.
                if run.pid > 0 { Children.signalGroup(run.pid, SIGTERM) }
                schedule(at: now + run.rule.spec.killGraceNanoseconds, .kill(run))
            case .kill(let run):
                guard !run.finished else { continue }
                run.killDue = true
                if run.pid > 0 { Children.signalGroup(run.pid, SIGKILL) }
            case .debounce(let rule, let key):
                guard let entry = rule.debouncing[key] else { continue }
                if entry.due > now {
                    schedule(at: entry.due, .debounce(rule, key))
                    continue
                }
                rule.debouncing[key] = nil
                if !rule.spec.catchUp && rule.isBusy(key: key) {
                    rule.counters.skipped += 1
                    rule.release(entry.job.heldSeq)
                } else {
                    rule.enqueue(entry.job)
                }
            case .retry(let rule, let key):
                guard let job = rule.retrying.removeValue(forKey: key) else { continue }
                if rule.active { rule.requeueFirst(job) } else { rule.release(job.heldSeq) }
            case .savePositions:
                saveScheduled = false
                savePositions()
            case .reloadRules:
                reloadScheduled = false
                onRulesChanged?()
            }
        }
    }

    // MARK: Positions

    private func schedulePositionSave() {
        guard !saveScheduled else { return }
        saveScheduled = true
        schedule(at: Self.monotonicNow() + Self.positionSaveInterval, .savePositions)
    }

    /// Positions as they may be stored: never past what the journal has made durable, or an operating-system
    /// crash that cut the journal's tail would leave a rule past seqs that are then given to new events.
    private func currentPositions() -> [(String, UInt64)] {
        let durable = context.journal.durableSeq
        var list = rules.map { ($0.spec.name, min($0.position, durable)) }
        for (name, seq) in storedPositions.sorted(by: { $0.key < $1.key }) { list.append((name, seq)) }
        return list
    }

    private func savePositions() {
        let current = currentPositions()
        guard !current.elementsEqual(lastSaved, by: { $0 == $1 }) else { return }
        lastSaved = current
        positions.store(current)
    }

    /// A rules directory changed: reload once it has been quiet for a moment (an editor writes a file in
    /// several steps; a package manager drops several files).
    public func rulesDirectoryChanged() {
        guard !reloadScheduled else { return }
        reloadScheduled = true
        schedule(at: Self.monotonicNow() + 200_000_000, .reloadRules)
        armTimer()
    }

    /// Stores every position, synchronously: called once the loop has stopped. Running scripts are left to
    /// the parent-death signal (they get SIGTERM when kevd's main thread exits) and run again after a restart.
    public func stop() {
        positions.storeNowAndStop(currentPositions())
    }

    // MARK: Status

    /// For kevd's stats: runs started and failed attempts summed over the active rules (a rule dropped by a
    /// reload takes its counts with it), and the scripts running now, of any rule.
    public var totals: (runs: Int, failed: Int, running: Int) {
        let runs = rules.reduce(0) { $0 + $1.counters.runs }
        let failed = rules.reduce(0) { $0 + $1.counters.failed }
        return (runs, failed, self.runs.count + spawning.starting.count)
    }

    /// The active rules for `status` and `kevctl rules list`.
    public func statusRules() -> [JSONValue] {
        let last = context.pipeline.nextSeq - 1
        return rules.map { rule in
            let position = rule.position
            return .object([
                ("name", .string(rule.spec.name)),
                ("file", .string(rule.spec.file)),
                ("line", .int(Int64(rule.spec.line))),
                ("runs", .int(Int64(rule.counters.runs))),
                ("succeeded", .int(Int64(rule.counters.succeeded))),
                ("failed", .int(Int64(rule.counters.failed))),
                ("dead", .int(Int64(rule.counters.dead))),
                ("skipped", .int(Int64(rule.counters.skipped))),
                ("refused", .int(Int64(rule.counters.refused))),
                ("running", .int(Int64(rule.running))),
                ("pending", .int(Int64(rule.backlog))),
                ("position", .uint(position)),
                ("lag", .uint(last > position ? last - position : 0)),
                ("catching_up", .bool(rule.catchUp != nil)),
                ("lost", .uint(context.journal.consumers.lostCount("rule:" + rule.spec.name))),
            ])
        }
    }
}
