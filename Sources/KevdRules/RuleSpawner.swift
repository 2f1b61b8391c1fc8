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
/// the child's fd and signal hygiene are the shim's), and queues the outcome. It calls `notify` (which posts to the
/// loop's inbox) once per batch: when it has started every order it has, or `reportBatch` outcomes wait, whichever
/// comes first, and not again until the loop took them. The loop submits a few orders per turn: one wakeup for
/// their pids instead of one per start (each wakeup is a loop turn, with its journal write and subscriber flush).
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
    }

    /// Outcomes held back for one notification at most: a steady stream of orders still reports every few starts.
    static let reportBatch = 8

    private let orders = Mutex(Orders())
    private let outcomes = Mutex(Outcomes())
    private let wakeup: EventFD
    private let notify: @Sendable () -> Void
    private var thread: WorkerThread? = nil

    init(notify: @escaping @Sendable () -> Void) throws {
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

    /// Every outcome queued so far, oldest first (loop thread).
    func takeOutcomes() -> Deque<SpawnOutcome> {
        outcomes.withLock { outcomes in
            let taken = outcomes.queue
            outcomes.queue.removeAll(keepingCapacity: true)
            outcomes.notified = false
            return taken
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
        while true {
            _ = try? wakeup.drain()  // Blocks until signalled.
            while true {
                let next: (order: SpawnOrder, last: Bool)? = orders.withLock { orders in
                    guard let order = orders.queue.popFirst() else {
                        orders.signalled = false
                        return nil
                    }
                    return (order, orders.queue.isEmpty)
                }
                guard let (order, last) = next else { break }
                let outcome = SpawnOutcome(token: order.token, result: start(order))
                // The last order taken before the thread sleeps was taken from a queue it left empty, so its
                // outcome notifies (unless a notification is still pending): no outcome waits for a later order.
                let mustNotify = outcomes.withLock { outcomes in
                    outcomes.queue.append(outcome)
                    guard !outcomes.notified, last || outcomes.queue.count >= Self.reportBatch else { return false }
                    outcomes.notified = true
                    return true
                }
                if mustNotify { notify() }
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
