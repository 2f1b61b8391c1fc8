import KevdKernel

/// One started process of a rule: its pid (also its process group), its output pipes, and how it ends.
///
/// A run exists from the moment the loop hands it to the spawner thread: its pid is 0 until the spawner reports
/// it (`RulesEngine+Spawner.swift`), and a timeout or kill due before then is sent when it arrives.
final class RuleRun {
    let rule: RuleRuntime
    let job: Job
    /// Which spawn order started it.
    let token: UInt64
    /// 0 while the spawner has not reported it.
    var pid: Int32 = 0
    let started: Int64
    /// The depth of the events this run causes (its trigger's depth + 1).
    let depth: Int
    var stdout: OwnedFD?
    var stderr: OwnedFD?
    var stdoutTail: OutputTail
    var stderrTail: OutputTail
    var timedOut = false
    /// The kill grace ran out: SIGKILL, at once if the pid is known, else when it arrives.
    var killDue = false
    var finished = false
    /// Its output pipes are registered with the loop (`RulesEngine+OutputWatch.swift`).
    var outputWatched = false
    /// Its trigger's id (`job.event.id.string`), made once for the environment and the run's events.
    var causeID: String? = nil
    /// Its timeout is in the deadline heap.
    var timeoutScheduled = false

    init(rule: RuleRuntime, job: Job, token: UInt64, started: Int64, depth: Int, stdout: OwnedFD, stderr: OwnedFD, tail: Int) {
        self.rule = rule
        self.job = job
        self.token = token
        self.started = started
        self.depth = depth
        self.stdout = stdout
        self.stderr = stderr
        stdoutTail = OutputTail(limit: tail)
        stderrTail = OutputTail(limit: tail)
    }
}

/// The last `limit` bytes written to a pipe: what a failure report shows, however much the script printed.
struct OutputTail {
    let limit: Int
    private(set) var bytes: [UInt8] = []
    private(set) var total = 0

    init(limit: Int) { self.limit = limit }

    mutating func append(_ chunk: UnsafeRawBufferPointer) {
        total += chunk.count
        if chunk.count >= limit {
            bytes = Array(chunk.suffix(limit))
            return
        }
        bytes.append(contentsOf: chunk)
        // Trim in steps, not per read: a chatty script costs a copy per `limit` bytes at most.
        if bytes.count > 2 * limit { bytes.removeFirst(bytes.count - limit) }
    }

    /// The kept bytes, cut to `limit`; a cut multi-byte character becomes U+FFFD in the text.
    var text: String {
        let kept = bytes.count > limit ? Array(bytes.suffix(limit)) : bytes
        return String(decoding: kept, as: UTF8.self)
    }

    var truncated: Bool { total > limit }
}
