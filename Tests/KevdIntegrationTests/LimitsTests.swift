import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A protocol client connected as another user: `setpriv` starts a small perl bridge (perl-base is part of every
/// Debian system) as that user, which connects to the socket and copies lines both ways, so kevd sees the user's
/// uid in `SO_PEERCRED` while the test drives one long-lived connection.
final class ClientAs {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let errors = Pipe()
    private var pending = PendingLines()

    static let bridge = """
        use IO::Socket::UNIX; use IO::Select;
        my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect $ARGV[0]: $!\\n";
        my $sel = IO::Select->new(\\*STDIN, $s);
        while (my @ready = $sel->can_read) {
            for my $h (@ready) {
                my $n = sysread($h, my $buf, 65536);
                if ($h == $s) { exit 0 unless $n; syswrite(STDOUT, $buf); }
                elsif ($n) { syswrite($s, $buf); }
                else { $sel->remove(\\*STDIN); shutdown($s, 1); }
            }
        }
        """

    /// `groups`: supplementary groups (a comma-separated list for `setpriv --groups`); nil: none.
    init(user: String, group: String, socket: String, groups: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        let groupArguments = groups.map { ["--groups", $0] } ?? ["--clear-groups"]
        process.arguments =
            ["--reuid", user, "--regid", group] + groupArguments + ["--", "/usr/bin/perl", "-e", Self.bridge, socket]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.runAlone()
    }

    /// setpriv execs perl: this is the pid kevd sees.
    var pid: Int32 { process.processIdentifier }

    func send(_ text: String) {
        input.fileHandleForWriting.write(Data(text.utf8))
    }

    func line(timeout: Double = 10) throws -> [String: Any] {
        let fd = output.fileHandleForReading.fileDescriptor
        guard let line = try pending.nextLine(from: fd, timeout: timeout, what: "a line from kevd (as another user)") else {
            let why = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
            throw DaemonProcess.Timeout(what: "a line (the bridge ended: \(why))", seen: 0, stderr: "")
        }
        return line
    }

    /// Sends a request and returns its reply (this client never subscribes to anything that matches).
    func request(_ text: String) throws -> [String: Any] {
        send(text + "\n")
        while true {
            let l = try line()
            if l["ok"] != nil { return l }
        }
    }

    /// Ends the bridge, and with it the connection. SIGKILL: the bridge may have inherited a blocked SIGTERM.
    func close() {
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { close() }
}

/// `[server]` limits: the per-uid ones need a second user (root and kevd's own uid are exempt), so those tests
/// run as root and connect as `nobody` and `daemon` through `setpriv`.
@Suite("per-user limits", .serialized)
struct LimitsTests {
    /// A socket anyone may connect to and access rules for the two test users, so that only the limits refuse.
    static func openConfig(_ server: String) -> String {
        serverConfig(
            "[server]\nmode = \"0666\"\n\(server)\n"
                + "[[access]]\nusers = [\"nobody\", \"daemon\"]\nemit = true\nsources = [\"*\"]\n")
    }

    static func reachable(_ daemon: DaemonProcess) {
        chmod(daemon.directory.path, 0o755)
        chmod(daemon.directory.file("state"), 0o755)
    }

    static func isLimitEvent(_ name: String) -> ([String: Any]) -> Bool {
        { $0.isEvent("kevd", "limit", key: name) }
    }

    /// Publishes a marker as root and waits for it: every event published before it has been seen too.
    static func barrier(_ daemon: DaemonProcess, _ client: RawClient, _ name: String) throws {
        #expect(try client.request(#"{"op":"emit","type":"\#(name)"}"#)["ok"] as? Bool == true)
        try daemon.waitFor(name) { $0.isEvent("emit", name) }
    }

    @Test(
        "a uid over max_subscriptions_per_uid is refused with the limit's name, reported once; others still subscribe",
        .enabled(if: Root.shouldRun, Root.reason))
    func subscriptionsPerUID() throws {
        try Root.check()
        let daemon = try DaemonProcess(config: Self.openConfig("max_subscriptions_per_uid = 2"))
        Self.reachable(daemon)
        let socket = daemon.directory.file("state/kevd.sock")
        let first = try ClientAs(user: "nobody", group: "nogroup", socket: socket)
        let second = try ClientAs(user: "nobody", group: "nogroup", socket: socket)
        let third = try ClientAs(user: "nobody", group: "nogroup", socket: socket)
        #expect(try first.request(#"{"op":"subscribe","filter":["type=never"]}"#)["ok"] as? Bool == true)
        #expect(try second.request(#"{"op":"subscribe","filter":["type=never"]}"#)["ok"] as? Bool == true)
        let refused = try third.request(#"{"op":"subscribe","filter":["type=never"]}"#)
        #expect(refused["ok"] as? Bool == false)
        #expect(refused["limit"] as? String == "max_subscriptions_per_uid")
        #expect((refused["error"] as? String)?.contains("max_subscriptions_per_uid") == true)
        // The connection stays usable, and asking again is refused again.
        #expect(try third.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        #expect(try third.request(#"{"op":"subscribe","filter":["type=never"]}"#)["limit"] as? String == "max_subscriptions_per_uid")
        // Another uid has its own count.
        let other = try ClientAs(user: "daemon", group: "daemon", socket: socket)
        #expect(try other.request(#"{"op":"subscribe","filter":["type=never"]}"#)["ok"] as? Bool == true)

        let root = try RawClient(socket)
        try Self.barrier(daemon, root, "after.refusals")
        let reports = daemon.received.filter(Self.isLimitEvent("max_subscriptions_per_uid"))
        #expect(reports.count == 1, "two refusals, one event")
        #expect(reports.first?.data["uid"] as? Int == 65534)
        #expect(reports.first?.data["pid"] as? Int == Int(third.pid))
        #expect(reports.first?.data["limit"] as? Int == 2)
        #expect(reports.first?.data["value"] as? Int == 2)

        // Once one of the user's subscribers leaves, the user may subscribe again.
        first.close()
        let deadline = Date().addingTimeInterval(10)
        func nobodySubscribers() throws -> Int {
            let subscribers = try root.request(#"{"op":"status"}"#)["subscribers"] as? [[String: Any]] ?? []
            return subscribers.filter { $0["uid"] as? Int == 65534 }.count
        }
        while try nobodySubscribers() > 1 && Date() < deadline { usleep(20_000) }
        #expect(try third.request(#"{"op":"subscribe","filter":["type=never"]}"#)["ok"] as? Bool == true)
        #expect(daemon.stop() == 0)
    }

    @Test(
        "an emit burst over emit_rate_per_uid is refused, the connection stays usable, and emits pass again after refill",
        .enabled(if: Root.shouldRun, Root.reason))
    func emitRatePerUID() throws {
        try Root.check()
        let daemon = try DaemonProcess(config: Self.openConfig("emit_rate_per_uid = 2\nemit_burst_per_uid = 5"))
        Self.reachable(daemon)
        let socket = daemon.directory.file("state/kevd.sock")
        let nobody = try ClientAs(user: "nobody", group: "nogroup", socket: socket)
        nobody.send(String(repeating: #"{"op":"emit","type":"burst"}"# + "\n", count: 20))
        var replies: [[String: Any]] = []
        for _ in 0..<20 { replies.append(try nobody.line()) }
        let accepted = replies.filter { $0["ok"] as? Bool == true }
        let refused = replies.filter { $0["ok"] as? Bool == false }
        // The burst of 5 passes (and at most a token or two refilled while the 20 were read); the rest is refused.
        #expect(accepted.count >= 5 && accepted.count <= 8, "\(accepted.count) accepted")
        #expect(accepted.count + refused.count == 20)
        #expect(refused.allSatisfy { $0["limit"] as? String == "emit_rate_per_uid" })
        #expect((refused.first?["error"] as? String)?.contains("emit_rate_per_uid") == true)
        #expect(try nobody.request(#"{"op":"status"}"#)["ok"] as? Bool == true, "the connection is still usable")
        // Another uid is not held back by this one's rate.
        let other = try ClientAs(user: "daemon", group: "daemon", socket: socket)
        #expect(try other.request(#"{"op":"emit","type":"other"}"#)["ok"] as? Bool == true)

        let root = try RawClient(socket)
        try Self.barrier(daemon, root, "after.burst")
        let reports = daemon.received.filter(Self.isLimitEvent("emit_rate_per_uid"))
        #expect(reports.count == 1, "\(refused.count) refusals, one event")
        #expect(reports.first?.data["uid"] as? Int == 65534)
        #expect(reports.first?.data["pid"] as? Int == Int(nobody.pid))
        #expect(reports.first?.data["limit"] as? Int == 2)
        #expect(daemon.received.filter { $0.isEvent("emit", "burst") }.count == accepted.count, "refused emits are not published")

        // Two tokens a second: on the same connection, an emit passes again once the bucket refilled.
        let deadline = Date().addingTimeInterval(10)
        var later: [String: Any] = [:]
        repeat {
            later = try nobody.request(#"{"op":"emit","type":"later"}"#)
            if later["ok"] as? Bool == true { break }
            usleep(100_000)
        } while Date() < deadline
        #expect(later["ok"] as? Bool == true)
        #expect(daemon.stop() == 0)
    }

    @Test("hitting max_clients or max_request is a kevd/limit event, once for many refusals")
    func clientsAndRequestSize() throws {
        let daemon = try DaemonProcess(config: serverConfig("[server]\nmax_clients = 2\nmax_request = \"4K\"\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        let kept = try RawClient(socket)
        let big = try RawClient(socket)
        #expect(try kept.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        #expect(try big.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        for _ in 0..<3 {
            let refused = try RawClient(socket)
            let reply = try refused.line()
            #expect(reply["limit"] as? String == "max_clients")
            #expect((reply["error"] as? String)?.contains("too many clients") == true)
            #expect(refused.isClosedByPeer)
        }
        big.send(String(repeating: "x", count: 10_000))
        let tooLong = try big.line()
        #expect(tooLong["limit"] as? String == "max_request")
        #expect(big.isClosedByPeer)

        try Self.barrier(daemon, kept, "after.limits")
        let clients = daemon.received.filter(Self.isLimitEvent("max_clients"))
        #expect(clients.count == 1, "three refused connections, one event")
        #expect(clients.first?.data["uid"] as? Int == Int(getuid()))
        #expect(clients.first?.data["limit"] as? Int == 2)
        #expect(clients.first?.data["value"] as? Int == 2)
        let requests = daemon.received.filter(Self.isLimitEvent("max_request"))
        #expect(requests.count == 1)
        #expect(requests.first?.data["limit"] as? Int == 4096)
        #expect((requests.first?.data["value"] as? Int ?? 0) > 4096)
        #expect(daemon.stop() == 0)
    }
}
