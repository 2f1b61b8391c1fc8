import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The two backends of `[[watch]]`: each test here runs once per backend, on a real file system, and expects
/// the same events (fanotify adds `data.pid`).
enum FileBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inotify, fanotify
    var testDescription: String { rawValue }

    /// Why the fanotify case of a test run on both backends is skipped when not root.
    static let rootReason: Comment = """
        needs root (fanotify_init and the tmpfs each fanotify case mounts); the inotify case runs anyway; \
        set KEVD_REQUIRE_ROOT=1 to fail instead of skip
        """

    /// Why the tests that need root throughout (fanotify only, mounts, setpriv) are skipped when not root.
    static let rootOnlyReason: Comment = """
        needs root (fanotify marks, mounts, setpriv); set KEVD_REQUIRE_ROOT=1 to fail instead of skip
        """

    /// fanotify needs root: without it the fanotify case is cancelled (shown as skipped, with the reason), or
    /// fails under KEVD_REQUIRE_ROOT=1. The inotify case always runs.
    func requireRunnable() throws {
        guard self == .fanotify, !Root.isRoot else { return }
        if Root.required { try Root.check() }
        // The console shows a cancelled test case as passed: the warning is what a reader sees.
        Issue.record("skipped: \(Self.rootReason)", severity: .warning)
        try Test.cancel(Self.rootReason)
    }

    /// The kernel's queue length for this backend (`max_queued_events`, 16,384 by default on both), so a burst
    /// can be sized to overflow it, or a backlog to stay under it, whatever the machine's sysctl says.
    var maxQueuedEvents: Int {
        let path = "/proc/sys/fs/\(rawValue)/max_queued_events"
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 16_384
    }

    func config(_ path: String, recursive: Bool = true, extra: String = "") -> String {
        watchConfig(path, recursive: recursive, extra: extra, backend: rawValue)
    }

    /// Starts kevd on `w` inside `dir` and checks `started` names this backend.
    func start(
        _ dir: TemporaryDirectory, root: String = "w", recursive: Bool = true, extra: String = "",
        environment: [String: String] = [:]
    ) throws -> DaemonProcess {
        let daemon = try DaemonProcess(
            config: config(root, recursive: recursive, extra: extra), in: dir, environment: environment)
        // Generous: a debug kevd on a loaded 2-core machine; the crawl (inotify) is small here.
        let started = try daemon.waitFor("started", timeout: 60) { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == rawValue)
        return daemon
    }

    /// A file system of the test's own for the watched tree, when a test floods the queue or needs it quiet:
    /// a fanotify mark sees its whole file system, so on the shared /tmp a burst from one test fills the queues of
    /// every other fanotify kevd running meanwhile (and theirs fill this one's). As root: a tmpfs at `dir/fs`
    /// (unmounted by the returned closure); otherwise a plain directory (the inotify case, which needs no
    /// isolation). Returns the root's path relative to `dir`.
    func isolatedRoot(_ dir: TemporaryDirectory) throws -> (root: String, cleanup: () -> Void) {
        try makeDirectory(dir.file("fs"))
        guard Root.isRoot else {
            try makeDirectory(dir.file("fs/w"))
            return ("fs/w", {})
        }
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", dir.file("fs")])
        try makeDirectory(dir.file("fs/w"))
        return ("fs/w", { _ = try? run(["/bin/umount", "-l", dir.file("fs")]) })
    }

    /// Makes `dir` a quiet file system of its own for the fanotify case (as root): a tmpfs mounted on it, so
    /// the mark sees only this test's changes and not the bursts of tests running alongside on /tmp, which would
    /// overflow its queue. Returns what unmounts it (a `defer` in the test).
    func quiet(_ dir: TemporaryDirectory) throws -> () -> Void {
        guard self == .fanotify, Root.isRoot else { return {} }
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", dir.path])
        return { _ = try? run(["/bin/umount", "-l", dir.path]) }
    }

    /// fanotify reports the process that made the change (this test); inotify cannot.
    func expectPID(_ event: [String: Any]) {
        switch self {
        case .fanotify: #expect(event.data["pid"] as? Int == Int(getpid()), "\(event)")
        case .inotify: #expect(event.data["pid"] == nil, "\(event)")
        }
    }
}

@Suite("file backends: the same events from inotify and fanotify")
struct FileBackendTests {
    @Test("create, modify, close_write, attrib, moved and delete deep in a tree", arguments: FileBackend.allCases)
    func deepTree(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        let daemon = try backend.start(dir)
        // One level at a time, each seen before the next, so inotify's watch is on each before anything is in it.
        var deep = dir.file("w")
        for name in ["a", "b", "c", "d"] {
            deep += "/" + name
            try makeDirectory(deep)
            let create = try daemon.waitFor("create \(deep)") { $0.isEvent("inotify", "create", key: deep) }
            #expect(create.data["dir"] as? Bool == true)
            #expect(create.data["name"] as? String == name)
        }
        let file = deep + "/f.txt"
        try writeFile(file, "hello")
        let create = try daemon.waitFor("create") { $0.isEvent("inotify", "create", key: file) }
        #expect(create.data["path"] as? String == file)
        #expect(create.data["name"] as? String == "f.txt")
        #expect(create.data["watch"] as? String == dir.file("w"))
        #expect(create.data["dir"] as? Bool == false)
        backend.expectPID(create)
        try daemon.waitFor("modify") { $0.isEvent("inotify", "modify", key: file) }
        try daemon.waitFor("close_write") { $0.isEvent("inotify", "close_write", key: file) }
        chmod(file, 0o600)
        try daemon.waitFor("attrib") { $0.isEvent("inotify", "attrib", key: file) }
        let renamed = deep + "/g.txt"
        rename(file, renamed)
        let moved = try daemon.waitFor("moved") { $0.isEvent("inotify", "moved", key: renamed) }
        #expect(moved.data["from"] as? String == file)
        #expect(moved.data["to"] as? String == renamed)
        #expect(moved.data["cookie"] != nil)
        unlink(renamed)
        let delete = try daemon.waitFor("delete") { $0.isEvent("inotify", "delete", key: renamed) }
        backend.expectPID(delete)
        // Nothing reported twice, no half of the rename alone.
        #expect(daemon.received.filter { $0.isEvent("inotify", "create", key: file) }.count == 1)
        #expect(!daemon.received.contains { $0.isEvent("inotify", "moved_from") || $0.isEvent("inotify", "moved_to") })
        #expect(daemon.stop() == 0)
    }

    @Test("a tree made while watched, removed at once: every file and directory's delete, deepest paths right",
        arguments: FileBackend.allCases)
    func removeTree(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        let daemon = try backend.start(dir)
        var expected: [String] = []
        var path = dir.file("w/t")
        for depth in 0..<5 {
            try makeDirectory(path)
            try daemon.waitFor("create \(path)") { $0.isEvent("inotify", "create", key: path) }
            expected.append(path)
            try writeFile(path + "/f")
            expected.append(path + "/f")
            path += "/d\(depth)"
        }
        try daemon.waitFor("last file") { $0.isEvent("inotify", "close_write", key: expected.last!) }
        // Removed deepest first, in one go: kevd reads the events after every directory is gone.
        try FileManager.default.removeItem(atPath: dir.file("w/t"))
        for path in expected.reversed() {
            try daemon.waitFor("delete \(path)") { $0.isEvent("inotify", "delete", key: path) }
        }
        #expect(daemon.stop() == 0)
    }

    @Test("a renamed directory: an event inside it reports the new path", arguments: FileBackend.allCases)
    func renamedDirectory(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/old"))
        try makeDirectory(dir.file("w/old/sub"))
        let daemon = try backend.start(dir)
        // An event first, so the directory's path is known (fanotify caches it) before the rename.
        try writeFile(dir.file("w/old/sub/before"))
        try daemon.waitFor("before") { $0.isEvent("inotify", "close_write", key: dir.file("w/old/sub/before")) }
        rename(dir.file("w/old"), dir.file("w/new"))
        let moved = try daemon.waitFor("moved dir") { $0.isEvent("inotify", "moved", key: dir.file("w/new")) }
        #expect(moved.data["dir"] as? Bool == true)
        #expect(moved.data["from"] as? String == dir.file("w/old"))
        try writeFile(dir.file("w/new/sub/after"))
        try daemon.waitFor("create under the new name") { $0.isEvent("inotify", "create", key: dir.file("w/new/sub/after")) }
        try daemon.waitFor("close_write under the new name") {
            $0.isEvent("inotify", "close_write", key: dir.file("w/new/sub/after"))
        }
        #expect(!daemon.received.contains { ($0.key ?? "").hasPrefix(dir.file("w/old/sub/after")) })
        // Out of the tree and back in: moved_from, then moved_to.
        try makeDirectory(dir.file("outside"))
        rename(dir.file("w/new/sub/after"), dir.file("outside/after"))
        try daemon.waitFor("moved_from") { $0.isEvent("inotify", "moved_from", key: dir.file("w/new/sub/after")) }
        rename(dir.file("outside/after"), dir.file("w/back"))
        try daemon.waitFor("moved_to") { $0.isEvent("inotify", "moved_to", key: dir.file("w/back")) }
        #expect(daemon.stop() == 0)
    }

    /// A directory moved in from outside the tree: inotify watches and lists it, fanotify lists it; both report
    /// `moved_to` for it and what it holds, at every depth, as synthetic creates, each once; a file made in it
    /// afterwards is a plain create.
    @Test("a directory moved in from outside: moved_to, then what it holds as synthetic creates, once each",
        arguments: FileBackend.allCases)
    func movedInDirectory(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("outside"))
        try makeDirectory(dir.file("outside/in"))
        try makeDirectory(dir.file("outside/in/sub"))
        try makeDirectory(dir.file("outside/in/sub/deeper"))
        try writeFile(dir.file("outside/in/f"))
        try writeFile(dir.file("outside/in/sub/g"))
        try writeFile(dir.file("outside/in/sub/deeper/h"))
        let daemon = try backend.start(dir)
        rename(dir.file("outside/in"), dir.file("w/in"))
        let movedTo = try daemon.waitFor("moved_to") { $0.isEvent("inotify", "moved_to", key: dir.file("w/in")) }
        #expect(movedTo.data["dir"] as? Bool == true)
        let held = ["w/in/f", "w/in/sub", "w/in/sub/g", "w/in/sub/deeper", "w/in/sub/deeper/h"].map { dir.file($0) }
        for path in held {
            let create = try daemon.waitFor("synthetic create \(path)") { $0.isEvent("inotify", "create", key: path) }
            #expect(create.data["synthetic"] as? Bool == true, "\(create)")
            #expect(create.data["watch"] as? String == dir.file("w"))
            #expect(create.data["dir"] as? Bool == (path.hasSuffix("sub") || path.hasSuffix("deeper")))
        }
        // A file made in the moved-in tree afterwards is an ordinary create; queued after everything above.
        try writeFile(dir.file("w/in/sub/later"))
        let later = try daemon.waitFor("later") { $0.isEvent("inotify", "create", key: dir.file("w/in/sub/later")) }
        #expect(later.data["synthetic"] == nil)
        try daemon.waitFor("later closed") { $0.isEvent("inotify", "close_write", key: dir.file("w/in/sub/later")) }
        for path in held + [dir.file("w/in/sub/later")] {
            #expect(daemon.received.filter { $0.isEvent("inotify", "create", key: path) }.count == 1, "\(path)")
        }
        #expect(!daemon.received.contains { $0.isEvent("inotify", "create", key: dir.file("w/in")) })
        #expect(daemon.stop() == 0)
    }

    @Test("excluded globs are never reported", arguments: FileBackend.allCases)
    func excludedGlobs(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/build"))
        try makeDirectory(dir.file("w/src"))
        let daemon = try backend.start(dir, extra: "exclude = [\"*.tmp\", \"build\", \"src/gen/*\"]")
        try writeFile(dir.file("w/scratch.tmp"))
        try writeFile(dir.file("w/build/out.o"))
        try makeDirectory(dir.file("w/src/gen"))
        try writeFile(dir.file("w/src/gen/x.c"))
        // Queued after everything above: once it is seen, anything excluded would have been seen too.
        try writeFile(dir.file("w/src/kept.c"))
        try daemon.waitFor("kept") { $0.isEvent("inotify", "close_write", key: dir.file("w/src/kept.c")) }
        let keys = daemon.received.filter { $0["source"] as? String == "inotify" }.compactMap(\.key)
        #expect(!keys.contains { $0.hasSuffix(".tmp") || $0.contains("/build/") || $0.contains("/src/gen/") }, "\(keys)")
        #expect(daemon.stop() == 0)
    }

    @Test("changes elsewhere on the same file system are never reported", arguments: FileBackend.allCases)
    func noiseElsewhere(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w2"))  // A sibling whose name starts like the root's.
        try makeDirectory(dir.file("noise"))
        let daemon = try backend.start(dir, recursive: true)
        for i in 0..<50 {
            try writeFile(dir.file("noise/f\(i)"))
            try writeFile(dir.file("w2/f\(i)"))
            rename(dir.file("noise/f\(i)"), dir.file("noise/g\(i)"))
        }
        try makeDirectory(dir.file("noise/d"))
        chmod(dir.file("noise/d"), 0o700)
        try writeFile(dir.file("w/marker"))
        try daemon.waitFor("marker") { $0.isEvent("inotify", "close_write", key: dir.file("w/marker")) }
        let foreign = daemon.received.filter { $0["source"] as? String == "inotify" }.compactMap(\.key)
            .filter { !$0.hasPrefix(dir.file("w/")) }
        #expect(foreign.isEmpty, "\(foreign)")
        #expect(daemon.stop() == 0)
    }

    @Test("a non-recursive root reports its own entries only", arguments: FileBackend.allCases)
    func nonRecursive(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/sub"))
        let daemon = try backend.start(dir, recursive: false)
        try writeFile(dir.file("w/sub/deep"))
        try writeFile(dir.file("w/top"))
        try daemon.waitFor("top") { $0.isEvent("inotify", "close_write", key: dir.file("w/top")) }
        #expect(!daemon.received.contains { ($0.key ?? "").hasPrefix(dir.file("w/sub/")) })
        #expect(daemon.stop() == 0)
    }

    @Test("a file root: its changes, its deletion as delete_self, and nothing of its siblings",
        arguments: FileBackend.allCases)
    func fileRoot(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("etc"))
        try writeFile(dir.file("etc/app.conf"), "a")
        let daemon = try DaemonProcess(config: backend.config("etc/app.conf", recursive: false), in: dir)
        let file = dir.file("etc/app.conf")
        try writeFile(dir.file("etc/sibling.conf"))
        let fd = open(file, O_WRONLY | O_APPEND | O_CLOEXEC)
        _ = write(fd, "b", 1)
        close(fd)
        let closeWrite = try daemon.waitFor("close_write") { $0.isEvent("inotify", "close_write", key: file) }
        #expect(closeWrite.data["name"] as? String == "app.conf")
        #expect(closeWrite.data["watch"] as? String == file)
        #expect(closeWrite.data["dir"] as? Bool == false)
        unlink(file)
        try daemon.waitFor("delete_self") { $0.isEvent("inotify", "delete_self", key: file) }
        #expect(!daemon.received.contains { ($0.key ?? "").hasSuffix("sibling.conf") })
        #expect(daemon.stop() == 0)
    }

    @Test("file names with newlines, quotes, $(…) and invalid UTF-8 arrive intact", arguments: FileBackend.allCases)
    func hostileNames(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        let daemon = try backend.start(dir)
        let name = "a b\n\"q\"$(touch pwned)\\"
        try writeFile(dir.file("w/" + name))
        let event = try daemon.waitFor("hostile create") { $0.isEvent("inotify", "create") }
        #expect(event.data["name"] as? String == name)
        #expect(event.key == dir.file("w/" + name))
        // Invalid UTF-8: the text is repaired, the exact bytes are kept in *_base64.
        var raw = Array(dir.file("w/").utf8)
        raw += [0x66, 0xFF, 0xFE, 0x67]
        raw.append(0)
        let fd = raw.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: raw.count) { open($0, O_CREAT | O_WRONLY, 0o644) }
        }
        #expect(fd >= 0)
        close(fd)
        let invalid = try daemon.waitFor("invalid create") { $0.isEvent("inotify", "create") && $0.data["name_base64"] != nil }
        #expect(Data(base64Encoded: invalid.data["name_base64"] as? String ?? "") == Data([0x66, 0xFF, 0xFE, 0x67]))
        #expect(Data(base64Encoded: invalid.data["path_base64"] as? String ?? "") == Data(raw.dropLast()))
        // File names are data: nothing ran the `$(touch pwned)` in one.
        #expect(!FileManager.default.fileExists(atPath: dir.file("w/pwned")))
        #expect(!FileManager.default.fileExists(atPath: "pwned"))
        #expect(daemon.stop() == 0)
    }

    @Test("a backlog queued while kevd is stopped arrives whole and in order", arguments: FileBackend.allCases)
    func backlog(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        let daemon = try backend.start(dir, root: root, extra: #"events = ["create"]"#)
        daemon.signal(SIGSTOP)
        // Several 64 KiB reads' worth on either backend, well under both kernels' 16,384 queued events.
        let count = 4_000
        try #require(backend.maxQueuedEvents > 2 * count, "this machine's queue is too short for a backlog test")
        for i in 0..<count {
            close(open(dir.file("\(root)/backlog\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        daemon.signal(SIGCONT)
        let creates = try daemon.waitForCount("creates", count: count, timeout: 60) { $0.isEvent("inotify", "create") }
        #expect(creates.map { $0.key ?? "" } == (0..<count).map { dir.file("\(root)/backlog\($0)") })
        #expect(!daemon.received.contains { $0.type == "overflow" })
        #expect(daemon.stop() == 0)
    }

    /// fanotify merges a file's create, writes and delete into one record when kevd reads late; the order it
    /// reports them in must still be the order they happened, and a file deleted and made again (a new inode, so
    /// a record of its own) must read delete, then create.
    @Test("made and deleted, deleted and made again, while kevd was stopped: reported in the order they happened",
        arguments: FileBackend.allCases)
    func mergedRecordsInOrder(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        try writeFile(dir.file("\(root)/again"))
        let daemon = try backend.start(dir, root: root, extra: #"events = ["create", "delete"]"#)
        daemon.signal(SIGSTOP)
        try writeFile(dir.file("\(root)/brief"))
        unlink(dir.file("\(root)/brief"))
        unlink(dir.file("\(root)/again"))
        try writeFile(dir.file("\(root)/again"))
        daemon.signal(SIGCONT)
        let events = try daemon.waitForCount("four file events", count: 4, timeout: 60) {
            ($0.isEvent("inotify", "create") || $0.isEvent("inotify", "delete")) && $0.key?.hasPrefix(dir.path) == true
        }
        func order(_ name: String) -> [String] {
            events.filter { $0.key == dir.file("\(root)/\(name)") }.map { $0.type ?? "" }
        }
        #expect(order("brief") == ["create", "delete"], "\(events.map { "\($0.type ?? "") \($0.key ?? "")" })")
        #expect(order("again") == ["delete", "create"], "\(events.map { "\($0.type ?? "") \($0.key ?? "")" })")
        #expect(FileManager.default.fileExists(atPath: dir.file("\(root)/again")))
        #expect(daemon.stop() == 0)
    }

    @Test("a queue overflow while kevd is stopped is reported as overflow, and events go on", arguments: FileBackend.allCases)
    func overflow(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try backend.isolatedRoot(dir)
        defer { cleanup() }
        // kevd gives fanotify an unlimited queue as root (`fanotifyUnlimitedQueue`): this switch keeps the
        // kernel's default bound, as kevd has without CAP_SYS_ADMIN.
        let daemon = try backend.start(dir, root: root, environment: ["KEVD_TEST_FANOTIFY_BOUNDED_QUEUE": "1"])
        daemon.signal(SIGSTOP)
        // More than the kernel queues (fs.inotify and fs.fanotify max_queued_events, 16,384 by default; each
        // file is at least one event, fanotify merging its create and close_write into one record), while kevd
        // cannot read: the overflow is certain, not a race. Sized from the sysctl, so a raised limit still
        // overflows.
        let burst = max(40_000, 2 * backend.maxQueuedEvents + 1_000)
        for i in 0..<burst {
            close(open(dir.file("\(root)/burst\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        daemon.signal(SIGCONT)
        let overflow = try daemon.waitFor("overflow", timeout: 120) { $0.isEvent("inotify", "overflow") }
        #expect(overflow.key == dir.file(root))
        #expect(overflow.data["watch"] as? String == dir.file(root))
        #expect(overflow.data["overflows"] as? Int == 1)
        try writeFile(dir.file("\(root)/after"))
        try daemon.waitFor("create after the overflow", timeout: 60) {
            $0.isEvent("inotify", "create", key: dir.file("\(root)/after"))
        }
        // The queue kept what it could: the first burst files arrived as creates before the overflow, and
        // no more of them than the queue holds (the rest come after it from file catch-up, marked `catchup`).
        let burstCreates = daemon.received.filter {
            $0.isEvent("inotify", "create") && ($0.key ?? "").hasPrefix(dir.file("\(root)/burst"))
                && $0.data["catchup"] == nil
        }
        #expect(!burstCreates.isEmpty)
        #expect(burstCreates.count <= backend.maxQueuedEvents)
        #expect(daemon.received.filter { $0.isEvent("inotify", "overflow") }.count == 1)
        #expect(daemon.stop() == 0)
    }

    /// As root kevd asks fanotify for an unlimited queue (FAN_UNLIMITED_QUEUE): a burst more than twice the
    /// kernel's default bound, queued while kevd cannot read, arrives whole, in order, with no overflow.
    @Test("fanotify: a burst larger than the default queue while kevd is stopped loses nothing")
    func fanotifyUnlimitedQueue() throws {
        try FileBackend.fanotify.requireRunnable()
        let dir = try TemporaryDirectory()
        let (root, cleanup) = try FileBackend.fanotify.isolatedRoot(dir)
        defer { cleanup() }
        let daemon = try FileBackend.fanotify.start(dir, root: root, extra: #"events = ["create"]"#)
        daemon.signal(SIGSTOP)
        let burst = max(40_000, 2 * FileBackend.fanotify.maxQueuedEvents + 1_000)
        for i in 0..<burst {
            close(open(dir.file("\(root)/burst\(i)"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
        }
        daemon.signal(SIGCONT)
        let creates = try daemon.waitForCount("creates", count: burst, timeout: 180) { $0.isEvent("inotify", "create") }
        #expect(creates.map { $0.key ?? "" } == (0..<burst).map { dir.file("\(root)/burst\($0)") })
        #expect(!daemon.received.contains { $0.type == "overflow" })
        #expect(daemon.stop() == 0)
    }

    @Test("a root that does not exist yet, then is deleted and made again", arguments: FileBackend.allCases)
    func rootLifecycle(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("parent"))
        let daemon = try backend.start(dir, root: "parent/w")
        let root = dir.file("parent/w")
        try makeDirectory(root)
        let created = try daemon.waitFor("root created") { $0.isEvent("inotify", "create", key: root) }
        #expect(created.data["dir"] as? Bool == true)
        #expect(created.data["watch"] as? String == root)
        try writeFile(root + "/inside")
        try daemon.waitFor("create inside the new root") { $0.isEvent("inotify", "close_write", key: root + "/inside") }
        unlink(root + "/inside")
        try daemon.waitFor("delete inside") { $0.isEvent("inotify", "delete", key: root + "/inside") }
        rmdir(root)
        try daemon.waitFor("root deleted") { $0.isEvent("inotify", "delete_self", key: root) }
        let mark = daemon.received.count
        try makeDirectory(root)
        try daemon.waitFor("root made again", from: mark) { $0.isEvent("inotify", "create", key: root) }
        try writeFile(root + "/again")
        try daemon.waitFor("create in the root made again") { $0.isEvent("inotify", "close_write", key: root + "/again") }
        // The parent's other entries are not the root's.
        try writeFile(dir.file("parent/sibling"))
        try writeFile(root + "/last")
        try daemon.waitFor("last") { $0.isEvent("inotify", "close_write", key: root + "/last") }
        #expect(!daemon.received.contains { $0.key == dir.file("parent/sibling") })
        #expect(daemon.stop() == 0)
    }

    /// fanotify only: an inotify watch stays on the directory a mount covers, so neither inotify nor inotifywait
    /// sees inside a file system mounted under a root after the watch was made.
    @Test("fanotify: a tmpfs mounted under the root while kevd runs is watched from then on",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func mountAfterStart() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/mnt"))
        let daemon = try FileBackend.fanotify.start(dir)
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.file("w/mnt")])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("w/mnt")]) }
        // `status` counts the file systems marked: the new mount's mark is made when kevd sees the mount table
        // change.
        let client = try RawClient(dir.file("state/kevd.sock"))
        let fanotify = try waitUntil("the new mount marked", timeout: 30) { () -> [String: Any]? in
            let status = try client.request(#"{"op":"status"}"#)
            let fanotify = (status["sources"] as? [String: Any])?["fanotify"] as? [String: Any]
            return fanotify?["file_systems"] as? Int == 2 ? fanotify : nil
        }
        #expect(fanotify["backend"] as? String == "fanotify")
        #expect(fanotify["roots"] as? Int == 1)
        #expect(fanotify["fallback"] is NSNull)
        // From then on every event on it is reported.
        try writeFile(dir.file("w/mnt/next"))
        try daemon.waitFor("next") { $0.isEvent("inotify", "close_write", key: dir.file("w/mnt/next")) }
        #expect(daemon.stop() == 0)
    }

    /// kevd must not hold a file system below a root busy: an admin's plain `umount` works while it runs, and the
    /// file system mounted there again is watched (a new file system: a new mark, though on the same mount point).
    @Test("fanotify: a file system below the root can be unmounted while kevd runs, and mounted again is watched",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func unmountAndRemount() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/mnt"))
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.file("w/mnt")])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("w/mnt")]) }
        let daemon = try FileBackend.fanotify.start(dir)
        try writeFile(dir.file("w/mnt/first"))
        try daemon.waitFor("first") { $0.isEvent("inotify", "close_write", key: dir.file("w/mnt/first")) }
        // Not lazy: this fails with EBUSY if kevd keeps anything open on it.
        try run(["/bin/umount", dir.file("w/mnt")])
        let client = try RawClient(dir.file("state/kevd.sock"))
        func marked() throws -> Int? {
            let status = try client.request(#"{"op":"status"}"#)
            return ((status["sources"] as? [String: Any])?["fanotify"] as? [String: Any])?["file_systems"] as? Int
        }
        _ = try waitUntil("the unmounted file system forgotten", timeout: 30) { try marked() == 1 ? true : nil }
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.file("w/mnt")])
        _ = try waitUntil("the new file system marked", timeout: 30) { try marked() == 2 ? true : nil }
        try writeFile(dir.file("w/mnt/second"))
        try daemon.waitFor("second") { $0.isEvent("inotify", "close_write", key: dir.file("w/mnt/second")) }
        #expect(daemon.stop() == 0)
    }

    @Test("a reload adds a root and drops one", arguments: FileBackend.allCases)
    func reload(backend: FileBackend) throws {
        try backend.requireRunnable()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("x"))
        let daemon = try backend.start(dir)
        try backend.config("x").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("reloaded") { $0.isEvent("kevd", "reloaded", key: "config") }
        try writeFile(dir.file("w/dropped"))
        try writeFile(dir.file("x/added"))
        let added = try daemon.waitFor("create in the new root") { $0.isEvent("inotify", "close_write", key: dir.file("x/added")) }
        #expect(added.data["watch"] as? String == dir.file("x"))
        #expect(!daemon.received.contains { $0.key == dir.file("w/dropped") })
        #expect(daemon.stop() == 0)
    }

    /// Bind mounts of the root's own file system: one below a root, and a root that is itself a bind mount of a
    /// directory elsewhere. A change is reported under the root's path whichever path made it (inotify watches the
    /// inode; fanotify names the directory through the mount below the root).
    @Test("bind mounts: a change through the bind or its source is reported under the root's path",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason), arguments: FileBackend.allCases)
    func bindMounts(backend: FileBackend) throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        let unmount = try backend.quiet(dir)
        defer { unmount() }
        for name in ["w", "w/bind", "outside", "data", "view"] { try makeDirectory(dir.file(name)) }
        try run(["/bin/mount", "--bind", dir.file("outside"), dir.file("w/bind")])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("w/bind")]) }
        try run(["/bin/mount", "--bind", dir.file("data"), dir.file("view")])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("view")]) }
        let config = backend.config("w") + "\n[[watch]]\npath = \"view\"\nrecursive = true\nbackend = \"\(backend.rawValue)\"\n"
        let daemon = try DaemonProcess(config: config, in: dir)
        let started = try daemon.waitFor("started", timeout: 60) { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == backend.rawValue)
        try writeFile(dir.file("w/bind/through-bind"))
        try daemon.waitFor("through the bind") { $0.isEvent("inotify", "close_write", key: dir.file("w/bind/through-bind")) }
        try writeFile(dir.file("outside/through-source"))
        try daemon.waitFor("through the source, named by the bind") {
            $0.isEvent("inotify", "close_write", key: dir.file("w/bind/through-source"))
        }
        try writeFile(dir.file("data/into-view"))
        let view = try daemon.waitFor("a root that is a bind mount") {
            $0.isEvent("inotify", "close_write", key: dir.file("view/into-view"))
        }
        #expect(view.data["watch"] as? String == dir.file("view"))
        #expect(!daemon.received.contains { ($0.key ?? "").hasPrefix(dir.file("outside/")) || ($0.key ?? "").hasPrefix(dir.file("data/")) })
        #expect(daemon.stop() == 0)
    }

    @Test("a tmpfs mounted under the root is watched too", .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason),
        arguments: FileBackend.allCases)
    func mountBelowRoot(backend: FileBackend) throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("w/mnt"))
        try run(["/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.file("w/mnt")])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("w/mnt")]) }
        try makeDirectory(dir.file("w/mnt/inner"))
        let daemon = try backend.start(dir)
        try writeFile(dir.file("w/mnt/inner/on-tmpfs"))
        let create = try daemon.waitFor("create on the tmpfs") {
            $0.isEvent("inotify", "create", key: dir.file("w/mnt/inner/on-tmpfs"))
        }
        #expect(create.data["watch"] as? String == dir.file("w"))
        try daemon.waitFor("close_write on the tmpfs") {
            $0.isEvent("inotify", "close_write", key: dir.file("w/mnt/inner/on-tmpfs"))
        }
        // And the root's own file system (/tmp's: ext4 here, where handles are ext4's).
        try makeDirectory(dir.file("w/disk"))
        try writeFile(dir.file("w/disk/on-disk"))
        try daemon.waitFor("create on the root's file system") {
            $0.isEvent("inotify", "create", key: dir.file("w/disk/on-disk"))
        }
        rename(dir.file("w/mnt/inner/on-tmpfs"), dir.file("w/mnt/moved"))
        let moved = try daemon.waitFor("moved on the tmpfs") { $0.isEvent("inotify", "moved", key: dir.file("w/mnt/moved")) }
        #expect(moved.data["from"] as? String == dir.file("w/mnt/inner/on-tmpfs"))
        #expect(daemon.stop() == 0)
    }
}

@Suite("file backends: choosing one")
struct FileBackendChoiceTests {
    @Test("not root: auto and fanotify fall back to inotify, and say why", .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func fallbackWhenNotRoot() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        chmod(dir.path, 0o755)
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("x"))
        try makeDirectory(dir.file("state"))
        try run(["/bin/chown", "nobody:nogroup", dir.file("state")])
        let config = """
            [daemon]
            state_dir = "state"
            socket = "state/kevd.sock"
            log_level = "warning"

            [[watch]]
            path = "w"
            recursive = true

            [[watch]]
            path = "x"
            backend = "fanotify"
            """
        let launcher = ["/usr/bin/setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
        let daemon = try DaemonProcess(config: config, in: dir, launcher: launcher)
        let started = try daemon.waitFor("started") { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == "inotify")
        #expect((started.data["fanotify_fallback"] as? String)?.contains("not root") == true, "\(started)")
        // The explicit request that could not be met is an error, naming the path.
        let error = try daemon.waitFor("fallback error") { $0.isEvent("kevd", "error", key: "fanotify") }
        #expect((error.data["paths"] as? String)?.contains(dir.file("x")) == true, "\(error)")
        // And the roots are watched all the same.
        try writeFile(dir.file("w/f"))
        try writeFile(dir.file("x/g"))
        try daemon.waitFor("create in w") { $0.isEvent("inotify", "create", key: dir.file("w/f")) }
        try daemon.waitFor("create in x") { $0.isEvent("inotify", "create", key: dir.file("x/g")) }
        #expect(daemon.stop() == 0)
    }

    /// Root without CAP_SYS_ADMIN (a container, a unit with a capability bounding set): fanotify_init works (Linux
    /// 5.13 lets anyone have a notification group) but the file-system mark gives EPERM; the root goes to inotify
    /// and the reason names the missing capability.
    @Test("root without CAP_SYS_ADMIN: auto falls back to inotify, and names the missing permission",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func fallbackWithoutSysAdmin() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let launcher = ["/usr/bin/setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin"]
        let daemon = try DaemonProcess(config: watchConfig("w", backend: nil), in: dir, launcher: launcher)
        let started = try daemon.waitFor("started", timeout: 60) { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == "inotify")
        let reason = started.data["fanotify_fallback"] as? String ?? ""
        #expect(reason.contains("not permitted") && reason.contains("CAP_SYS_ADMIN"), "\(reason)")
        try writeFile(dir.file("w/f"))
        let create = try daemon.waitFor("create") { $0.isEvent("inotify", "create", key: dir.file("w/f")) }
        #expect(create.data["pid"] == nil)
        #expect(daemon.stop() == 0)
    }

    /// overlayfs refuses a file-system mark (EOPNOTSUPP): that root alone goes to inotify, and kevd says so.
    @Test("root: a root on overlayfs falls back to inotify by itself, and says why",
        .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func overlayFallsBack() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        for name in ["w", "lower", "upper", "work", "ovl"] { try makeDirectory(dir.file(name)) }
        try run([
            "/bin/mount", "-t", "overlay", "overlay", "-o",
            "lowerdir=\(dir.file("lower")),upperdir=\(dir.file("upper")),workdir=\(dir.file("work"))", dir.file("ovl"),
        ])
        defer { _ = try? run(["/bin/umount", "-l", dir.file("ovl")]) }
        let daemon = try DaemonProcess(
            config: watchConfig("w", backend: nil) + "\n[[watch]]\npath = \"ovl\"\nbackend = \"fanotify\"\n", in: dir)
        let started = try daemon.waitFor("started", timeout: 60) { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == "fanotify+inotify")
        let fallback = started.data["fanotify_fallback"] as? String ?? ""
        #expect(fallback.contains(dir.file("ovl")), "\(started)")
        // The explicit request that could not be met is an error naming the root.
        let error = try daemon.waitFor("fallback error") { $0.isEvent("kevd", "error", key: "fanotify") }
        #expect(error.data["paths"] as? String == dir.file("ovl"), "\(error)")
        // Both roots report: the overlay through inotify (no pid), the other through fanotify (pid).
        try writeFile(dir.file("ovl/f"))
        let onInotify = try daemon.waitFor("create on the overlay") { $0.isEvent("inotify", "create", key: dir.file("ovl/f")) }
        #expect(onInotify.data["pid"] == nil)
        try writeFile(dir.file("w/g"))
        let onFanotify = try daemon.waitFor("create in w") { $0.isEvent("inotify", "create", key: dir.file("w/g")) }
        #expect(onFanotify.data["pid"] as? Int == Int(getpid()))
        #expect(daemon.stop() == 0)
    }

    @Test("root: auto is fanotify, inotify when asked", .enabled(if: Root.shouldRun, FileBackend.rootOnlyReason))
    func autoIsFanotifyAsRoot() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try makeDirectory(dir.file("x"))
        let daemon = try DaemonProcess(
            config: watchConfig("w", backend: nil) + "\n[[watch]]\npath = \"x\"\nbackend = \"inotify\"\n", in: dir)
        let started = try daemon.waitFor("started") { $0.isEvent("kevd", "started") }
        #expect(started.data["watch_backend"] as? String == "fanotify+inotify")
        #expect(started.data["fanotify_fallback"] == nil)
        try writeFile(dir.file("w/f"))
        let onFanotify = try daemon.waitFor("create in w") { $0.isEvent("inotify", "create", key: dir.file("w/f")) }
        #expect(onFanotify.data["pid"] as? Int == Int(getpid()))
        try writeFile(dir.file("x/g"))
        let onInotify = try daemon.waitFor("create in x") { $0.isEvent("inotify", "create", key: dir.file("x/g")) }
        #expect(onInotify.data["pid"] == nil)
        #expect(daemon.stop() == 0)
    }
}
