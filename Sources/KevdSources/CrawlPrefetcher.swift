import DequeModule
import Glibc
import KevdKernel
import KevdReactor
import Synchronization

/// Reads directories into the kernel's caches on a thread of its own, just before the loop's crawl watches and
/// lists them.
///
/// On a cold cache a directory costs disk reads in the kernel (its inode when it is opened, its entries when it
/// is listed), and a slice of the crawl on the loop waited for them: the longest `status` reply during a cold
/// crawl of 100,000 directories took 180 ms to 650 ms. Now the crawl hands each directory it finds to this
/// thread, which opens it and reads it through (throwing the names away), and gives it back; the loop then
/// watches and lists it from memory. Everything that decides what is reported stays on the loop (the watch table,
/// the order "watch, then list, then read the queue" that the synthetic-create rules rely on), so the thread needs
/// no part of it: it only makes the loop's own system calls fast.
final class CrawlPrefetcher: @unchecked Sendable {
    // @unchecked: the mutable state is behind `state`; `wakeup` is an eventfd, safe from any thread.
    struct Job: Sendable {
        let path: String
        let item: InotifySource.CrawlItem
    }

    private struct State {
        /// Last in, first out: the crawl's own order (depth first), so what the loop needs soonest is read first.
        var todo: [Job] = []
        var done: [Job] = []
        /// The loop has been told about `done` and has not taken it yet.
        var notified = false
        var stopping = false
    }

    private let state = Mutex(State())
    private let wakeup: EventFD
    private let inbox: LoopInbox
    private let deliver: @Sendable ([Job]) -> Void

    /// `deliver` runs on the loop thread (through `inbox`) with the jobs read since the last delivery.
    init(inbox: LoopInbox, deliver: @escaping @Sendable ([Job]) -> Void) throws {
        self.inbox = inbox
        self.deliver = deliver
        wakeup = try EventFD(blocking: true)
        let box = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let prefetcher = Unmanaged<CrawlPrefetcher>.fromOpaque(raw!).takeRetainedValue()
            prefetcher.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw SyscallError(call: "pthread_create", errno: .init(rawValue: rc))
        }
        pthread_detach(thread)
    }

    /// Ends the thread after the job in hand; jobs not yet read are dropped.
    func stop() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
    }

    func submit(_ jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        let wasIdle = state.withLock { state in
            let wasIdle = state.todo.isEmpty
            state.todo.append(contentsOf: jobs)
            return wasIdle
        }
        if wasIdle { wakeup.signal() }
    }

    private func run() {
        while true {
            let job: Job? = state.withLock { state in state.stopping ? nil : state.todo.popLast() }
            guard let job else {
                if state.withLock({ $0.stopping }) { return }
                _ = try? wakeup.drain()  // Blocking read: sleeps until `submit` or `stop` signals.
                continue
            }
            DirectoryListing.warm(job.path)
            let mustNotify = state.withLock { state in
                state.done.append(job)
                defer { state.notified = true }
                return !state.notified
            }
            if mustNotify {
                inbox.post { [self] in
                    let batch = state.withLock { state in
                        state.notified = false
                        defer { state.done.removeAll(keepingCapacity: true) }
                        return state.done
                    }
                    deliver(batch)
                }
            }
        }
    }
}
