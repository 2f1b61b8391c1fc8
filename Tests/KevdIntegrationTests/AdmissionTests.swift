import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Many connections as another user, each sending half a request line and then nothing (slowloris): `setpriv`
/// starts a small perl script as that user (perl-base is part of every Debian system). It prints one JSON line
/// when every connection is open (`{"ready":N}`) and one when kevd closes a connection, with the line kevd sent
/// before closing (`{"closed":I,"reply":{...}}`, or null).
final class HalfLineClients {
    let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    private var pending = PendingLines()

    static let script = """
        use IO::Socket::UNIX; use IO::Select;
        $SIG{PIPE} = 'IGNORE'; $| = 1;
        my ($path, $count) = @ARGV; my $sel = IO::Select->new; my %index; my %text;
        for my $i (0 .. $count - 1) {
            my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect $path: $!\\n";
            syswrite($s, '{"op":"sta');
            $index{fileno($s)} = $i; $text{$i} = ''; $sel->add($s);
        }
        print "{\\"ready\\":$count}\\n";
        while ($sel->count) {
            for my $h ($sel->can_read) {
                my $i = $index{fileno($h)};
                my $n = sysread($h, my $buf, 65536);
                if ($n) { $text{$i} .= $buf; next; }
                my $reply = $text{$i}; $reply =~ s/\\n.*//s; $reply = 'null' if $reply eq '';
                print "{\\"closed\\":$i,\\"reply\\":$reply}\\n";
                $sel->remove($h); close($h);
            }
        }
        """

    /// `setpriv` arguments that make the user (`--reuid`, `--regid`, groups) before perl runs.
    init(as identity: [String], socket: String, count: Int) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = identity + ["--", "/usr/bin/perl", "-e", Self.script, socket, String(count)]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = errors
        try process.runAlone()
    }

    var pid: Int32 { process.processIdentifier }

    func line(timeout: Double = 10) throws -> [String: Any] {
        let fd = output.fileHandleForReading.fileDescriptor
        guard let line = try pending.nextLine(from: fd, timeout: timeout, what: "a line from the half-line clients") else {
            let why = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
            throw DaemonProcess.Timeout(what: "a line (the clients' script ended: \(why))", seen: 0, stderr: "")
        }
        return line
    }

    /// Waits for `count` connections to be closed by kevd; returns the reply each got, by index.
    func closed(_ count: Int, timeout: Double) throws -> [Int: [String: Any]] {
        var out: [Int: [String: Any]] = [:]
        let deadline = Date().addingTimeInterval(timeout)
        while out.count < count {
            let l = try line(timeout: max(deadline.timeIntervalSinceNow, 0.01))
            guard let index = l["closed"] as? Int else { continue }
            out[index] = l["reply"] as? [String: Any] ?? [:]
        }
        return out
    }

    /// Whether a line arrived within `timeout` (for asserting that nothing was closed yet).
    func hasLine(within timeout: Double) -> Bool {
        var p = pollfd(fd: output.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, Int32(timeout * 1000)) == 1
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}

/// Issue 15, part 3: one local user cannot lock everyone out. Runs as root and connects as `nobody` and `daemon`,
/// both in the socket's group (`nogroup`).
@Suite("connection admission: per-uid connections, reserved slots, first-request deadline", .serialized)
struct AdmissionTests {
    static let nobody = ["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    static let daemonUser = ["--reuid", "daemon", "--regid", "daemon", "--groups", "nogroup"]

    @Test(
        "a user holding every slot it can with half lines locks out neither root nor another user; the deadline frees them",
        .enabled(if: Root.shouldRun, Root.reason))
    func slowlorisUser() throws {
        try Root.check()
        let deadlineSeconds = 5.0
        let daemon = try DaemonProcess(
            config: serverConfig(
                "[server]\ngroup = \"nogroup\"\nmode = \"0660\"\nmax_clients = 16\nreserved_clients = 4\n"
                    + "max_clients_per_uid = 7\nfirst_request_timeout = \"\(Int(deadlineSeconds))s\"\n"))
        LimitsTests.reachable(daemon)
        let socket = daemon.directory.file("state/kevd.sock")
        let baselineFDs = Self.fdTargets(daemon.pid)
        let started = Date()

        // nobody takes all it may: 7 connections; the 8th is refused by its own limit, not by max_clients.
        let hostile = try HalfLineClients(as: Self.nobody, socket: socket, count: 8)
        #expect(try hostile.line()["ready"] as? Int == 8)
        let refusedHostile = try hostile.closed(1, timeout: 10)
        let perUID = try #require(refusedHostile.values.first)
        #expect(perUID["limit"] as? String == "max_clients_per_uid", "\(perUID)")
        #expect((perUID["error"] as? String)?.contains("uid 65534 holds 7") == true, "\(perUID)")

        // daemon, another user in the group, is served...
        let other = try ClientAs(user: "daemon", group: "daemon", socket: socket, groups: "nogroup")
        #expect(try other.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        // ...and may take what is left outside the reserve: 4 more (7 + 1 + 4 = 16 - 4 reserved), not a 5th.
        let second = try HalfLineClients(as: Self.daemonUser, socket: socket, count: 5)
        #expect(try second.line()["ready"] as? Int == 5)
        let reserve = try #require(try second.closed(1, timeout: 10).values.first)
        #expect(reserve["limit"] as? String == "max_clients", "\(reserve)")
        #expect((reserve["error"] as? String)?.contains("reserved for root") == true, "\(reserve)")

        // Root gets the reserved slots, all of them, and then max_clients applies to root too.
        // The first is a quiet subscriber: it never sends again, and the deadline must leave it alone.
        var rootClients = [try RawClient(socket)]
        let subscribe = #"{"op":"subscribe","filter":["source=emit","type=after.deadline"]}"#
        #expect(try rootClients[0].request(subscribe)["ok"] as? Bool == true)
        for _ in 0..<3 {
            let c = try RawClient(socket)
            let status = try c.request(#"{"op":"status"}"#)
            #expect(status["ok"] as? Bool == true)
            rootClients.append(c)
        }
        #expect((try rootClients[3].request(#"{"op":"status"}"#)["clients"] as? Int) == 16)
        #expect(try RawClient(socket).line()["limit"] as? String == "max_clients")
        // All of that happened while the half lines were held, not after the deadline freed their slots.
        #expect(Date().timeIntervalSince(started) < deadlineSeconds, "the test was too slow to prove anything")
        #expect(!hostile.hasLine(within: 0) && !second.hasLine(within: 0), "a half-line connection closed early")

        // The half-line connections are closed at the deadline, each told why; nobody else is.
        let timedOut = try hostile.closed(7, timeout: deadlineSeconds + 10)
        let timedOutToo = try second.closed(4, timeout: 10)
        for reply in Array(timedOut.values) + Array(timedOutToo.values) {
            #expect(reply["limit"] as? String == "first_request_timeout", "\(reply)")
        }
        #expect(Date().timeIntervalSince(started) >= deadlineSeconds - 0.5)
        #expect(try other.request(#"{"op":"status"}"#)["ok"] as? Bool == true, "a connection that had sent a request")
        #expect(try rootClients[1].request(#"{"op":"emit","type":"after.deadline"}"#)["ok"] as? Bool == true)
        #expect(try rootClients[0].events(1).first?["type"] as? String == "after.deadline", "a quiet subscriber")

        let reports = daemon.received.filter { $0.isEvent("kevd", "limit") }
        #expect(reports.contains { $0.key == "max_clients_per_uid" && $0.data["uid"] as? Int == 65534 })
        #expect(reports.contains { $0.key == "max_clients" && $0.data["uid"] as? Int == 1 })
        #expect(reports.contains { $0.key == "first_request_timeout" && $0.data["limit"] as? Int == 5000 })

        // Everyone leaves: kevd holds no more fds than before they came.
        other.close()
        rootClients.removeAll()
        let fdDeadline = Date().addingTimeInterval(10)
        while Self.fdTargets(daemon.pid) != baselineFDs && Date() < fdDeadline { usleep(20_000) }
        let left = Self.fdTargets(daemon.pid)
        #expect(left == baselineFDs, "kevd's fds: \(baselineFDs) before, \(left) after")
        #expect(daemon.stop() == 0)
    }

    /// What kevd's fds point at (/proc/PID/fd), sorted: sockets by kind only, since their inode numbers differ.
    static func fdTargets(_ pid: Int32) -> [String] {
        let dir = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/" + $0) }
            .map { $0.hasPrefix("socket:") ? "socket" : $0 }.sorted()
    }

    /// kevd runs as the test's own user here, so this holds whether or not the test runs as root.
    @Test("root and kevd's own uid are not held to max_clients_per_uid")
    func ownUIDIsExempt() throws {
        let daemon = try DaemonProcess(config: serverConfig("[server]\nmax_clients_per_uid = 2\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        let clients = try (0..<5).map { _ in try RawClient(socket) }
        for c in clients { #expect(try c.request(#"{"op":"status"}"#)["ok"] as? Bool == true) }
        #expect(daemon.stop() == 0)
    }
}
