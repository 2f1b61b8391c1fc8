import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Crawls of a big tree (start-up, an overflow rescan) run while kevd goes on serving: `status` is answered,
/// timers fire, and events made meanwhile are reported once.
@Suite("inotify crawls keep the loop serving")
struct InotifyCrawlTests {
    /// 20 × 1,000 directories: a crawl that takes a measurable time (about a second in a debug build here).
    static let branches = 20
    static let leaves = 1_000

    static func makeTree(_ dir: TemporaryDirectory) throws {
        try makeDirectory(dir.file("w"))
        for a in 0..<branches {
            try makeDirectory(dir.file("w/a\(a)"))
            for b in 0..<leaves { try makeDirectory(dir.file("w/a\(a)/b\(b)")) }
        }
    }

    static func config() -> String {
        watchConfig("w") + "\n[[timer]]\nname = \"tick\"\nevery = \"10ms\"\n"
    }

    /// The `sources.inotify.crawl` object of a `status` reply.
    static func crawl(_ reply: [String: Any]) -> [String: Any]? {
        ((reply["sources"] as? [String: Any])?["inotify"] as? [String: Any])?["crawl"] as? [String: Any]
    }

    /// Connects to kevd's socket once it exists (it listens before the crawl starts).
    static func connect(_ socket: String, timeout: Double = 20) throws -> RawClient {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            do {
                return try RawClient(socket)
            } catch {
                if Date() > deadline { throw error }
                usleep(2_000)
            }
        }
    }

    /// Sends `status` until a reply says a crawl runs (`rescan` as given); returns that reply.
    static func statusDuringCrawl(_ client: RawClient, rescan: Bool, timeout: Double = 20) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let reply = try client.request(#"{"op":"status"}"#)
            if let crawl = crawl(reply), crawl["running"] as? Bool == true, crawl["rescan"] as? Bool == rescan {
                return reply
            }
            usleep(1_000)
        }
        throw DaemonProcess.Timeout(what: "a status reply during a crawl (rescan: \(rescan))", seen: 0, stderr: "")
    }

    /// Sends `status` until a reply says no crawl runs; returns that reply.
    static func statusAfterCrawl(_ client: RawClient, timeout: Double = 60) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let reply = try client.request(#"{"op":"status"}"#)
            if let crawl = crawl(reply), crawl["running"] as? Bool == false { return reply }
            usleep(5_000)
        }
        throw DaemonProcess.Timeout(what: "a status reply after the crawl", seen: 0, stderr: "")
    }

    @Test("the start-up crawl and an overflow rescan of 20,000 directories: status answered, timers fire, events once")
    func crawlKeepsServing() throws {
        let dir = try TemporaryDirectory()
        // rm removes the tree in a second; Foundation's removeItem (TemporaryDirectory's deinit) took 45 s.
        defer { _ = try? run(["/bin/rm", "-rf", dir.file("w")]) }
        try Self.makeTree(dir)
        let daemon = try DaemonProcess(config: Self.config(), in: dir, waitForStart: false)
        let client = try Self.connect(dir.file("state/kevd.sock"))

        // Start-up: a status reply while the crawl runs; the root is watched by then.
        let during = try Self.statusDuringCrawl(client, rescan: false)
        #expect((Self.crawl(during)?["queued"] as? Int ?? 0) > 0)
        // Files and a directory with files made while the crawl runs, where kevd already watches.
        var madeDuring: [String] = []
        for i in 0..<50 {
            try writeFile(dir.file("w/during-\(i)"))
            madeDuring.append(dir.file("w/during-\(i)"))
        }
        try makeDirectory(dir.file("w/new"))
        madeDuring.append(dir.file("w/new"))
        for i in 0..<50 {
            try writeFile(dir.file("w/new/f\(i)"))
            madeDuring.append(dir.file("w/new/f\(i)"))
        }
        let started = try daemon.waitFor("kevd started", timeout: 60) { $0.isEvent("kevd", "started") }
        let startedSeq = try #require(started.seq)
        // The loop turned during the crawl: timer events were published before `started`.
        let ticksBefore = daemon.received.filter { $0.isEvent("timer", "fired", key: "tick") && ($0.seq ?? .max) < startedSeq }
        #expect(!ticksBefore.isEmpty, "no timer event before started: the crawl held the loop")
        // Every watch is armed at `started`: a file in the last directory of the tree is reported.
        let last = dir.file("w/a\(Self.branches - 1)/b\(Self.leaves - 1)/after-start")
        try writeFile(last)
        try daemon.waitFor("create in the deepest last directory") { $0.isEvent("inotify", "create", key: last) }
        // What was made during the crawl was reported once each (as a create, real or synthetic).
        try daemon.waitFor("last file made during the crawl") { $0.isEvent("inotify", "create", key: madeDuring.last!) }
        for path in madeDuring {
            let creates = daemon.received.filter { $0.isEvent("inotify", "create", key: path) }
            #expect(creates.count == 1, "\(path): \(creates.count) creates")
        }

        // An overflow: more events than the kernel queue holds while kevd is stopped, then a rescan of the tree.
        daemon.signal(SIGSTOP)
        let limit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "16384") ?? 16384
        // Closes of two files in turn: one event each (the kernel merges only an event equal to the last queued).
        try writeFile(dir.file("w/a0/x"))
        try writeFile(dir.file("w/a0/y"))
        for i in 0..<(limit + 1_000) {
            let fd = open(dir.file(i % 2 == 0 ? "w/a0/x" : "w/a0/y"), O_WRONLY | O_CLOEXEC)
            close(fd)
        }
        try makeDirectory(dir.file("w/a1/made-during-overflow"))
        let before = daemon.received.count
        daemon.signal(SIGCONT)
        let rescanning = try Self.statusDuringCrawl(client, rescan: true)
        let head = try #require(rescanning["head"] as? Int)
        // The overflow is reported when it is found, before the rescan.
        let overflow = try daemon.waitFor("overflow", from: before, timeout: 60) { $0.isEvent("inotify", "overflow") }
        #expect(try #require(overflow.seq) <= head)
        let done = try Self.statusAfterCrawl(client)
        let doneHead = try #require(done["head"] as? Int)
        // A timer fired between a status reply during the rescan and one after it.
        let ticksDuring = daemon.received.filter {
            $0.isEvent("timer", "fired", key: "tick") && ($0.seq ?? 0) > head && ($0.seq ?? .max) <= doneHead
        }
        #expect(!ticksDuring.isEmpty, "no timer event during the rescan: it held the loop")
        // The directory made while events were lost was found by the rescan and reported once, as synthetic.
        let madeDuringOverflow = daemon.received.filter {
            $0.isEvent("inotify", "create", key: dir.file("w/a1/made-during-overflow"))
        }
        #expect(madeDuringOverflow.count == 1)
        #expect(madeDuringOverflow.first?.data["synthetic"] as? Bool == true)
        // The rescan watched the directory made while events were lost.
        try writeFile(dir.file("w/a1/made-during-overflow/after"))
        try daemon.waitFor("create after the rescan", timeout: 30) {
            $0.isEvent("inotify", "create", key: dir.file("w/a1/made-during-overflow/after"))
        }
        #expect(daemon.received.filter { $0.isEvent("inotify", "overflow") }.count == 1)
        #expect(daemon.stop() == 0)
    }

    @Test("systemd's watchdog is pinged while the start-up crawl runs, and READY=1 comes when it is done")
    func watchdogDuringCrawl() throws {
        let dir = try TemporaryDirectory()
        defer { _ = try? run(["/bin/rm", "-rf", dir.file("w")]) }
        try Self.makeTree(dir)
        let notify = try NotifyListener(path: dir.file("notify.sock"))
        // A ping every 20 ms (half of WATCHDOG_USEC); no WATCHDOG_PID: "for this process".
        let daemon = try DaemonProcess(
            config: Self.config(), in: dir, environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "40000"],
            waitForStart: false)
        let ready = try notify.waitFor("READY=1", timeout: 60)
        let started = try daemon.waitFor("kevd started", timeout: 10) { $0.isEvent("kevd", "started") }
        // Besides the ping at start, the loop's watchdog timer fired during the crawl.
        let pingsBefore = notify.messages.prefix(ready.index).filter { NotifyListener.lines($0).contains("WATCHDOG=1") }
        #expect(pingsBefore.count >= 3, "\(pingsBefore.count) pings before READY=1")
        // READY=1 says every watch is armed, like `started`, which reported them all.
        #expect(started.data["inotify_watches"] as? Int == 1 + Self.branches * (1 + Self.leaves))
        #expect(daemon.stop() == 0)
    }
}
