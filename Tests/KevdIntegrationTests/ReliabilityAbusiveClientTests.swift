import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Clients that misbehave while a well-behaved emitter and subscriber (`LatencyProbe`) keep working: each test
/// asserts that the probe's events all arrive, and prints their latency.
@Suite("Reliability: abusive clients", .serialized)
struct ReliabilityAbusiveClientTests {
    /// Pipelines `count` emits on one connection, reading the replies in batches (a busy but well-behaved
    /// client); returns how many were acknowledged.
    @discardableResult
    private func blast(_ socket: String, count: Int, type: String = "bulk") throws -> Int {
        let client = try RawClient(socket)
        var sent = 0
        while sent < count {
            let batch = min(500, count - sent)
            var text = ""
            for i in 0..<batch { text += #"{"op":"emit","type":"\#(type)","key":"k","data":{"i":\#(sent + i),"pad":"\#(String(repeating: "p", count: 200))"}}"# + "\n" }
            client.send(text)
            client.skipLines(batch)
            sent += batch
        }
        return sent
    }

    @Test("a subscriber that never reads while many events flow: bounded memory, everyone else served")
    func neverReads() throws {
        let events = Reliability.size(short: 20_000, full: 500_000)
        let daemon = try DaemonProcess(config: serverConfig("[server]\nsend_buffer = \"256KiB\"\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        var idle: [RawClient] = []
        for _ in 0..<10 {
            let sleeper = try RawClient(socket)
            sleeper.send(#"{"op":"subscribe"}"# + "\n")  // and never reads anything again
            idle.append(sleeper)
        }
        let probe = try LatencyProbe(socket: socket, name: "client_never_reads")
        let before = ProcessFigures.rssKiB(daemon.pid)
        try blast(socket, count: events)
        let during = ProcessFigures.rssKiB(daemon.pid)
        probe.finish()
        let status = try RawClient(socket).request(#"{"op":"status"}"#)
        #expect(status["ok"] as? Bool == true)
        // Each idle subscriber holds at most its send buffer and is left behind, to read from the journal at its
        // own pace if it ever does: none buffers the stream.
        let subscribers = status["subscribers"] as? [[String: Any]] ?? []
        let behind = subscribers.filter { (($0["lag"] as? NSNumber)?.intValue ?? 0) > 1000 }
        #expect(behind.count == idle.count, "idle subscribers behind: \(behind.count) of \(idle.count)")
        let maxBuffered = behind.map { ($0["buffered"] as? NSNumber)?.intValue ?? 0 }.max() ?? 0
        #expect(maxBuffered <= 256 * 1024, "an idle subscriber buffers \(maxBuffered) bytes")
        #expect(behind.allSatisfy { $0["mode"] as? String == "journal" })
        Reliability.report(
            "client_never_reads",
            ["events": events, "idle_subscribers": idle.count, "max_buffered": maxBuffered, "rss_before_kib": before,
             "rss_after_kib": during])
        // Loose: the test's own `--stdout` reader falls behind and kevd buffers up to 64 MiB for it; an unbounded
        // buffer per idle subscriber would be 10 × the whole stream.
        #expect(during - before < 256 * 1024, "kevd grew by \(during - before) KiB with idle subscribers")
        daemon.stop()
    }

    @Test("half a line, then nothing: that client waits, everyone else is served, and the line completes later")
    func halfLine() throws {
        let daemon = try DaemonProcess(config: serverConfig())
        let socket = daemon.directory.file("state/kevd.sock")
        let half = try RawClient(socket)
        // After a first request: a connection that never completes its first line is closed after
        // `first_request_timeout` (AdmissionTests), one that has sent a request may take its time.
        #expect(try half.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        half.send(#"{"op":"sta"#)
        let probe = try LatencyProbe(socket: socket, name: "client_half_line")
        try blast(socket, count: 2000)
        probe.finish()
        half.send(#"tus"}"# + "\n")
        #expect(try half.line()["ok"] as? Bool == true)
        daemon.stop()
    }

    @Test("a line longer than max_request gets the max_request error and is closed; others are served")
    func hugeLine() throws {
        let megabytes = Reliability.size(short: 10, full: 100)
        let daemon = try DaemonProcess(config: serverConfig())
        let socket = daemon.directory.file("state/kevd.sock")
        let probe = try LatencyProbe(socket: socket, name: "client_huge_line")
        let huge = try RawClient(socket)
        let writer = Thread {
            // MSG_NOSIGNAL: kevd closes the connection before the line ends; that must be an EPIPE here, not a
            // SIGPIPE that kills the test runner.
            let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1 << 20)
            _ = send(huge.fd, #"{"op":"emit","type":"x","key":""#, 32, Int32(MSG_NOSIGNAL))
            for _ in 0..<megabytes {
                var off = 0
                while off < chunk.count {
                    let n = chunk[off...].withUnsafeBytes { send(huge.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { return }
                    off += n
                }
            }
        }
        writer.start()
        let reply = try huge.line(timeout: 30)
        #expect(reply["ok"] as? Bool == false)
        #expect(reply["limit"] as? String == "max_request", "\(reply)")
        #expect(isClosed(huge.fd), "the connection of an oversized line stays open")
        try daemon.waitFor("kevd/limit max_request") { $0.isEvent("kevd", "limit", key: "max_request") }
        probe.finish()
        Reliability.report("client_huge_line", ["line_mb": megabytes])
        daemon.stop()
    }

    @Test("thousands of connections: max_clients refuses the excess cleanly and the rest keep working")
    func manyConnections() throws {
        let total = Reliability.size(short: 2000, full: 10_000)
        let maxClients = 500
        try raiseOpenFileLimit(to: total + 256)
        // No first-request deadline: opening thousands of connections before any sends must not time out the first.
        let daemon = try DaemonProcess(
            config: serverConfig("[server]\nmax_clients = \(maxClients)\nfirst_request_timeout = \"0\"\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        let probe = try LatencyProbe(socket: socket, name: "client_many_connections")
        let cpuBefore = ProcessFigures.cpuSeconds(daemon.pid)
        let started = Date()
        var clients: [RawClient] = []
        var refused = 0
        var failed = 0
        for _ in 0..<total {
            guard let c = try? RawClient(socket) else {
                failed += 1
                continue
            }
            clients.append(c)
        }
        // Everyone over the limit is told why and closed; everyone under it is served.
        var served = 0
        for c in clients {
            sendQuietly(c, #"{"op":"status"}"# + "\n")
        }
        for c in clients {
            guard let reply = try? c.line(timeout: 20) else { continue }
            if reply["limit"] as? String == "max_clients" { refused += 1 } else if reply["ok"] as? Bool == true { served += 1 }
        }
        let elapsed = Date().timeIntervalSince(started)
        let cpu = ProcessFigures.cpuSeconds(daemon.pid) - cpuBefore
        probe.finish()
        Reliability.report(
            "client_many_connections",
            ["connections": total, "max_clients": maxClients, "served": served, "refused": refused, "connect_failed": failed,
             "seconds": String(format: "%.2f", elapsed), "kevd_cpu_s": String(format: "%.2f", cpu),
             "kevd_fds": ProcessFigures.openFDs(daemon.pid)])
        #expect(failed == 0)
        // The probe's two connections count too.
        #expect(served == maxClients - 2, "served \(served)")
        #expect(refused == total - served, "refused \(refused) of \(total - served)")
        clients.removeAll()
        daemon.stop()
    }

    @Test("out of file descriptors (RLIMIT_NOFILE below max_clients): clients are refused with a reason, no busy loop")
    func outOfFileDescriptors() throws {
        let total = 400
        try raiseOpenFileLimit(to: total + 256)
        let dir = try TemporaryDirectory()
        // A limit far below max_clients (1024): accept fails with EMFILE long before the limit applies.
        let daemon = try DaemonProcess(
            config: serverConfig(), in: dir, launcher: ["/usr/bin/prlimit", "--nofile=200:200", "--"])
        let socket = dir.file("state/kevd.sock")
        let probe = try LatencyProbe(socket: socket, name: "client_out_of_fds")
        var clients: [RawClient] = []
        for _ in 0..<total { if let c = try? RawClient(socket) { clients.append(c) } }
        let cpuBefore = ProcessFigures.cpuSeconds(daemon.pid)
        var outOfFDs = 0
        var served = 0
        for c in clients {
            sendQuietly(c, #"{"op":"status"}"# + "\n")
            guard let reply = try? c.line(timeout: 10) else { continue }
            if (reply["error"] as? String)?.contains("file descriptors") == true { outOfFDs += 1 }
            if reply["ok"] as? Bool == true { served += 1 }
        }
        // Still out of fds, with clients connected: the listening socket must not spin the loop.
        usleep(1_000_000)
        let cpu = ProcessFigures.cpuSeconds(daemon.pid) - cpuBefore
        probe.finish()
        Reliability.report(
            "client_out_of_fds", ["connections": total, "served": served, "refused_no_fds": outOfFDs, "kevd_cpu_s": String(format: "%.2f", cpu)])
        #expect(served > 0)
        #expect(outOfFDs > 0, "no client was told kevd is out of file descriptors")
        #expect(served + outOfFDs == clients.count, "some clients got no answer")
        clients.removeAll()
        // Once clients leave, new ones are served again.
        let after = try RawClient(socket).request(#"{"op":"status"}"#)
        #expect(after["ok"] as? Bool == true)
        daemon.stop()
        #expect(daemon.finalStderr().contains("out of file descriptors"))
    }

    @Test("a soft open-files limit below max_clients is raised within the hard limit at start")
    func raisesOpenFileLimit() throws {
        let dir = try TemporaryDirectory()
        let daemon = try DaemonProcess(
            config: serverConfig("[server]\nmax_clients = 2000\n"), in: dir,
            launcher: ["/usr/bin/prlimit", "--nofile=1024:8192", "--"])
        let limits = try String(contentsOfFile: "/proc/\(daemon.pid)/limits", encoding: .utf8)
        let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        #expect(fields.count >= 5 && fields[3] == "2256" && fields[4] == "8192", "\(line)")
        daemon.stop()
        #expect(!daemon.finalStderr().contains("too few file descriptors"))
    }

    @Test("clients that disconnect in the middle of a big replay: no leak, everyone else served")
    func disconnectMidReply() throws {
        let events = Reliability.size(short: 10_000, full: 200_000)
        let rounds = Reliability.size(short: 20, full: 200)
        let daemon = try DaemonProcess(config: serverConfig())
        let socket = daemon.directory.file("state/kevd.sock")
        try blast(socket, count: events)
        let fdsBefore = ProcessFigures.openFDs(daemon.pid)
        let probe = try LatencyProbe(socket: socket, name: "client_disconnect_mid_reply")
        for _ in 0..<rounds {
            let c = try RawClient(socket)
            c.send(#"{"op":"subscribe","from":"all"}"# + "\n")
            _ = try c.line()
            _ = try c.events(10)
            // Reset rather than FIN: the harshest way to leave with a replay half sent.
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        }
        probe.finish()
        // The probe's two connections are still open: kevd should be back to where it was, plus those.
        let deadline = Date().addingTimeInterval(10)
        var fdsAfter = ProcessFigures.openFDs(daemon.pid)
        while fdsAfter > fdsBefore + 2 && Date() < deadline {
            usleep(50_000)
            fdsAfter = ProcessFigures.openFDs(daemon.pid)
        }
        Reliability.report("client_disconnect_mid_reply", ["events": events, "rounds": rounds, "fds_before": fdsBefore, "fds_after": fdsAfter])
        #expect(fdsAfter <= fdsBefore + 2, "kevd holds \(fdsAfter - fdsBefore) more fds after the clients left")
        daemon.stop()
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit (up to the hard limit) for tests that open many sockets.
func raiseOpenFileLimit(to wanted: Int) throws {
    var limit = rlimit()
    getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    guard limit.rlim_cur < rlim_t(wanted) else { return }
    try #require(limit.rlim_max >= rlim_t(wanted), "RLIMIT_NOFILE hard limit \(limit.rlim_max) is below the \(wanted) this test needs")
    limit.rlim_cur = rlim_t(wanted)
    setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
}

/// Sends without SIGPIPE: a client kevd refused and closed must be an EPIPE here, not the test runner's death.
func sendQuietly(_ client: RawClient, _ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

/// Whether kevd closed the connection, within `timeout`: EOF, or ECONNRESET when kevd closed with bytes of ours
/// still unread (an AF_UNIX peer that closes with a non-empty receive queue resets).
func isClosed(_ fd: Int32, timeout: Double = 10) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    var buffer = [UInt8](repeating: 0, count: 65536)
    while Date() < deadline {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 200) == 1 else { continue }
        let n = read(fd, &buffer, buffer.count)
        if n == 0 || (n < 0 && errno == ECONNRESET) { return true }
        if n < 0 && errno != EAGAIN && errno != EINTR { return false }
    }
    return false
}
