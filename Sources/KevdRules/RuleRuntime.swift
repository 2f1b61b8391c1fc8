import DequeModule
import HeapModule
import KevdEvent
import KevdJournal
import KevdSpec

/// One matched event waiting to run (or between attempts).
struct Job {
    let event: Event
    /// The event's JSON line (newline included): the script's stdin.
    let line: [UInt8]
    /// The attempt the next run will be (1 for the first).
    var attempt = 1
    /// The lowest seq this job stands for: a debounced job stands for every event it absorbed, and the rule's
    /// position must not pass the first of them until the job has run.
    let heldSeq: UInt64
    /// How many events a debounce folded into this one (1 without debounce).
    var events = 1
}

/// A key waiting out its debounce: the latest event, and when the run is due.
struct Debounce {
    var job: Job
    let firstSeen: Int64
    var due: Int64
}

/// A rule's running state: its queues, what it holds back, its journal position and counters.
///
/// Ordering: each key has its own queue; a key is in `ready` when it has queued jobs and nothing of it runs
/// (or waits to retry), so runs for one key never overlap and start in seq order while different keys run
/// side by side up to `concurrency`.
final class RuleRuntime {
    var spec: RuleSpec {
        didSet { fixedEnvironment = nil }
    }
    /// The environment entries every run shares, built at the first start after the spec was set.
    var fixedEnvironment: RunCommand.FixedEnvironment? = nil
    var filter: EventFilter
    /// False once a reload dropped the rule: its runs finish and report, nothing new starts.
    var active = true

    var queues: [String: Deque<Job>] = [:]
    var ready: Deque<String> = []
    /// Keys with a run in flight or a retry pending.
    var busyKeys: Set<String> = []
    var queued = 0
    var running = 0
    var debouncing: [String: Debounce] = [:]
    var retrying: [String: Job] = [:]

    /// Seqs of jobs not finished (queued, debouncing, running, retrying): the position stays below the lowest.
    private var held = Heap<UInt64>()
    private var released: [UInt64: Int] = [:]
    /// The last seq this rule has looked at, live or from the journal.
    var seen: UInt64
    /// While set, the rule reads events from the journal instead of taking them live: after a restart (events
    /// journaled while kevd was down) or when its queue overflowed (more matches than it can hold in memory).
    var catchUp: JournalReader? = nil
    var catchUpNext: UInt64 = 0

    struct Counters {
        var runs = 0
        var succeeded = 0
        var failed = 0
        var dead = 0
        /// Matches dropped because the rule was busy and `catch_up` is off.
        var skipped = 0
        /// Matches refused by the cascade limit.
        var refused = 0
    }
    var counters = Counters()

    init(spec: RuleSpec, filter: EventFilter, seen: UInt64) {
        self.spec = spec
        self.filter = filter
        self.seen = seen
    }

    // MARK: Position

    func hold(_ seq: UInt64) { held.insert(seq) }

    func release(_ seq: UInt64) {
        released[seq, default: 0] += 1
        // Lazy deletion: drop released seqs only when they reach the top of the heap.
        while let top = held.min, let count = released[top] {
            _ = held.removeMin()
            if count == 1 { released[top] = nil } else { released[top] = count - 1 }
        }
    }

    /// Every matching event through this seq has run to an end.
    var position: UInt64 {
        if let lowest = held.min { return lowest - 1 }
        return catchUp != nil ? catchUpNext &- 1 : seen
    }

    // MARK: Queues

    /// Jobs in memory (queued, debouncing, retrying), beyond which a `catch_up` rule reads from the journal.
    var backlog: Int { queued + debouncing.count + retrying.count }

    func enqueue(_ job: Job) {
        let key = job.event.key
        let wasEmpty = queues[key]?.isEmpty ?? true
        queues[key, default: []].append(job)
        queued += 1
        if wasEmpty && !busyKeys.contains(key) { ready.append(key) }
    }

    /// Whether a new job for `key` would have to wait.
    func isBusy(key: String) -> Bool {
        running + queued >= spec.concurrency || busyKeys.contains(key) || !(queues[key]?.isEmpty ?? true)
    }

    /// Whether `nextStartable()` would return a job.
    var hasStartable: Bool { running < spec.concurrency && !ready.isEmpty }

    /// Whether `nextStartable(writtenThrough:)` would return a job.
    func hasStartable(writtenThrough written: UInt64) -> Bool {
        hasStartable && nextReadySeq.map { $0 <= written } ?? true
    }

    /// The next job that may start now if its event is in the journal (its seq at most `written`), else nil: a
    /// rule never runs for an event the journal has not written. The first ready key waits, and the keys behind
    /// it with it: they became ready later, so their events are as new or newer (a retry, of an event written
    /// long ago, may wait behind a new one until the journal writes again).
    func nextStartable(writtenThrough written: UInt64) -> Job? {
        if let seq = nextReadySeq, seq > written { return nil }
        return nextStartable()
    }

    private var nextReadySeq: UInt64? {
        guard let key = ready.first else { return nil }
        return queues[key]?.first?.event.seq
    }

    /// The next job that may start now, its key marked busy.
    func nextStartable() -> Job? {
        guard running < spec.concurrency, let key = ready.popFirst() else { return nil }
        guard var queue = queues.removeValue(forKey: key), let job = queue.popFirst() else { return nil }
        if !queue.isEmpty { queues[key] = queue }
        queued -= 1
        busyKeys.insert(key)
        return job
    }

    /// The key's run ended (or its retry came due): let its next job go.
    func keyFreed(_ key: String) {
        busyKeys.remove(key)
        if !(queues[key]?.isEmpty ?? true) { ready.append(key) }
    }

    /// A retry that came due goes first in its key's queue: per-key order holds across attempts.
    func requeueFirst(_ job: Job) {
        let key = job.event.key
        queues[key, default: []].prepend(job)
        queued += 1
        busyKeys.remove(key)
        ready.append(key)
    }

    /// Drops what has not started (a reload removed the rule); runs in flight finish.
    func dropPending() {
        for queue in queues.values { for job in queue { release(job.heldSeq) } }
        for entry in debouncing.values { release(entry.job.heldSeq) }
        for job in retrying.values { release(job.heldSeq) }
        queues = [:]
        ready = []
        queued = 0
        debouncing = [:]
        retrying = [:]
        catchUp = nil
    }
}
