import Foundation
import Glibc
import KevdTestSupport
import Testing

/// kevd with its state directory on `scripts/faultfs.py`, a FUSE file system whose `fsync` fails on command and
/// then drops what was written since the file's last good sync (as the kernel may after a failed writeback),
/// reporting the error once. It is mounted inside a private mount namespace kevd runs in (`unshare`), over a
/// backing directory in the test's own directory: the backing directory is "the disk", and survives kevd and the
/// mount. The test reaches the mounted files through `/proc/<pid>/root` and steers the faults through a control
/// file outside the mount.
private final class FaultyDiskDaemon {
    let dir: TemporaryDirectory
    var daemon: DaemonProcess
    var socket: String { dir.file("kevd.sock") }
    var control: String { dir.file("faultfs.control") }
    var faultfsPIDFile: String { dir.file("faultfs.pid") }
    /// The state directory as the test sees it: the backing directory, which holds what kevd wrote through the mount.
    var backing: String { dir.file("disk") }
    private var armed = 0

    static var faultfsScript: String {
        // Tests/KevdIntegrationTests/ThisFile.swift -> the package root's scripts/.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/faultfs.py").path
    }

    init() throws {
        dir = try TemporaryDirectory()
        try makeDirectory(dir.file("state"))
        try makeDirectory(dir.file("disk"))
        // kevd checks the state directory's ownership and mode: the mount shows the backing directory's.
        chmod(dir.file("disk"), 0o750)
        daemon = try Self.start(dir)
    }

    static func start(_ dir: TemporaryDirectory) throws -> DaemonProcess {
        let config = """
            [daemon]
            state_dir = "state"
            socket = "kevd.sock"
            log_level = "warning"

            [journal]
            segment_size = "64KiB"
            """
        let launcher = [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            // faultfs daemonizes once the mount is up: kevd starts on it.
            #"/usr/bin/python3 "$0" "$1" "$2" "$3" "$4" && shift 4 && exec "$@""#,
            faultfsScript, dir.file("disk"), dir.file("state"), dir.file("faultfs.control"), dir.file("faultfs.pid"),
        ]
        return try DaemonProcess(config: config, in: dir, launcher: launcher)
    }

    /// Makes the next `count` syncs of files named like `pattern` fail with `errno` (-1: until `heal`).
    func fail(_ errnoName: String, count: Int, pattern: String = "*.seg") throws {
        armed += 1
        try "\(armed) \(errnoName) \(count) \(pattern)\n".write(toFile: control, atomically: true, encoding: .utf8)
    }

    func heal() throws {
        armed += 1
        try "\(armed) OK 0\n".write(toFile: control, atomically: true, encoding: .utf8)
    }

    /// SIGKILL, as a crash: kevd gets no chance to sync or clean up. The file system goes too (its mount
    /// namespace with it); the backing directory keeps what it held.
    func crash() throws {
        kill(daemon.pid, SIGKILL)
        daemon.process.waitUntilExit()
        try stopFaultFS()
    }

    func stopFaultFS() throws {
        guard let text = try? String(contentsOfFile: faultfsPIDFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return }
        kill(pid, SIGTERM)
        // Gone once its pid no longer names it (a deadline, not a sleep that hopes).
        let deadline = Date().addingTimeInterval(10)
        while kill(pid, 0) == 0 && Date() < deadline { usleep(10_000) }
        unlink(faultfsPIDFile)
    }

    func restart() throws {
        daemon = try Self.start(dir)
    }

    /// Whatever a failed expectation left: kevd killed, the file system stopped (its namespace goes with it).
    deinit {
        if daemon.process.isRunning {
            kill(daemon.pid, SIGKILL)
            daemon.process.waitUntilExit()
        }
        try? stopFaultFS()
    }
}

/// Emits from `clients` threads of its own, one emit at a time each (so several are in flight at once), and keeps
/// what each reply said.
private final class SteadyEmitter: @unchecked Sendable {
    // @unchecked: the counters are behind `lock`.
    private let lock = NSLock()
    private var stopping = false
    private var acknowledged: [(id: String, seq: Int)] = []
    private var refusals: [String] = []
    private var waiting = 0
    private let finished = DispatchGroup()

    init(socket: String, type: String, clients: Int = 4) {
        for c in 0..<clients {
            finished.enter()
            Thread { [self] in
                defer { finished.leave() }
                guard let client = try? RawClient(socket) else { return }
                var i = 0
                while !lock.withLock({ stopping }) {
                    i += 1
                    lock.withLock { waiting += 1 }
                    client.send(#"{"op":"emit","type":"\#(type)","key":"\#(c)-\#(i)","data":{"pad":"\#(String(repeating: "x", count: 200))"}}"# + "\n")
                    // A reply may rightly wait for the records in doubt to be written again and synced.
                    guard let reply = try? client.line(timeout: 60) else { return }
                    lock.withLock {
                        waiting -= 1
                        if reply["ok"] as? Bool == true, let id = reply["id"] as? String, let seq = reply["seq"] as? Int {
                            acknowledged.append((id, seq))
                        } else {
                            refusals.append(reply["error"] as? String ?? "\(reply)")
                        }
                    }
                    usleep(1_000)
                }
            }.start()
        }
    }

    var acknowledgedCount: Int { lock.withLock { acknowledged.count } }
    var lastAcknowledgedSeq: Int { lock.withLock { acknowledged.map(\.seq).max() ?? 0 } }

    /// Waits (with a deadline) until `count` emits in all have been acknowledged.
    func waitForAcknowledged(_ count: Int, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while acknowledgedCount < count {
            try #require(Date() < deadline, "the steady emitter got \(acknowledgedCount) of \(count) acknowledgements")
            usleep(2_000)
        }
    }

    func stop() -> (acknowledged: [(id: String, seq: Int)], refusals: [String], pendingAtEnd: Int) {
        lock.withLock { stopping = true }
        _ = finished.wait(timeout: .now() + 70)
        return lock.withLock { (acknowledged, refusals, waiting) }
    }
}

/// What the fault-injecting file system needs besides root: /dev/fuse and Debian's python3-fusepy. Without them
/// the suite is skipped, unless `KEVD_REQUIRE_ROOT=1` (CI) demands that it runs (and so fails loudly).
private enum FaultFSSupport {
    static var available: Bool {
        access("/dev/fuse", R_OK | W_OK) == 0 && access("/usr/lib/python3/dist-packages/fusepy.py", R_OK) == 0
    }
    static let reason: Comment = "needs root, /dev/fuse and python3-fusepy (scripts/deps.sh installs it); KEVD_REQUIRE_ROOT=1 makes this a failure"
}

@Suite(
    "Reliability: failed syncs", .enabled(if: Root.required || (Root.isRoot && FaultFSSupport.available), FaultFSSupport.reason),
    .serialized)
struct ReliabilityFailedSyncTests {
    /// The events `kevctl journal` prints for `filter`, from the backing directory (as a restarted kevd reads it).
    private func journalEvents(_ state: String, _ filter: [String] = []) throws -> [[String: Any]] {
        let result = try kevctl(["journal", "--state-dir", state] + filter)
        try #require(result.status == 0, "kevctl journal: \(result.stderr)")
        return result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test("fsync fails (EIO once on a segment, once on the directory, then ENOSPC until healed) and drops the unsynced data: nothing in doubt is acknowledged, the records are written again, and after a SIGKILL every acknowledged emit is there exactly once")
    func failedSyncs() throws {
        try Root.check()
        try #require(access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse")
        try #require(access("/usr/bin/python3", X_OK) == 0 && (try? run(["/usr/bin/python3", "-c", "import fusepy"])) != nil,
                     "needs python3-fusepy (scripts/deps.sh installs it)")
        let started = Date()
        let kevd = try FaultyDiskDaemon()
        let client = try RawClient(kevd.socket)
        var acknowledged: [(id: String, seq: Int)] = []
        for i in 0..<50 {
            let reply = try client.request(#"{"op":"emit","type":"steady","key":"before-\#(i)"}"#)
            try #require(reply["ok"] as? Bool == true, "\(reply)")
            acknowledged.append((reply["id"] as! String, reply["seq"] as! Int))
        }
        let emitter = SteadyEmitter(socket: kevd.socket, type: "steady")
        try emitter.waitForAcknowledged(100)

        // 1. One sync fails with EIO and the file system drops what it had not synced; the next sync succeeds,
        // as Linux's does once it has reported the error: a kevd that retried and trusted it would lose records.
        var marker = kevd.daemon.received.count
        // Acknowledged before the fault is armed: synced, never in doubt.
        let ackedBefore = emitter.lastAcknowledgedSeq
        try kevd.fail("EIO", count: 1)
        let eio = try kevd.daemon.waitFor("kevd/error for the failed sync", from: marker, timeout: 20) {
            $0.isEvent("kevd", "error", key: "journal")
        }
        #expect(eio.data["errno"] as? String == "EIO", "\(eio)")
        let from = try #require(eio.data["from"] as? Int, "\(eio)")
        let to = try #require(eio.data["to"] as? Int, "\(eio)")
        #expect(from > ackedBefore && to >= from, "the seqs in doubt: \(from)-\(to), acknowledged before: \(ackedBefore)")
        let eioResumed = try kevd.daemon.waitFor("kevd/resumed after EIO", from: marker, timeout: 20) {
            $0.isEvent("kevd", "resumed", key: "journal")
        }
        #expect((eioResumed.data["durable"] as? Int ?? 0) >= to, "\(eioResumed)")

        // The emits that waited get their `ok`, and new ones go through.
        try emitter.waitForAcknowledged(emitter.acknowledgedCount + 100)

        // 1b. The journal directory's sync fails once, after a rotation (the retired segment's path): the new
        // segment's name is in doubt, and with it every record since the retired segment's last good sync.
        marker = kevd.daemon.received.count
        try kevd.fail("EIO", count: 1, pattern: "journal")
        let padding = String(repeating: "b", count: 4000)
        for i in 0..<24 {
            // 24 × 4 KB: more than a 64 KiB segment holds, so the journal rotates at least once.
            let reply = try client.request(#"{"op":"emit","type":"steady","key":"big-\#(i)","data":{"pad":"\#(padding)"}}"#)
            if reply["ok"] as? Bool == true, let id = reply["id"] as? String, let seq = reply["seq"] as? Int {
                acknowledged.append((id, seq))
            } else {
                #expect((reply["error"] as? String)?.contains("journal sync failed") == true, "\(reply)")
            }
        }
        let directoryError = try kevd.daemon.waitFor("kevd/error for the directory sync", from: marker, timeout: 20) {
            $0.isEvent("kevd", "error", key: "journal")
        }
        #expect((directoryError.data["call"] as? String)?.hasPrefix("fsync(") == true, "\(directoryError)")
        try kevd.daemon.waitFor("kevd/resumed after the directory sync", from: marker, timeout: 20) {
            $0.isEvent("kevd", "resumed", key: "journal")
        }

        // 2. ENOSPC on every sync until healed: emits are refused with the reason, reads are served.
        marker = kevd.daemon.received.count
        try kevd.fail("ENOSPC", count: -1)
        let enospc = try kevd.daemon.waitFor("kevd/error for ENOSPC", from: marker, timeout: 20) {
            $0.isEvent("kevd", "error", key: "journal")
        }
        #expect(enospc.data["errno"] as? String == "ENOSPC", "\(enospc)")
        let ackedBeforeENOSPC = emitter.acknowledgedCount
        let other = try RawClient(kevd.socket)
        let refused = try other.request(#"{"op":"emit","type":"refused","key":"r"}"#)
        #expect(refused["ok"] as? Bool == false, "an emit during a failed sync: \(refused)")
        #expect((refused["error"] as? String)?.contains("journal sync failed") == true, "\(refused)")
        let status = try other.request(#"{"op":"status"}"#)
        #expect(status["ok"] as? Bool == true, "status while syncs fail: \(status)")
        let reader = try RawClient(kevd.socket)
        #expect(try reader.request(#"{"op":"subscribe","from":"all","filter":["key=before-*"]}"#)["ok"] as? Bool == true)
        #expect(try reader.events(50).count == 50)
        // Nothing is acknowledged while every sync fails (an emit accepted before may wait for its reply).
        let ackedDuring = emitter.acknowledgedCount
        #expect(ackedDuring <= ackedBeforeENOSPC + 4, "acknowledged while every sync fails: \(ackedDuring - ackedBeforeENOSPC)")
        try kevd.heal()
        let resumed = try kevd.daemon.waitFor("kevd/resumed after ENOSPC", from: marker, timeout: 20) {
            $0.isEvent("kevd", "resumed", key: "journal")
        }
        #expect(resumed.data["failed_ms"] != nil)
        try emitter.waitForAcknowledged(emitter.acknowledgedCount + 100)
        let after = try client.request(#"{"op":"emit","type":"steady","key":"after"}"#)
        #expect(after["ok"] as? Bool == true, "emit after recovery: \(after)")
        if let id = after["id"] as? String, let seq = after["seq"] as? Int { acknowledged.append((id, seq)) }

        let background = emitter.stop()
        #expect(background.pendingAtEnd == 0, "emits still without a reply after recovery")
        acknowledged += background.acknowledged
        #expect(background.refusals.allSatisfy { $0.contains("journal sync failed") }, "\(Set(background.refusals))")

        // 3. A crash, and a restart on the same disk.
        try kevd.crash()
        try kevd.restart()
        let state = "/proc/\(kevd.daemon.pid)/root" + kevd.dir.file("state")
        let emitted = try journalEvents(state, ["source=emit"])
        var counts: [String: Int] = [:]
        for event in emitted { if let id = event["id"] as? String { counts[id, default: 0] += 1 } }
        let wrong = acknowledged.filter { counts[$0.id] != 1 }
        #expect(wrong.isEmpty, "acknowledged emits not exactly once after the restart: \(wrong.prefix(5).map { "\($0.seq): \(counts[$0.id] ?? 0)" })")
        let seqs = try journalEvents(state).compactMap { $0["seq"] as? Int }
        #expect(seqs == Array(Set(seqs)).sorted(), "seqs repeated or out of order after the restart")
        let verify = try kevctl(["journal", "--verify", "--state-dir", state])
        #expect(verify.status == 0, "journal --verify after the restart: \(verify.stdout) \(verify.stderr)")
        let kevdEvents = try journalEvents(state, ["source=kevd", "key=journal"])
        #expect(kevdEvents.filter { $0["type"] as? String == "error" }.count == 3, "the error events are in the journal, once each")
        #expect(kevdEvents.filter { $0["type"] as? String == "resumed" }.count == 3, "the resumed events are in the journal, once each")
        // The restarted kevd takes emits.
        let again = try RawClient(kevd.socket)
        #expect(try again.request(#"{"op":"emit","type":"steady","key":"restarted"}"#)["ok"] as? Bool == true)
        _ = kevd.daemon.stop()
        try kevd.stopFaultFS()
        Reliability.report(
            "failed_sync",
            ["acknowledged": acknowledged.count, "refused": background.refusals.count, "lost": wrong.count,
             "eio_doubt": "\(from)-\(to)", "enospc_doubt": "\(enospc.data["from"] ?? "-")-\(enospc.data["to"] ?? "-")",
             "enospc_failed_ms": resumed.data["failed_ms"] ?? "-",
             "seconds": String(format: "%.1f", Date().timeIntervalSince(started))])
    }
}
