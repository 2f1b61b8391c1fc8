import DequeModule
import KevdKernel
import Synchronization

/// How other threads talk to the loop: a locked queue of closures plus an eventfd that wakes `epoll_wait`.
///
/// The lock is held only to move closures in and out, never while one runs, so a helper thread (the journal's
/// flusher, a test) never waits on the loop's work.
public final class LoopInbox: Sendable {
    public typealias Work = @Sendable () -> Void

    let wakeup: EventFD
    private let queue = Mutex(Deque<Work>())

    init() throws {
        wakeup = try EventFD()
    }

    /// Queues `work` to run on the loop thread and wakes the loop. Callable from any thread.
    public func post(_ work: @escaping Work) {
        let wasEmpty = queue.withLock { queue in
            let wasEmpty = queue.isEmpty
            queue.append(work)
            return wasEmpty
        }
        // One wakeup per batch: if the queue was not empty, a wakeup is already pending.
        if wasEmpty { wakeup.signal() }
    }

    /// Runs everything queued so far (on the loop thread).
    func runPending() {
        _ = try? wakeup.drain()  // EAGAIN-only: a spurious wakeup finds nothing to drain.
        let batch = queue.withLock { queue in
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            return batch
        }
        for work in batch { work() }
    }
}
