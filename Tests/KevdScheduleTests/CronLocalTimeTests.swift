import Foundation
import KevdTestSupport
import Testing
@testable import KevdSchedule

/// Local-time behaviour across DST changes. TZ is process-wide, so these run one at a time and restore TZ after
/// each test; the UTC suites never read TZ and can run alongside.
@Suite("Cron next() in local time", .serialized)
struct CronLocalTimeTests {
    /// Fails (rather than skips) with a clear message when tzdata is absent: glibc silently falls back to UTC for
    /// an unknown TZ, which would make every DST expectation below fail confusingly or, worse, pass vacuously.
    func requireZone(_ zone: String, file: String = #filePath) throws {
        let path = "/usr/share/zoneinfo/\(zone)"
        try #require(
            FileManager.default.fileExists(atPath: path),
            "tzdata is missing (\(path) not found): install it with `apt-get install tzdata`"
        )
    }

    func next(_ expression: String, after: Int64) throws -> Int64? {
        try CronSchedule(parsing: expression).next(after: after, timeZone: .local)
    }

    @Test("Europe/Berlin: TZ is honoured on an ordinary day")
    func berlinOrdinary() throws {
        try requireZone("Europe/Berlin")
        try withTimeZone("Europe/Berlin") { () throws in
            // Sanity: glibc really loaded the zone (CEST is UTC+2 in July).
            let julyOffset = calendarFields(utc(2024, 7, 1, 12), local: true).tm_gmtoff
            try #require(julyOffset == 7200, "TZ=Europe/Berlin not in effect")
            // 09:00 CEST = 07:00Z; 09:00 CET = 08:00Z.
            #expect(try next("0 9 * * 1-5", after: utc(2024, 7, 1)) == utc(2024, 7, 1, 7))
            #expect(try next("0 9 * * 1-5", after: utc(2024, 1, 5, 8)) == utc(2024, 1, 8, 8))
            // Midnight local is the previous day in UTC.
            #expect(try next("@daily", after: utc(2024, 7, 1, 12)) == utc(2024, 7, 1, 22))
            #expect(try next("0 0 1 1 *", after: utc(2024, 6, 1)) == utc(2024, 12, 31, 23))
        }
    }

    @Test("Europe/Berlin spring forward: a wall time in the gap fires at the transition")
    func berlinSpringForward() throws {
        try requireZone("Europe/Berlin")
        try withTimeZone("Europe/Berlin") { () throws in
            // 2024-03-31: 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:00-02:59 do not exist.
            #expect(try next("30 2 * * *", after: utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 1))
            // The following day 02:30 exists again (CEST, 00:30Z).
            #expect(try next("30 2 * * *", after: utc(2024, 3, 31, 1)) == utc(2024, 4, 1, 0, 30))
            // Several gap times collapse into one firing at 03:00 CEST, then the schedule continues normally.
            #expect(try next("*/15 * * * *", after: utc(2024, 3, 31, 0, 50)) == utc(2024, 3, 31, 1))
            #expect(try next("*/15 * * * *", after: utc(2024, 3, 31, 1)) == utc(2024, 3, 31, 1, 15))
            #expect(try next("0,30 2 * * *", after: utc(2024, 3, 31, 0, 59)) == utc(2024, 3, 31, 1))
            #expect(try next("0,30 2 * * *", after: utc(2024, 3, 31, 1)) == utc(2024, 4, 1, 0))
            // Times just before and just after the gap are unaffected.
            #expect(try next("59 1 * * *", after: utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 0, 59))
            #expect(try next("0 3 * * *", after: utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 1))
            #expect(try next("1 3 * * *", after: utc(2024, 3, 30, 12)) == utc(2024, 3, 31, 1, 1))
            // Only on the transition day: a gap-time job for Sundays in March lands on 03:00 of the last Sunday.
            #expect(try next("30 2 * 3 sun", after: utc(2024, 3, 25)) == utc(2024, 3, 31, 1))
        }
    }

    @Test("Europe/Berlin fall back: a repeated wall time fires once, at its first occurrence")
    func berlinFallBack() throws {
        try requireZone("Europe/Berlin")
        try withTimeZone("Europe/Berlin") { () throws in
            // 2024-10-27: 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:00-02:59 happen twice.
            #expect(try next("30 2 * * *", after: utc(2024, 10, 26, 12)) == utc(2024, 10, 27, 0, 30))
            // Not again at 02:30 CET (01:30Z): the next firing is the following day.
            #expect(try next("30 2 * * *", after: utc(2024, 10, 27, 0, 30)) == utc(2024, 10, 28, 1, 30))
            // Started inside the second pass, the repeated times are already used up.
            #expect(try next("30 2 * * *", after: utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 28, 1, 30))
            #expect(try next("*/15 * * * *", after: utc(2024, 10, 27, 0, 50)) == utc(2024, 10, 27, 2))
            #expect(try next("*/15 * * * *", after: utc(2024, 10, 27, 1, 20)) == utc(2024, 10, 27, 2))
            // Hourly: 02:00 CEST (00:00Z), then 03:00 CET (02:00Z); 02:00 CET is the same wall time again.
            #expect(try next("0 * * * *", after: utc(2024, 10, 26, 23, 30)) == utc(2024, 10, 27, 0))
            #expect(try next("0 * * * *", after: utc(2024, 10, 27, 0)) == utc(2024, 10, 27, 2))
            // 01:59 CEST is before the overlap and 03:00 CET after it.
            #expect(try next("59 1 * * *", after: utc(2024, 10, 26, 12)) == utc(2024, 10, 26, 23, 59))
            #expect(try next("0 3 * * *", after: utc(2024, 10, 26, 12)) == utc(2024, 10, 27, 2))
        }
    }

    @Test("Australia/Lord_Howe: half-hour DST shifts")
    func lordHowe() throws {
        try requireZone("Australia/Lord_Howe")
        try withTimeZone("Australia/Lord_Howe") { () throws in
            // 2024-10-06 02:00 (+10:30) jumps to 02:30 (+11) at 15:30Z on the 5th; 02:00-02:29 do not exist.
            #expect(try next("15 2 * * *", after: utc(2024, 10, 5, 12)) == utc(2024, 10, 5, 15, 30))
            #expect(try next("30 2 * * *", after: utc(2024, 10, 5, 12)) == utc(2024, 10, 5, 15, 30))
            #expect(try next("45 2 * * *", after: utc(2024, 10, 5, 12)) == utc(2024, 10, 5, 15, 45))
            // 2024-04-07 02:00 (+11) falls back to 01:30 (+10:30) at 15:00Z on the 6th; 01:30-01:59 repeat.
            #expect(try next("45 1 * * *", after: utc(2024, 4, 6, 12)) == utc(2024, 4, 6, 14, 45))
            #expect(try next("45 1 * * *", after: utc(2024, 4, 6, 14, 45)) == utc(2024, 4, 7, 15, 15))
        }
    }

    @Test("America/Sao_Paulo 2018: a midnight that does not exist")
    func saoPauloMidnight() throws {
        try requireZone("America/Sao_Paulo")
        try withTimeZone("America/Sao_Paulo") { () throws in
            // 2018-11-04 00:00 (-03) jumped to 01:00 (-02) at 03:00Z: @daily fires at that 01:00.
            #expect(try next("@daily", after: utc(2018, 11, 3, 12)) == utc(2018, 11, 4, 3))
            #expect(try next("@daily", after: utc(2018, 11, 4, 3)) == utc(2018, 11, 5, 2))
            // A day-of-month rule for the 4th still fires on the 4th.
            #expect(try next("0 0 4 11 *", after: utc(2018, 1, 1)) == utc(2018, 11, 4, 3))
        }
    }

    @Test("TZ=UTC in local mode agrees with the UTC mode")
    func localUTCMatchesUTC() throws {
        try withTimeZone("UTC") { () throws in
            var rng = SplitMix64(seed: 99)
            for _ in 0..<200 {
                let cron = GeneratedCron.random(using: &rng)
                let schedule = try CronSchedule(parsing: cron.text)
                let t = Int64.random(in: utc(1990, 1, 1)...utc(2050, 1, 1), using: &rng)
                #expect(schedule.next(after: t, timeZone: .local) == schedule.next(after: t, timeZone: .utc), "\(cron)")
            }
        }
    }

    /// Brute force for local time, written from the documented rule rather than the implementation: an instant u
    /// (on a minute) fires if its wall time matches and that wall time has not been shown before (Berlin repeats at
    /// most one hour), or if the clock jumped forward onto u and a skipped wall minute matches.
    static func naiveLocalNext(_ cron: GeneratedCron, after: Int64, limit: Int64) -> Int64? {
        func wallMatches(_ f: tm) -> Bool {
            cron.matches(
                minute: Int(f.tm_min), hour: Int(f.tm_hour), day: Int(f.tm_mday), month: Int(f.tm_mon) + 1,
                weekday: Int(f.tm_wday)
            )
        }
        func wallSeconds(_ u: Int64) -> Int64 { u + Int64(calendarFields(u, local: true).tm_gmtoff) }
        var u = (after / 60 + 1) * 60
        while u <= limit {
            let f = calendarFields(u, local: true)
            if wallMatches(f), wallSeconds(u - 3600) != wallSeconds(u) { return u }
            let before = wallSeconds(u - 60)
            var skipped = before + 60
            while skipped < wallSeconds(u) {
                if wallMatches(calendarFields(skipped, local: false)) { return u }
                skipped += 60
            }
            u += 60
        }
        return nil
    }

    @Test("Europe/Berlin: random schedules around DST changes against a minute-by-minute scan")
    func berlinBruteForce() throws {
        try requireZone("Europe/Berlin")
        try withTimeZone("Europe/Berlin") { () throws in
            let seed: UInt64 = 0xBE_71_1D
            var rng = SplitMix64(seed: seed)
            let transitions = [
                utc(2023, 3, 26, 1), utc(2023, 10, 29, 1), utc(2024, 3, 31, 1), utc(2024, 10, 27, 1),
                utc(2025, 3, 30, 1), utc(2025, 10, 26, 1),
            ]
            var compared = 0
            for index in 0..<150 {
                var cron = GeneratedCron.random(using: &rng)
                // Make hours around the transitions likely, so gaps and overlaps are actually exercised.
                if Int.random(in: 0..<3, using: &rng) > 0 {
                    let hour = Int.random(in: 1...3, using: &rng)
                    cron.text = cron.text.split(separator: " ").enumerated()
                        .map { $0.offset == 1 ? "\(hour)" : String($0.element) }.joined(separator: " ")
                    cron.hours = [hour]
                }
                let schedule = try CronSchedule(parsing: cron.text)
                let center = transitions.randomElement(using: &rng)!
                var t = center + Int64.random(in: -2 * 86_400...86_400, using: &rng)
                if Bool.random(using: &rng) { t -= t % 60 }
                let limit = t + 4 * 86_400
                for step in 0..<4 {
                    let want = Self.naiveLocalNext(cron, after: t, limit: limit)
                    let got = schedule.next(after: t, timeZone: .local)
                    if let want {
                        let context = "seed \(seed) #\(index).\(step) '\(cron)' after \(iso(t))"
                        #expect(got == want, "\(context): \(iso(got)) vs \(iso(want))")
                        compared += 1
                        t = want
                    } else {
                        let context = "seed \(seed) #\(index) '\(cron)' after \(iso(t))"
                        #expect(got == nil || got! > limit, "\(context): \(iso(got))")
                        break
                    }
                }
            }
            #expect(compared > 150, "only \(compared) comparisons")
        }
    }
}
