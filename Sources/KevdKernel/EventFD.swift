import CKevdShim
import Glibc

/// A non-blocking eventfd: a counter other threads bump to wake the loop (`eventfd`).
public final class EventFD: @unchecked Sendable {
    // @unchecked: the fd number is immutable after init and the kernel object is safe to write from any thread.
    public let fd: OwnedFD

    /// Non-blocking by default (the loop polls it); `blocking` for a helper thread that sleeps in `drain`.
    public init(blocking: Bool = false) throws {
        fd = OwnedFD(try syscall("eventfd") { kevd_eventfd(0, blocking ? 0 : 1) })
    }

    /// Adds one to the counter; safe from any thread. Never blocks: a saturated counter already means "wake up".
    public func signal() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd.rawValue, $0.baseAddress, 8) }
    }

    /// Reads and resets the counter; 0 when nothing was signalled (a blocking eventfd waits instead).
    @discardableResult
    public func drain() throws -> UInt64 {
        var value: UInt64 = 0
        let n = try nonBlockingSyscall("eventfd read") {
            withUnsafeMutableBytes(of: &value) { Glibc.read(fd.rawValue, $0.baseAddress, 8) }
        }
        return n == nil ? 0 : value
    }
}

extension EventFD {
    /// Waits until the counter is non-zero or the monotonic clock reaches `deadline` (ns), without reading it:
    /// true when signalled (`drain` then returns at once), false when the deadline passed first. For a helper
    /// thread that must also act on a timer of its own (the rules' spawner reports outcomes the loop has not
    /// taken).
    public func wait(until deadline: Int64) -> Bool {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        while true {
            let remaining = deadline - Int64(clamping: Clock.monotonicNanoseconds())
            if remaining <= 0 { return poll(&entry, 1, 0) > 0 }
            // Whole milliseconds, rounded up: never early.
            let milliseconds = Int32(clamping: (remaining + 999_999) / 1_000_000)
            let n = poll(&entry, 1, milliseconds)
            if n > 0 { return true }
            if n == 0 { return false }
            if errno != EINTR { return true }  // Let the caller's read report it.
        }
    }
}
