import Glibc
import SystemPackage

/// A helper thread that runs one closure to its end: the flusher, the forwarders, the position writers, the
/// journald mirror, the log writer.
///
/// Starting is checked: `pthread_create` fails with `EAGAIN` when `RLIMIT_NPROC`, the cgroup's `pids.max` or
/// `kernel.threads-max` is reached, or the stack cannot be mapped, and the error is thrown at once, where the
/// caller can say what could not start, instead of a thread that never existed being joined at shutdown.
/// Joining happens at most once, and not at all for a thread that did not start.
public final class WorkerThread {
    public let name: String
    private var thread: pthread_t?

    /// Starts `body` on a new thread named `name` (the first 15 bytes are what `ps -L` and `top -H` show).
    /// `stackBytes`: the thread's stack size, the system default when nil. Throws `SyscallError` with the errno
    /// `pthread_create` returned (`EAGAIN`: no thread could be made; `EINVAL`: a bad stack size).
    public init(name: String, stackBytes: Int? = nil, _ body: @escaping @Sendable () -> Void) throws {
        self.name = name
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if let stackBytes {
            let rc = pthread_attr_setstacksize(&attributes, stackBytes)
            guard rc == 0 else { throw SyscallError(call: "pthread_attr_setstacksize(\(name))", errno: Errno(rawValue: rc)) }
        }
        // The closure travels to the new thread retained; the thread takes that reference over.
        let box = Unmanaged.passRetained(Body(name: name, body))
        var thread = pthread_t()
        let rc = pthread_create(&thread, &attributes, { raw in
            let body = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
            body.nameThisThread()
            body.run()
            return nil
        }, box.toOpaque())
        guard rc == 0 else {
            box.release()
            throw SyscallError(call: "pthread_create(\(name))", errno: Errno(rawValue: rc))
        }
        self.thread = thread
    }

    /// Waits for the body to return. The first call joins; later ones return at once. Call it from another
    /// thread: a thread joining itself would wait forever (`EDEADLK`), which is a bug in the caller.
    public func join() {
        guard let thread else { return }
        self.thread = nil
        let rc = pthread_join(thread, nil)
        precondition(rc == 0, "pthread_join(\(name)) failed with \(Errno(rawValue: rc)): a kevd bug")
    }

    /// Whether the thread was started and not joined yet.
    public var isJoinable: Bool { thread != nil }

    private final class Body {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, _ run: @escaping @Sendable () -> Void) {
            self.name = name
            self.run = run
        }

        /// The name `ps -L` and `top -H` show: what `pthread_setname_np` does (Swift's Glibc lacks it), written
        /// by the thread itself. The kernel keeps 15 bytes; the name is cut on a character boundary to fit. Best
        /// effort: without /proc the thread keeps its parent's name.
        func nameThisThread() {
            var shown: [UInt8] = []
            for character in name {
                guard shown.count + character.utf8.count <= 15 else { break }
                shown += character.utf8
            }
            let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return }
            _ = shown.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }
}
