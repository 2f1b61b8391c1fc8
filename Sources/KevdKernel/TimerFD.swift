import CKevdShim
import Glibc

/// A non-blocking timerfd (`timerfd_create`, `timerfd_settime`).
public final class TimerFD {
    public enum ClockID: Sendable {
        case monotonic
        case realtime
        case boottime

        var raw: Int32 {
            switch self {
            case .monotonic: return kevd_CLOCK_MONOTONIC
            case .realtime: return kevd_CLOCK_REALTIME
            case .boottime: return kevd_CLOCK_BOOTTIME
            }
        }
    }

    /// What a read found.
    public enum Expiry: Equatable, Sendable {
        /// Nothing yet.
        case none
        /// The timer expired this many times since the last read (more than one means overruns).
        case expired(UInt64)
        /// The wall clock was set (`TFD_TIMER_CANCEL_ON_SET`): the deadline must be computed again.
        case clockChanged
    }

    public let fd: OwnedFD
    public let clock: ClockID

    public init(clock: ClockID) throws {
        self.clock = clock
        fd = OwnedFD(try syscall("timerfd_create") { kevd_timerfd_create(clock.raw) })
    }

    /// First expiry after `delay` nanoseconds, then every `interval` nanoseconds (0: once).
    public func arm(delay: Int64, interval: Int64) throws {
        // A zero it_value disarms; the earliest real expiry is 1 ns.
        try syscall("timerfd_settime") { kevd_timerfd_settime(fd.rawValue, 0, max(delay, 1), interval) }
    }

    /// One expiry at an absolute time of this timer's clock. On the realtime clock, a change of the wall clock
    /// (settimeofday, NTP step) makes the next read report `.clockChanged`.
    public func arm(atAbsolute nanoseconds: Int64, cancelOnClockChange: Bool) throws {
        var flags = kevd_TFD_TIMER_ABSTIME
        if cancelOnClockChange { flags |= kevd_TFD_TIMER_CANCEL_ON_SET }
        try syscall("timerfd_settime") { kevd_timerfd_settime(fd.rawValue, flags, nanoseconds, 0) }
    }

    public func disarm() throws {
        try syscall("timerfd_settime") { kevd_timerfd_settime(fd.rawValue, 0, 0, 0) }
    }

    public func read() throws -> Expiry {
        var count: UInt64 = 0
        do {
            let n = try nonBlockingSyscall("timerfd read") {
                withUnsafeMutableBytes(of: &count) { Glibc.read(fd.rawValue, $0.baseAddress, 8) }
            }
            return n == nil ? .none : .expired(count)
        } catch let error as SyscallError where error.errno == .canceled {
            return .clockChanged
        }
    }
}
