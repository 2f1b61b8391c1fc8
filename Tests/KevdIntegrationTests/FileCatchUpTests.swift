import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Issue 18, files: what changed in a watched tree while kevd was down (stopped, or SIGKILLed) or while its queue
/// overflowed is journaled as `inotify` events with `data.catchup = true`; each test runs on both backends.
@Suite("file catch-up: changes while kevd was down or its queue overflowed", .serialized)
struct FileCatchUpTests {
    /// `sources.file_catchup` of the status reply once `ready` says so.
    static func catchUpStatus(
        _ dir: TemporaryDirectory, _ what: String, timeout: Double = 60, ready: @escaping ([String: Any]) -> Bool
    ) throws -> [String: Any] {
        try waitUntil(what, timeout: timeout) { () -> [String: Any]? in
            let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
            guard let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
                let sources = reply["sources"] as? [String: Any], let status = sources["file_catchup"] as? [String: Any],
                ready(status)
            else { return nil }
            return status
        }
    }

    /// How many events the start-up catch-up published, once it is done.
    static func startUpPublished(_ dir: TemporaryDirectory) throws -> Int {
        let status = try catchUpStatus(dir, "the start-up file catch-up to be done") { $0["done"] as? Bool == true }
        return status["published"] as? Int ?? -1
    }

    static func caughtUp(_ daemon: DaemonProcess) -> [[String: Any]] {
        daemon.received.filter { $0.source == "inotify" && $0.data["catchup"] as? Bool == true }
    }

    static func describe(_ events: [[String: Any]]) -> [String] {
        events.map { "\($0.type ?? "") \($0.key ?? "")" }
    }

    enum Stop: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case sigterm, sigkill
        var testDescription: String { rawValue }
    }

    @Test(
        "created, written, chmod-ed, deleted, renamed and a new directory while kevd was down: exactly those, once",
        arguments: FileBackend.allCases, Stop.allCases)
    func changesWhileDown(backend: FileBackend, stop: Stop) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        for name in ["keep", "written", "chmodded", "deleted", "renamed"] { try writeFile(w + "/" + name, "was") }
        try makeDirectory(w + "/sub")
        try writeFile(w + "/sub/inner", "was")

        // First start: no snapshot yet, so nothing to compare with; the tree is recorded.
        let first = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(Self.caughtUp(first).isEmpty)
        switch stop {
        case .sigterm: #expect(first.stop() == 0)
        case .sigkill:
            first.signal(SIGKILL)
            first.process.waitUntilExit()
        }

        // While kevd is down.
        try writeFile(w + "/new", "new")
        try writeFile(w + "/written", "written again, longer")
        chmod(w + "/chmodded", 0o600)
        unlink(w + "/deleted")
        rename(w + "/renamed", w + "/sub/renamed-to")
        try makeDirectory(w + "/newdir")
        try writeFile(w + "/newdir/a", "a")
        try writeFile(w + "/newdir/b", "b")

        let second = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 8)
        let events = try second.waitForCount("the catch-up events", count: 8) {
            $0.source == "inotify" && $0.data["catchup"] as? Bool == true
        }
        #expect(Set(Self.describe(events)) == [
            "create \(w)/new", "modify \(w)/written", "attrib \(w)/chmodded", "delete \(w)/deleted",
            "moved \(w)/sub/renamed-to", "create \(w)/newdir", "create \(w)/newdir/a", "create \(w)/newdir/b",
        ], "\(Self.describe(events))")
        let moved = try #require(events.first { $0.type == "moved" })
        #expect(moved.data["from"] as? String == w + "/renamed")
        #expect(moved.data["to"] as? String == w + "/sub/renamed-to")
        let newdir = try #require(events.first { $0.key == w + "/newdir" })
        #expect(newdir.data["dir"] as? Bool == true && newdir.data["watch"] as? String == w)
        #expect(newdir.data["name"] as? String == "newdir" && newdir.data["path"] as? String == w + "/newdir")
        // A directory is created before what it holds.
        let order = Self.describe(events)
        #expect(order.firstIndex(of: "create \(w)/newdir")! < order.firstIndex(of: "create \(w)/newdir/a")!)
        // Live events go on after the catch-up, unmarked.
        try writeFile(w + "/live", "live")
        let live = try second.waitFor("a live create") { $0.isEvent("inotify", "create", key: w + "/live") }
        #expect(live.data["catchup"] == nil)
        // Its last event read, so the kernel queue is empty at the stop (else the stop's snapshot is not written).
        try second.waitFor("the live close_write") { $0.isEvent("inotify", "close_write", key: w + "/live") }
        #expect(second.stop() == 0)

        // Nothing changed while stopped. `live` was created after the second start's snapshot, but the clean stop
        // refreshed the snapshot (its live create was journaled and the kernel queue was empty): it is not
        // reported again.
        let third = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(Self.caughtUp(third).isEmpty, "\(Self.describe(Self.caughtUp(third)))")
        #expect(third.stop() == 0)

        let fourth = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(Self.caughtUp(fourth).isEmpty)
        #expect(fourth.stop() == 0)
    }

    @Test("catchup = false: nothing is caught up, and status says it is off", arguments: FileBackend.allCases)
    func off(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        try writeFile(w + "/f", "was")
        let first = try backend.start(dir, root: root, extra: "catchup = false")
        #expect(first.stop() == 0)
        try writeFile(w + "/f", "written while down")
        try writeFile(w + "/new", "new")
        let second = try backend.start(dir, root: root, extra: "catchup = false")
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        let reply = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect((reply["sources"] as? [String: Any])?["file_catchup"] is NSNull)
        try writeFile(w + "/live", "live")
        try second.waitFor("a live create") { $0.isEvent("inotify", "create", key: w + "/live") }
        #expect(Self.caughtUp(second).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: dir.file("state/catchup")))
        #expect(second.stop() == 0)
    }

    @Test("a queue overflow: what its lost events named is caught up after the overflow event", arguments: FileBackend.allCases)
    func overflow(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        try writeFile(w + "/written", "was")
        try writeFile(w + "/deleted", "was")
        // fanotify's queue is unlimited as root: keep the kernel's bounded one, as FileBackendTests.overflow does.
        let daemon = try backend.start(dir, root: root, environment: ["KEVD_TEST_FANOTIFY_BOUNDED_QUEUE": "1"])
        #expect(try Self.startUpPublished(dir) == 0)
        daemon.signal(SIGSTOP)
        // More than the kernel queues while kevd cannot read (see FileBackendTests.overflow); the last changes are
        // certainly among those lost.
        let burst = max(40_000, 2 * backend.maxQueuedEvents + 1_000)
        for i in 0..<burst {
            close(open(w + "/burst\(i)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        try writeFile(w + "/written", "written during the overflow")
        unlink(w + "/deleted")
        daemon.signal(SIGCONT)
        let overflow = try daemon.waitFor("overflow", timeout: 120) { $0.isEvent("inotify", "overflow") }
        let status = try Self.catchUpStatus(dir, "the overflow's diff", timeout: 120) { ($0["overflow_diffs"] as? Int ?? 0) >= 1 }
        let published = try #require(status["published"] as? Int)
        let caughtUp = try daemon.waitForCount("the overflow's catch-up events", count: published, timeout: 60) {
            $0.source == "inotify" && $0.data["catchup"] as? Bool == true
        }
        // After the overflow event.
        let overflowSeq = try #require(overflow.seq)
        #expect(caughtUp.allSatisfy { ($0.seq ?? 0) > overflowSeq })
        #expect(caughtUp.contains { $0.isEvent("inotify", "modify", key: w + "/written") })
        #expect(caughtUp.contains { $0.isEvent("inotify", "delete", key: w + "/deleted") })
        // Every burst file is reported: live before the overflow, or caught up after it.
        let created = Set(daemon.received.filter { $0.isEvent("inotify", "create") }.compactMap { $0.key })
        let missing = (0..<burst).filter { !created.contains(w + "/burst\($0)") }
        #expect(missing.isEmpty, "\(missing.count) burst files never reported, e.g. \(missing.prefix(3))")
        // The catch-up held no loop turn long: its batches are small.
        #expect(status["longest_batch_seconds"] as? Double ?? 1 < 0.5)
        #expect(daemon.stop() == 0)
    }

    @Test("SIGKILL right after live changes: a live delete is not reported again; after a refresh nothing is", arguments: FileBackend.allCases)
    func sigkillAfterLiveChanges(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        try writeFile(w + "/gone-live", "was")
        try writeFile(w + "/written-live", "was")
        /// Starts kevd and waits for its start-up catch-up; `published` is how many events it published.
        func start(tickMilliseconds: Int?) throws -> (daemon: DaemonProcess, published: Int) {
            let daemon = try DaemonProcess(
                config: backend.config(root), in: dir,
                environment: tickMilliseconds.map { ["KEVD_FILE_CATCHUP_TICK_MS": "\($0)"] } ?? [:])
            return (daemon, try Self.startUpPublished(dir))
        }

        // No refresh (the default tick, 30 s): the live delete after the snapshot is in the journal's tail.
        let (first, baseline) = try start(tickMilliseconds: nil)
        #expect(baseline == 0)
        unlink(w + "/gone-live")
        try first.waitFor("the live delete") { $0.isEvent("inotify", "delete", key: w + "/gone-live") }
        first.signal(SIGKILL)
        first.process.waitUntilExit()
        let (second, afterDelete) = try start(tickMilliseconds: 200)
        #expect(afterDelete == 0, "\(Self.describe(Self.caughtUp(second)))")

        // Live changes, then a refresh of the snapshot (the tick is 200 ms here), then SIGKILL: nothing again.
        try writeFile(w + "/written-live", "written while kevd runs")
        try writeFile(w + "/made-live", "new")
        try second.waitFor("the live create") { $0.isEvent("inotify", "create", key: w + "/made-live") }
        try second.waitFor("the live modify") { $0.isEvent("inotify", "modify", key: w + "/written-live") }
        _ = try Self.catchUpStatus(dir, "a refresh after the live changes") { ($0["refreshes"] as? Int ?? 0) >= 1 }
        second.signal(SIGKILL)
        second.process.waitUntilExit()
        try writeFile(w + "/made-while-down", "new")
        let (third, afterRefresh) = try start(tickMilliseconds: nil)
        #expect(afterRefresh == 1)
        let events = try third.waitForCount("the catch-up event", count: 1) {
            $0.source == "inotify" && $0.data["catchup"] as? Bool == true
        }
        #expect(Self.describe(events) == ["create \(w)/made-while-down"])
        #expect(third.stop() == 0)
    }

    @Test("exclude globs apply to catch-up as to live events", arguments: FileBackend.allCases)
    func excluded(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        try makeDirectory(w + "/cache")
        let extra = #"exclude = ["*.tmp", "cache"]"#
        let first = try backend.start(dir, root: root, extra: extra)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(first.stop() == 0)
        try writeFile(w + "/a.tmp", "x")
        try writeFile(w + "/cache/inside", "x")
        try writeFile(w + "/kept", "x")
        let second = try backend.start(dir, root: root, extra: extra)
        #expect(try Self.startUpPublished(dir) == 1)
        let events = try second.waitForCount("the catch-up event", count: 1) {
            $0.source == "inotify" && $0.data["catchup"] as? Bool == true
        }
        #expect(Self.describe(events) == ["create \(w)/kept"])
        #expect(second.stop() == 0)
    }

    @Test("names with newlines and invalid UTF-8 made and then deleted while kevd was down arrive intact", arguments: FileBackend.allCases)
    func hostileNames(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let w = dir.file(root)
        let first = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(first.stop() == 0)

        let name = "a b\n\"q\"$(touch pwned)\\"
        try writeFile(w + "/" + name)
        let raw = Array((w + "/").utf8) + [0x66, 0xFF, 0xFE, 0x67]
        let fd = (raw + [0]).withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: raw.count + 1) { open($0, O_CREAT | O_WRONLY, 0o644) }
        }
        #expect(fd >= 0)
        close(fd)
        // A directory whose name is not UTF-8, with a file inside: listed by its bytes.
        let rawDirectory = Array((w + "/").utf8) + [0x64, 0xFF] + [0]
        #expect(rawDirectory.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: rawDirectory.count) { mkdir($0, 0o755) }
        } == 0)
        let rawInner = Array(rawDirectory.dropLast()) + Array("/inner".utf8) + [0]
        let innerFD = rawInner.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: rawInner.count) { open($0, O_CREAT | O_WRONLY, 0o644) }
        }
        #expect(innerFD >= 0)
        close(innerFD)
        let second = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 4)
        let inner = try second.waitFor("the create inside the directory named in bytes") {
            $0.isEvent("inotify", "create") && $0.data["catchup"] as? Bool == true && $0.data["name"] as? String == "inner"
        }
        #expect(Data(base64Encoded: inner.data["path_base64"] as? String ?? "") == Data(rawInner.dropLast()))
        #expect(inner.data["name_base64"] == nil)
        let created = try second.waitForCount("the catch-up creates", count: 4) {
            $0.isEvent("inotify", "create") && $0.data["catchup"] as? Bool == true
        }
        #expect(created.contains { $0.key == w + "/" + name && $0.data["name"] as? String == name })
        let invalid = try #require(created.first { $0.data["name_base64"] as? String == Data([0x66, 0xFF, 0xFE, 0x67]).base64EncodedString() })
        #expect(Data(base64Encoded: invalid.data["name_base64"] as? String ?? "") == Data([0x66, 0xFF, 0xFE, 0x67]))
        #expect(Data(base64Encoded: invalid.data["path_base64"] as? String ?? "") == Data(raw))
        #expect(second.stop() == 0)

        // Deleted while down: the snapshot kept the exact bytes, and the delete carries them.
        let rawPath = raw + [0]
        #expect(rawPath.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: rawPath.count) { unlink($0) }
        } == 0)
        let third = try backend.start(dir, root: root)
        #expect(try Self.startUpPublished(dir) == 1)
        let deleted = try third.waitForCount("the catch-up delete", count: 1) {
            $0.isEvent("inotify", "delete") && $0.data["catchup"] as? Bool == true
        }
        #expect(Data(base64Encoded: deleted.first?.data["path_base64"] as? String ?? "") == Data(raw))
        #expect(!FileManager.default.fileExists(atPath: w + "/pwned"))
        #expect(third.stop() == 0)
    }

    @Test("a root added by a reload is recorded at the next tick, so what changes in it while kevd is down is caught up",
        arguments: FileBackend.allCases)
    func rootAddedByReload(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("x"))
        try writeFile(dir.file("x/was"), "was")
        let daemon = try DaemonProcess(
            config: backend.config("w"), in: dir, environment: ["KEVD_FILE_CATCHUP_TICK_MS": "200"])
        #expect(try Self.startUpPublished(dir) == 0)
        let twoRoots = backend.config("w") + "\n[[watch]]\npath = \"x\"\nrecursive = true\nbackend = \"\(backend.rawValue)\"\n"
        try twoRoots.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("reloaded") { $0.isEvent("kevd", "reloaded", key: "config") }
        _ = try Self.catchUpStatus(dir, "the new root's first snapshot") { ($0["refreshes"] as? Int ?? 0) >= 1 }
        daemon.signal(SIGKILL)
        daemon.process.waitUntilExit()
        try writeFile(dir.file("x/was"), "written while kevd was down")
        let second = try DaemonProcess(config: twoRoots, in: dir)
        #expect(try Self.startUpPublished(dir) == 1)
        let events = try second.waitForCount("the catch-up event", count: 1) {
            $0.source == "inotify" && $0.data["catchup"] as? Bool == true
        }
        #expect(Self.describe(events) == ["modify \(dir.file("x/was"))"])
        #expect(second.stop() == 0)
    }

    /// The roots whose snapshots are in `dir`'s state directory (read from each file's header: the magic, the seq,
    /// then the root's path), and any temporary file a killed write left.
    static func snapshotFiles(_ dir: TemporaryDirectory) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.file("state/catchup"))) ?? []
        return names.compactMap { name -> String? in
            if name.hasSuffix(".tmp") { return "temporary" }
            guard name.hasSuffix(".snap"), let data = FileManager.default.contents(atPath: dir.file("state/catchup/" + name)),
                data.count >= 20
            else { return nil }
            let length = Int(data[16]) | Int(data[17]) << 8 | Int(data[18]) << 16 | Int(data[19]) << 24
            guard data.count >= 20 + length else { return "damaged" }
            return (String(decoding: data[20..<(20 + length)], as: UTF8.self) as NSString).lastPathComponent
        }.sorted()
    }

    @Test("a root no longer watched with catch-up loses its snapshot at the next start, not while a rule file has a problem",
        arguments: FileBackend.allCases)
    func staleSnapshotsDeleted(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        for name in ["w", "x", "rules"] { try makeDirectory(dir.file(name)) }
        let rules = "\n[rules]\ndirectories = [\"rules\"]\n"
        let x = "\n[[watch]]\npath = \"x\"\nrecursive = true\nbackend = \"\(backend.rawValue)\"\n"
        let first = try DaemonProcess(config: backend.config("w") + x + rules, in: dir)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(first.stop() == 0)
        #expect(Self.snapshotFiles(dir) == ["w", "x"])
        // What a write killed before its rename leaves.
        try writeFile(dir.file("state/catchup/0123456789abcdef.snap.tmp"), "half a snapshot")

        // x is gone from the config, but a rule file has a problem, and a broken file's roots may come back with
        // its fix: nothing is deleted.
        try writeFile(dir.file("rules/broken.toml"), "[[rule]\n")
        let second = try DaemonProcess(config: backend.config("w") + rules, in: dir)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(second.stop() == 0)
        #expect(Self.snapshotFiles(dir) == ["temporary", "w", "x"])

        // The rule file fixed: x's snapshot and the temporary file go, w's stays.
        #expect(unlink(dir.file("rules/broken.toml")) == 0)
        let third = try DaemonProcess(config: backend.config("w") + rules, in: dir)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(third.stop() == 0)
        #expect(Self.snapshotFiles(dir) == ["w"])

        // w still watched, but with `catchup = false`: its snapshot goes too, and x (catch-up again) gets one.
        let fourth = try DaemonProcess(config: backend.config("w", extra: "catchup = false") + x + rules, in: dir)
        #expect(try Self.startUpPublished(dir) == 0)
        #expect(fourth.stop() == 0)
        #expect(Self.snapshotFiles(dir) == ["x"])
    }
}
