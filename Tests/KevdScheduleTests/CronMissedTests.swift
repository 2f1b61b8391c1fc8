import KevdTestSupport
import Testing
@testable import KevdSchedule

@Suite("what a persistent cron timer missed")
struct CronMissedTests {
    @Test("the times strictly after the last fire and up to now are counted, the latest is given")
    func counted() throws {
        let everyQuarter = try CronSchedule(parsing: "*/15 * * * *")
        let missed = everyQuarter.missed(after: utc(2024, 1, 1, 0, 15), upTo: utc(2024, 1, 1, 1, 0), timeZone: .utc)
        // 00:30, 00:45, 01:00 (now itself counts: it is due).
        #expect(missed == .init(count: 3, latest: utc(2024, 1, 1, 1, 0), capped: false))
        // Down for less than a period: nothing missed.
        #expect(everyQuarter.missed(after: utc(2024, 1, 1, 0, 15), upTo: utc(2024, 1, 1, 0, 29, 59), timeZone: .utc) == nil)
        let nightly = try CronSchedule(parsing: "0 3 * * *")
        #expect(
            nightly.missed(after: utc(2024, 3, 1, 3), upTo: utc(2024, 3, 4, 2), timeZone: .utc)
                == .init(count: 2, latest: utc(2024, 3, 3, 3), capped: false))
    }

    @Test("a long outage of an every-minute timer stops counting at the cap, and still names the latest time")
    func capped() throws {
        let everyMinute = try CronSchedule(parsing: "* * * * *")
        let missed = try #require(everyMinute.missed(after: utc(2024, 1, 1), upTo: utc(2025, 1, 1, 0, 0, 30), timeZone: .utc, cap: 1000))
        #expect(missed.count == 1000 && missed.capped)
        #expect(missed.latest == utc(2025, 1, 1))
    }
}
