import Foundation
import KevdTestSupport
import Testing

@testable import KevdEvent

@Suite struct RFC3339Tests {
    static let nanosPerSecond: Int64 = 1_000_000_000

    @Test(arguments: [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (-1_000_000_000, "1969-12-31T23:59:59.000000000Z"),
        (-86_400_000_000_000, "1969-12-31T00:00:00.000000000Z"),
        (951_827_696_789_000_000, "2000-02-29T12:34:56.789000000Z"),
        (951_868_800_000_000_000, "2000-03-01T00:00:00.000000000Z"),
        (1_795_417_883_123_456_789, "2026-11-23T07:11:23.123456789Z"),
        (-2_208_988_800_000_000_000, "1900-01-01T00:00:00.000000000Z"),
        (-2_203_891_200_000_000_000, "1900-03-01T00:00:00.000000000Z"),
        (-5_000_000_000_000_000_000, "1811-07-23T15:06:40.000000000Z"),
        (4_107_542_399_999_999_999, "2100-02-28T23:59:59.999999999Z"),
        (Int64.min, "1677-09-21T00:12:43.145224192Z"),
        (Int64.max, "2262-04-11T23:47:16.854775807Z"),
    ] as [(Int64, String)])
    func knownVectors(_ nanoseconds: Int64, _ text: String) {
        let time = WallTime(nanoseconds: nanoseconds)
        #expect(time.rfc3339 == text)
        var out: [UInt8] = [0x3E]
        time.appendRFC3339(to: &out)
        #expect(out.count == 1 + WallTime.rfc3339Count)
        #expect(String(decoding: out.dropFirst(), as: UTF8.self) == text)
        #expect(WallTime(rfc3339: text) == time)
    }

    /// Foundation's Gregorian calendar and ISO 8601 formatter as the independent reference, 1900..2200.
    @Test func matchesFoundationForRandomInstants() {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let iso = ISO8601DateFormatter()
        iso.timeZone = TimeZone(identifier: "UTC")!
        iso.formatOptions = [.withInternetDateTime]
        let low = -2_208_988_800 * Self.nanosPerSecond  // 1900-01-01
        let high = 7_258_118_400 * Self.nanosPerSecond  // 2200-01-01
        var rng = SplitMix64(seed: 3339)
        for _ in 0..<5000 {
            let nanoseconds = Int64.random(in: low..<high, using: &rng)
            let text = WallTime(nanoseconds: nanoseconds).rfc3339
            let seconds = Int64((Double(nanoseconds) / 1e9).rounded(.down))
            var fraction = nanoseconds - seconds * Self.nanosPerSecond
            var wholeSeconds = seconds
            // The Double division can land one second off near a boundary; settle it in integers.
            if fraction < 0 {
                wholeSeconds -= 1
                fraction += Self.nanosPerSecond
            } else if fraction >= Self.nanosPerSecond {
                wholeSeconds += 1
                fraction -= Self.nanosPerSecond
            }
            let date = Date(timeIntervalSince1970: TimeInterval(wholeSeconds))
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
            let expected = String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", c.year!, c.month!, c.day!, c.hour!, c.minute!,
                c.second!, fraction)
            #expect(text == expected)
            #expect(String(text.prefix(19)) + "Z" == iso.string(from: date))
            #expect(WallTime(rfc3339: text)?.nanoseconds == nanoseconds)
        }
    }

    /// Every day from 1668 to 2271 converts back to itself and follows the previous one on the calendar.
    @Test func civilDaysAreContinuous() {
        var previous = Civil.date(fromDays: -110_001)
        for days in Int64(-110_000)...110_000 {
            let date = Civil.date(fromDays: days)
            #expect(Civil.days(year: date.year, month: date.month, day: date.day) == days)
            let p = previous
            let follows =
                (date.year == p.year && date.month == p.month && date.day == p.day + 1)
                || (date.year == p.year && date.month == p.month + 1 && date.day == 1
                    && p.day == Civil.daysInMonth(year: p.year, month: p.month))
                || (date.year == p.year + 1 && date.month == 1 && date.day == 1 && p.month == 12 && p.day == 31)
            if !follows {
                Issue.record("day \(days): \(date) does not follow \(p)")
                return
            }
            previous = date
        }
        #expect(Civil.date(fromDays: 0) == (1970, 1, 1))
        #expect(Civil.date(fromDays: -719_468) == (0, 3, 1))
        // Before year 0 the era division must still round down (outside Int64 nanoseconds, but exact anyway).
        #expect(Civil.date(fromDays: -719_468 - 146_097) == (-400, 3, 1))
        #expect(Civil.date(fromDays: -719_469) == (0, 2, 29))
        #expect(Civil.days(year: -400, month: 3, day: 1) == -719_468 - 146_097)
    }

    @Test func parserRoundTripsTheFormatterOverTheWholeRange() {
        var rng = SplitMix64(seed: 1677)
        for _ in 0..<20_000 {
            let time = WallTime(nanoseconds: Int64(bitPattern: rng.next()))
            #expect(WallTime(rfc3339: time.rfc3339) == time)
        }
    }

    @Test(arguments: [
        ("2026-11-23T08:11:23.5+01:00", "2026-11-23T07:11:23.5Z"),
        ("2026-11-23T01:41:23.5-05:30", "2026-11-23T07:11:23.5Z"),
        ("2026-11-23T07:11:23-00:00", "2026-11-23T07:11:23Z"),
        ("2026-11-23T07:11:23+00:00", "2026-11-23T07:11:23.000000000Z"),
        ("2026-11-24T06:11:23+23:00", "2026-11-23T07:11:23Z"),
        ("1970-01-01T00:59:59.999999999+01:00", "1969-12-31T23:59:59.999999999Z"),
        ("2000-03-01T00:30:00+00:45", "2000-02-29T23:45:00Z"),
        ("2026-11-23t07:11:23z", "2026-11-23T07:11:23Z"),
        ("2026-11-23 07:11:23Z", "2026-11-23T07:11:23Z"),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
    ])
    func offsetsAndSpellings(_ text: String, _ utc: String) throws {
        let a = try #require(WallTime(rfc3339: text))
        let b = try #require(WallTime(rfc3339: utc))
        #expect(a == b)
    }

    @Test func fractionDigitsScale() {
        let base: Int64 = 1_795_417_883 * Self.nanosPerSecond
        let digits = "123456789"
        #expect(WallTime(rfc3339: "2026-11-23T07:11:23Z")?.nanoseconds == base)
        for count in 1...9 {
            let text = "2026-11-23T07:11:23." + digits.prefix(count) + "Z"
            var expected: Int64 = Int64(digits.prefix(count))!
            for _ in count..<9 { expected *= 10 }
            #expect(WallTime(rfc3339: text)?.nanoseconds == base + expected, "\(text)")
        }
    }

    @Test(arguments: [
        "", "2026-11-23", "2026-11-23T07:11:23", "2026-11-23T07:11Z", "2026-11-23T07:11:23.Z",
        "2026-11-23T07:11:23.1234567890Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-11-00T00:00:00Z",
        "2026-11-31T00:00:00Z", "2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
        "2026-11-23T24:00:00Z", "2026-11-23T07:60:00Z", "2026-11-23T07:11:61Z", "2026-11-23T07:11:23+1:00",
        "2026-11-23T07:11:23+01", "2026-11-23T07:11:23+0100", "2026-11-23T07:11:23+24:00",
        "2026-11-23T07:11:23+01:60", "2026-11-23T07:11:23ZZ", "2026-11-23T07:11:23Z ", " 2026-11-23T07:11:23Z",
        "26-11-23T07:11:23Z", "+2026-11-23T07:11:23Z", "2026/11/23T07:11:23Z", "2026-11-23X07:11:23Z",
        "2026-1a-23T07:11:23Z", "2026-11-23T07:11:2３Z", "2300-01-01T00:00:00Z", "1677-09-21T00:12:43.145224191Z",
        "2262-04-11T23:47:16.854775808Z", "0000-01-01T00:00:00Z",
    ])
    func rejectsMalformedOrOutOfRange(_ text: String) {
        #expect(WallTime(rfc3339: text) == nil)
    }

    @Test func acceptsTheExtremes() {
        #expect(WallTime(rfc3339: "1677-09-21T00:12:43.145224192Z")?.nanoseconds == .min)
        #expect(WallTime(rfc3339: "2262-04-11T23:47:16.854775807Z")?.nanoseconds == .max)
        #expect(WallTime(rfc3339: "1677-09-21T01:12:43.145224192+01:00")?.nanoseconds == .min)
    }
}
