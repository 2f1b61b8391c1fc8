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
