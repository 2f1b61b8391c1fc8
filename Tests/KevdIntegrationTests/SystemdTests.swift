import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The service manager's end of the notify protocol: an AF_UNIX datagram socket, as systemd binds for
/// `NOTIFY_SOCKET`, collecting every message kevd sends (one datagram: newline-separated `KEY=value`).
final class NotifyListener: @unchecked Sendable {
    let path: String
    private let box: Box

    final class Box: @unchecked Sendable {
        // @unchecked: `messages` and `stopped` are guarded by `condition`.
        let condition = NSCondition()
        var messages: [String] = []
        var stopped = false
    }

    init(path: String) throws {
        self.path = path
        let fd = try UnixSocket.bindDatagram(path)
        let box = Box()
        self.box = box
        Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                box.condition.lock()
                let stopped = box.stopped
                box.condition.unlock()
                if stopped { break }
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 100) == 1 else { continue }
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { continue }
                let message = String(decoding: buffer[0..<n], as: UTF8.self)
                box.condition.lock()
                box.messages.append(message)
                box.condition.broadcast()
                box.condition.unlock()
            }
            close(fd)
        }.start()
    }

    deinit {
        box.condition.lock()
        box.stopped = true
        box.condition.unlock()
    }

    var messages: [String] {
        box.condition.lock()
        defer { box.condition.unlock() }
        return box.messages
    }

    /// The first message at index >= `from` that has the assignment `line` (e.g. `READY=1`); returns its index.
    @discardableResult
    func waitFor(_ line: String, from: Int = 0, timeout: Double = 10, where extra: (String) -> Bool = { _ in true })
        throws -> (index: Int, message: String)
    {
        let deadline = Date().addingTimeInterval(timeout)
        box.condition.lock()
        defer { box.condition.unlock() }
        var index = from
        while true {
            while index < box.messages.count {
                let message = box.messages[index]
                if Self.lines(message).contains(where: { $0 == line || (line.hasSuffix("=") && $0.hasPrefix(line)) }),
                    extra(message)
                {
                    return (index, message)
                }
                index += 1
            }
            if !box.condition.wait(until: deadline) && index >= box.messages.count {
                throw DaemonProcess.Timeout(
                    what: "notify message \(line) (messages: \(box.messages))", seen: box.messages.count, stderr: "")
            }
        }
    }

    static func lines(_ message: String) -> [String] { message.split(separator: "\n").map(String.init) }

    /// The value of `KEY=` in a message.
    static func value(_ key: String, in message: String) -> String? {
        lines(message).first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }

    /// The `seq N` at the end of kevd's status line.
    static func statusSeq(_ message: String) -> Int? {
        guard let status = value("STATUS", in: message), let range = status.range(of: "seq ") else { return nil }
        return Int(status[range.upperBound...])
    }
}

@Suite("systemd integration", .serialized)
struct SystemdTests {
    static let socketActivate = "/usr/bin/systemd-socket-activate"

    static func onlyChild(of pid: Int32) -> Int32? {
        let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)
        let pids = text?.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        return pids?.count == 1 ? pids?.first : nil
    }

    @Test("READY=1 with a status once started, STATUS refreshes, RELOADING=1 then READY=1 on HUP, STOPPING=1 on TERM")
    func notifyProtocol() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifyListener(path: directory.file("notify.sock"))
        let config = serverConfig(
            "[[watch]]\npath = \"watched\"\n[[timer]]\nname = \"hourly\"\nevery = \"1h\"\n[udev]\nenabled = false\n")
        // A watchdog meant for another process: sd_watchdog_enabled must say no, and kevd must not ping.
        let daemon = try DaemonProcess(
            config: config, in: directory,
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
        let started = try daemon.waitFor("started") { $0.isEvent("kevd", "started") }

        let ready = try notify.waitFor("READY=1")
        #expect(ready.index == 0, "nothing before READY=1: \(notify.messages)")
        let status = NotifyListener.value("STATUS", in: ready.message) ?? ""
        #expect(status.hasPrefix("ready: 1 watches, 1 timers, 0 rules, 0 subscribers; seq "), "\(status)")
        // Sent after kevd/started was published, and before anything else was.
        #expect(NotifyListener.statusSeq(ready.message) == started.seq)

        // Something changes: a subscriber and an event. The status line follows within its refresh interval.
        let socket = directory.file("state/kevd.sock")
        let subscriber = try RawClient(socket)
        #expect(try subscriber.request(#"{"op":"subscribe"}"#)["ok"] as? Bool == true)
        let emitted = try RawClient(socket).request(#"{"op":"emit","type":"status.changed"}"#)["seq"] as? Int ?? -1
        let refreshed = try notify.waitFor("STATUS=", from: ready.index + 1, timeout: 10) {
            NotifyListener.value("STATUS", in: $0)?.contains("1 subscribers") == true
                && (NotifyListener.statusSeq($0) ?? 0) >= emitted
        }
        #expect(NotifyListener.lines(refreshed.message).count == 1, "a refresh is only a STATUS line: \(refreshed.message)")

        // HUP: RELOADING=1, then READY=1 once the reload is applied.
        let before = notify.messages.count
        daemon.signal(SIGHUP)
        let reloading = try notify.waitFor("RELOADING=1", from: before)
        #expect(NotifyListener.value("MONOTONIC_USEC", in: reloading.message).flatMap { UInt64($0) } != nil)
        let readyAgain = try notify.waitFor("READY=1", from: reloading.index + 1)
        #expect(NotifyListener.value("STATUS", in: readyAgain.message)?.hasPrefix("ready: ") == true)
        try daemon.waitFor("config reloaded") { $0.isEvent("kevd", "reloaded", key: "config") }

        #expect(daemon.stop() == 0)
        let stopping = try notify.waitFor("STOPPING=1", from: readyAgain.index + 1)
        #expect(NotifyListener.value("STATUS", in: stopping.message)?.contains("term") == true)
        #expect(!notify.messages.contains { NotifyListener.lines($0).contains("WATCHDOG=1") }, "\(notify.messages)")
    }

    @Test("with WATCHDOG_USEC set, kevd pings WATCHDOG=1 from its loop at half the interval")
    func watchdog() throws {
        let directory = try TemporaryDirectory()
        let notify = try NotifyListener(path: directory.file("notify.sock"))
        // No WATCHDOG_PID: sd_watchdog_enabled accepts that as "for this process".
        let daemon = try DaemonProcess(
            config: serverConfig("[udev]\nenabled = false\n"), in: directory,
            environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"])
        let ready = try notify.waitFor("READY=1")
        let first = Date()
        var last = ready.index
        for _ in 0..<10 { last = try notify.waitFor("WATCHDOG=1", from: last + 1, timeout: 5).index }
        let elapsed = Date().timeIntervalSince(first)
        // Ten pings at 100 ms: about a second; not a busy loop, and not at the full interval.
        #expect(elapsed > 0.7 && elapsed < 3, "\(elapsed) s for 10 pings")

        // A loop that does not turn does not ping: stopped, kevd sends nothing; continued, the pings resume.
        daemon.signal(SIGSTOP)
        usleep(100_000)
        let frozen = notify.messages.count
        usleep(600_000)
        #expect(notify.messages.count == frozen)
        daemon.signal(SIGCONT)
        try notify.waitFor("WATCHDOG=1", from: frozen, timeout: 5)
        #expect(daemon.stop() == 0)
    }

    @Test("socket activation: kevd serves systemd's listening socket, keeps its file, and loses no early client")
    func socketActivation() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.socketActivate),
            "systemd-socket-activate is missing: install the systemd package (scripts/deps.sh does)")
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.file("state"), withIntermediateDirectories: true)
        let socket = directory.file("state/kevd.sock")
        // Exactly systemd's protocol: it binds and listens, waits for the first connection, then execs kevd
        // (same pid) with the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID=its pid.
        //
        // Not as the test's direct child, though: systemd-socket-activate closes every fd it inherited, the
        // socket through which Foundation's Process learns that a child exited among them. Foundation then
        // takes the child for dead and waits for it in a blocking `waitpid` on the one thread that notices
        // every child's exit, so no other test's child is seen to exit until this one does (a whole test run
        // hung on it). A parent in between keeps that socket and waits with a plain blocking `waitpid`; kevd,
        // its child, is stopped below by its own pid. (Perl, which Debian always has, rather than a shell: the
        // test process's blocked signals are inherited, and with SIGCHLD and TERM blocked a shell's `wait`
        // never returns and it cannot pass a TERM on.)
        let launcher = [
            "/usr/bin/perl", "-e", #"my $pid = fork() // die; if ($pid == 0) { exec(@ARGV) or die } "#
                + #"waitpid($pid, 0); exit($? & 127 ? 128 + ($? & 127) : $? >> 8)"#,
            Self.socketActivate, "-l", socket,
        ]
        let daemon = try DaemonProcess(
            config: serverConfig("[udev]\nenabled = false\n"), in: directory, launcher: launcher, waitForStart: false)
        var before = stat()
        let deadline = Date().addingTimeInterval(10)
        while stat(socket, &before) != 0 && Date() < deadline { usleep(10_000) }
        #expect((before.st_mode & S_IFMT) == S_IFSOCK)
        #expect(daemon.received.isEmpty, "kevd runs only once a client connects")

        // This client connects and sends before kevd exists; its request waits in the socket's backlog. The file
        // appears at bind(2), a moment before systemd-socket-activate's listen(2): until then connect says
        // ECONNREFUSED (seen once on a loaded machine), so it is tried again until it gets through.
        let early = try waitUntil("systemd-socket-activate to listen on \(socket)", timeout: 10) { try? RawClient(socket) }
        early.send(#"{"op":"emit","type":"early.bird","key":"first"}"# + "\n")
        let reply = try early.line(timeout: 30)
        #expect(reply["ok"] as? Bool == true, "\(reply)")
        let started = try daemon.waitFor("kevd started", timeout: 20) { $0.isEvent("kevd", "started") }
        let earlySeq = try #require(reply["seq"] as? Int)
        #expect(earlySeq > started.seq ?? .max)

        // The activated socket works like kevd's own: subscribe from the start, then live events.
        let subscriber = try RawClient(socket)
        #expect(try subscriber.request(#"{"op":"subscribe","from":"all","filter":["source=emit"]}"#)["ok"] as? Bool == true)
        let live = try RawClient(socket).request(#"{"op":"emit","type":"later"}"#)
        let events = try subscriber.events(2)
        #expect(events.map(\.type) == ["early.bird", "later"])
        #expect(events.last?.seq == live["seq"] as? Int)

        // systemd's file: not re-bound, re-moded or removed by kevd.
        var during = stat()
        #expect(stat(socket, &during) == 0)
        #expect(during.st_ino == before.st_ino)
        #expect(during.st_mode == before.st_mode)
        let kevd = try #require(Self.onlyChild(of: daemon.pid), "the launcher's child")
        kill(kevd, SIGTERM)
        #expect(daemon.stop() == 0)
        var after = stat()
        #expect(stat(socket, &after) == 0, "kevd must not unlink a socket it was given")
        #expect(after.st_ino == before.st_ino)
    }

    @Test("LISTEN_FDS meant for another process is ignored: kevd binds its own socket as usual")
    func foreignListenFDs() throws {
        let daemon = try DaemonProcess(
            config: serverConfig("[udev]\nenabled = false\n"), environment: ["LISTEN_FDS": "1", "LISTEN_PID": "1"])
        let socket = daemon.directory.file("state/kevd.sock")
        var st = stat()
        #expect(stat(socket, &st) == 0 && st.st_mode & 0o777 == 0o660)
        #expect(try RawClient(socket).request(#"{"op":"emit","type":"own.socket"}"#)["ok"] as? Bool == true)
        #expect(daemon.stop() == 0)
        #expect(access(socket, F_OK) != 0, "its own socket is removed on stop, as before")
    }
}
