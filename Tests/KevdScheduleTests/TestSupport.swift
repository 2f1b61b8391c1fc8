import Glibc
import KevdTestSupport

// Helpers shared by the schedule tests. Calendar conversion here deliberately goes through glibc (timegm/gmtime_r),
// not through KevdSchedule's own arithmetic, so the tests check the module against an independent implementation.

/// Unix seconds for a UTC calendar time.
func utc(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0) -> Int64 {
    var fields = tm()
    fields.tm_year = Int32(year - 1900)
    fields.tm_mon = Int32(month - 1)
    fields.tm_mday = Int32(day)
    fields.tm_hour = Int32(hour)
    fields.tm_min = Int32(minute)
    fields.tm_sec = Int32(second)
    return Int64(timegm(&fields))
}

/// "2024-03-31T01:00:00Z" for failure messages.
func iso(_ seconds: Int64?) -> String {
    guard let seconds else { return "nil" }
    var t = time_t(seconds)
    var f = tm()
    gmtime_r(&t, &f)
    func pad(_ v: Int32, _ width: Int = 2) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    let date = "\(f.tm_year + 1900)-\(pad(f.tm_mon + 1))-\(pad(f.tm_mday))"
    return "\(date)T\(pad(f.tm_hour)):\(pad(f.tm_min)):\(pad(f.tm_sec))Z"
}

/// Calendar fields of `seconds` read in UTC (`local == false`) or in the process's local zone.
func calendarFields(_ seconds: Int64, local: Bool) -> tm {
    var t = time_t(seconds)
    var f = tm()
    if local { localtime_r(&t, &f) } else { gmtime_r(&t, &f) }
    return f
}

/// A randomly generated cron expression together with the value sets it must mean, computed here independently of
/// the parser, so the brute-force checks compare two separate readings of the same text.
struct GeneratedCron: CustomStringConvertible {
    var text: String
    var minutes: Set<Int>
    var hours: Set<Int>
    var daysOfMonth: Set<Int>
    var months: Set<Int>
    var daysOfWeek: Set<Int>  // 0...6, Sunday = 0
    var dayOfMonthStar: Bool
    var dayOfWeekStar: Bool

    var description: String { text }

    /// Vixie cron's day rule, written out plainly.
    func matches(minute: Int, hour: Int, day: Int, month: Int, weekday: Int) -> Bool {
        guard minutes.contains(minute), hours.contains(hour), months.contains(month) else { return false }
        let dom = daysOfMonth.contains(day)
        let dow = daysOfWeek.contains(weekday)
        return (dayOfMonthStar || dayOfWeekStar) ? (dom && dow) : (dom || dow)
    }

    func dayMatches(day: Int, month: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        let dom = daysOfMonth.contains(day)
        let dow = daysOfWeek.contains(weekday)
        return (dayOfMonthStar || dayOfWeekStar) ? (dom && dow) : (dom || dow)
    }

    static func random(using rng: inout SplitMix64) -> GeneratedCron {
        let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        // Star-heavy weights keep most schedules dense enough to fire within the brute-force window, while still
        // producing sparse and impossible ones.
        let minute = field(0, 59, nil, 0, starWeight: 2, using: &rng)
        let hour = field(0, 23, nil, 0, starWeight: 3, using: &rng)
        let dom = field(1, 31, nil, 0, starWeight: 5, using: &rng)
        let month = field(1, 12, monthNames, 1, starWeight: 6, using: &rng)
        let dow = field(0, 7, dayNames, 0, starWeight: 4, using: &rng)
        return GeneratedCron(
            text: [minute.text, hour.text, dom.text, month.text, dow.text].joined(separator: " "),
            minutes: minute.values, hours: hour.values, daysOfMonth: dom.values, months: month.values,
            daysOfWeek: Set(dow.values.map { $0 == 7 ? 0 : $0 }),
            dayOfMonthStar: dom.text.hasPrefix("*"), dayOfWeekStar: dow.text.hasPrefix("*")
        )
    }

    private static func field(
        _ low: Int, _ high: Int, _ names: [String]?, _ nameBase: Int, starWeight: Int, using rng: inout SplitMix64
    ) -> (text: String, values: Set<Int>) {
        func spell(_ v: Int) -> String {
            // Names where the field has them, in random case; 7 has no name (it is the second Sunday).
            if let names, v - nameBase < names.count, Bool.random(using: &rng) {
                let name = names[v - nameBase]
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: return name.uppercased()
                case 1: return name.prefix(1).uppercased() + name.dropFirst()
                default: return name
                }
            }
            return String(v)
        }
        if Int.random(in: 0..<10, using: &rng) < starWeight {
            if Bool.random(using: &rng) { return ("*", Set(low...high)) }
            let step = Int.random(in: 1...(high - low + 1), using: &rng)
            return ("*/\(step)", Set(stride(from: low, through: high, by: step)))
        }
        var items: [String] = []
        var values = Set<Int>()
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let a = Int.random(in: low...high, using: &rng)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                items.append(spell(a))
                values.insert(a)
            case 1:
                let b = Int.random(in: a...high, using: &rng)
                items.append("\(spell(a))-\(spell(b))")
                values.formUnion(a...b)
            case 2:
                let b = Int.random(in: a...high, using: &rng)
                let step = Int.random(in: 1...(high - low + 1), using: &rng)
                items.append("\(spell(a))-\(spell(b))/\(step)")
                values.formUnion(stride(from: a, through: b, by: step))
            default:
                let step = Int.random(in: 1...(high - low + 1), using: &rng)
                items.append("\(spell(a))/\(step)")
                values.formUnion(stride(from: a, through: high, by: step))
            }
        }
        return (items.joined(separator: ","), values)
    }
}

/// Runs `body` with the process time zone set to `zone` (via TZ + tzset), restoring the previous TZ afterwards.
///
/// TZ is process-wide: callers must be in a `.serialized` suite, and other code reading local time in the same
/// process during the call sees the test zone.
func withTimeZone<T>(_ zone: String, _ body: () throws -> T) rethrows -> T {
    let previous = getenv("TZ").map { String(cString: $0) }
    setenv("TZ", zone, 1)
    tzset()
    defer {
        if let previous { setenv("TZ", previous, 1) } else { unsetenv("TZ") }
        tzset()
    }
    return try body()
}
