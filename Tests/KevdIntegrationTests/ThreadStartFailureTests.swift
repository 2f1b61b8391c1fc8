import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A helper thread that cannot start is a clear start-up failure, not a crash later. The failure is real:
/// kevd runs as a user with no other processes and `RLIMIT_NPROC` 1, so the kernel refuses every new thread
/// (`pthread_create` fails with EAGAIN). Root ignores RLIMIT_NPROC, hence the unprivileged uid.
@Suite("thread start failure", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct ThreadStartFailureTests {
    /// A uid no account uses, so that kevd is its only process.
    static let uid = 47113

    @Test("RLIMIT_NPROC reached: logging falls back to direct writes, and the journal's flusher thread failing exits 1 naming pthread_create and EAGAIN")
    func flusherCannotStart() throws {
        try Root.check()  // setpriv to another uid
        let dir = try TemporaryDirectory()
        #expect(chown(dir.path, uid_t(Self.uid), gid_t(Self.uid)) == 0)
        #expect(chmod(dir.path, 0o755) == 0)
        let daemon = try DaemonProcess(
            config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n", in: dir,
            launcher: ["/usr/bin/setpriv", "--reuid=\(Self.uid)", "--regid=\(Self.uid)", "--clear-groups",
                       "/usr/bin/prlimit", "--nproc=1:1", "--"],
            waitForStart: false)
        let stderr = daemon.finalStderr(timeout: 20)
        #expect(daemon.stop() == 1, "\(stderr)")
        #expect(stderr.contains("kevd: cannot start the log writer thread; logging directly: pthread_create(kevd-log)"), "\(stderr)")
        let failed = stderr.split(separator: "\n").first { $0.contains("kevd failed") }
        #expect(failed?.contains("pthread_create(kevd-flusher)") == true, "\(stderr)")
        #expect(failed?.contains("(errno 11)") == true, "EAGAIN: \(stderr)")
        #expect(daemon.received.isEmpty, "no event, not even started: \(daemon.received)")
    }
}
