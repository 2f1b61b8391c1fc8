import CKevdShim
import Glibc
import SystemPackage

/// A failed system call: which call, and the errno it set.
public struct SyscallError: Error, Equatable, CustomStringConvertible {
    public let call: String
    public let errno: Errno

    public init(call: String, errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno.description) (errno \(errno.rawValue))" }
}

/// Runs a system call that returns -1 on failure: retries `EINTR`, throws everything else.
///
/// `EBADF` and `EFAULT` mean kevd passed a closed fd or a bad pointer: a bug, not a condition to handle.
@inline(__always)
@discardableResult
public func syscall<T: FixedWidthInteger>(_ call: String = #function, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        precondition(code != EBADF && code != EFAULT, "\(call) failed with \(Errno(rawValue: code)): a kevd bug")
        throw SyscallError(call: call, errno: Errno(rawValue: code))
    }
}

/// Like `syscall`, for non-blocking fds: returns nil for `EAGAIN` ("nothing to do now").
@inline(__always)
public func nonBlockingSyscall<T: FixedWidthInteger>(_ call: String = #function, _ body: () -> T) throws -> T? {
    do {
        return try syscall(call, body)
    } catch let error as SyscallError where error.errno == .resourceTemporarilyUnavailable {
        return nil
    }
}

/// An owned file descriptor, closed exactly once (explicitly or when released).
public final class OwnedFD {
    public private(set) var rawValue: Int32

    public init(_ rawValue: Int32) {
        precondition(rawValue >= 0)
        self.rawValue = rawValue
    }

    public var isOpen: Bool { rawValue >= 0 }

    /// FIONREAD: the bytes a read would return now (an inotify or fanotify fd: every event queued; the kernel walks
    /// its queue to count them, so never per read on a hot path), or nil when the kernel does not say.
    public var queuedBytes: Int? {
        let n = kevd_queued_bytes(rawValue)
        return n >= 0 ? Int(n) : nil
    }

    /// Closes now. A second call does nothing. `close` errors are ignored: on Linux the fd is gone regardless
    /// (retrying after EINTR could close an fd another thread just opened).
    public func close() {
        guard rawValue >= 0 else { return }
        _ = Glibc.close(rawValue)
        rawValue = -1
    }

    deinit { close() }
}

/// Monotonic and wall clocks in nanoseconds (`clock_gettime`).
public enum Clock {
    public static func monotonicNanoseconds() -> UInt64 { UInt64(kevd_clock_ns(kevd_CLOCK_MONOTONIC)) }
    public static func realtimeNanoseconds() -> Int64 { kevd_clock_ns(kevd_CLOCK_REALTIME) }
}

/// Cryptographic random bytes (`getrandom`), for the per-run part of event ids.
public func randomUInt64() throws -> UInt64 {
    var value: UInt64 = 0
    _ = try withUnsafeMutableBytes(of: &value) { raw in
        try syscall("getrandom") { kevd_getrandom(raw.baseAddress, raw.count) }
    }
    return value
}
