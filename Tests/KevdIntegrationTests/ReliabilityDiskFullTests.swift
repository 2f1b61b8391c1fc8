import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The configuration of a kevd whose state directory `<dir>/state` is a small tmpfs (`tmpfsLauncher`): its socket
/// outside it at `<dir>/kevd.sock`, rules from `<dir>/rules`, 64 KiB segments, and `<dir>/w` watched for `events`.
func diskFullConfig(events: [String]) -> String {
    """
    [daemon]
    state_dir = "state"
    socket = "kevd.sock"
    log_level = "warning"

    [rules]
    directories = ["rules"]

    [journal]
    segment_size = "64KiB"

    [[watch]]
    path = "w"
    recursive = false
    events = [\(events.map { "\"\($0)\"" }.joined(separator: ", "))]
    """
}

/// kevd with its state directory on a small tmpfs that a test fills: the tmpfs is mounted inside a private mount
/// namespace kevd runs in (`unshare`), so nothing is left mounted whatever happens to the test; the test reaches
/// the files through `/proc/<pid>/root`. The socket lives outside the tmpfs, in the test's directory.
private final class DiskFullDaemon {
    let dir: TemporaryDirectory
    let daemon: DaemonProcess
    var socket: String { dir.file("kevd.sock") }
    /// The state directory as the test sees it (through kevd's mount namespace).
    var state: String { "/proc/\(daemon.pid)/root" + dir.file("state") }
    var filler: String { state + "/filler" }

    init(tmpfsBytes: Int, inodes: Int = 0, rule: String) throws {
        dir = try TemporaryDirectory()
        try makeDirectory(dir.file("state"))
        try makeDirectory(dir.file("w"))
        try writeRuleFile(dir, "10-rule.toml", rule)
        let config = diskFullConfig(events: ["create", "delete"])
        let launcher = tmpfsLauncher(mountingOn: dir.file("state"), bytes: tmpfsBytes, inodes: inodes)
        daemon = try DaemonProcess(config: config, in: dir, launcher: launcher)
    }

    /// Writes a file until the tmpfs is full (ENOSPC); returns the bytes written.
    @discardableResult
    func fill() throws -> Int {
        let fd = open(filler, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x2E, count: 64 * 1024)
        var total = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            total += n
        }
        // Whatever page-sized room is left, the next small write of kevd's takes; fill to the last byte.
        while write(fd, chunk, 1) == 1 { total += 1 }
        return total
    }

    /// Emits one event on `client`; the whole reply.
    func emit(_ client: RawClient, _ type: String, key: String) throws -> [String: Any] {
        try client.request(#"{"op":"emit","type":"\#(type)","key":"\#(key)"}"#)
    }
}

@Suite("Reliability: disk full", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct ReliabilityDiskFullTests {
    @Test("a full state directory: one kevd/error, emits refused with the reason, reads served, memory bounded, resumes by itself, nothing acknowledged lost")
    func diskFull() throws {
        try Root.check()
        // Enough file events to pass the pending limit (4 MiB, ~14,000 events) and then the kernel's inotify
        // queue (16,384 records; each file makes four or five, of which kevd publishes two). Kept small: the
        // short variant runs beside the other suites in CI. A raised fs.inotify.max_queued_events needs more.
        let queueLimit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "16384") ?? 16384
        let files = max(Reliability.size(short: 30_000, full: 100_000), queueLimit / 3 + 10_000)
        let kevd = try DiskFullDaemon(
            tmpfsBytes: 64 << 20,
            rule: """
                [[rule]]
                name = "touch"
                match = ["source=inotify", "type=create", "key=*/trigger*"]
                run = ["/bin/true"]
                """)
        let daemon = kevd.daemon
        let client = try RawClient(kevd.socket)
        var acknowledged: [String] = []
        for i in 0..<20 {
            let reply = try kevd.emit(client, "before", key: "\(i)")
            #expect(reply["ok"] as? Bool == true)
            if let id = reply["id"] as? String { acknowledged.append(id) }
        }
        let named = try RawClient(kevd.socket)
        #expect(try named.request(#"{"op":"subscribe","name":"keeper","from":"all","filter":["type=before"]}"#)["ok"] as? Bool == true)
        _ = try named.events(5)

        // A steady emitter in the background: its emits are acknowledged before the disk fills, and those that
        // were accepted as it filled must get their `ok` once space returns (not hang, not vanish).
        let emitter = BackgroundEmitter(socket: kevd.socket)

        let before = ProcessFigures.rssKiB(daemon.pid)
        let filled = try kevd.fill()
        let marker = daemon.received.count
        // File events too, so that the batch that fails is not only emits.
        for i in 0..<50 { try writeFile(dir(kevd, "a\(i)")) }
        let error = try daemon.waitFor("kevd/error for the journal", from: marker, timeout: 20) {
            $0.isEvent("kevd", "error", key: "journal")
        }
        #expect((error.data["error"] as? String)?.contains("No space left on device") == true, "\(error)")
        #expect(error.data["journal"] as? String != nil)

        // New emits are refused with the reason; the connection stays usable.
        let refused = try kevd.emit(client, "during", key: "x")
        #expect(refused["ok"] as? Bool == false)
        #expect((refused["error"] as? String)?.contains("No space left on device") == true, "\(refused)")
        let status = try client.request(#"{"op":"status"}"#)
        #expect(status["ok"] as? Bool == true, "status while the disk is full: \(status)")
        let journalStatus = status["journal"] as? [String: Any] ?? [:]
        #expect((journalStatus["error"] as? String)?.contains("No space left on device") == true, "\(journalStatus)")
        // Reads: a new subscriber replays what the journal holds.
        let reader = try RawClient(kevd.socket)
        #expect(try reader.request(#"{"op":"subscribe","from":"all","filter":["type=before"]}"#)["ok"] as? Bool == true)
        #expect(try reader.events(20).count == 20)
        // Positions cannot be stored: the ack fails softly, with a reply.
        let ack = try named.request(#"{"op":"ack","seq":3}"#)
        #expect(ack["ok"] as? Bool == false, "ack on a full disk: \(ack)")
        #expect(try kevd.emit(client, "during", key: "y")["ok"] as? Bool == false)

        // A live subscriber gets only what the journal has written: were an event held in memory handed out, a
        // crash before the disk frees would give its seq to another event. Whatever it got before its status
        // reply must already be in the journal's files (more than a page of events: the full disk may still take
        // a page's remainder). Once space returns it reads the rest from the journal, the same events.
        let live = try RawClient(kevd.socket)
        #expect(try live.request(#"{"op":"subscribe","filter":["source=inotify","type=create","key=*/held*"]}"#)["ok"] as? Bool == true)
        let heldCount = 200
        for i in 0..<heldCount { try writeFile(dir(kevd, "held\(i)")) }
        let heldOnStdout = try daemon.waitForCount("the held files' events on stdout", count: heldCount) {
            $0["source"] as? String == "inotify" && $0["type"] as? String == "create"
                && ($0["key"] as? String)?.contains("/held") == true
        }
        live.send(#"{"op":"status"}"# + "\n")
        var heldReceived: [[String: Any]] = []
        while true {
            let line = try live.line()
            if line["ok"] != nil { break }
            heldReceived.append(line)
        }
        let onDisk = Set(try kevctl(["journal", "--state-dir", kevd.state, "source=inotify"]).stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        })
        let unwrittenSeqs = heldReceived.filter { !onDisk.contains($0["id"] as? String ?? "") }.compactMap { $0["seq"] as? Int }
        #expect(unwrittenSeqs.isEmpty, "events went to a subscriber before the journal wrote them")

        // Sustained file events while full: kevd must not buffer them without bound.
        try writeFile(dir(kevd, "trigger-0"))
        for i in 0..<files {
            let path = dir(kevd, "f\(i)")
            try writeFile(path)
            unlink(path)
        }
        let during = ProcessFigures.rssKiB(daemon.pid)
        // On fanotify (as root, `auto`) the kernel queue is unlimited and kevd bounds it itself, at 1 MiB while it
        // reads nothing, checked every second: wait for that check to shed the queue before space returns, or a
        // quick machine frees the disk first and loses nothing. (On inotify the kernel drops at 16,384 records, and
        // kevd reads the overflow once it reads again.)
        let backend = (try client.request(#"{"op":"status"}"#)["sources"] as? [String: Any])
            .flatMap { $0["fanotify"] as? [String: Any] }?["backend"] as? String
        if backend == "fanotify" {
            try waitUntil("the fanotify queue shed while the disk is full", timeout: 20) { () -> Bool? in
                let sources = try client.request(#"{"op":"status"}"#)["sources"] as? [String: Any]
                return ((sources?["fanotify"] as? [String: Any])?["overflows"] as? Int ?? 0) > 0 ? true : nil
            }
        }

        // Space returns: kevd resumes by itself, no signal, no client needed. The emitter stops first (its last
        // emit may be one that waits for the disk), so nothing but kevd's own retry wakes its loop.
        emitter.requestStop()
        unlink(kevd.filler)
        let resumed = try daemon.waitFor("kevd/resumed", from: marker, timeout: 20) { $0.isEvent("kevd", "resumed", key: "journal") }
        #expect(resumed.data["failed_ms"] != nil)
        let errors = daemon.received.filter { $0.isEvent("kevd", "error", key: "journal") }
        #expect(errors.count == 1, "one kevd/error per episode, got \(errors.count)")
        // The loss while input was paused is reported, not silent.
        try daemon.waitFor("inotify overflow after the pause", from: marker, timeout: 20) { $0.isEvent("inotify", "overflow") }

        heldReceived += try live.events(heldCount - heldReceived.count)
        #expect(
            heldReceived.map { $0["id"] as? String } == heldOnStdout.prefix(heldCount).map { $0["id"] as? String },
            "the held events, read from the journal after recovery, are the ones kevd published")

        let after = try kevd.emit(client, "after", key: "z")
        #expect(after["ok"] as? Bool == true, "emit after recovery: \(after)")
        if let id = after["id"] as? String { acknowledged.append(id) }
        #expect(try named.request(#"{"op":"ack","seq":4}"#)["ok"] as? Bool == true)
        let background = emitter.stop()
        acknowledged += background.acknowledged
        #expect(background.pendingAtEnd == 0, "emits still without a reply after recovery")

        let rssAfter = ProcessFigures.rssKiB(daemon.pid)
        let verify = try kevctl(["journal", "--verify", "--state-dir", kevd.state])
        #expect(verify.status == 0, "journal --verify after recovery: \(verify.stdout) \(verify.stderr)")
        let emitted = try kevctl(["journal", "--state-dir", kevd.state, "source=emit"]).stdout.split(separator: "\n")
        var counts: [String: Int] = [:]
        for line in emitted {
            if let e = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let id = e["id"] as? String {
                counts[id, default: 0] += 1
            }
        }
        let wrong = acknowledged.filter { counts[$0] != 1 }
        #expect(wrong.isEmpty, "acknowledged emits not exactly once in the journal: \(wrong.prefix(5))")
        daemon.stop()
        let stderr = daemon.finalStderr()
        // Failures are logged once per distinct error, not once per attempt.
        let lines = stderr.split(separator: "\n")
        let positionErrors = lines.filter { $0.contains("rule positions not saved") }.count
        #expect(positionErrors <= 2, "rule position failures logged \(positionErrors) times")
        let writeErrors = lines.filter { $0.contains("journal write failed") }.count
        #expect(writeErrors >= 1 && writeErrors <= 4, "journal write failures logged \(writeErrors) times: \(stderr)")
        Reliability.report(
            "disk_full",
            ["filled_bytes": filled, "file_events": files * 2, "acknowledged": acknowledged.count,
             "refused": background.refused, "rss_before_kib": before, "rss_full_kib": during,
             "rss_after_kib": rssAfter, "failed_ms": resumed.data["failed_ms"] ?? "-",
             "segment_create_failed": stderr.contains("cannot start a new journal segment"), "log_lines": lines.count])
    }

    @Test("out of inodes: a journal segment cannot be created; kevd reports it, does not spin, and resumes")
    func segmentCannotBeCreated() throws {
        try Root.check()
        let kevd = try DiskFullDaemon(
            tmpfsBytes: 64 << 20, inodes: 64,
            rule: "[[rule]]\nname = \"never\"\nmatch = [\"type=never-emitted\"]\nrun = [\"/bin/true\"]\n")
        let daemon = kevd.daemon
        let client = try RawClient(kevd.socket)
        // Every inode the tmpfs has left goes to empty files: the active segment still grows, but the next one
        // cannot be created.
        var fillers: [String] = []
        while true {
            let path = kevd.state + "/inode-\(fillers.count)"
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            if fd < 0 { break }
            close(fd)
            fillers.append(path)
        }
        try #require(errno == ENOSPC, "filling inodes stopped with errno \(errno)")
        let marker = daemon.received.count
        var acknowledged: [String] = []
        let padding = String(repeating: "p", count: 1000)
        // A 64 KiB segment holds ~60 of these. The emit that needs the next segment was accepted before the
        // rotation failed: its reply waits for the disk (it must come once the segment can be created).
        var waiting = false
        for i in 0..<500 {
            client.send(#"{"op":"emit","type":"fill","key":"\#(i)","data":{"pad":"\#(padding)"}}"# + "\n")
            guard let reply = try? client.line(timeout: 3) else {
                waiting = true
                break
            }
            let id = try #require(reply["id"] as? String, "emit before the rotation failed: \(reply)")
            acknowledged.append(id)
        }
        #expect(waiting, "500 emits of 1 KB fitted in a 64 KiB segment")
        let error = try daemon.waitFor("kevd/error for the journal", from: marker, timeout: 20) {
            $0.isEvent("kevd", "error", key: "journal")
        }
        #expect((error.data["error"] as? String)?.contains("new journal segment") == true, "\(error)")
        // Meanwhile, new emits are refused with the reason.
        let other = try RawClient(kevd.socket)
        let refusal = try other.request(#"{"op":"emit","type":"refused","key":"r"}"#)
        #expect(refusal["ok"] as? Bool == false)
        #expect((refusal["error"] as? String)?.contains("No space left on device") == true, "\(refusal)")
        // The loop must not spin on the failing rotation: kevd answers, and uses little CPU while it waits.
        let cpuBefore = ProcessFigures.cpuSeconds(daemon.pid)
        #expect(try other.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        usleep(1_500_000)
        let cpu = ProcessFigures.cpuSeconds(daemon.pid) - cpuBefore
        #expect(cpu < 0.75, "kevd used \(cpu) s of CPU in 1.5 s while it could not rotate")

        for path in fillers { unlink(path) }
        try daemon.waitFor("kevd/resumed", from: marker, timeout: 20) { $0.isEvent("kevd", "resumed", key: "journal") }
        let late = try client.line(timeout: 20)
        #expect(late["ok"] as? Bool == true, "the emit that waited for the disk: \(late)")
        if let id = late["id"] as? String { acknowledged.append(id) }
        let after = try client.request(#"{"op":"emit","type":"after","key":"z"}"#)
        #expect(after["ok"] as? Bool == true, "\(after)")
        if let id = after["id"] as? String { acknowledged.append(id) }
        let verify = try kevctl(["journal", "--verify", "--state-dir", kevd.state])
        #expect(verify.status == 0, "journal --verify after recovery: \(verify.stdout) \(verify.stderr)")
        let ids = try kevctl(["journal", "--state-dir", kevd.state, "source=emit"]).stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String
        }
        let missing = acknowledged.filter { id in ids.filter { $0 == id }.count != 1 }
        #expect(missing.isEmpty, "acknowledged emits not exactly once in the journal: \(missing.prefix(5))")
        Reliability.report("disk_full_inodes", ["acknowledged": acknowledged.count, "kevd_cpu_s_while_stuck": String(format: "%.2f", cpu)])
        daemon.stop()
    }

    private func dir(_ kevd: DiskFullDaemon, _ name: String) -> String { kevd.dir.file("w/" + name) }
}

/// Emits in a loop on its own connection until stopped, waiting for each reply (which, while the journal cannot
/// write, may come only once it can).
private final class BackgroundEmitter: @unchecked Sendable {
    // @unchecked: the counters are behind `lock`.
    private let lock = NSLock()
    private var stopping = false
    private var ids: [String] = []
    private var refusedCount = 0
    private var waiting = 0
    private let finished = DispatchSemaphore(value: 0)

    init(socket: String) {
        Thread { [self] in
            defer { finished.signal() }
            guard let client = try? RawClient(socket) else { return }
            var i = 0
            while !lock.withLock({ stopping }) {
                i += 1
                lock.withLock { waiting += 1 }
                client.send(#"{"op":"emit","type":"steady","key":"\#(i)"}"# + "\n")
                // Longer than RawClient's usual deadline: a reply may rightly wait for the disk to have room.
                guard let reply = try? client.line(timeout: 90) else { return }
                lock.withLock {
                    waiting -= 1
                    if reply["ok"] as? Bool == true, let id = reply["id"] as? String { ids.append(id) } else { refusedCount += 1 }
                }
                usleep(2_000)
            }
        }.start()
    }

    /// Sends nothing more. A refused emit's reply comes at once, so after a second the emitter has either
    /// finished or waits for the reply of an emit that waits for the disk.
    func requestStop() {
        lock.withLock { stopping = true }
        if finished.wait(timeout: .now() + 1) == .success { finished.signal() }
    }

    /// Stops and waits for the last reply (bounded by the client's own read deadline).
    func stop() -> (acknowledged: [String], refused: Int, pendingAtEnd: Int) {
        lock.withLock { stopping = true }
        _ = finished.wait(timeout: .now() + 30)
        return lock.withLock { (ids, refusedCount, waiting) }
    }
}
