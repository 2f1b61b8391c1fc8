import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Creates a file with `bytes`, through plain syscalls (one create, one write, one close).
func writeFile(_ path: String, _ text: String = "x") throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    _ = text.withCString { write(fd, $0, strlen($0)) }
    close(fd)
}

func makeDirectory(_ path: String) throws {
    guard mkdir(path, 0o755) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
}

/// `backend`: the tests written for the inotify source (its crawl, its watch limit, its synthetic creates) pin it;
/// FileBackendTests runs the shared cases on each backend; nil leaves the default (`auto`).
func watchConfig(_ path: String, recursive: Bool = true, extra: String = "", backend: String? = "inotify") -> String {
    """
    [daemon]
    state_dir = "state"
    socket = "state/kevd.sock"
    log_level = "warning"

    [[watch]]
    path = "\(path)"
    recursive = \(recursive)
    \(backend.map { "backend = \"\($0)\"" } ?? "")
    \(extra)
    """
}

@Suite("inotify source")
struct InotifyTests {
    @Test("create, write, close and delete are reported with path, name, watch and dir")
    func basicFileEvents() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        let file = dir.file("w/report.txt")
        try writeFile(file, "hello")
        unlink(file)

        let create = try daemon.waitFor("create") { $0.isEvent("inotify", "create", key: file) }
        #expect(create.data["path"] as? String == file)
        #expect(create.data["name"] as? String == "report.txt")
        #expect(create.data["watch"] as? String == dir.file("w"))
        #expect(create.data["dir"] as? Bool == false)
        #expect(create.data["synthetic"] == nil)
        try daemon.waitFor("modify") { $0.isEvent("inotify", "modify", key: file) }
        try daemon.waitFor("close_write") { $0.isEvent("inotify", "close_write", key: file) }
        try daemon.waitFor("delete") { $0.isEvent("inotify", "delete", key: file) }

        // Sequence numbers are gap-free and in order, times and ids well formed.
        let seqs = daemon.received.compactMap(\.seq)
        #expect(seqs == Array(1...seqs.count))
        let ids = Set(daemon.received.compactMap { $0["id"] as? String })
        #expect(ids.count == seqs.count)
        #expect(daemon.stop() == 0)
    }

    @Test("a rename inside the tree is one moved event; out of and into the tree are moved_from and moved_to")
    func movePairing() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("outside"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        try writeFile(dir.file("w/a"))
        rename(dir.file("w/a"), dir.file("w/b"))
        let moved = try daemon.waitFor("moved") { $0.isEvent("inotify", "moved") }
        #expect(moved.key == dir.file("w/b"))
        #expect(moved.data["from"] as? String == dir.file("w/a"))
        #expect(moved.data["to"] as? String == dir.file("w/b"))
        #expect(moved.data["cookie"] != nil)

        rename(dir.file("w/b"), dir.file("outside/b"))
        let out = try daemon.waitFor("moved_from") { $0.isEvent("inotify", "moved_from") }
        #expect(out.key == dir.file("w/b"))

        try writeFile(dir.file("outside/c"))
        rename(dir.file("outside/c"), dir.file("w/c"))
        let into = try daemon.waitFor("moved_to") { $0.isEvent("inotify", "moved_to") }
        #expect(into.key == dir.file("w/c"))

        // No half of the paired rename was reported on its own.
        #expect(!daemon.received.contains { $0.isEvent("inotify", "moved_from", key: dir.file("w/a")) })
        #expect(!daemon.received.contains { $0.isEvent("inotify", "moved_to", key: dir.file("w/b")) })
        daemon.stop()
    }

    @Test("a renamed directory keeps being watched under its new name")
    func movedDirectoryIsFollowed() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/old"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        rename(dir.file("w/old"), dir.file("w/new"))
        try daemon.waitFor("moved dir") { $0.isEvent("inotify", "moved", key: dir.file("w/new")) }
        try writeFile(dir.file("w/new/f"))
        try daemon.waitFor("create under the new name") { $0.isEvent("inotify", "create", key: dir.file("w/new/f")) }
        daemon.stop()
    }

    @Test("files made in a new subdirectory before its watch existed are reported as synthetic creates, once")
    func recursiveRace() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        // Build a deep tree as fast as possible: most of it exists before kevd can watch it.
        var expected: [String] = []
        for tree in 0..<20 {
            var path = dir.file("w/t\(tree)")
            for depth in 0..<4 {
                try makeDirectory(path)
                expected.append(path)
                for f in 0..<3 {
                    try writeFile(path + "/f\(f)")
                    expected.append(path + "/f\(f)")
                }
                path += "/d\(depth)"
            }
        }
        let creates = try daemon.waitForCount("creates", count: expected.count, timeout: 30) {
            $0.isEvent("inotify", "create")
        }
        let keys = creates.compactMap(\.key)
        #expect(Set(keys) == Set(expected), "every directory and file is reported")
        #expect(keys.count == Set(keys).count, "nothing is reported twice")
        #expect(creates.contains { $0.data["synthetic"] as? Bool == true }, "the race was actually exercised")

        // The deepest directories are watched: a new file there is a real event.
        let deepest = dir.file("w/t0/d0/d1/d2")
        try writeFile(deepest + "/late")
        let late = try daemon.waitFor("late create") { $0.isEvent("inotify", "create", key: deepest + "/late") }
        #expect(late.data["synthetic"] == nil)
        daemon.stop()
    }

    @Test("a watched path that does not exist yet is picked up when it appears")
    func watchBeforeExists() throws {
        let dir = try TemporaryDirectory()
        let daemon = try DaemonProcess(config: watchConfig("later/deeper"), in: dir)
        try makeDirectory(dir.file("later"))
        try makeDirectory(dir.file("later/deeper"))
        let root = try daemon.waitFor("root create") { $0.isEvent("inotify", "create", key: dir.file("later/deeper")) }
        #expect(root.data["dir"] as? Bool == true)
        try writeFile(dir.file("later/deeper/x"))
        try daemon.waitFor("create inside") { $0.isEvent("inotify", "create", key: dir.file("later/deeper/x")) }

        // Deleted: waits again, and comes back.
        unlink(dir.file("later/deeper/x"))
        rmdir(dir.file("later/deeper"))
        try daemon.waitFor("delete_self") { $0.isEvent("inotify", "delete_self", key: dir.file("later/deeper")) }
        let before = daemon.received.count
        try makeDirectory(dir.file("later/deeper"))
        try daemon.waitFor("root again", from: before) { $0.isEvent("inotify", "create", key: dir.file("later/deeper")) }
        try writeFile(dir.file("later/deeper/y"))
        try daemon.waitFor("create again", from: before) { $0.isEvent("inotify", "create", key: dir.file("later/deeper/y")) }
        daemon.stop()
    }

    @Test("a single file can be watched, and excluded names are not reported")
    func fileRootAndExcludes() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/.git"))
        try writeFile(dir.file("single.conf"))
        let config = watchConfig("w", extra: "exclude = [\"*.swp\", \".git\"]") + """

            [[watch]]
            path = "single.conf"
            """
        let daemon = try DaemonProcess(config: config, in: dir)
        try writeFile(dir.file("w/.edit.swp"))
        try writeFile(dir.file("w/.git/index"))
        try writeFile(dir.file("single.conf"), "changed")
        try daemon.waitFor("file root close_write") { $0.isEvent("inotify", "close_write", key: dir.file("single.conf")) }
        try writeFile(dir.file("w/kept"))
        try daemon.waitFor("kept") { $0.isEvent("inotify", "create", key: dir.file("w/kept")) }
        let keys = daemon.received.compactMap(\.key)
        #expect(!keys.contains(dir.file("w/.edit.swp")))
        #expect(!keys.contains(dir.file("w/.git/index")))
        daemon.stop()
    }

    @Test("a backlog of several reads queued while kevd is stopped arrives whole, in order, without an overflow")
    func backlogAcrossTurns() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w", extra: #"events = ["create"]"#), in: dir)
        daemon.signal(SIGSTOP)
        // 6,000 records of 32 bytes: three full 64 KiB reads and a short one, read one per loop turn; well under
        // the kernel's 16,384, so nothing may be lost.
        let count = 6_000
        for i in 0..<count {
            close(open(dir.file("w/backlog\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        daemon.signal(SIGCONT)
        let creates = try daemon.waitForCount("creates", count: count, timeout: 60) { $0.isEvent("inotify", "create") }
        #expect(creates.map { $0.key ?? "" } == (0..<count).map { dir.file("w/backlog\($0)") })
        let seqs = creates.compactMap(\.seq)
        #expect(seqs.count == count)
        #expect(zip(seqs, seqs.dropFirst()).allSatisfy { $1 == $0 + 1 })
        #expect(!daemon.received.contains { $0.type == "overflow" })
        #expect(daemon.stop() == 0)
    }

    @Test("a queue overflow while kevd is stopped is reported, and the rescan watches what appeared meanwhile")
    func overflowAndRescan() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        daemon.signal(SIGSTOP)
        // More events than fs.inotify.max_queued_events (16384 by default) while kevd cannot read.
        let limit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "16384") ?? 16384
        let count = max(50_000, limit * 2)
        for i in 0..<count {
            let fd = open(dir.file("w/burst\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            close(fd)
        }
        try makeDirectory(dir.file("w/made-during-overflow"))
        daemon.signal(SIGCONT)
        let overflow = try daemon.waitFor("overflow", timeout: 60) { $0.isEvent("inotify", "overflow") }
        #expect(overflow.key == dir.file("w"))
        // The rescan watched the directory created while events were being lost.
        try writeFile(dir.file("w/made-during-overflow/after"))
        try daemon.waitFor("create after rescan", timeout: 30) {
            $0.isEvent("inotify", "create", key: dir.file("w/made-during-overflow/after"))
        }
        #expect(daemon.stop() == 0)
    }

    @Test("hitting the inotify watch limit is a kevd/error naming the sysctl, and kevd keeps running")
    func watchLimit() throws {
        let dir = try TemporaryDirectory()
        var path = dir.file("w")
        for depth in 0..<8 {
            try makeDirectory(path)
            path += "/d\(depth)"
        }
        // A user namespace has its own inotify watch limit: set it low there, never on the host.
        let launcher = [
            "/usr/bin/unshare", "--user", "--map-root-user", "/bin/sh", "-c",
            "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"",
        ]
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir, launcher: launcher)
        let error = try daemon.waitFor("watch limit error") { $0.isEvent("kevd", "error", key: "inotify") }
        #expect(error.data["limit"] as? String == "fs.inotify.max_user_watches")
        #expect((error.data["message"] as? String)?.contains("max_user_watches") == true)
        // The current limit, read from /proc (a file that reports size 0 and must be read to its end).
        #expect((error.data["max_user_watches"] as? Int ?? 0) > 0)
        // Still serving the watches it has.
        try writeFile(dir.file("w/after"))
        try daemon.waitFor("event after the limit") { $0.isEvent("inotify", "create", key: dir.file("w/after")) }
        #expect(daemon.received.filter { $0.isEvent("kevd", "error", key: "inotify") }.count == 1)
        #expect(daemon.stop() == 0)
    }
}
