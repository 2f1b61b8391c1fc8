import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `[[timer]] persistent = true`: a real every-minute cron timer, kevd SIGKILLed right after a fire and started
/// again after the next minute boundary. The journal is the only record of the last fire (no stamp file), so
/// what a kill left in it is what counts.
///
/// The first run names the same timers with `every = "1s"`: a fire is journaled a second after start instead of
/// at the next minute boundary (cron has no seconds field), and the fold takes a timer's last fire whatever
/// schedule made it, as systemd's stamp file does. That halves the test (about 30 s on average, at most about
/// 65 s, against 60–120 s with a cron first run); the kill, the minute boundary and the second run's cron timer
/// are as real as before.
@Suite("persistent cron timers", .serialized)
struct TimerCatchUpTests {
    /// Two timers of the same schedule, the first persistent when `persistent` (an `every` timer cannot be).
    static func config(_ schedule: String, persistent: Bool) -> String {
        """
        [daemon]
        state_dir = "state"
        socket = "state/kevd.sock"
        [[timer]]
        name = "minutely"
        \(schedule)
        persistent = \(persistent)
        [[timer]]
        name = "forgetful"
        \(schedule)
        """
    }
    static let everySecond = config("every = \"1s\"", persistent: false)
    static let everyMinute = config("cron = \"* * * * *\"", persistent: true)

    static func unixSeconds(_ rfc3339: Any?, rounding: FloatingPointRoundingRule = .toNearestOrAwayFromZero) -> Int64? {
        guard let text = rfc3339 as? String else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970.rounded(rounding)) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970.rounded(rounding)) }
    }

    /// `sources.timer_catchup` of the status reply.
    static func foldStatus(_ dir: TemporaryDirectory) throws -> [String: Any]? {
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        guard let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            let sources = reply["sources"] as? [String: Any]
        else { return nil }
        return sources["timer_catchup"] as? [String: Any]
    }

    /// The last `timer`/`fired` event of `name` that the journal holds.
    static func lastJournaledFire(_ dir: TemporaryDirectory, _ name: String) throws -> [String: Any]? {
        let journal = try kevctl(["journal", "--state-dir", dir.file("state"), "source=timer"])
        return journal.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.last { $0.isEvent("timer", "fired", key: name) }
    }

    @Test(
        "a minute passed while kevd was killed: it fires once at start with catchup and missed = 1; without persistent, nothing",
        .timeLimit(.minutes(3)))
    func killedAcrossAMinute() throws {
        let dir = try TemporaryDirectory()
        // Run 1: both timers fire (every second); kevd is killed right after the first fire it reports.
        let first = try DaemonProcess(config: Self.everySecond, in: dir)
        try first.waitFor("the first live fire", timeout: 20) { $0.isEvent("timer", "fired", key: "minutely") }
        try first.waitFor("the twin's first live fire", timeout: 20) { $0.isEvent("timer", "fired", key: "forgetful") }
        first.signal(SIGKILL)
        first.process.waitUntilExit()
        // What counts is the last fire the kill left in the journal (the fold truncates to whole seconds).
        let live = try #require(try Self.lastJournaledFire(dir, "minutely"))
        #expect(live.data["catchup"] == nil)
        let lastScheduled = try #require(Self.unixSeconds(live.data["scheduled"], rounding: .down))
        // kevd is down across the next minute boundary (and a second more, so the boundary is truly past).
        let missedMinute = (lastScheduled / 60 + 1) * 60
        _ = try waitUntil("the next minute boundary to pass with kevd down", timeout: 70) {
            Int64(Date().timeIntervalSince1970) > missedMinute ? true : nil
        }

        // Run 2, now with the cron schedule: the persistent timer fires once, at start, naming what it missed;
        // the other timer (a fire in the journal too, but not persistent) does not.
        let second = try DaemonProcess(config: Self.everyMinute, in: dir)
        let catchUp = try second.waitFor("the catch-up fire") { $0.isEvent("timer", "fired", key: "minutely") }
        #expect(catchUp.data["catchup"] as? Bool == true)
        #expect(catchUp.data["missed"] as? Int == 1)
        #expect(Self.unixSeconds(catchUp.data["scheduled"]) == missedMinute)
        #expect(Self.unixSeconds(catchUp.data["last_fired"]) == lastScheduled)
        #expect(try Self.foldStatus(dir)?["caught_up"] as? Int == 1)
        // Seen before the next live fire: the catch-up happens at start, not at the next boundary.
        let now = Int64(Date().timeIntervalSince1970)
        #expect(now < missedMinute + 60, "the catch-up came at the next minute, not at start")
        #expect(!second.received.contains { $0.isEvent("timer", "fired", key: "forgetful") })
        #expect(second.stop() == 0)

        // Run 3 in the same minute: the catch-up fire is itself the last fire, so nothing is caught up twice.
        let secondsLeft = missedMinute + 60 - Int64(Date().timeIntervalSince1970)
        try #require(secondsLeft > 5, "run 3 needs a few seconds of the same minute; the machine is too slow")
        let third = try DaemonProcess(config: Self.everyMinute, in: dir)
        // The fold reads the journal on its own thread; `status` says when its result was applied.
        let caughtUp = try waitUntil("the start-up fold to be done") { () -> Int? in
            guard let fold = try Self.foldStatus(dir), fold["done"] as? Bool == true else { return nil }
            return fold["caught_up"] as? Int
        }
        #expect(caughtUp == 0)
        #expect(!third.received.contains { $0.isEvent("timer", "fired", key: "minutely") && $0.data["catchup"] as? Bool == true })
        #expect(third.stop() == 0)
    }

    @Test(
        "a checkpoint that cannot be saved (no room in its directory) is reported once, retried at each tick, and saved once there is room",
        .enabled(if: Root.shouldRun, Root.reason), .timeLimit(.minutes(2)))
    func checkpointNotSaved() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("state"))
        try makeDirectory(dir.file("state/catchup"))
        // `state/catchup` a tmpfs of one inode (its own root) in kevd's private mount namespace: no file can be
        // made there (ENOSPC), the journal beside it is unaffected.
        let config = Self.everyMinute.replacingOccurrences(
            of: "socket = \"state/kevd.sock\"", with: "socket = \"state/kevd.sock\"\nstats_interval = \"200ms\"")
            + "\n[journal]\nretention_interval = \"1s\"\n"
        let daemon = try DaemonProcess(
            config: config, in: dir, launcher: tmpfsLauncher(mountingOn: dir.file("state/catchup"), bytes: 65536, inodes: 1))
        let error = try daemon.waitFor("the checkpoint's error", timeout: 30) {
            $0.isEvent("kevd", "error", key: "catchup")
        }
        #expect((error.data["error"] as? String ?? "").contains("No space left on device"), "\(error)")
        #expect(try Self.foldStatus(dir)?["checkpoint"] is NSNull)
        // Retried at each 1 s tick meanwhile (stderr shows each attempt), reported once: 12 stats at 200 ms.
        let errorSeq = error["seq"] as? Int ?? 0
        _ = try daemon.waitForCount("12 stats intervals after the error", count: 12) {
            $0.isEvent("kevd", "stats") && ($0["seq"] as? Int ?? 0) > errorSeq
        }
        #expect(try Self.foldStatus(dir)?["checkpoint"] is NSNull)
        // Room again: the next tick saves it.
        try run(["/usr/bin/nsenter", "--target", "\(daemon.pid)", "--mount", "/bin/mount", "-o", "remount,nr_inodes=16", dir.file("state/catchup")])
        let saved = try waitUntil("the checkpoint to be saved", timeout: 30) { () -> UInt64? in
            (try Self.foldStatus(dir)?["checkpoint"] as? NSNumber)?.uint64Value
        }
        #expect(saved > 0)
        #expect(FileManager.default.fileExists(atPath: "/proc/\(daemon.pid)/root" + dir.file("state/catchup/timer")))
        #expect(daemon.received.filter { $0.isEvent("kevd", "error", key: "catchup") }.count == 1)
        #expect(daemon.stop() == 0)
        let attempts = daemon.finalStderr().components(separatedBy: "catch-up checkpoint not saved").count - 1
        #expect(attempts >= 2, "the save was retried at the ticks while it failed")
    }
}
