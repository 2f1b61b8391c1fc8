import CSystemd
import Glibc
import KevdKernel
import KevdReactor
import Logging

/// The service manager's side of kevd, through libsystemd: readiness and status (`sd_notify`), the watchdog
/// (`sd_watchdog_enabled`) and socket activation (`sd_listen_fds`). Without `NOTIFY_SOCKET` the notifier is
/// off: no message is built, no timer exists.
final class SystemdNotifier {
    /// Whether a service manager listens (`NOTIFY_SOCKET` was set when kevd started).
    let enabled: Bool
    private let logger: Logger
    private var watchdogTimer: TimerFD?
    private var statusTimer: TimerFD?
    private var startingTimer: TimerFD?
    private var lastStatus = ""
    /// Where kevd is in its life, as systemd's STATUS= line names it (`ready: 3 watches, …`).
    enum State: String {
        case starting, ready, reloading, stopping
    }
    /// `.reloading` while a reload runs, so a status refresh does not say "ready" in the middle of it.
    private var state = State.starting

    /// How often the `STATUS=` line is refreshed, at most (and only when it changed).
    static let statusInterval: Int64 = 2_000_000_000

    init(logger: Logger) {
        self.logger = logger
        enabled = getenv("NOTIFY_SOCKET") != nil
    }

    /// Sends one notification (newline-separated `KEY=value` assignments). Errors are logged, never thrown:
    /// the service manager going away must not stop kevd.
    func notify(_ message: String) {
        guard enabled else { return }
        let r = sd_notify(0, message)
        if r < 0 {
            logger.warning("sd_notify failed", metadata: ["error": "\(String(cString: strerror(-r)))", "message": "\(message)"])
        }
    }

    /// Starts the watchdog pings (a timerfd on the loop, so they only happen while the loop turns). Before the
    /// start-up crawl, which may take seconds on a big tree while the loop keeps turning: a watchdog the service
    /// manager already counts must hear from kevd meanwhile.
    func startWatchdog(loop: EventLoop) throws {
        guard enabled, watchdogTimer == nil else { return }
        var usec: UInt64 = 0
        // WATCHDOG_USEC set for this pid (or without WATCHDOG_PID): ping at half the interval.
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            let timer = try TimerFD(clock: .monotonic)
            let period = Int64(clamping: usec / 2) * 1000
            try timer.arm(delay: period, interval: period)
            try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
                _ = try? timer.read()
                self.notify("WATCHDOG=1")
            }
            watchdogTimer = timer
            notify("WATCHDOG=1")
            logger.info("systemd watchdog", metadata: ["watchdog.usec": "\(usec)"])
        }
    }

    /// While start-up waits for the crawl of big trees: every `startingInterval`, extends the service manager's
    /// start timeout (`EXTEND_TIMEOUT_USEC`, systemd 236+; older ones ignore it) and says how far the crawl is,
    /// so `TimeoutStartSec=` does not kill a kevd that is making progress. Stops at `ready`.
    func starting(loop: EventLoop, progress: @escaping () -> String) throws {
        guard enabled, startingTimer == nil else { return }
        let timer = try TimerFD(clock: .monotonic)
        try timer.arm(delay: Self.startingInterval, interval: Self.startingInterval)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? timer.read()
            guard self.state == .starting else {
                loop.unregister(fd: timer.fd.rawValue)
                self.startingTimer = nil
                return
            }
            let extend = UInt64(Self.startingInterval / 1000) * 3
            self.notify("EXTEND_TIMEOUT_USEC=\(extend)\nSTATUS=starting: \(progress())")
        }
        startingTimer = timer
    }

    static let startingInterval: Int64 = 10_000_000_000

    /// Start-up is complete: every source is armed. Starts the status refreshes (and the watchdog pings, if
    /// `startWatchdog` did not already).
    func ready(loop: EventLoop, status: @escaping () -> String) throws {
        guard enabled else { return }
        state = .ready
        lastStatus = status()
        notify("READY=1\nSTATUS=\(state.rawValue): \(lastStatus)")
        try startWatchdog(loop: loop)
        let timer = try TimerFD(clock: .monotonic)
        try timer.arm(delay: Self.statusInterval, interval: Self.statusInterval)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? timer.read()
            let now = status()
            guard now != self.lastStatus, self.state == .ready else { return }
            self.lastStatus = now
            self.notify("STATUS=\(self.state.rawValue): \(now)")
        }
        statusTimer = timer
    }

    /// A HUP reload begins (`RELOADING=1`, with the monotonic time newer managers expect).
    func reloading() {
        guard enabled else { return }
        state = .reloading
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let usec = UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
        notify("RELOADING=1\nMONOTONIC_USEC=\(usec)\nSTATUS=reloading the configuration")
    }

    /// The reload is over, whether it applied or kept the running configuration.
    func reloaded(status: String) {
        guard enabled else { return }
        state = .ready
        lastStatus = status
        notify("READY=1\nSTATUS=\(state.rawValue): \(status)")
    }

    func stopping(signal: String) {
        guard enabled else { return }
        state = .stopping
        notify("STOPPING=1\nSTATUS=stopping (\(signal))")
    }

    /// The listening socket systemd passed (`LISTEN_FDS=1`, `LISTEN_PID` = ours), if it is an AF_UNIX stream
    /// socket in the listening state; nil otherwise, and then kevd binds its own. The variables are unset.
    static func activationSocket(expectedPath: String, logger: Logger) -> Int32? {
        let count = sd_listen_fds(1)
        if count < 0 {
            logger.warning("sd_listen_fds failed", metadata: ["error": "\(String(cString: strerror(-count)))"])
            return nil
        }
        guard count > 0 else { return nil }
        let first = SD_LISTEN_FDS_START
        guard count == 1 else {
            logger.error("socket activation passed \(count) sockets, kevd takes one; binding its own socket")
            for fd in first..<(first + count) { Glibc.close(fd) }
            return nil
        }
        guard sd_is_socket_unix(first, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            logger.error("socket activation passed fd \(first), which is not a listening AF_UNIX stream socket; binding kevd's own")
            Glibc.close(first)
            return nil
        }
        if sd_is_socket_unix(first, Int32(SOCK_STREAM.rawValue), 1, expectedPath, 0) <= 0 {
            // Still usable, but rule scripts and kevctl are told the configured path: say so.
            logger.warning(
                "the activation socket is not bound to the configured [daemon] socket; clients using that path will not reach kevd",
                metadata: ["socket": "\(expectedPath)"])
        }
        return first
    }
}
