import CKevdShim
import DequeModule
import Glibc
import KevdKernel
import KevdReactor
import Logging

/// `[server] first_request_timeout`: a connection that has not sent a complete request line this long after it
/// was accepted is closed. Without it a client could hold a slot forever by sending nothing, or half a line
/// (slowloris). Subscriptions and connections that have sent a request are not affected, however quiet.
///
/// Every connection gets the same timeout and connections are accepted in time order, so their deadlines come
/// in order too: a queue, oldest first, and one timerfd armed for its front. A connection that leaves or sends
/// a request keeps its entry until the entry's time comes, when it is found to have nothing to do.
struct FirstRequestDeadlines {
    private var queue = Deque<(deadline: UInt64, id: UInt64)>()
    private var timer: TimerFD?
    private var armedFor: UInt64 = 0

    /// Creates the timer and registers it on the loop; without a timeout there is nothing to do.
    mutating func start(server: Server, loop: EventLoop, timeoutNanoseconds: Int64) throws {
        guard timeoutNanoseconds > 0 else { return }
        let timer = try TimerFD(clock: .monotonic)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned server] _ in
            server.firstRequestDeadlinesPassed()
        }
        self.timer = timer
    }

    mutating func stop(loop: EventLoop) {
        guard let timer else { return }
        loop.unregister(fd: timer.fd.rawValue)
        timer.fd.close()
        self.timer = nil
        queue.removeAll()
    }

    /// A connection was accepted now: its deadline joins the back of the queue.
    mutating func accepted(_ id: UInt64, server: Server) {
        guard timer != nil else { return }
        let deadline = Clock.monotonicNanoseconds() + UInt64(server.settings.firstRequestTimeoutNanoseconds)
        queue.append((deadline, id))
        if queue.count > 64 && queue.count > 4 * server.connectionCount {
            // A flood of short connections: drop the entries of those already gone, so the queue stays the size
            // of the connections that can still time out.
            queue = Deque(queue.filter { server.awaitsFirstRequest($0.id) })
        }
        arm()
    }

    /// The ids whose deadline has passed, taken off the queue; the timer is armed for the next one.
    mutating func takeExpired(logger: Logger) -> [UInt64] {
        guard let timer else { return [] }
        do {
            _ = try timer.read()  // Drains the expiry count: the queue, not the count, says what is due.
        } catch {
            // Not expected on a valid timerfd; the queue below is still checked against the clock.
            logger.warning("first_request_timeout timer could not be read", metadata: ["error": "\(error)"])
        }
        armedFor = 0
        let now = Clock.monotonicNanoseconds()
        var expired: [UInt64] = []
        while let first = queue.first, first.deadline <= now {
            expired.append(first.id)
            queue.removeFirst()
        }
        arm()
        return expired
    }

    private mutating func arm() {
        guard let timer, let first = queue.first, armedFor != first.deadline else { return }
        // Armed for the front only: later deadlines are never earlier, so one timer is enough.
        do {
            try timer.arm(atAbsolute: Int64(first.deadline), cancelOnClockChange: false)
            armedFor = first.deadline
        } catch {
            // timerfd_settime on a valid timer fails only for bad arguments; the next accept tries again.
            armedFor = 0
        }
    }
}

extension Server {
    var connectionCount: Int { connections.count }

    /// Whether the connection is still here and has not sent a complete request line yet.
    func awaitsFirstRequest(_ id: UInt64) -> Bool {
        guard let c = connections[id] else { return false }
        return !c.sentRequest
    }

    func firstRequestDeadlinesPassed() {
        for id in firstRequestDeadlines.takeExpired(logger: context.logger) where awaitsFirstRequest(id) {
            guard let c = connections[id] else { continue }
            let seconds = Double(settings.firstRequestTimeoutNanoseconds) / 1e9
            refuse(
                c, .firstRequestTimeout, configured: Int(settings.firstRequestTimeoutNanoseconds / 1_000_000),
                value: c.input.count,
                "no complete request line within \(seconds) s of connecting ([server] first_request_timeout); closing")
            c.input.removeAll()
            // Best effort: a client that reads nothing gets its answer dropped with the connection.
            _ = kevd_write_some(c.fd.rawValue, c.output.bytes.baseAddress, c.output.count)
            drop(id)
        }
    }
}
