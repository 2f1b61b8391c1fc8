import Glibc
import KevdKernel
import Synchronization

/// kevd's stderr, written by a thread of its own, so a log line never makes the loop (or any thread) wait.
///
/// Under systemd, stderr is a stream to journald, and a `write` to it blocks when journald is slow or stopped;
/// stderr can also be a pipe nobody reads. A log call only copies its line into a bounded queue (one lock, a
/// memcpy) and at most signals an eventfd; the writer thread does the blocking writes. When the queue is full,
/// lines are dropped and counted. Where the loss happened, once lines flow again, a line of its own says how
/// many were lost (`log lines dropped: stderr was not keeping up log.dropped=N`), and the running total is in
/// `kevd`/`stats` and `status` as `log_lines_dropped` (`kevctl metrics`: `kevd_log_lines_dropped_total`).
///
/// One per process: there is one stderr.
public final class StderrWriter: @unchecked Sendable {
    // @unchecked: `state` is a Mutex; `spare` belongs to the writer thread; `thread` and `notice` are set once by
    // `start`, before the first line is queued through it, and only read after.
    public static let shared = StderrWriter(fd: STDERR_FILENO, capacity: 256 << 10)

    private struct State {
        var queue: [UInt8] = []
        /// Lines dropped since the last drop notice was queued.
        var dropped: UInt64 = 0
        var droppedTotal: UInt64 = 0
        /// True from a queued line until the writer takes the queue: further lines need no wakeup.
        var signalled = false
        /// The writer has a batch in hand that is not written yet.
        var writing = false
    }

    private let fd: Int32
    /// Bytes queued at most; a line that does not fit is dropped. (The drop notice may go a line beyond.)
    private let capacity: Int
    private let state = Mutex(State())
    private var spare: [UInt8] = []
    private var wakeup: EventFD?
    /// Signalled by the writer each time it has written everything queued: what `flush` waits on.
    private var idle: EventFD?
    private var thread: WorkerThread?
    /// Formats the drop notice as a log line (the daemon's log format).
    private var notice: (@Sendable (UInt64) -> [UInt8])?

    init(fd: Int32, capacity: Int) {
        self.fd = fd
        self.capacity = capacity
    }

    /// Starts the writer thread. Until then, and if it cannot start, lines are written directly (blocking) as
    /// before. `notice` formats the drop notice for `count` lines in the log's format. Call it once, after the
    /// signal mask is set (the thread inherits it).
    public func start(notice: @escaping @Sendable (_ count: UInt64) -> [UInt8]) throws {
        precondition(thread == nil, "the stderr writer is started once")
        self.notice = notice
        state.withLock { $0.queue.reserveCapacity(capacity + 4096) }
        spare.reserveCapacity(capacity + 4096)
        wakeup = try EventFD(blocking: true)
        idle = try EventFD()
        thread = try WorkerThread(name: "kevd-log") { [self] in run() }
    }

    /// Lines dropped since kevd started because stderr was not keeping up.
    public var droppedLines: UInt64 { state.withLock { $0.droppedTotal } }

    /// Queues `line` (one or more whole lines, newline included) for stderr; never blocks on stderr.
    public func write(_ line: [UInt8]) {
        guard thread != nil, let wakeup, let notice else {
            Self.writeAll(fd, line)
            return
        }
        let mustSignal = state.withLock { state -> Bool in
            guard state.queue.count + line.count <= capacity else {
                state.dropped += 1
                state.droppedTotal += 1
                return false
            }
            if state.dropped > 0 {
                // Where the loss happened: the notice before the first line that made it again.
                state.queue += notice(state.dropped)
                state.dropped = 0
            }
            state.queue += line
            defer { state.signalled = true }
            return !state.signalled
        }
        if mustSignal { wakeup.signal() }
    }

    /// Waits until everything queued is written, or `timeoutMilliseconds` passed (stderr may be blocked for
    /// good): at exit, so the last lines ("kevd failed", "kevd stopped") are not lost with the process.
    public func flush(timeoutMilliseconds: Int32) {
        guard thread != nil, let wakeup, let idle else { return }
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        wakeup.signal()
        while true {
            let done = state.withLock { $0.queue.isEmpty && !$0.writing && $0.dropped == 0 }
            let now = Clock.monotonicNanoseconds()
            if done || now >= deadline { return }
            var ready = pollfd(fd: idle.fd.rawValue, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, Int32(clamping: (deadline - now + 999_999) / 1_000_000))
            _ = try? idle.drain()  // Nothing to drain is EAGAIN: the check above is what counts.
        }
    }

    /// Runs for the life of the process: there is always a stderr to write to.
    private func run() {
        guard let wakeup, let idle, let notice else { return }
        while true {
            _ = try? wakeup.drain()  // Blocks until a line is queued (or flush asks).
            while true {
                state.withLock { state in
                    swap(&state.queue, &spare)
                    if state.dropped > 0 {
                        // Lost after everything taken now, and no line has made it since: said at the end.
                        spare += notice(state.dropped)
                        state.dropped = 0
                    }
                    state.signalled = false
                    state.writing = !spare.isEmpty
                }
                if spare.isEmpty {
                    idle.signal()
                    break
                }
                Self.writeAll(fd, spare)
                spare.removeAll(keepingCapacity: true)
                state.withLock { $0.writing = false }
            }
        }
    }

    /// Blocking writes of all of `bytes`. When stderr is gone (EPIPE, a closed fd), the lines are lost: there
    /// is nowhere left to say so, and the daemon goes on.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                offset += n
            }
        }
    }
}
