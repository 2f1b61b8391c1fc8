import CKevdShim
import Glibc

/// Signals delivered as records on a file descriptor (`signalfd`).
///
/// The signals must be blocked in every thread first (`setMaskInAllThreads`), at the top of `main`, before any
/// thread exists: threads inherit the mask, and a signal left unblocked in one thread would be delivered there.
public final class SignalFD {
    public struct Record: Sendable, Equatable {
        public let signal: Int32
        public let code: Int32
        public let senderPID: UInt32
        public let senderUID: UInt32
        public let status: Int32
    }

    public let fd: OwnedFD
    public let signals: [Int32]

    /// Blocks exactly `signals` in the calling thread (and the threads it starts later). Any other signal the
    /// parent left blocked is unblocked: a blocked SIGSEGV or SIGTERM inherited from a careless parent would
    /// otherwise change how the process dies.
    public static func setMaskInAllThreads(blocking signals: [Int32]) throws {
        _ = try signals.withUnsafeBufferPointer { buf in
            try syscall("pthread_sigmask") { kevd_sigmask_set(buf.baseAddress, Int32(buf.count)) }
        }
    }

    public init(signals: [Int32]) throws {
        self.signals = signals
        var set = sigset_t()
        _ = try signals.withUnsafeBufferPointer { buf in
            try syscall("sigaddset") { kevd_sigset_fill(&set, buf.baseAddress, Int32(buf.count)) }
        }
        fd = OwnedFD(try syscall("signalfd") { kevd_signalfd(-1, &set) })
    }

    /// Reads every pending record.
    public func readAll() throws -> [Record] {
        var out: [Record] = []
        // On the stack: it is read on every SIGCHLD, which a busy rule makes hundreds of times a second.
        return try withUnsafeTemporaryAllocation(of: kevd_siginfo.self, capacity: 16) { buffer in
            while true {
                let n = try syscall("signalfd read") { kevd_signalfd_read(fd.rawValue, buffer.baseAddress, 16) }
                for info in buffer.prefix(Int(n)) {
                    out.append(
                        Record(
                            signal: Int32(info.signo), code: info.code, senderPID: info.pid, senderUID: info.uid,
                            status: info.status))
                }
                // A short read took everything queued: no second read just to be told so (the fd is
                // level-triggered, so a signal arriving after it is reported by the next wait).
                if n < 16 { return out }
            }
        }
    }

    /// The lower-case name without "SIG", as events carry it ("hup", "usr1").
    public static func name(of signal: Int32) -> String {
        switch signal {
        case SIGHUP: return "hup"
        case SIGINT: return "int"
        case SIGQUIT: return "quit"
        case SIGTERM: return "term"
        case SIGUSR1: return "usr1"
        case SIGUSR2: return "usr2"
        case SIGCHLD: return "chld"
        case SIGPIPE: return "pipe"
        case SIGALRM: return "alrm"
        case SIGWINCH: return "winch"
        // How rule scripts die: killed after a timeout's grace, or crashed.
        case SIGKILL: return "kill"
        case SIGSEGV: return "segv"
        case SIGABRT: return "abrt"
        case SIGBUS: return "bus"
        case SIGFPE: return "fpe"
        case SIGILL: return "ill"
        default: return "sig\(signal)"
        }
    }
}
