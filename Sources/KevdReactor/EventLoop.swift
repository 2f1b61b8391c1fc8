import KevdKernel
import Logging

/// kevd's one loop: one thread, one `epoll_wait`, every source an fd.
///
/// Each registration is tagged with (serial, fd) in epoll's 64-bit user data, the serial numbering registrations
/// (NIO calls it the generation; kevd keeps that word for the inotify crawl's), so a readiness report for an fd
/// that was closed and reused within the same `epoll_wait` batch is recognised as stale and dropped.
/// Ready fds of one wakeup are dispatched in priority order (lower first), like sd-event. Handlers must not
/// block: they drain their fd with large non-blocking reads and return.
public final class EventLoop {
    public typealias Handler = (Epoll.Events) -> Void

    /// Dispatch order of ready sources within one wakeup: lower runs first.
    public enum Priority: Int, Comparable, Sendable {
        /// Signals first: a TERM must not wait behind a burst of file events.
        case signals = 0
        /// Cross-thread wakeups (flusher completions) before new input, so acknowledgements are not starved.
        case inbox = 10
        case timers = 20
        case kernelInput = 30
        case clients = 40

        public static func < (a: Priority, b: Priority) -> Bool { a.rawValue < b.rawValue }
    }

    private struct Registration {
        let serial: UInt32
        let priority: Priority
        let handler: Handler
        var events: Epoll.Events
    }

    private let epoll: Epoll
    private var registrations: [Int32: Registration] = [:]
    private var nextSerial: UInt32 = 1
    private var ready = Epoll.ReadyList()
    private var order: [Int] = []
    private var turnEndHandlers: [() -> Void] = []
    private var stopRequested = false
    /// Set by `requestTurn`: the next wait does not block.
    private var turnRequested = false
    /// Priorities whose fds are left out of epoll for now (`withhold`): their input waits in the kernel. ("Paused"
    /// is the inotify source's read pacing; this is the loop's back-pressure.)
    private var withheld: Set<Priority> = []
    /// The longest turn (handlers and turn-end work, not the wait) since `takeLongestTurn`: how long the loop
    /// was deaf at worst, for `kevd`/`stats`.
    public private(set) var longestTurnNanoseconds: UInt64 = 0
    public let inbox: LoopInbox
    let logger: Logger

    public init(logger: Logger) throws {
        self.logger = logger
        epoll = try Epoll()
        inbox = try LoopInbox()
        try register(fd: inbox.wakeup.fd.rawValue, events: .readable, priority: .inbox) { [inbox] _ in
            inbox.runPending()
        }
    }

    /// Watches `fd` for `events`; `handler` runs on the loop thread when it is ready.
    public func register(fd: Int32, events: Epoll.Events, priority: Priority, handler: @escaping Handler) throws {
        precondition(registrations[fd] == nil, "fd \(fd) registered twice")
        let serial = nextSerial
        nextSerial &+= 1
        try epoll.add(fd, events: events, data: Self.tag(serial: serial, fd: fd))
        // Added all the same, so that a bad fd fails here; while its priority is withheld it stays out of the set.
        if withheld.contains(priority) { try? epoll.remove(fd) }
        registrations[fd] = Registration(serial: serial, priority: priority, handler: handler, events: events)
    }

    /// Changes the events watched on a registered fd (e.g. adds `.writable` while output is queued).
    public func modify(fd: Int32, events: Epoll.Events) throws {
        guard var registration = registrations[fd] else { return }
        registration.events = events
        registrations[fd] = registration
        guard !withheld.contains(registration.priority) else { return }
        try epoll.modify(fd, events: events, data: Self.tag(serial: registration.serial, fd: fd))
    }

    /// Stops (or resumes) watching every fd of `priority`, current and future, without unregistering them. For
    /// back-pressure: while the journal cannot write, kernel input is left in the kernel's own bounded queues
    /// (which overflow visibly, `inotify`/`overflow`) instead of piling up in kevd's memory. Level-triggered,
    /// so whatever is queued is reported again as soon as it resumes. Withheld fds leave the epoll set rather than
    /// stay with an empty mask: a masked fd's new input still wakes `epoll_wait`, for nothing, each time.
    public func withhold(_ priority: Priority, _ withhold: Bool = true) {
        guard withheld.contains(priority) != withhold else { return }
        if withhold { withheld.insert(priority) } else { withheld.remove(priority) }
        for (fd, registration) in registrations where registration.priority == priority {
            // Fails only for an fd closed without unregistering: the kernel dropped it from the set already.
            if withhold {
                try? epoll.remove(fd)
            } else {
                try? epoll.add(fd, events: registration.events, data: Self.tag(serial: registration.serial, fd: fd))
            }
        }
    }

    public func isWithheld(_ priority: Priority) -> Bool { withheld.contains(priority) }

    /// Stops watching `fd`. Call before closing it.
    public func unregister(fd: Int32) {
        guard registrations.removeValue(forKey: fd) != nil else { return }
        // ENOENT: its priority is withheld (out of the set); EBADF: it was already closed, and the kernel dropped it.
        try? epoll.remove(fd)
    }

    /// Runs `body` at the end of every loop turn, after all ready handlers: where sinks write what a turn
    /// batched (one `write` for many events) and sources finish multi-record work.
    public func onTurnEnd(_ body: @escaping () -> Void) {
        turnEndHandlers.append(body)
    }

    /// Asks for another turn straight after this one, without waiting for an fd: for work left for later on the
    /// loop thread (a bounded slice of catching up, turn-end work past its bound). The next wait only looks at
    /// the fds (timeout 0), so what is ready is still served first. Loop thread only; other threads use `inbox`.
    public func requestTurn() {
        turnRequested = true
    }

    /// Waits once (up to `timeoutMilliseconds`, -1 forever; not at all after `requestTurn`), runs the ready
    /// handlers in priority order, then the turn-end handlers. Returns how many handlers ran.
    @discardableResult
    public func runOnce(timeoutMilliseconds: Int32) throws -> Int {
        let timeout = turnRequested ? 0 : timeoutMilliseconds
        turnRequested = false
        try epoll.wait(into: &ready, timeoutMilliseconds: timeout)
        let turnStart = Clock.monotonicNanoseconds()
        order.removeAll(keepingCapacity: true)
        for i in 0..<ready.count { order.append(i) }
        if ready.count > 1 {
            // Small n (a handful of sources): sort indices by the registration's priority.
            order.sort { lhs, rhs in
                let a = registrations[Self.fd(of: ready[lhs].data)]?.priority ?? .clients
                let b = registrations[Self.fd(of: ready[rhs].data)]?.priority ?? .clients
                return a < b
            }
        }
        var ran = 0
        for i in order {
            // A stop (TERM) ends the turn here: `stopping` must be the last event, not followed by a burst that
            // happened to be ready in the same wakeup (it stays in the kernel and the journal is consistent).
            if stopRequested { break }
            let (events, data) = ready[i]
            let fd = Self.fd(of: data)
            // Stale: an earlier handler of this batch unregistered the fd (and maybe a new one took its number).
            guard let registration = registrations[fd], registration.serial == Self.serial(of: data) else {
                continue
            }
            registration.handler(events)
            ran += 1
        }
        for body in turnEndHandlers { body() }
        longestTurnNanoseconds = max(longestTurnNanoseconds, Clock.monotonicNanoseconds() - turnStart)
        return ran
    }

    /// The longest turn since the previous call (or the start), and starts a new measurement window.
    public func takeLongestTurn() -> UInt64 {
        defer { longestTurnNanoseconds = 0 }
        return longestTurnNanoseconds
    }

    /// Runs until `stop()` is called (from a handler, or through the inbox from another thread).
    public func run() throws {
        stopRequested = false
        // What was published before the loop started (start-up events) is this turn's work: finish it before
        // the first wait, which may block for a long time.
        for body in turnEndHandlers { body() }
        while !stopRequested {
            try runOnce(timeoutMilliseconds: -1)
        }
    }

    /// Makes `run()` return after the current turn.
    public func stop() { stopRequested = true }
    public var isStopping: Bool { stopRequested }

    private static func tag(serial: UInt32, fd: Int32) -> UInt64 {
        UInt64(serial) << 32 | UInt64(UInt32(bitPattern: fd))
    }
    private static func fd(of tag: UInt64) -> Int32 { Int32(bitPattern: UInt32(truncatingIfNeeded: tag)) }
    private static func serial(of tag: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: tag >> 32) }
}
