import DequeModule
import Glibc
import KevdKernel
import Synchronization

/// One process for the spawner thread to start: what the loop prepared for a run.
///
/// The child's ends of its output pipes belong to the order from the moment the loop submits it: only the
/// spawner closes them, after the child has its copies (or the start failed). The loop keeps the read ends. Were
/// the loop to close a child's end early, its number could be reused by another fd before the child `dup2`s it.
struct SpawnOrder: @unchecked Sendable {
    // @unchecked: the OwnedFDs move to the spawner thread with the order and are never touched by the loop again.
    let token: UInt64
    /// argv, environment, directory and credentials; stdio is filled in by the spawner.
    let request: SpawnRequest
    /// The event's JSON line: the child's stdin, put into a pipe (a memory file when large) by the spawner.
    let stdin: [UInt8]
    let stdoutWrite: OwnedFD
    let stderrWrite: OwnedFD
}

/// What became of an order, in submission order.
struct SpawnOutcome: Sendable {
    enum Result: Sendable {
        case started(pid: Int32)
        /// Nothing runs (and no child is left to reap): the failed step and errno, as `SpawnError` words them.
        case failed(String)
    }

    let token: UInt64
    let result: Result
}

/// Starts rule runs' processes on a thread of its own, so the loop never waits in `vfork` for a child to exec.
///
/// The loop submits orders; the thread takes them first in, first out, starts each (`Spawn.start`: vfork, exec,
/// the child's fd and signal hygiene are the shim's), and queues the outcome. The loop takes outcomes whenever it
/// reaps or ends a turn anyway (`RulesEngine.takeSpawnOutcomes`), so the thread calls `notify` (which posts to the
/// loop's inbox) only for outcomes the loop has not taken `reportDelay` after the oldest was queued, when
/// `reportBatch` outcomes wait, or at once when the loop asked for the next outcome (`reportsPending`), and not
/// again until the loop took them. Each wakeup is a loop turn with its journal write and subscriber flush: while
/// runs keep ending, their exit turns carry the next runs' pids, and no turn is spent on pids alone.
///
/// `PR_SET_PDEATHSIG` follows the thread that forked: scripts get SIGTERM when this thread ends. It therefore
/// lives as long as the engine (to process exit, in kevd), and is only stopped when the engine is released.
final class RuleSpawner: @unchecked Sendable {
    // @unchecked: mutable state is inside the two Mutexes or owned by the spawner thread; `thread` is touched
    // only by the owner (init and stop).
    private struct Orders {
        var queue: Deque<SpawnOrder> = []
        var stopping = false
        /// True from a submission until the thread finds the queue empty: later submissions need no wakeup.
        var signalled = false
    }

    private struct Outcomes {
        var queue: Deque<SpawnOutcome> = []
        /// True from a notification until the loop takes the outcomes: later outcomes need none.
        var notified = false
        /// The loop waits for an outcome (an exit no run claims yet): the next one notifies at once.
        var promptly = false
    }

    /// Outcomes held back for one notification at most: a steady stream of orders still reports every few starts.
    static let reportBatch = 8
    /// How long an outcome waits for the loop to take it in a turn it makes anyway before the thread wakes it: a
    /// run's `rule.started` goes out at most about this late (docs/RULES.md).
    static let reportDelay: Int64 = 1_000_000
    /// `reportDelay`, or a test's.
    private let reportDelay: Int64

    private let orders = Mutex(Orders())
    private let outcomes = Mutex(Outcomes())
    private let wakeup: EventFD
    private let notify: @Sendable () -> Void
    private var thread: WorkerThread? = nil

    init(reportDelay: Int64 = RuleSpawner.reportDelay, notify: @escaping @Sendable () -> Void) throws {
        self.reportDelay = reportDelay
        self.notify = notify
        // Blocking: the thread sleeps in read() until there is work.
        wakeup = try EventFD(blocking: true)
        // Every signal blocked in the new thread (it inherits the creator's mask): a process-directed SIGCHLD or
        // SIGTERM delivered to it would be lost to the loop's signalfd, and no handler may run between its vfork
        // and the child's exec.
        var all = sigset_t()
        var saved = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        thread = try WorkerThread(name: "kevd-spawner") { [self] in self.run() }
    }

    /// Queues an order (loop thread). Never blocks beyond the queue's lock, which the spawner holds only to take
    /// an order out.
    func submit(_ order: SpawnOrder) {
        let mustSignal = orders.withLock { orders in
            orders.queue.append(order)
            defer { orders.signalled = true }
            return !orders.signalled
        }
        if mustSignal { wakeup.signal() }
    }

    /// Every outcome queued so far, oldest first (loop thread); empty without taking the lock's cost of a copy
    /// when there is none.
    func takeOutcomes() -> Deque<SpawnOutcome> {
        outcomes.withLock { outcomes in
            guard !outcomes.queue.isEmpty else { return [] }
            let taken = outcomes.queue
            outcomes.queue.removeAll(keepingCapacity: true)
            outcomes.notified = false
            return taken
        }
    }

    /// True when outcomes are queued (take them); otherwise the next outcome notifies at once (loop thread, when
    /// an exit is waiting for its pid).
    func reportsPending() -> Bool {
        outcomes.withLock { outcomes in
            if !outcomes.queue.isEmpty { return true }
            outcomes.promptly = true
            return false
        }
    }

    /// Ends the thread once the orders already queued are started, and waits for it. Scripts it started get
    /// their parent-death signal then.
    func stop() {
        orders.withLock { $0.stopping = true }
        wakeup.signal()
        thread?.join()
    }

    private func run() {
        /// When outcomes the loop has not taken must be notified (monotonic ns), if any wait un-notified.
        var reportBy: Int64? = nil
        while true {
            if let due = reportBy {
                // Sleeps until an order comes or the outcomes are due, whichever is first.
                if !wakeup.wait(until: due) {
                    reportBy = nil
                    let mustNotify = outcomes.withLock { outcomes in
                        guard !outcomes.queue.isEmpty, !outcomes.notified else { return false }
                        outcomes.notified = true
                        return true
                    }
                    if mustNotify { notify() }
                    continue
                }
            }
            _ = try? wakeup.drain()  // Blocks until signalled (returns at once after `wait`).
            while true {
                let next: SpawnOrder? = orders.withLock { orders in
                    guard let order = orders.queue.popFirst() else {
                        orders.signalled = false
                        return nil
                    }
                    return order
                }
                guard let order = next else { break }
                let outcome = SpawnOutcome(token: order.token, result: start(order))
                enum Report { case now, by(Int64), pending }
                let report: Report = outcomes.withLock { outcomes in
                    let oldest = outcomes.queue.isEmpty
                    outcomes.queue.append(outcome)
                    if outcomes.notified { return .pending }
                    if outcomes.promptly || outcomes.queue.count >= Self.reportBatch {
                        outcomes.notified = true
                        outcomes.promptly = false
                        return .now
                    }
                    // The oldest outcome waiting sets the time; one the loop took no longer counts.
                    return oldest ? .by(Int64(clamping: Clock.monotonicNanoseconds()) + reportDelay) : .pending
                }
                switch report {
                case .now:
                    reportBy = nil
                    notify()
                case .by(let due):
                    reportBy = due
                case .pending:
                    break
                }
            }
            if orders.withLock({ $0.stopping && $0.queue.isEmpty }) { return }
        }
    }

    private func start(_ order: SpawnOrder) -> SpawnOutcome.Result {
        // Closed only once the child has exec'd (its copies are its stdout and stderr) or failed: until then
        // their numbers must stay ours.
        defer {
            order.stdoutWrite.close()
            order.stderrWrite.close()
        }
        var request = order.request
        do {
            let stdin = try order.stdin.withUnsafeBytes { try ChildInput.make(name: "kevd-event", contents: $0) }
            defer { stdin.close() }
            request.stdin = stdin.rawValue
            request.stdout = order.stdoutWrite.rawValue
            request.stderr = order.stderrWrite.rawValue
            return .started(pid: try Spawn.start(request))
        } catch {
            return .failed("\(error)")
        }
    }
}
