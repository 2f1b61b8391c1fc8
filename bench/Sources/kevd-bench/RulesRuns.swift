import CKevdShim
import Glibc
import KevdEvent
import KevdKernel
import Synchronization

// The measurements of `kevd-bench rules`: a bare posix_spawn loop (the ceiling), kevd running a rule's program
// for a burst of matching events, and the latency of a separate event stream to a subscriber, idle and while a
// burst's scripts run. See bench/RULES.md.

// MARK: - Other work on the machine

/// CPU time the machine spent on anything but the bench, its children and its kevd: on a shared machine, other
/// work competing for the cores. From /proc/stat (every CPU's non-idle time) minus the bench's own and reaped
/// children's CPU and kevd's own and reaped children's (the scripts). Kernel threads doing the bench's I/O count
/// as other; a few tens of ms per run.
struct CPUAccount {
    var busy: Double
    var bench: Double
    var kevd: Double

    static func sample(kevd pid: pid_t? = nil) -> CPUAccount {
        var busy = 0.0
        if let line = Machine.firstLine(of: "/proc/stat") {
            // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
            let fields = line.split(separator: " ").dropFirst().prefix(8).compactMap { Double($0) }
            if fields.count == 8 { busy = (fields.reduce(0, +) - fields[3] - fields[4]) / ProcFigures.ticksPerSecond }
        }
        var kevd = 0.0
        if let pid { kevd = (ProcFigures.cpuSeconds(pid: pid) ?? 0) + (ProcFigures.reapedChildrenCPUSeconds(pid: pid) ?? 0) }
        return CPUAccount(
            busy: busy, bench: ProcFigures.selfCPUSeconds() + ProcFigures.childrenCPUSeconds(), kevd: kevd)
    }

    /// Other work's CPU seconds between `start` and this sample (never below 0: the sources tick apart).
    func other(since start: CPUAccount) -> Double {
        max(0, (busy - start.busy) - (bench - start.bench) - (kevd - start.kevd))
    }

    /// As a share of the machine over `seconds`: 100 = every CPU busy with other work.
    static func percent(_ other: Double, seconds: Double) -> Double {
        other / (seconds * Double(max(sysconf(Int32(_SC_NPROCESSORS_ONLN)), 1))) * 100
    }
}

// MARK: - The bare spawn loop

struct BareSpawnResult {
    var inFlight: Int
    var spawns: Int
    var seconds: Double
    /// The bench process's own CPU (user + sys) over the loop: the parent's side of each spawn.
    var parentCPUSeconds: Double
    /// CPU of the reaped children (RUSAGE_CHILDREN), the programs themselves.
    var childCPUSeconds: Double
    var failures: Int
    /// Other work's CPU over the loop (`CPUAccount`).
    var otherCPUSeconds: Double

    var spawnsPerSecond: Double { Double(spawns) / seconds }
    var otherPercent: Double { CPUAccount.percent(otherCPUSeconds, seconds: seconds) }

    var json: JSONValue {
        .object([
            ("in_flight", .int(Int64(inFlight))), ("spawns", .int(Int64(spawns))), ("seconds", .double(seconds)),
            ("spawns_per_second", .double(spawnsPerSecond)), ("parent_cpu_seconds", .double(parentCPUSeconds)),
            ("children_cpu_seconds", .double(childCPUSeconds)), ("failures", .int(Int64(failures))),
            ("other_cpu_seconds", .double(otherCPUSeconds)), ("other_cpu_percent", .double(otherPercent)),
        ])
    }
}

/// glibc's `posix_spawn` of one program, stdio on /dev/null, the PATH kevd gives scripts as the whole
/// environment; everything prepared once.
final class BareSpawner {
    static let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    let program: String
    private var actions = posix_spawn_file_actions_t()
    private let devNull: Int32
    private let argv: [UnsafeMutablePointer<CChar>?]
    private let envp: [UnsafeMutablePointer<CChar>?]

    init(program: String) throws {
        self.program = program
        devNull = try syscall("open(/dev/null)") { open("/dev/null", O_RDWR | O_CLOEXEC) }
        posix_spawn_file_actions_init(&actions)
        for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] { posix_spawn_file_actions_adddup2(&actions, devNull, fd) }
        argv = [strdup(program), nil]
        envp = Self.environment.map { strdup($0) } + [nil]
    }

    deinit {
        posix_spawn_file_actions_destroy(&actions)
        for pointer in argv + envp { free(pointer) }
        close(devNull)
    }

    func spawn() throws -> pid_t {
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, program, &actions, nil, argv, envp)
        guard rc == 0 else { throw SyscallError(call: "posix_spawn(\(program))", errno: .init(rawValue: rc)) }
        return pid
    }

    /// Blocking `waitpid` of one pid (or any child: -1); the pid and whether it exited 0.
    static func wait(_ pid: pid_t) throws -> (pid: pid_t, ok: Bool) {
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, 0)
            if r > 0 { return (r, status == 0) }
            if errno != EINTR { throw SyscallError(call: "waitpid", errno: .init(rawValue: errno)) }
        }
    }
}

/// The ceiling: `inFlight` children at a time, each reaped with a blocking `waitpid(-1)` and replaced at once.
enum BareSpawnLoop {
    /// Must run while the bench has no other child that could exit: `waitpid(-1)` would reap it.
    static func run(program: String, count: Int, inFlight: Int) throws -> BareSpawnResult {
        let spawner = try BareSpawner(program: program)
        var ours = Set<pid_t>()
        ours.reserveCapacity(inFlight * 2)
        var started = 0
        var reaped = 0
        var failures = 0
        let cpu0 = ProcFigures.selfCPUSeconds()
        let children0 = ProcFigures.childrenCPUSeconds()
        let account0 = CPUAccount.sample()
        let start = Clock.monotonicNanoseconds()
        while started < min(inFlight, count) {
            ours.insert(try spawner.spawn())
            started += 1
        }
        while reaped < count {
            let (pid, ok) = try BareSpawner.wait(-1)
            guard ours.remove(pid) != nil else { continue }
            reaped += 1
            if !ok { failures += 1 }
            if started < count {
                ours.insert(try spawner.spawn())
                started += 1
            }
        }
        let end = Clock.monotonicNanoseconds()
        let other = CPUAccount.sample().other(since: account0)
        return BareSpawnResult(
            inFlight: inFlight, spawns: count, seconds: Seconds.between(start, end),
            parentCPUSeconds: ProcFigures.selfCPUSeconds() - cpu0,
            childCPUSeconds: ProcFigures.childrenCPUSeconds() - children0, failures: failures, otherCPUSeconds: other)
    }
}

/// The same spawn load on a thread of the bench, until stopped, while kevd has nothing to run: the control for
/// "other events' latency while scripts run". Its children are reaped by pid, oldest first (kevd is a child of
/// the bench too).
final class SpawnLoad: @unchecked Sendable {
    // @unchecked: `spawns`, `seconds` and `error` are the load thread's until it is joined.
    let program: String
    let inFlight: Int
    /// The load thread's nice value (its children inherit it); nil: the bench's.
    let nice: Int32?
    private let stopping = Atomic<Bool>(false)
    var spawns = 0
    var seconds = 0.0
    var error: String?

    init(program: String, inFlight: Int, nice: Int32? = nil) {
        self.program = program
        self.inFlight = inFlight
        self.nice = nice
    }

    func stop() { stopping.store(true, ordering: .releasing) }
    var spawnsPerSecond: Double { seconds > 0 ? Double(spawns) / seconds : 0 }

    func run() {
        var pending: [pid_t] = []
        do {
            // Linux nice values are per thread: PRIO_PROCESS with id 0 is the calling thread.
            if let nice, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) != 0 {
                throw SyscallError(call: "setpriority(\(nice))", errno: .init(rawValue: errno))
            }
            let spawner = try BareSpawner(program: program)
            let start = Clock.monotonicNanoseconds()
            for _ in 0..<inFlight { pending.append(try spawner.spawn()) }
            var next = 0
            while !stopping.load(ordering: .acquiring) {
                _ = try BareSpawner.wait(pending[next])
                spawns += 1
                pending[next] = try spawner.spawn()
                next = (next + 1) % inFlight
            }
            seconds = Seconds.since(start)
        } catch {
            self.error = "\(error)"
        }
        for pid in pending { _ = try? BareSpawner.wait(pid) }
    }
}

extension ProcFigures {
    /// cutime + cstime (fields 16 and 17) of /proc/PID/stat: the CPU of the children it has reaped.
    static func reapedChildrenCPUSeconds(pid: pid_t) -> Double? {
        guard let bytes = try? Machine.readSmallFile("/proc/\(pid)/stat"),
            let close = bytes.lastIndex(of: UInt8(ascii: ")"))
        else { return nil }
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 14, let user = Int(String(decoding: fields[13], as: UTF8.self)),
            let system = Int(String(decoding: fields[14], as: UTF8.self))
        else { return nil }
        return Double(user + system) / ticksPerSecond
    }

    /// The bench's reaped children's CPU (RUSAGE_CHILDREN).
    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

// MARK: - kevd with the bench rule

/// A kevd (`KevdInstance`) with one rules directory holding `10-bench.toml`: rule `bench`, matching
/// `source=emit`, `type=bench`, running the program with the given concurrency.
final class RuleKevd {
    let root: TempDirectory
    let instance: KevdInstance
    let ruleFile: String

    static func ruleText(program: String, concurrency: Int) -> String {
        """
        [[rule]]
        name = "bench"
        match = ["source=emit", "type=bench"]
        run = [\(KevdInstance.tomlString(program))]
        concurrency = \(concurrency)

        """
    }

    init(kevd: String, stateParent: String, program: String, concurrency: Int, nice: Int32? = nil) throws {
        root = try TempDirectory(parent: stateParent)
        do {
            let rules = root.path + "/rules"
            try TempDirectory.makeDirectories(rules)
            ruleFile = rules + "/10-bench.toml"
            // Mode 0644 (writeFile's, and umask only clears bits): kevd refuses group- or world-writable rule files.
            try KevdInstance.writeFile(ruleFile, Self.ruleText(program: program, concurrency: concurrency))
            chmod(ruleFile, 0o644)
            instance = try KevdInstance(
                kevd: kevd, stateDirectory: root.path, watch: nil, watchEvents: [],
                extraConfig: "\n[rules]\ndirectories = [\(KevdInstance.tomlString(rules))]\n")
        } catch {
            root.remove()
            throw error
        }
        // The rule must be active, or every figure below would measure nothing.
        let status = try rulesStatus()
        guard let active = status.active, active.contains(where: { $0["name"]?.stringValue == "bench" }) else {
            _ = instance.stop()
            root.remove()
            throw BenchError("kevd did not load the bench rule: \(status.error ?? "no error reported")")
        }
        if let nice {
            do {
                try Self.prioritize(pid: instance.pid, nice: nice)
            } catch {
                _ = instance.stop()
                root.remove()
                throw error
            }
        }
    }

    /// A diagnostic (`--kevd-nice`): every thread of kevd at `nice`, with SCHED_RESET_ON_FORK so that the
    /// scripts it starts begin at nice 0 again, as they would under a unit with `Nice=` and
    /// `CPUSchedulingResetOnFork=yes`.
    static func prioritize(pid: pid_t, nice: Int32) throws {
        let resetOnFork: Int32 = 0x4000_0000  // SCHED_RESET_ON_FORK
        let tasks = try DirectoryListing.entries(of: "/proc/\(pid)/task")
        for entry in tasks {
            guard let tid = Int32(String(decoding: entry.name, as: UTF8.self)) else { continue }
            var param = sched_param(sched_priority: 0)
            guard sched_setscheduler(tid, SCHED_OTHER | resetOnFork, &param) == 0 else {
                throw SyscallError(call: "sched_setscheduler(\(tid), SCHED_OTHER|SCHED_RESET_ON_FORK)", errno: .init(rawValue: errno))
            }
            guard setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(tid), nice) == 0 else {
                throw SyscallError(call: "setpriority(\(tid), \(nice))", errno: .init(rawValue: errno))
            }
        }
    }

    var pid: pid_t { instance.pid }
    var socketPath: String { instance.socketPath }

    /// `status`'s `rules` member: the active rules (with their counters) and the rule files' problems.
    func rulesStatus() throws -> (active: [JSONValue]?, error: String?) {
        let client = try LineClient(path: instance.socketPath)
        defer { client.close() }
        let reply = try client.request(#"{"op":"status"}"#, timeout: 10)
        let value = try JSONReader.parse(reply)
        guard case .array(let active)? = value["rules"]?["active"] else { return (nil, value["rules"]?["error"]?.stringValue) }
        return (active, value["rules"]?["error"]?.stringValue)
    }

    /// The bench rule's counters from `status`.
    func benchRule() -> JSONValue? {
        (try? rulesStatus())?.active?.first { $0["name"]?.stringValue == "bench" }
    }

    /// SIGTERM, then the temp dir goes. Returns a problem, if any.
    func stop() -> String? {
        let stop = instance.stop()
        defer { root.remove() }
        if stop.killed || stop.status != 0 {
            return "kevd exit status \(stop.status)\(stop.killed ? " after SIGKILL" : ""): \(instance.process.stderrTail())"
        }
        return nil
    }
}

/// Counts a subscription's rule outcome lines (`rule.succeeded`, `rule.failed`, `rule.dead`) without parsing
/// JSON: the type is found by its bytes, `"type":"rule.…"`.
final class RuleOutcomeReader: @unchecked Sendable {
    // @unchecked: `dead`, `otherLines` and `otherSample` are the reader thread's until it is joined; the rest are
    // atomics.
    let target: Int
    private let succeededCounter = Atomic<Int>(0)
    private let failedCounter = Atomic<Int>(0)
    private let firstAt = Atomic<UInt64>(0)
    private let completeAt = Atomic<UInt64>(0)
    var dead = 0
    var otherLines = 0
    var otherSample: [String] = []

    init(target: Int) { self.target = target }

    var succeeded: Int { succeededCounter.load(ordering: .acquiring) }
    var failed: Int { failedCounter.load(ordering: .acquiring) }
    /// Monotonic ns of the read that brought the first `rule.succeeded`; 0 until then.
    var firstSucceededAt: UInt64 { firstAt.load(ordering: .acquiring) }
    /// Monotonic ns of the read that brought the `target`-th outcome (succeeded or failed); 0 until then.
    var completedAt: UInt64 { completeAt.load(ordering: .acquiring) }

    func run(fd: Int32, initial: [UInt8]) {
        readTimestampedLines(fd: fd, initial: initial) { bytes, time in self.line(bytes, time: time) }
    }

    private static let seqPrefix = Array(#"{"seq":"#.utf8)
    private static let typeKey = Array(#""type":"rule."#.utf8)
    private static let succeededText = Array(#"succeeded""#.utf8)
    private static let failedText = Array(#"failed""#.utf8)
    private static let deadText = Array(#"dead""#.utf8)

    private func line(_ bytes: UnsafeBufferPointer<UInt8>, time: UInt64) {
        guard bytes.starts(with: Self.seqPrefix), let at = firstIndex(of: Self.typeKey, in: bytes) else { return other(bytes) }
        let rest = bytes[(at + Self.typeKey.count)...]
        if rest.starts(with: Self.succeededText) {
            let n = succeededCounter.add(1, ordering: .releasing).newValue
            if n == 1 { firstAt.store(time, ordering: .releasing) }
            if n + failed == target { completeAt.store(time, ordering: .releasing) }
        } else if rest.starts(with: Self.failedText) {
            let n = failedCounter.add(1, ordering: .releasing).newValue
            if n + succeeded == target { completeAt.store(time, ordering: .releasing) }
        } else if rest.starts(with: Self.deadText) {
            dead += 1
        } else {
            other(bytes)
        }
    }

    private func other(_ bytes: UnsafeBufferPointer<UInt8>) {
        otherLines += 1
        if otherSample.count < 3 { otherSample.append(String(decoding: bytes.prefix(300), as: UTF8.self)) }
    }
}

/// Samples the bench rule's counters (`status` every 100 ms): how far the queue grew, how many ran at once,
/// whether it read its matches from the journal (`catching_up`, past 4,096 queued jobs).
final class RuleStatusMonitor: StatusPoller, @unchecked Sendable {
    var maxPending: Int64 = 0
    var maxRunning: Int64 = 0
    var maxLag: Int64 = 0
    var catchingUpSamples = 0

    override func take(_ value: JSONValue, reply: String) -> String? {
        guard case .array(let active)? = value["rules"]?["active"],
            let rule = active.first(where: { $0["name"]?.stringValue == "bench" })
        else {
            return "status without the bench rule: \(reply.prefix(200))"
        }
        maxPending = max(maxPending, rule["pending"]?.int64Value ?? 0)
        maxRunning = max(maxRunning, rule["running"]?.int64Value ?? 0)
        maxLag = max(maxLag, rule["lag"]?.int64Value ?? 0)
        if rule["catching_up"]?.boolValue == true { catchingUpSamples += 1 }
        return nil
    }
}

/// The burst's emit requests, `{"op":"emit","type":"bench","key":"k<i>"}`, 1,024 per write. Every event has
/// its own key: runs for one key never overlap, so shared keys would serialize them.
struct BurstLines {
    let chunks: [[UInt8]]
    let events: Int

    init(events: Int, perChunk: Int = 1024) {
        self.events = events
        var chunks: [[UInt8]] = []
        var i = 0
        while i < events {
            var chunk: [UInt8] = []
            chunk.reserveCapacity(perChunk * 48)
            for j in i..<min(i + perChunk, events) {
                chunk.append(contentsOf: #"{"op":"emit","type":"bench","key":"k"#.utf8)
                chunk.append(contentsOf: String(j).utf8)
                chunk.append(contentsOf: "\"}\n".utf8)
            }
            chunks.append(chunk)
            i += perChunk
        }
        self.chunks = chunks
    }

    func write(to fd: Int32) throws {
        for chunk in chunks { try chunk.withUnsafeBytes { try writeAll(fd, $0) } }
    }
}

struct RuleBurstResult {
    var concurrency: Int
    var events: Int
    /// First emit written → the last outcome (`rule.succeeded`/`rule.failed`) read by the subscriber.
    var seconds: Double
    /// First emit written → the first `rule.succeeded` read.
    var firstRunSeconds: Double
    var emitWriteSeconds: Double
    /// First emit written → the last emit reply (durable).
    var replySeconds: Double
    var succeeded: Int
    var failed: Int
    var dead: Int
    var kevdCPUSeconds: Double?
    /// The CPU of the scripts kevd reaped (cutime + cstime of kevd).
    var scriptsCPUSeconds: Double?
    var benchCPUSeconds: Double
    var statusSamples: Int
    var maxPending: Int64
    var maxRunning: Int64
    var catchingUpSamples: Int
    var finalRule: JSONValue?
    var kevdMemory: ProcFigures.Memory?
    /// Other work's CPU over the burst (`CPUAccount`).
    var otherCPUSeconds: Double
    var problems: [String]

    var otherPercent: Double { CPUAccount.percent(otherCPUSeconds, seconds: seconds) }
    var complete: Bool { succeeded + failed >= events }
    var runsPerSecond: Double { Double(succeeded + failed) / seconds }
    var cpuMicrosecondsPerRun: Double? { kevdCPUSeconds.map { $0 * 1e6 / Double(max(succeeded + failed, 1)) } }

    var json: JSONValue {
        func d(_ v: Double?) -> JSONValue { v.map { .double($0) } ?? .null }
        return .object([
            ("concurrency", .int(Int64(concurrency))), ("events", .int(Int64(events))), ("seconds", .double(seconds)),
            ("runs_per_second", .double(runsPerSecond)), ("first_run_seconds", .double(firstRunSeconds)),
            ("emit_write_seconds", .double(emitWriteSeconds)), ("reply_seconds", .double(replySeconds)),
            ("succeeded", .int(Int64(succeeded))), ("failed", .int(Int64(failed))), ("dead", .int(Int64(dead))),
            ("kevd_cpu_seconds", d(kevdCPUSeconds)), ("kevd_cpu_us_per_run", d(cpuMicrosecondsPerRun)),
            ("scripts_cpu_seconds", d(scriptsCPUSeconds)), ("bench_cpu_seconds", .double(benchCPUSeconds)),
            ("status_samples", .int(Int64(statusSamples))), ("max_pending", .int(maxPending)),
            ("max_running", .int(maxRunning)), ("catching_up_samples", .int(Int64(catchingUpSamples))),
            ("rule_status_at_end", finalRule ?? .null), ("kevd_memory_at_end", kevdMemory?.json ?? .null),
            ("other_cpu_seconds", .double(otherCPUSeconds)), ("other_cpu_percent", .double(otherPercent)),
            ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

/// A burst in flight against a `RuleKevd`: the outcome subscription and its reader, the emitter and its reply
/// counter, the status monitor. `start()` writes the burst (on the calling thread, or a thread of its own).
final class RuleBurst: @unchecked Sendable {
    let kevd: RuleKevd
    let events: Int
    let outcomes: LineClient
    let emitter: LineClient
    let statusClient: LineClient?
    let reader: RuleOutcomeReader
    let replies: ReplyCounter
    let monitor: RuleStatusMonitor?
    private var threads: [pthread_t] = []
    private var writer: pthread_t? = nil
    private let lines: BurstLines
    private let writeError = Mutex<String?>(nil)
    private let writtenAt = Atomic<UInt64>(0)
    private(set) var startedAt: UInt64 = 0

    init(kevd: RuleKevd, events: Int, monitor: Bool) throws {
        self.kevd = kevd
        self.events = events
        lines = BurstLines(events: events)
        outcomes = try LineClient(path: kevd.socketPath)
        try outcomes.subscribe(filter: ["source=kevd", "key=bench", "type!=rule.started"])
        emitter = try LineClient(path: kevd.socketPath)
        statusClient = monitor ? try LineClient(path: kevd.socketPath) : nil
        reader = RuleOutcomeReader(target: events)
        replies = ReplyCounter(fd: emitter.fd, target: events)
        self.monitor = statusClient.map { RuleStatusMonitor(client: $0) }
        let initial = outcomes.leftover
        threads.append(startThread { [reader, fd = outcomes.fd] in reader.run(fd: fd, initial: initial) })
        threads.append(startThread { [replies] in replies.run(initial: []) })
        if let m = self.monitor { threads.append(startThread { m.run() }) }
    }

    /// Writes every emit; returns once they are all written (kevd reads them at its own pace).
    func start(onThread: Bool) throws {
        startedAt = Clock.monotonicNanoseconds()
        if onThread {
            writer = startThread { [self] in
                do { try lines.write(to: emitter.fd) } catch { writeError.withLock { $0 = "\(error)" } }
                writtenAt.store(Clock.monotonicNanoseconds(), ordering: .releasing)
            }
        } else {
            try lines.write(to: emitter.fd)
            writtenAt.store(Clock.monotonicNanoseconds(), ordering: .releasing)
        }
    }

    var written: UInt64 { writtenAt.load(ordering: .acquiring) }

    /// Waits for the last outcome; false after `stallSeconds` without one, or `timeout` in all.
    func waitForOutcomes(stallSeconds: Double = 15, timeout: Double) -> Bool {
        var last = reader.succeeded + reader.failed
        var lastChange = Clock.monotonicNanoseconds()
        let deadline = lastChange + UInt64(timeout * 1e9)
        while reader.completedAt == 0 {
            Sleep.nanoseconds(1_000_000)
            let now = Clock.monotonicNanoseconds()
            let progress = reader.succeeded + reader.failed
            if progress != last {
                last = progress
                lastChange = now
            } else if now - lastChange > UInt64(stallSeconds * 1e9) || now > deadline {
                return false
            }
        }
        return true
    }

    /// Waits for every emit reply (they come once each event is durable); its time, or 0.
    func waitForReplies(timeout: Double = 15) -> UInt64 {
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while replies.completedAt == 0 && Clock.monotonicNanoseconds() < deadline { Sleep.nanoseconds(1_000_000) }
        return replies.completedAt
    }

    /// Ends the threads and closes the connections; returns the problems seen.
    func finish() -> [String] {
        var problems: [String] = []
        if let writer { pthread_join(writer, nil) }
        if let error = writeError.withLock({ $0 }) { problems.append("writing the burst: \(error)") }
        monitor?.stop()
        if replies.completedAt == 0 { shutdown(emitter.fd, Int32(SHUT_RDWR)) }
        shutdown(outcomes.fd, Int32(SHUT_RDWR))
        for t in threads { pthread_join(t, nil) }
        threads = []
        if reader.succeeded != events {
            problems.append("\(reader.succeeded) of \(events) runs succeeded, \(reader.failed) failed, \(reader.dead) dead letters")
        }
        if reader.otherLines > 0 { problems.append("\(reader.otherLines) unexpected subscriber lines \(reader.otherSample)") }
        if replies.replies != events || replies.counter.unexpected > 0 {
            problems.append("emit replies: \(replies.replies) of \(events), \(replies.counter.unexpected) not ok")
        }
        if let error = monitor?.error { problems.append("status monitor: \(error)") }
        outcomes.close()
        emitter.close()
        statusClient?.close()
        return problems
    }
}

enum RuleBurstRun {
    static func run(
        kevd path: String, stateParent: String, program: String, concurrency: Int, events: Int, monitor: Bool,
        timeout: Double, nice: Int32?, perfPrefix: String?, runName: String
    ) throws -> RuleBurstResult {
        let kevd = try RuleKevd(kevd: path, stateParent: stateParent, program: program, concurrency: concurrency, nice: nice)
        var stopped = false
        defer { if !stopped { _ = kevd.stop() } }
        let burst = try RuleBurst(kevd: kevd, events: events, monitor: monitor)
        let perf = PerfRecorder(prefix: perfPrefix, name: runName, pid: kevd.pid)
        let cpu0 = kevd.instance.process.cpuSeconds
        let scripts0 = ProcFigures.reapedChildrenCPUSeconds(pid: kevd.pid)
        let bench0 = ProcFigures.selfCPUSeconds()
        let account0 = CPUAccount.sample(kevd: kevd.pid)
        try burst.start(onThread: false)
        let complete = burst.waitForOutcomes(timeout: timeout)
        let end = complete ? burst.reader.completedAt : Clock.monotonicNanoseconds()
        let other = CPUAccount.sample(kevd: kevd.pid).other(since: account0)
        let cpu1 = kevd.instance.process.cpuSeconds
        let scripts1 = ProcFigures.reapedChildrenCPUSeconds(pid: kevd.pid)
        let bench = ProcFigures.selfCPUSeconds() - bench0
        perf?.stop()
        let repliesDone = burst.waitForReplies()
        let memory = ProcFigures.memory(pid: kevd.pid)
        let finalRule = kevd.benchRule()
        var problems = burst.finish()
        if !complete { problems.insert("no outcome for 15 s (or --timeout reached): runs incomplete", at: 0) }
        stopped = true
        if let problem = kevd.stop() { problems.append(problem) }
        let start = burst.startedAt
        return RuleBurstResult(
            concurrency: concurrency, events: events, seconds: Seconds.between(start, end),
            firstRunSeconds: burst.reader.firstSucceededAt == 0 ? .nan : Seconds.between(start, burst.reader.firstSucceededAt),
            emitWriteSeconds: Seconds.between(start, burst.written),
            replySeconds: repliesDone == 0 ? .nan : Seconds.between(start, repliesDone),
            succeeded: burst.reader.succeeded, failed: burst.reader.failed, dead: burst.reader.dead,
            kevdCPUSeconds: difference(cpu1, cpu0), scriptsCPUSeconds: difference(scripts1, scripts0),
            benchCPUSeconds: bench, statusSamples: burst.monitor?.samples ?? 0, maxPending: burst.monitor?.maxPending ?? 0,
            maxRunning: burst.monitor?.maxRunning ?? 0, catchingUpSamples: burst.monitor?.catchingUpSamples ?? 0,
            finalRule: finalRule, kevdMemory: memory, otherCPUSeconds: other, problems: problems)
    }
}

func difference(_ a: Double?, _ b: Double?) -> Double? {
    guard let a, let b else { return nil }
    return a - b
}

// MARK: - Latency of other events while scripts run

struct ProbePhase {
    /// "idle" or "scripts running".
    var name: String
    var figures: LatencyFigures
    var probes: Int
    var writeSeconds: Double
    var lateWrites: Int
    var kevdCPUSeconds: Double?
    /// Busy phase: the burst, whether its runs went on past the last probe, and its runs per second.
    var burstEvents: Int
    var burstCoveredProbes: Bool?
    var burstRunsPerSecond: Double?
    var runsDuringProbes: Int?
    /// Control phase: the bench's own spawn loop's rate during the probes.
    var spawnLoadRate: Double?
    /// Other work's CPU while probing (`CPUAccount`).
    var otherCPUSeconds: Double

    var otherPercent: Double { CPUAccount.percent(otherCPUSeconds, seconds: writeSeconds) }

    var json: JSONValue {
        func d(_ v: Double?) -> JSONValue { v.map { .double($0) } ?? .null }
        return .object([
            ("phase", .string(name)), ("probes", .int(Int64(probes))), ("write_seconds", .double(writeSeconds)),
            ("late_writes", .int(Int64(lateWrites))), ("latency", figures.json), ("kevd_cpu_seconds", d(kevdCPUSeconds)),
            ("burst_events", .int(Int64(burstEvents))), ("burst_covered_probes", burstCoveredProbes.map { .bool($0) } ?? .null),
            ("burst_runs_per_second", d(burstRunsPerSecond)),
            ("runs_during_probes", runsDuringProbes.map { .int(Int64($0)) } ?? .null),
            ("spawn_load_per_second", d(spawnLoadRate)), ("other_cpu_seconds", .double(otherCPUSeconds)),
            ("other_cpu_percent", .double(otherPercent)),
        ])
    }
}

struct ProbeLatencyResult {
    var concurrency: Int
    var idle: ProbePhase
    /// kevd idle while the bench's own posix_spawn loop runs: the same load on the machine, not through kevd.
    var control: ProbePhase?
    var busy: ProbePhase
    var problems: [String]

    var ratio: Double? { ratio(busy) }

    /// A phase's p99 over the idle phase's.
    func ratio(_ phase: ProbePhase) -> Double? {
        guard let b = phase.figures.p99, let i = idle.figures.p99, i > 0 else { return nil }
        return b / i
    }

    var json: JSONValue {
        .object([
            ("concurrency", .int(Int64(concurrency))), ("idle", idle.json), ("bare_spawn_loop_running", control?.json ?? .null),
            ("scripts_running", busy.json),
            ("p99_ratio_busy_to_idle", ratio.map { .double($0) } ?? .null), ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

/// One kevd with the bench rule at `concurrency`. A subscriber of `type=probe` (which the rule does not match)
/// gets emits `{"op":"emit","type":"probe","key":"p","data":{"name":"f<i>"}}` written at `rate` on their own
/// connection; latency = emit written → line read (`ArrivalRecorder`, as in `subscribers --part latency`).
/// First with no scripts, then while a burst's scripts run: the probes start once the burst's emits are all
/// answered (in the journal) and its first run has succeeded, so they measure the scripts, not the intake.
enum ProbeLatencyRun {
    struct Parameters {
        var kevd: String
        var stateParent: String
        var program: String
        var concurrency: Int
        var burstEvents: Int
        var rate: Int
        var seconds: Double
        var warmup: Int
        var timeout: Double
        /// Run the control phase (the bench's own spawn loop while kevd is idle).
        var control: Bool
        /// The control's spawn load at this nice value (its children too).
        var controlNice: Int32?
        var nice: Int32?
        var perfPrefix: String?
        var runName: String
    }

    static func run(_ p: Parameters) throws -> ProbeLatencyResult {
        let kevd = try RuleKevd(
            kevd: p.kevd, stateParent: p.stateParent, program: p.program, concurrency: p.concurrency, nice: p.nice)
        var stopped = false
        defer { if !stopped { _ = kevd.stop() } }
        let count = max(Int((p.seconds * Double(p.rate)).rounded()), p.warmup + 1)
        let probeEmitter = try LineClient(path: kevd.socketPath)
        defer { probeEmitter.close() }
        let phases = p.control ? 3 : 2
        let probeReplies = ReplyCounter(fd: probeEmitter.fd, target: phases * count)
        let replyThread = startThread { probeReplies.run(initial: []) }
        var problems: [String] = []

        let idle = try phase("idle", kevd: kevd, emitter: probeEmitter, count: count, p, burst: nil, problems: &problems)
        let control = p.control
            ? try phase(
                "bare spawn loop running", kevd: kevd, emitter: probeEmitter, count: count, p, burst: nil,
                load: SpawnLoad(program: p.program, inFlight: p.concurrency, nice: p.controlNice), problems: &problems)
            : nil
        let burst = try RuleBurst(kevd: kevd, events: p.burstEvents, monitor: false)
        let busy = try phase("scripts running", kevd: kevd, emitter: probeEmitter, count: count, p, burst: burst, problems: &problems)
        problems += burst.finish().map { "burst: \($0)" }

        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        while probeReplies.completedAt == 0 && Clock.monotonicNanoseconds() < deadline { Sleep.nanoseconds(2_000_000) }
        if probeReplies.completedAt == 0 { shutdown(probeEmitter.fd, Int32(SHUT_RDWR)) }
        pthread_join(replyThread, nil)
        if probeReplies.replies != phases * count || probeReplies.counter.unexpected > 0 {
            problems.append("probe emit replies: \(probeReplies.replies) of \(phases * count), \(probeReplies.counter.unexpected) not ok")
        }
        stopped = true
        if let problem = kevd.stop() { problems.append(problem) }
        return ProbeLatencyResult(concurrency: p.concurrency, idle: idle, control: control, busy: busy, problems: problems)
    }

    private static func phase(
        _ name: String, kevd: RuleKevd, emitter: LineClient, count: Int, _ p: Parameters, burst: RuleBurst?,
        load: SpawnLoad? = nil, problems: inout [String]
    ) throws -> ProbePhase {
        let subscriber = try LineClient(path: kevd.socketPath)
        defer { subscriber.close() }
        try subscriber.subscribe(filter: ["type=probe"])
        let recorder = ArrivalRecorder(format: .kevdEvent, count: count)
        let initial = subscriber.leftover
        let readerThread = startThread { [fd = subscriber.fd] in recorder.run(fd: fd, initial: initial) }
        let lines: [[UInt8]] = (0..<count).map {
            Array((#"{"op":"emit","type":"probe","key":"p","data":{"name":"f\#($0)"}}"# + "\n").utf8)
        }

        var perf: PerfRecorder? = nil
        var loadThread: pthread_t? = nil
        if let burst {
            perf = PerfRecorder(prefix: p.perfPrefix, name: p.runName, pid: kevd.pid)
            try burst.start(onThread: true)
            // Scripts running, and the burst's intake over: every emit answered.
            let deadline = Clock.monotonicNanoseconds() + UInt64(p.timeout * 1e9)
            while (burst.reader.firstSucceededAt == 0 || burst.replies.completedAt == 0) && Clock.monotonicNanoseconds() < deadline {
                Sleep.nanoseconds(1_000_000)
            }
            if burst.reader.firstSucceededAt == 0 { problems.append("\(name): no run succeeded within \(p.timeout) s") }
        } else if let load {
            perf = PerfRecorder(prefix: p.perfPrefix, name: p.runName + "-control", pid: kevd.pid)
            loadThread = startThread { load.run() }
            Sleep.nanoseconds(200_000_000)
        } else {
            Sleep.nanoseconds(200_000_000)
        }
        let runsBefore = burst.map { $0.reader.succeeded + $0.reader.failed }
        let cpu0 = kevd.instance.process.cpuSeconds
        let account0 = CPUAccount.sample(kevd: kevd.pid)

        let writes = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        defer { writes.deallocate() }
        let interval = UInt64(1_000_000_000 / p.rate)
        let first = Clock.monotonicNanoseconds() + 20_000_000
        var late = 0
        for i in 0..<count {
            let due = first + UInt64(i) * interval
            var when = timespec(tv_sec: Int(due / 1_000_000_000), tv_nsec: Int(due % 1_000_000_000))
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, nil) == EINTR {}
            let now = Clock.monotonicNanoseconds()
            writes[i] = now
            if now > due + 1_000_000 { late += 1 }
            try lines[i].withUnsafeBytes { try writeAll(emitter.fd, $0) }
        }
        let writeSeconds = Seconds.between(writes[0], writes[count - 1])
        let other = CPUAccount.sample(kevd: kevd.pid).other(since: account0)
        let covered = burst.map { $0.reader.completedAt == 0 }
        let runsDuring = burst.map { $0.reader.succeeded + $0.reader.failed - runsBefore! }
        if let load, let loadThread {
            load.stop()
            pthread_join(loadThread, nil)
            if let error = load.error { problems.append("\(name): spawn load: \(error)") }
        }

        let deadline = Clock.monotonicNanoseconds() + 5_000_000_000
        while recorder.received < count && Clock.monotonicNanoseconds() < deadline { Sleep.nanoseconds(5_000_000) }
        let cpu = difference(kevd.instance.process.cpuSeconds, cpu0)
        var burstRate: Double? = nil
        if let burst {
            if burst.waitForOutcomes(timeout: p.timeout) {
                burstRate = Double(burst.events) / Seconds.between(burst.startedAt, burst.reader.completedAt)
            } else {
                problems.append("\(name): the burst's runs did not all finish")
            }
            if covered == false {
                problems.append("\(name): the burst ended before the last probe (raise --latency-events)")
            }
        }
        perf?.stop()
        shutdown(subscriber.fd, Int32(SHUT_RDWR))
        pthread_join(readerThread, nil)

        let figures = LatencyFigures(consumer: name, recorder: recorder, writes: writes, warmup: p.warmup, cpu: cpu)
        if figures.lost > 0 { problems.append("\(name): \(figures.lost) of \(count) probes never arrived") }
        if figures.duplicates > 0 || figures.otherLines > 0 {
            problems.append("\(name): \(figures.duplicates) duplicate/unmatched probe lines, \(figures.otherLines) other lines \(recorder.otherSample)")
        }
        return ProbePhase(
            name: name, figures: figures, probes: count, writeSeconds: writeSeconds, lateWrites: late, kevdCPUSeconds: cpu,
            burstEvents: burst?.events ?? 0, burstCoveredProbes: covered, burstRunsPerSecond: burstRate,
            runsDuringProbes: runsDuring, spawnLoadRate: load?.spawnsPerSecond, otherCPUSeconds: other)
    }
}
