// Five-field cron schedules with Vixie cron semantics, and "when does it fire next" computed field by field.
// Glibc is imported only for localtime_r/tzset, which give the process's local UTC offset at an instant; all
// calendar arithmetic is done here on integers so it behaves the same for any year and needs no mktime quirks.
import Glibc

/// The clock in which a cron schedule's wall-clock fields are read.
public enum CronTimeZone: Sendable, Equatable, Hashable {
    /// Coordinated Universal Time: no gaps, no repeats.
    case utc
    /// The process's local time zone, as glibc's `localtime_r` sees it (the `TZ` environment variable, else
    /// `/etc/localtime`). `tzset()` is called on every `next` so a changed `TZ` is picked up.
    case local
}

/// A cron expression that could not be parsed.
public struct CronParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The five cron fields, in order.
    public enum Field: String, Sendable, Equatable, CaseIterable {
        case minute
        case hour
        case dayOfMonth = "day-of-month"
        case month
        case dayOfWeek = "day-of-week"
    }

    /// The field the error is in; nil for errors about the expression as a whole (wrong field count, bad macro).
    public let field: Field?
    /// What is wrong, phrased for a person editing a config file.
    public let message: String
    /// 0-based `Character` offset of the offending part within the whole expression.
    public let offset: Int

    public init(field: Field?, message: String, offset: Int) {
        self.field = field
        self.message = message
        self.offset = offset
    }

    public var description: String {
        let prefix = field.map { "\($0.rawValue) field: " } ?? ""
        return "\(prefix)\(message) (at offset \(offset))"
    }
}

/// A standard five-field cron schedule: `minute hour day-of-month month day-of-week`.
///
/// Syntax, as Vixie cron and cronie accept it:
/// - `*`, single values `5`, lists `1,5,10`, ranges `1-5`, steps `*/15` and `10-50/20`. `a/n` alone means `a-max/n`
///   (as in cronie; original Vixie cron rejects it).
/// - Ranges: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-7 where 0 and 7 are Sunday.
///   A day-of-week range ending on Sunday ends on 7, so `fri-sun` and `5-0` mean `5-7`.
/// - Names, case-insensitive, wherever a number may stand (also in ranges): `jan`...`dec` for months,
///   `sun`...`sat` for days of the week.
/// - Macros: `@hourly`, `@daily`/`@midnight`, `@weekly` (Sunday 00:00), `@monthly`, `@yearly`/`@annually`.
///   `@reboot` is rejected: it is not a calendar schedule.
///
/// Day matching follows Vixie cron: when both day-of-month and day-of-week are restricted, a day matches if
/// **either** matches (`0 0 13 * 5` fires on every 13th and on every Friday). A field counts as unrestricted when it
/// starts with `*`, so `*/2` in day-of-month still combines with day-of-week by AND, exactly as in Vixie cron.
///
/// Equality compares meaning (the expanded value sets and the two "unrestricted" flags), not spelling:
/// `@daily` equals `0 0 * * *`.
public struct CronSchedule: Sendable, Hashable {
    // One bit per allowed value: bit n set means value n matches.
    let minutes: UInt64       // bits 0...59
    let hours: UInt64         // bits 0...23
    let daysOfMonth: UInt64   // bits 1...31
    let months: UInt64        // bits 1...12
    let daysOfWeek: UInt64    // bits 0...6, Sunday = 0 (7 is folded into 0 at parse time)
    let dayOfMonthStar: Bool
    let dayOfWeekStar: Bool

    /// Parses a cron expression or macro. Leading and trailing blanks are ignored; fields are separated by spaces or
    /// tabs.
    ///
    /// - Throws: `CronParseError` naming the field and the 0-based character offset of the bad part.
    public init(parsing text: String) throws(CronParseError) {
        self = try Self.parse(text)
    }

    private init(
        minutes: UInt64, hours: UInt64, daysOfMonth: UInt64, months: UInt64, daysOfWeek: UInt64,
        dayOfMonthStar: Bool, dayOfWeekStar: Bool
    ) {
        self.minutes = minutes
        self.hours = hours
        self.daysOfMonth = daysOfMonth
        self.months = months
        self.daysOfWeek = daysOfWeek
        self.dayOfMonthStar = dayOfMonthStar
        self.dayOfWeekStar = dayOfWeekStar
    }

    private static func parse(_ text: String) throws(CronParseError) -> CronSchedule {
        let chars = Array(text)
        var i = skipBlanks(chars, 0)
        guard i < chars.count else {
            throw CronParseError(field: nil, message: "empty schedule", offset: i)
        }
        if chars[i] == "@" {
            let start = i
            while i < chars.count, chars[i] != " ", chars[i] != "\t" { i += 1 }
            let name = String(chars[start..<i]).lowercased()
            let expansion: String
            switch name {
            case "@yearly", "@annually": expansion = "0 0 1 1 *"
            case "@monthly": expansion = "0 0 1 * *"
            case "@weekly": expansion = "0 0 * * 0"
            case "@daily", "@midnight": expansion = "0 0 * * *"
            case "@hourly": expansion = "0 * * * *"
            case "@reboot":
                throw CronParseError(field: nil, message: "@reboot is not a calendar schedule", offset: start)
            default:
                throw CronParseError(
                    field: nil,
                    message: "unknown macro '\(String(chars[start..<i]))' (use @hourly, @daily, @midnight, @weekly, "
                        + "@monthly, @yearly or @annually)",
                    offset: start
                )
            }
            let trailing = skipBlanks(chars, i)
            guard trailing == chars.count else {
                throw CronParseError(field: nil, message: "unexpected text after \(name)", offset: trailing)
            }
            return try parse(expansion)
        }

        var tokens: [Range<Int>] = []
        while i < chars.count {
            let start = i
            while i < chars.count, chars[i] != " ", chars[i] != "\t" { i += 1 }
            tokens.append(start..<i)
            i = skipBlanks(chars, i)
        }
        let fields = CronParseError.Field.allCases
        if tokens.count < fields.count {
            throw CronParseError(
                field: fields[tokens.count],
                message: "missing \(fields[tokens.count].rawValue) field (a schedule has 5 fields: "
                    + "minute hour day-of-month month day-of-week)",
                offset: chars.count
            )
        }
        if tokens.count > fields.count {
            throw CronParseError(
                field: nil,
                message: "too many fields (a schedule has 5 fields: minute hour day-of-month month day-of-week; "
                    + "seconds and years are not supported)",
                offset: tokens[fields.count].lowerBound
            )
        }
        // Parsed in field order so the first error reported is the leftmost one.
        let minutes = try parseField(chars, tokens[0], .minute)
        let hours = try parseField(chars, tokens[1], .hour)
        let daysOfMonth = try parseField(chars, tokens[2], .dayOfMonth)
        let months = try parseField(chars, tokens[3], .month)
        var dow = try parseField(chars, tokens[4], .dayOfWeek)
        if dow & (1 << 7) != 0 { dow = (dow & ~(1 << 7)) | 1 }  // 7 is another name for Sunday
        return CronSchedule(
            minutes: minutes,
            hours: hours,
            daysOfMonth: daysOfMonth,
            months: months,
            daysOfWeek: dow,
            dayOfMonthStar: chars[tokens[2].lowerBound] == "*",
            dayOfWeekStar: chars[tokens[4].lowerBound] == "*"
        )
    }

    /// The next instant strictly after `unixSeconds` at which the schedule fires, in Unix seconds (always on a
    /// minute boundary of the given clock), or nil if it never fires again.
    ///
    /// The fields are matched against wall-clock time in `timeZone`. Daylight-saving transitions in `.local`:
    /// - **Gap** (spring forward, e.g. 02:00-02:59 does not exist): a matching wall time inside the gap fires at the
    ///   first instant after the gap (the moment of the transition, e.g. 03:00 new time). A daily `30 2 * * *` job is
    ///   therefore not lost on that day, only late; several matching times in one gap fire once, together.
    /// - **Overlap** (fall back, e.g. 02:00-02:59 happens twice): each matching wall time fires once, at its first
    ///   occurrence. A consequence is that `*/15 * * * *` is silent during the repeated hour.
    ///
    /// Cost: the search advances month, day, hour and minute separately (skipping whole months and days), so a
    /// typical call takes tens of steps and a leap-day schedule a few thousand. Schedules that can never fire
    /// (`0 0 30 2 *`) are recognised without searching; anything else is searched for at most 401 years, which covers
    /// the whole 400-year Gregorian cycle, so nil means "never".
    /// Instants beyond ±2^50 s (about 35 million years) also return nil.
    public func next(after unixSeconds: Int64, timeZone: CronTimeZone) -> Int64? {
        guard Self.canEverFire(self), unixSeconds >= -(1 << 50), unixSeconds <= 1 << 50 else { return nil }
        if timeZone == .local { tzset() }
        guard let offset = Self.utcOffset(at: unixSeconds, timeZone) else { return nil }
        var from = WallMinute(localSeconds: floorDivide(unixSeconds + offset, 60) * 60 + 60)
        let lastYear = from.year + 401
        while let candidate = firstMatch(from: from, throughYear: lastYear) {
            let wall = candidate.localSeconds
            guard let instant = Self.firstInstant(showing: wall, timeZone) else { return nil }
            // Only in an overlap or gap can a later wall time map to an instant at or before the start; keep going.
            if instant > unixSeconds { return instant }
            from = WallMinute(localSeconds: wall + 60)
        }
        return nil
    }

    // MARK: - Matching

    /// The first wall-clock minute at or after `start` that matches, searching through the end of `lastYear`.
    func firstMatch(from start: WallMinute, throughYear lastYear: Int64) -> WallMinute? {
        var w = start
        while w.year <= lastYear {
            if months & (1 << UInt64(w.month)) == 0 {
                if let m = nextBit(months, from: w.month + 1, through: 12) {
                    w.month = m
                } else {
                    w.year += 1
                    w.month = months.trailingZeroBitCount
                }
                w.day = 1
                w.hour = 0
                w.minute = 0
                continue
            }
            if w.day > daysInMonth(w.year, w.month) || !dayMatches(year: w.year, month: w.month, day: w.day) {
                w.advanceDay()
                continue
            }
            if hours & (1 << UInt64(w.hour)) == 0 {
                guard let h = nextBit(hours, from: w.hour + 1, through: 23) else {
                    w.advanceDay()
                    continue
                }
                w.hour = h
                w.minute = 0
            }
            if minutes & (1 << UInt64(w.minute)) == 0 {
                guard let m = nextBit(minutes, from: w.minute + 1, through: 59) else {
                    w.hour += 1
                    w.minute = 0
                    if w.hour > 23 { w.advanceDay() }
                    continue
                }
                w.minute = m
            }
            return w
        }
        return nil
    }

    /// Vixie cron's rule: AND when either day field starts with `*`, otherwise OR.
    func dayMatches(year: Int64, month: Int, day: Int) -> Bool {
        let domHit = daysOfMonth & (1 << UInt64(day)) != 0
        let weekday = Int(floorModulo(daysFromCivil(year, month, day) + 4, 7))  // 1970-01-01 was a Thursday
        let dowHit = daysOfWeek & (1 << UInt64(weekday)) != 0
        return (dayOfMonthStar || dayOfWeekStar) ? (domHit && dowHit) : (domHit || dowHit)
    }

    /// False only for schedules that can never fire: day-of-month ANDed with the months, and every chosen day is
    /// past the end of every chosen month (February counted as 29 days). With the OR rule, any weekday occurs in
    /// every month, and every existing date falls on every weekday within 400 years, so all else is possible.
    static func canEverFire(_ s: CronSchedule) -> Bool {
        guard s.dayOfMonthStar || s.dayOfWeekStar else { return true }
        let longest = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        for month in 1...12 where s.months & (1 << UInt64(month)) != 0 {
            let allowedDays = (UInt64(1) << UInt64(longest[month] + 1)) - 2  // bits 1...longest
            if s.daysOfMonth & allowedDays != 0 { return true }
        }
        return false
    }

    // MARK: - Time zones

    /// Seconds east of UTC in effect at `instant`.
    static func utcOffset(at instant: Int64, _ timeZone: CronTimeZone) -> Int64? {
        switch timeZone {
        case .utc:
            return 0
        case .local:
            var t = time_t(instant)
            var fields = tm()
            guard localtime_r(&t, &fields) != nil else { return nil }
            return Int64(fields.tm_gmtoff)
        }
    }

    /// The earliest instant whose wall clock reads `wall` (local seconds since 1970-01-01 00:00 wall time); for a
    /// wall time skipped by a forward transition, the first instant after the skip.
    static func firstInstant(showing wall: Int64, _ timeZone: CronTimeZone) -> Int64? {
        if timeZone == .utc { return wall }
        // Any solution t of t + offset(t) == wall lies within about a day of `wall` (real offsets are -12h...+14h),
        // so the offsets in force around it are all candidates. Sampling every few hours finds them unless a zone
        // changes offset twice within a few hours, which no tzdata zone does.
        var offsets: [Int64] = []
        for probe in [wall - 86_400, wall - 50_400, wall - 25_200, wall, wall + 21_600, wall + 43_200, wall + 86_400] {
            guard let o = utcOffset(at: probe, timeZone) else { return nil }
            if !offsets.contains(o) { offsets.append(o) }
        }
        var earliest: Int64?
        for o in offsets {
            let t = wall - o
            if utcOffset(at: t, timeZone) == o, t < (earliest ?? .max) { earliest = t }
        }
        if let earliest { return earliest }

        // In a gap: find the transition, the first instant whose wall clock is past `wall`. Wall time rises with the
        // instant on both sides of a forward jump, so bisection works.
        var low = wall - offsets.max()!   // wall clock here is at or before `wall`
        var high = wall - offsets.min()!  // and here after it
        while low < high {
            let mid = low + (high - low) / 2
            guard let o = utcOffset(at: mid, timeZone) else { return nil }
            if mid + o > wall { high = mid } else { low = mid + 1 }
        }
        return low
    }

    // MARK: - Parsing

    private struct FieldSpec {
        let min: Int
        let max: Int
        let names: [String]
        let nameBase: Int
    }

    private static func spec(_ field: CronParseError.Field) -> FieldSpec {
        switch field {
        case .minute: return FieldSpec(min: 0, max: 59, names: [], nameBase: 0)
        case .hour: return FieldSpec(min: 0, max: 23, names: [], nameBase: 0)
        case .dayOfMonth: return FieldSpec(min: 1, max: 31, names: [], nameBase: 0)
        case .month:
            let names = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            return FieldSpec(min: 1, max: 12, names: names, nameBase: 1)
        case .dayOfWeek:
            return FieldSpec(min: 0, max: 7, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"], nameBase: 0)
        }
    }

    /// One field: `item[,item...]`, item = `*` | value | value-value, optionally followed by `/step`.
    private static func parseField(
        _ chars: [Character], _ range: Range<Int>, _ field: CronParseError.Field
    ) throws(CronParseError) -> UInt64 {
        let spec = spec(field)
        let end = range.upperBound
        var i = range.lowerBound
        var mask: UInt64 = 0
        while true {
            let itemStart = i
            guard i < end, chars[i] != "," else {
                throw CronParseError(field: field, message: "empty list item", offset: i)
            }
            var low: Int
            var high: Int
            var single = false
            if chars[i] == "*" {
                low = spec.min
                high = spec.max
                i += 1
            } else {
                low = try value(chars, &i, end, spec, field)
                if i < end, chars[i] == "-" {
                    i += 1
                    high = try value(chars, &i, end, spec, field)
                    // "fri-sun" reads naturally but Sunday is 0; let a day-of-week range end on Sunday's other number.
                    if field == .dayOfWeek, high == 0, low > 0 { high = 7 }
                    guard low <= high else {
                        throw CronParseError(
                            field: field, message: "range \(low)-\(high) ends before it starts", offset: itemStart
                        )
                    }
                } else {
                    high = low
                    single = true
                }
            }
            var step = 1
            if i < end, chars[i] == "/" {
                i += 1
                let stepStart = i
                guard i < end, asciiDigit(chars[i]) != nil else {
                    throw CronParseError(field: field, message: "expected a step number after '/'", offset: i)
                }
                step = readNumber(chars, &i, end)
                let width = spec.max - spec.min + 1
                guard step >= 1, step <= width else {
                    throw CronParseError(
                        field: field, message: "step \(step) is out of range 1-\(width)", offset: stepStart
                    )
                }
                if single { high = spec.max }
            }
            if i < end, chars[i] != "," {
                throw CronParseError(field: field, message: "unexpected '\(chars[i])'", offset: i)
            }
            for v in stride(from: low, through: high, by: step) { mask |= 1 << UInt64(v) }
            if i == end { return mask }
            i += 1  // the comma; a trailing comma is caught as an empty item
        }
    }

    private static func value(
        _ chars: [Character], _ i: inout Int, _ end: Int, _ spec: FieldSpec, _ field: CronParseError.Field
    ) throws(CronParseError) -> Int {
        let start = i
        if i < end, asciiDigit(chars[i]) != nil {
            let n = readNumber(chars, &i, end)
            guard n >= spec.min, n <= spec.max else {
                throw CronParseError(
                    field: field, message: "value \(n) is out of range \(spec.min)-\(spec.max)", offset: start
                )
            }
            return n
        }
        if i < end, chars[i].isLetter {
            while i < end, chars[i].isLetter { i += 1 }
            let word = String(chars[start..<i])
            guard !spec.names.isEmpty else {
                throw CronParseError(
                    field: field, message: "names are not allowed here, found '\(word)'", offset: start
                )
            }
            guard let index = spec.names.firstIndex(of: word.lowercased()) else {
                let hint = spec.names.first! + "-" + spec.names.last!
                throw CronParseError(field: field, message: "unknown name '\(word)' (use \(hint))", offset: start)
            }
            return index + spec.nameBase
        }
        if i < end {
            throw CronParseError(field: field, message: "expected a number, found '\(chars[i])'", offset: i)
        }
        throw CronParseError(field: field, message: "expected a number", offset: i)
    }

    /// Reads digits, saturating at a value no field accepts so huge numbers become "out of range", not overflow.
    private static func readNumber(_ chars: [Character], _ i: inout Int, _ end: Int) -> Int {
        var n = 0
        while i < end, let d = asciiDigit(chars[i]) {
            n = Swift.min(n * 10 + d, 100_000)
            i += 1
        }
        return n
    }
}

// MARK: - Calendar arithmetic

/// A wall-clock minute in the proleptic Gregorian calendar. `day` may briefly exceed the month's length during the
/// search; `firstMatch` treats that as "no match, next day".
struct WallMinute: Equatable {
    var year: Int64
    var month: Int
    var day: Int
    var hour: Int
    var minute: Int

    init(year: Int64, month: Int, day: Int, hour: Int, minute: Int) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
    }

    /// From seconds since 1970-01-01 00:00 on the wall clock (seconds are dropped).
    init(localSeconds: Int64) {
        let days = floorDivide(localSeconds, 86_400)
        let secondOfDay = Int(localSeconds - days * 86_400)
        (year, month, day) = civilFromDays(days)
        hour = secondOfDay / 3600
        minute = secondOfDay / 60 % 60
    }

    var localSeconds: Int64 {
        daysFromCivil(year, month, day) * 86_400 + Int64(hour * 3600 + minute * 60)
    }

    mutating func advanceDay() {
        day += 1
        hour = 0
        minute = 0
        if day > daysInMonth(year, month) {
            day = 1
            month += 1
            if month > 12 {
                month = 1
                year += 1
            }
        }
    }
}

/// The lowest set bit at position `from` or higher, if it is at most `through`.
@inline(__always)
func nextBit(_ mask: UInt64, from: Int, through: Int) -> Int? {
    guard from <= through else { return nil }
    let rest = mask >> UInt64(from)
    guard rest != 0 else { return nil }
    let bit = from + rest.trailingZeroBitCount
    return bit <= through ? bit : nil
}

@inline(__always)
func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

@inline(__always)
func floorModulo(_ a: Int64, _ b: Int64) -> Int64 { a - floorDivide(a, b) * b }

func isLeapYear(_ y: Int64) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }

func daysInMonth(_ year: Int64, _ month: Int) -> Int {
    switch month {
    case 2: return isLeapYear(year) ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm: exact for all Int64-safe years,
/// no tables, no loops).
func daysFromCivil(_ year: Int64, _ month: Int, _ day: Int) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = floorDivide(y, 400)
    let yearOfEra = y - era * 400
    let monthFromMarch = Int64((month + 9) % 12)
    let dayOfYear = (153 * monthFromMarch + 2) / 5 + Int64(day) - 1
    let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
    return era * 146_097 + dayOfEra - 719_468
}

/// The inverse of `daysFromCivil`.
func civilFromDays(_ days: Int64) -> (year: Int64, month: Int, day: Int) {
    let z = days + 719_468
    let era = floorDivide(z, 146_097)
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let monthFromMarch = (5 * dayOfYear + 2) / 153
    let day = Int(dayOfYear - (153 * monthFromMarch + 2) / 5 + 1)
    let month = Int(monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9)
    return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
}
