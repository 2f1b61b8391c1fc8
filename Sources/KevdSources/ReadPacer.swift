import KevdKernel
import KevdReactor

/// Read pacing for a kernel queue the loop reads (the inotify and fanotify sources): when it is read, and when a
/// busy file system is read less often.
///
/// A tree that is busy for a while (a build, an rsync, a generator) wakes the loop for every few events, and each
/// wakeup costs more than the events it brings: a context switch, `epoll_wait`, the read, and the journal's and
/// stdout's `write`s at the end of the turn. So while the queue is busy (more than `busyWindowBytes` of records in
/// a `busyWindowNanoseconds` window, about 50,000 short inotify events a second), a wakeup that comes less than
/// `readIntervalNanoseconds` after the previous read takes the fd out of the wait set until that time is up, and
/// the next read takes everything queued meanwhile (at 250,000 events/s, ~1,000 records). Out of the set, not
/// masked: a masked fd's new events still wake `epoll_wait` for nothing. In the inotify benchmark this took kevd's
/// CPU per event from 3.5 to about 2.5 µs. Interactive rates are never held back, and neither is a backlog
/// (`behind`): it is read turn after turn until the queue is empty.
///
/// 4 ms rather than 1: a quarter of the turns (each a timer, two `epoll_ctl`s, the journal's and stdout's writes)
/// for ~7 % less CPU per event in the 1M-file benchmark.
final class ReadPacer {
    static let readIntervalNanoseconds: UInt64 = 4_000_000
    static let busyWindowNanoseconds: UInt64 = 10_000_000
    static let busyWindowBytes = 16 * 1024

    /// Fires when a paused fd is due: its handler calls `resume`.
    let timer: TimerFD
    private(set) var paused = false
    private var lastRead: UInt64 = 0
    /// Bytes of records read since `windowStart`: the load that turns pacing on (`busy`).
    private var windowBytes = 0
    private var windowStart: UInt64 = 0
    private var busy = false
    /// The last read left records queued: the next read is not paced.
    var behind = false

    init() throws { timer = try TimerFD(clock: .monotonic) }

    /// The queue's fd `fd` is readable: whether to read it now. When not, the fd has left `loop`'s wait set until
    /// the timer fires.
    func readNow(fd: Int32, loop: EventLoop) -> Bool {
        let now = Clock.monotonicNanoseconds()
        if now &- windowStart >= Self.busyWindowNanoseconds {
            busy = windowBytes >= Self.busyWindowBytes
            windowBytes = 0
            windowStart = now
        }
        let due = lastRead &+ Self.readIntervalNanoseconds
        if busy, !behind, now < due, !paused, (try? timer.arm(delay: Int64(due - now), interval: 0)) != nil {
            loop.unregister(fd: fd)
            paused = true
            return false
        }
        lastRead = now
        return true
    }

    /// The timer fired: the fd back in the wait set (`watch` registers it), then the caller reads what came
    /// meanwhile.
    func resume(watch: () throws -> Void) {
        _ = try? timer.read()  // EAGAIN-only: the work is the caller's read.
        if paused {
            // Should re-registering fail (epoll out of memory), the timer tries again: the source is never lost.
            paused = (try? watch()) == nil
            if paused { _ = try? timer.arm(delay: Int64(Self.readIntervalNanoseconds), interval: 0) }
        }
        lastRead = Clock.monotonicNanoseconds()
    }

    /// Counts a read's bytes toward the busy window.
    func counted(_ bytes: Int) { windowBytes += bytes }
}
