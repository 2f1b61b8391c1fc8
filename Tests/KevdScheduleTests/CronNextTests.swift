import KevdTestSupport
import Testing
@testable import KevdSchedule

@Suite("Cron next() in UTC")
struct CronNextUTCTests {
    struct Vector: CustomTestStringConvertible, Sendable {
        let expression: String
        let after: Int64
        let expected: Int64?
        var testDescription: String { "\(expression) after \(iso(after))" }
    }

    static let vectors: [Vector] = [
        // Every 15 minutes, including strictness at an exact match and rolling over a year.
        Vector(expression: "*/15 * * * *", after: utc(2024, 1, 1), expected: utc(2024, 1, 1, 0, 15)),
        Vector(expression: "*/15 * * * *", after: utc(2024, 1, 1, 0, 7, 30), expected: utc(2024, 1, 1, 0, 15)),
        Vector(expression: "*/15 * * * *", after: utc(2024, 1, 1, 0, 14, 59), expected: utc(2024, 1, 1, 0, 15)),
        Vector(expression: "*/15 * * * *", after: utc(2024, 12, 31, 23, 59), expected: utc(2025, 1, 1)),
        Vector(expression: "* * * * *", after: utc(2024, 5, 5, 12, 34, 56), expected: utc(2024, 5, 5, 12, 35)),
        Vector(expression: "* * * * *", after: utc(2024, 5, 5, 12, 35), expected: utc(2024, 5, 5, 12, 36)),
        // Weekdays at nine: Friday after nine goes to Monday.
        Vector(expression: "0 9 * * 1-5", after: utc(2024, 3, 8, 10), expected: utc(2024, 3, 11, 9)),
        Vector(expression: "0 9 * * mon-fri", after: utc(2024, 3, 8, 8, 59), expected: utc(2024, 3, 8, 9)),
        Vector(expression: "0 9 * * MON-FRI", after: utc(2024, 3, 9, 9), expected: utc(2024, 3, 11, 9)),
        // First of the month.
        Vector(expression: "0 0 1 * *", after: utc(2024, 1, 15), expected: utc(2024, 2, 1)),
        Vector(expression: "0 0 1 * *", after: utc(2024, 12, 1), expected: utc(2025, 1, 1)),
        Vector(expression: "@monthly", after: utc(2024, 2, 29, 23, 59, 59), expected: utc(2024, 3, 1)),
        // The 31st skips short months.
        Vector(expression: "0 0 31 * *", after: utc(2024, 4, 1), expected: utc(2024, 5, 31)),
        Vector(expression: "59 23 31 12 *", after: utc(2024, 12, 31, 23, 59), expected: utc(2025, 12, 31, 23, 59)),
        // February 29th waits for a leap year, including the skipped century year 2100.
        Vector(expression: "0 0 29 2 *", after: utc(2024, 3, 1), expected: utc(2028, 2, 29)),
        Vector(expression: "0 0 29 2 *", after: utc(2023, 1, 1), expected: utc(2024, 2, 29)),
        Vector(expression: "0 0 29 2 *", after: utc(2097, 3, 1), expected: utc(2104, 2, 29)),
        Vector(expression: "0 0 29 feb *", after: utc(1999, 1, 1), expected: utc(2000, 2, 29)),
        // Feb 29 that is also a Sunday (day-of-week starts with '*', so AND): 2032.
        Vector(expression: "0 0 29 2 */7", after: utc(2024, 3, 1), expected: utc(2032, 2, 29)),
        // Vixie OR rule: the 13th or any Friday. Oct 13 2024 is a Sunday.
        Vector(expression: "0 0 13 * 5", after: utc(2024, 10, 11), expected: utc(2024, 10, 13)),
        Vector(expression: "0 0 13 * 5", after: utc(2024, 10, 13), expected: utc(2024, 10, 18)),
        Vector(expression: "0 0 13 * fri", after: utc(2024, 9, 1), expected: utc(2024, 9, 6)),
        Vector(expression: "30 4 1,15 * 5", after: utc(2024, 9, 7), expected: utc(2024, 9, 13, 4, 30)),
        Vector(expression: "30 4 1,15 * 5", after: utc(2024, 9, 13, 4, 30), expected: utc(2024, 9, 15, 4, 30)),
        // OR rule with an impossible day-of-month still fires on the weekday.
        Vector(expression: "0 0 30 feb mon", after: utc(2024, 1, 1), expected: utc(2024, 2, 5)),
        // AND when day-of-month starts with '*': odd days that are Mondays (Sep 2024 Mondays: 2, 9, 16, 23, 30).
        Vector(expression: "0 0 */2 * 1", after: utc(2024, 9, 1), expected: utc(2024, 9, 9)),
        Vector(expression: "0 0 */2 * 1", after: utc(2024, 9, 9), expected: utc(2024, 9, 23)),
        // Sunday as 0, 7 and a name (Sep 8 2024 is a Sunday).
        Vector(expression: "0 12 * * 0", after: utc(2024, 9, 2), expected: utc(2024, 9, 8, 12)),
        Vector(expression: "0 12 * * 7", after: utc(2024, 9, 2), expected: utc(2024, 9, 8, 12)),
        Vector(expression: "0 12 * * Sun", after: utc(2024, 9, 2), expected: utc(2024, 9, 8, 12)),
        Vector(expression: "0 12 * * 6-7", after: utc(2024, 9, 2), expected: utc(2024, 9, 7, 12)),
        // Month names and lists.
        Vector(expression: "0 0 1 jun,dec *", after: utc(2024, 7, 1), expected: utc(2024, 12, 1)),
        Vector(expression: "15 10 * jan-mar *", after: utc(2024, 3, 31, 10, 15), expected: utc(2025, 1, 1, 10, 15)),
        // Macros.
        Vector(expression: "@hourly", after: utc(2024, 5, 5, 10), expected: utc(2024, 5, 5, 11)),
        Vector(expression: "@daily", after: utc(2024, 5, 5, 10), expected: utc(2024, 5, 6)),
        Vector(expression: "@midnight", after: utc(2024, 12, 31, 0, 0, 1), expected: utc(2025, 1, 1)),
        Vector(expression: "@weekly", after: utc(2024, 9, 4), expected: utc(2024, 9, 8)),
        Vector(expression: "@yearly", after: utc(2024, 6, 1), expected: utc(2025, 1, 1)),
        Vector(expression: "@annually", after: utc(2024, 1, 1), expected: utc(2025, 1, 1)),
        // Steps and ranges in several fields at once.
        Vector(expression: "10-50/20 8-18/5 * * *", after: utc(2024, 1, 1, 18, 51), expected: utc(2024, 1, 2, 8, 10)),
        Vector(expression: "10-50/20 8-18/5 * * *", after: utc(2024, 1, 1, 13, 30), expected: utc(2024, 1, 1, 13, 50)),
        // Before 1970: floor division, not truncation.
        Vector(expression: "0 0 1 1 *", after: utc(1969, 6, 1), expected: 0),
        Vector(expression: "0 0 1 1 *", after: -1, expected: 0),
        Vector(expression: "*/15 * * * *", after: -600, expected: 0),
        Vector(expression: "*/15 * * * *", after: -901, expected: -900),
        Vector(expression: "0 0 29 2 *", after: utc(1896, 3, 1), expected: utc(1904, 2, 29)),
        // Never.
        Vector(expression: "0 0 30 2 *", after: utc(2024, 1, 1), expected: nil),
        Vector(expression: "* * * * *", after: 1 << 51, expected: nil),
    ]

    @Test("vectors", arguments: vectors)
    func vector(_ v: Vector) throws {
        let schedule = try CronSchedule(parsing: v.expression)
        let got = schedule.next(after: v.after, timeZone: .utc)
        #expect(got == v.expected, "\(v.expression) after \(iso(v.after)): got \(iso(got)), want \(iso(v.expected))")
    }

    @Test(
        "impossible schedules return nil quickly",
        arguments: ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 */7", "* * 30,31 feb *", "0 0 31 sep,nov */3"]
    )
    func impossible(expression: String) throws {
        let schedule = try CronSchedule(parsing: expression)
        let clock = ContinuousClock()
        var result: Int64? = 0
        let elapsed = clock.measure {
            result = schedule.next(after: utc(2024, 1, 1), timeZone: .utc)
            #expect(schedule.next(after: utc(2024, 1, 1), timeZone: .local) == nil)
        }
        #expect(result == nil)
        #expect(elapsed < .milliseconds(50), "took \(elapsed)")
    }

    @Test("sparse but possible schedules are found quickly")
    func sparseIsFast() throws {
        let clock = ContinuousClock()
        // Feb 29 on a Sunday is at worst 40 years away; a leap day that is also a Monday, OR-ed, is easy.
        let schedule = try CronSchedule(parsing: "59 23 29 2 */7")
        var result: Int64?
        let elapsed = clock.measure { result = schedule.next(after: utc(2033, 1, 1), timeZone: .utc) }
        #expect(result == utc(2060, 2, 29, 23, 59))
        #expect(elapsed < .milliseconds(50), "took \(elapsed)")
    }

    @Test("successive calls walk the schedule in order")
    func successive() throws {
        let schedule = try CronSchedule(parsing: "0 9 * * mon-fri")
        var t = utc(2024, 3, 7, 12)  // Thursday
        var fires: [Int64] = []
        for _ in 0..<4 {
            guard let n = schedule.next(after: t, timeZone: .utc) else { break }
            fires.append(n)
            t = n
        }
        #expect(fires == [utc(2024, 3, 8, 9), utc(2024, 3, 11, 9), utc(2024, 3, 12, 9), utc(2024, 3, 13, 9)])
    }
}

@Suite("Cron next() against brute force")
struct CronBruteForceTests {
    /// Scans every minute from `after` (exclusive) through `limit`, skipping only days on which the day-level rule
    /// (month, day-of-month/day-of-week) already fails, using glibc's calendar.
    static func naiveNext(_ cron: GeneratedCron, after: Int64, limit: Int64) -> Int64? {
        var day = (after >= 0 ? after / 86_400 : (after - 86_399) / 86_400) * 86_400
        while day <= limit {
            let f = calendarFields(day, local: false)
            if cron.dayMatches(day: Int(f.tm_mday), month: Int(f.tm_mon) + 1, weekday: Int(f.tm_wday)) {
                for minuteOfDay in 0..<1440 {
                    let t = day + Int64(minuteOfDay) * 60
                    guard t > after else { continue }
                    guard t <= limit else { return nil }
                    if cron.minutes.contains(minuteOfDay % 60), cron.hours.contains(minuteOfDay / 60) { return t }
                }
            }
            day += 86_400
        }
        return nil
    }

    @Test("200 random expressions, 5 successive fires each, against a minute-by-minute scan")
    func randomUTC() throws {
        let seed: UInt64 = 0x5EED_CAFE
        var rng = SplitMix64(seed: seed)
        var compared = 0
        var nils = 0
        for index in 0..<200 {
            let cron = GeneratedCron.random(using: &rng)
            let schedule = try CronSchedule(parsing: cron.text)
            // Start anywhere from 1960 to 2060, sometimes exactly on a minute so strictness is exercised.
            var t = Int64.random(in: utc(1960, 1, 1)...utc(2060, 1, 1), using: &rng)
            if Bool.random(using: &rng) { t -= ((t % 60) + 60) % 60 }
            let limit = t + 9 * 366 * 86_400
            for step in 0..<5 {
                let want = Self.naiveNext(cron, after: t, limit: limit)
                let got = schedule.next(after: t, timeZone: .utc)
                if let want {
                    let context = "seed \(seed) #\(index).\(step) '\(cron)' after \(iso(t))"
                    #expect(got == want, "\(context): \(iso(got)) vs \(iso(want))")
                    compared += 1
                    t = want
                } else {
                    // Nothing within nine years: next() must agree there is nothing that soon.
                    #expect(got == nil || got! > limit, "seed \(seed) #\(index) '\(cron)' after \(iso(t)): \(iso(got))")
                    nils += 1
                    break
                }
            }
        }
        // Guard against a generator that only produces never-firing schedules, which would test nothing.
        #expect(compared > 600, "only \(compared) comparisons")
        #expect(nils > 0, "generator never produced a sparse or impossible schedule")
    }

    @Test("the schedule agrees with its own generator on parse")
    func parsedSetsMatchGenerator() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<500 {
            let cron = GeneratedCron.random(using: &rng)
            let s = try CronSchedule(parsing: cron.text)
            func bits(_ set: Set<Int>) -> UInt64 { set.reduce(0) { $0 | (1 << UInt64($1)) } }
            #expect(s.minutes == bits(cron.minutes), "\(cron)")
            #expect(s.hours == bits(cron.hours), "\(cron)")
            #expect(s.daysOfMonth == bits(cron.daysOfMonth), "\(cron)")
            #expect(s.months == bits(cron.months), "\(cron)")
            #expect(s.daysOfWeek == bits(cron.daysOfWeek), "\(cron)")
            #expect(s.dayOfMonthStar == cron.dayOfMonthStar && s.dayOfWeekStar == cron.dayOfWeekStar, "\(cron)")
        }
    }

    @Test("calendar arithmetic matches glibc over ±3000 years")
    func civilRoundTrip() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<20_000 {
            let days = Int64.random(in: -1_100_000...1_100_000, using: &rng)
            let f = calendarFields(days * 86_400, local: false)
            let civil = civilFromDays(days)
            #expect(civil.year == Int64(f.tm_year) + 1900, "\(days)")
            #expect(civil.month == Int(f.tm_mon) + 1 && civil.day == Int(f.tm_mday), "\(days)")
            #expect(daysFromCivil(civil.year, civil.month, civil.day) == days)
        }
    }
}
