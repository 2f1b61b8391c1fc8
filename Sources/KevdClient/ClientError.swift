import KevdKernel
import SystemPackage

/// Why a client operation failed. Every case reads as a complete sentence for a `kevctl: …` message.
public enum KevdClientError: Error, Equatable, CustomStringConvertible {
    /// `connect` failed: the socket is missing, refused, or not ours to open.
    case connect(path: String, errno: Errno)
    /// The socket path does not fit `sockaddr_un` even through `/proc/self/fd`.
    case pathTooLong(String)
    /// A read or write on the connection failed.
    case io(SyscallError)
    /// The server sent something that is not a protocol line.
    case protocolViolation(String)
    /// The server answered `{"ok":false,"error":…}`.
    case server(String)
    /// The server closed the connection while a reply was still expected.
    case closed
    /// The deadline passed before the server said anything.
    case timedOut
    /// The connection's `wakeFD` became readable while waiting (a signal arrived, typically).
    case interrupted

    public var description: String {
        switch self {
        case .connect(let path, let errno):
            let hint: String
            switch errno {
            case .noSuchFileOrDirectory, .connectionRefused, .notDirectory:
                hint = "is kevd running? set --socket or KEVD_SOCKET"
            case .permissionDenied:
                hint = "the socket is mode 0660: are you in kevd's [server] group?"
            default:
                hint = "set --socket or KEVD_SOCKET"
            }
            return "cannot connect to \(path): \(errno.description) (\(hint))"
        case .pathTooLong(let path):
            return "cannot connect to \(path): the socket path is too long for a Unix socket"
        case .io(let error):
            return "connection to kevd failed: \(error)"
        case .protocolViolation(let message):
            return "kevd sent an unexpected line: \(message)"
        case .server(let message):
            return "kevd: \(message)"
        case .closed:
            return "kevd closed the connection"
        case .timedOut:
            return "timed out waiting for kevd"
        case .interrupted:
            return "interrupted"
        }
    }
}
