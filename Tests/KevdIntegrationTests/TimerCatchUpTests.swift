import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `[[timer]] persistent = true`: a real every-minute cron timer, kevd SIGKILLed across a minute boundary and
/// started again. The journal is the only record of the last fire (no stamp file), so what a kill left in it is
/// what counts.
@Suite("persistent cron timers", .serialized)
struct TimerCatchUpTests {
    static func config() -> String {
        """
        [daemon]
        state_dir = "state"
        socket = "state/kevd.sock"
        [[timer]]
        name = "minutely"
        cron = "* * * * *"
        persistent = true
        [[timer]]
        name = "forgetful"
        cron = "* * * * *"
        """
    }

    static func unixSeconds(_ rfc3339: Any?) -> Int64? {
        guard let text = rfc3339 as? String else { return nil }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970.rounded()) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970.rounded()) }
    }

    /// `sources.timer_catchup` of the status reply.
    static func foldStatus(_ dir: TemporaryDirectory) throws -> [String: Any]? {
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        guard let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            let sources = reply["sources"] as? [String: Any]
        else { return nil }
        return sources["timer_catchup"] as? [String: Any]
    }

    @Test(
        "a minute passed while kevd was killed: it fires once at start with catchup and missed = 1; without persistent, nothing",
        .timeLimit(.minutes(4)))
    func killedAcrossAMinute() throws {
        let dir = try TemporaryDirectory()
        // Run 1: the timer's first live fire is journaled; kevd is killed right after it.
        let first = try DaemonProcess(config: Self.config(), in: dir)
        let live = try first.waitFor("the first live fire", timeout: 65) { $0.isEvent("timer", "fired", key: "minutely") }
        let lastScheduled = try #require(Self.unixSeconds(live.data["scheduled"]))
        #expect(live.data["catchup"] == nil)
        first.signal(SIGKILL)
        first.process.waitUntilExit()
        // kevd is down across the next minute boundary (and a second more, so the boundary is truly past).
        let missedMinute = lastScheduled + 60
        _ = try waitUntil("the next minute boundary to pass with kevd down", timeout: 70) {
            Int64(Date().timeIntervalSince1970) > missedMinute ? true : nil
        }

        // Run 2: the persistent timer fires once, at start, naming what it missed; the other timer does not.
        let second = try DaemonProcess(config: Self.config(), in: dir)
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
        let third = try DaemonProcess(config: Self.config(), in: dir)
        // The fold reads the journal on its own thread; `status` says when its result was applied.
        let caughtUp = try waitUntil("the start-up fold to be done") { () -> Int? in
            guard let fold = try Self.foldStatus(dir), fold["done"] as? Bool == true else { return nil }
            return fold["caught_up"] as? Int
        }
        #expect(caughtUp == 0)
        #expect(!third.received.contains { $0.isEvent("timer", "fired", key: "minutely") && $0.data["catchup"] as? Bool == true })
        #expect(third.stop() == 0)
    }
}
