import Foundation
import Glibc
import KevdTestSupport
import Testing

/// fanotify's own behaviour, beyond the events both backends share (FileBackendTests): moves on kernels without
/// `FAN_RENAME` (before 5.17), simulated here by a test-only switch, and marks removed by a reload.
@Suite("fanotify backend: moves before 5.17, marks on reload")
struct FanotifyBackendTests {
    /// `KEVD_TEST_FANOTIFY_BEFORE_5_17=1` makes kevd ask for neither `FAN_RENAME` nor `FAN_REPORT_TARGET_FID`, as on
    /// a kernel before 5.17: renames arrive as `FAN_MOVED_FROM` then `FAN_MOVED_TO`, and kevd pairs them.
    @Test("before 5.17 (no FAN_RENAME): moves are paired into moved with from and to; edges and moved-in trees as on 5.17",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func movesWithoutRename() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        let unmount = try FileBackend.fanotify.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/old"))
        try makeDirectory(dir.file("w/old/sub"))
        try makeDirectory(dir.file("outside"))
        try makeDirectory(dir.file("outside/in"))
        try makeDirectory(dir.file("outside/in/sub"))
        try writeFile(dir.file("outside/in/sub/g"))
        let daemon = try FileBackend.fanotify.start(dir, environment: ["KEVD_TEST_FANOTIFY_BEFORE_5_17": "1"])
        // A file renamed inside the tree: one moved.
        try writeFile(dir.file("w/a"))
        try daemon.waitFor("a") { $0.isEvent("inotify", "close_write", key: dir.file("w/a")) }
        rename(dir.file("w/a"), dir.file("w/old/b"))
        let moved = try daemon.waitFor("moved") { $0.isEvent("inotify", "moved", key: dir.file("w/old/b")) }
        #expect(moved.data["from"] as? String == dir.file("w/a"))
        #expect(moved.data["to"] as? String == dir.file("w/old/b"))
        #expect(moved.data["cookie"] != nil)
        #expect(moved.data["pid"] as? Int == Int(getpid()))
        // A directory renamed: one moved, and an event inside it has the new path.
        try writeFile(dir.file("w/old/sub/before"))
        try daemon.waitFor("before") { $0.isEvent("inotify", "close_write", key: dir.file("w/old/sub/before")) }
        rename(dir.file("w/old"), dir.file("w/new"))
        let movedDir = try daemon.waitFor("moved dir") { $0.isEvent("inotify", "moved", key: dir.file("w/new")) }
        #expect(movedDir.data["from"] as? String == dir.file("w/old"))
        #expect(movedDir.data["dir"] as? Bool == true)
        try writeFile(dir.file("w/new/sub/after"))
        try daemon.waitFor("after") { $0.isEvent("inotify", "close_write", key: dir.file("w/new/sub/after")) }
        // Out of the tree and in again: moved_from, then moved_to.
        rename(dir.file("w/new/sub/after"), dir.file("outside/after"))
        try daemon.waitFor("moved_from") { $0.isEvent("inotify", "moved_from", key: dir.file("w/new/sub/after")) }
        rename(dir.file("outside/after"), dir.file("w/back"))
        try daemon.waitFor("moved_to") { $0.isEvent("inotify", "moved_to", key: dir.file("w/back")) }
        // A directory moved in: its contents as synthetic creates.
        rename(dir.file("outside/in"), dir.file("w/in"))
        try daemon.waitFor("moved_to dir") { $0.isEvent("inotify", "moved_to", key: dir.file("w/in")) }
        let g = try daemon.waitFor("synthetic g") { $0.isEvent("inotify", "create", key: dir.file("w/in/sub/g")) }
        #expect(g.data["synthetic"] as? Bool == true)
        // No half of a rename inside the tree reported alone.
        let halves = daemon.received.filter { $0.isEvent("inotify", "moved_from") || $0.isEvent("inotify", "moved_to") }
        #expect(halves.map { $0.key ?? "" }.sorted() == [dir.file("w/back"), dir.file("w/in"), dir.file("w/new/sub/after")])
        #expect(daemon.stop() == 0)
    }

    /// The unlimited queue has kevd's own bound (64 MiB of records; lowered here by a test-only switch): past it,
    /// kevd discards what is queued and reports it as `overflow`, as a kernel overflow, and goes on.
    @Test("past the unlimited queue's bound, queued events are discarded and reported as overflow",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func unlimitedQueueBound() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try FileBackend.fanotify.isolatedRoot(dir)
        defer { cleanup() }
        let daemon = try FileBackend.fanotify.start(
            dir, root: root, extra: #"events = ["create"]"#, environment: ["KEVD_TEST_FANOTIFY_QUEUE_BYTES": "262144"])
        daemon.signal(SIGSTOP)
        // 20,000 records of about 100 bytes: some 2 MB queued, eight times the bound.
        let burst = 20_000
        for i in 0..<burst {
            close(open(dir.file("\(root)/burst\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        daemon.signal(SIGCONT)
        let overflow = try daemon.waitFor("overflow", timeout: 60) { $0.isEvent("inotify", "overflow") }
        #expect(overflow.key == dir.file(root))
        #expect(overflow.data["overflows"] as? Int == 1)
        try writeFile(dir.file("\(root)/after"))
        try daemon.waitFor("create after the overflow") { $0.isEvent("inotify", "create", key: dir.file("\(root)/after")) }
        let creates = daemon.received.filter { $0.isEvent("inotify", "create") && ($0.key ?? "").contains("/burst") }
        #expect(creates.count < burst)
        #expect(daemon.received.filter { $0.isEvent("inotify", "overflow") }.count == 1)
        #expect(daemon.stop() == 0)
    }

    /// A reload that drops the only root on a file system removes that file system's mark: `status` counts one
    /// file system fewer, and changes there are no longer reported.
    @Test("a reload that drops a root removes the mark of its file system",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func reloadRemovesMarks() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        var unmounts: [() -> Void] = []
        defer { unmounts.forEach { $0() } }
        for name in ["a", "b"] {
            try makeDirectory(dir.file(name))
            try run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.file(name)])
            unmounts.append { _ = try? run(["/bin/umount", "-l", dir.file(name)]) }
            try makeDirectory(dir.file("\(name)/w"))
        }
        let second = "[[watch]]\npath = \"b/w\"\nbackend = \"fanotify\"\n"
        let daemon = try FileBackend.fanotify.start(dir, root: "a/w", extra: "\n" + second)
        let client = try RawClient(dir.file("state/kevd.sock"))
        func marked() throws -> Int? {
            let status = try client.request(#"{"op":"status"}"#)
            return ((status["sources"] as? [String: Any])?["fanotify"] as? [String: Any])?["file_systems"] as? Int
        }
        #expect(try marked() == 2)
        try writeFile(dir.file("b/w/before"))
        try daemon.waitFor("before") { $0.isEvent("inotify", "close_write", key: dir.file("b/w/before")) }
        try FileBackend.fanotify.config("a/w").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("reloaded") { $0.isEvent("kevd", "reloaded", key: "config") }
        #expect(try marked() == 1)
        try writeFile(dir.file("b/w/dropped"))
        try writeFile(dir.file("a/w/kept"))
        try daemon.waitFor("kept") { $0.isEvent("inotify", "close_write", key: dir.file("a/w/kept")) }
        #expect(!daemon.received.contains { $0.key == dir.file("b/w/dropped") })
        // Added back, it is marked again.
        try FileBackend.fanotify.config("b/w").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        _ = try daemon.waitForCount("two reloads", count: 2) { $0.isEvent("kevd", "reloaded", key: "config") }
        #expect(try marked() == 1)  // b's again, a's gone.
        try writeFile(dir.file("b/w/again"))
        try daemon.waitFor("again") { $0.isEvent("inotify", "close_write", key: dir.file("b/w/again")) }
        #expect(daemon.stop() == 0)
    }
}
