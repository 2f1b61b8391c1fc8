extension WallTime {
    /// The length of every `appendRFC3339` output: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
    public static let rfc3339Count = 30

    /// Appends the instant as RFC 3339 UTC with exactly nine fraction digits, e.g.
    /// `2026-11-23T07:11:23.123456789Z`. Fixed width, so lines sort and align; an Int64 of nanoseconds spans
    /// 1677...2262, so the year always has four digits.
    public func appendRFC3339(to out: inout [UInt8]) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: WallTime.rfc3339Count) { text in
            writeRFC3339(into: text)
            out.append(contentsOf: UnsafeBufferPointer(text))
        }
    }

    /// Stores the `rfc3339Count` bytes of the RFC 3339 form at `text` (which must have room for them).
    func writeRFC3339(into text: UnsafeMutableBufferPointer<UInt8>) {
        let (seconds, fraction) = Civil.floorDivMod(nanoseconds, 1_000_000_000)
        let (days, secondOfDay) = Civil.floorDivMod(seconds, 86_400)
        let (year, month, day) = Civil.date(fromDays: days)
        Civil.put(year, digits: 4, into: text, at: 0)
        text[4] = UInt8(ascii: "-")
        Civil.put(month, digits: 2, into: text, at: 5)
        text[7] = UInt8(ascii: "-")
        Civil.put(day, digits: 2, into: text, at: 8)
        text[10] = UInt8(ascii: "T")
        Civil.put(secondOfDay / 3600, digits: 2, into: text, at: 11)
        text[13] = UInt8(ascii: ":")
        Civil.put(secondOfDay / 60 % 60, digits: 2, into: text, at: 14)
        text[16] = UInt8(ascii: ":")
        Civil.put(secondOfDay % 60, digits: 2, into: text, at: 17)
        text[19] = UInt8(ascii: ".")
        Civil.put(fraction, digits: 9, into: text, at: 20)
        text[29] = UInt8(ascii: "Z")
    }

    /// `writeRFC3339`, copying the date and time of day (`YYYY-MM-DDTHH:MM:SS.`) from `cache` when it holds this
    /// instant's second: a busy loop stamps thousands of events within one second.
    func writeRFC3339(into text: UnsafeMutableBufferPointer<UInt8>, cache: inout RFC3339SecondCache) {
        let (seconds, fraction) = Civil.floorDivMod(nanoseconds, 1_000_000_000)
        guard seconds == cache.second, let base = text.baseAddress else {
            writeRFC3339(into: text)
            cache.second = seconds
            withUnsafeMutableBytes(of: &cache.prefix) {
                $0.copyMemory(from: UnsafeRawBufferPointer(start: text.baseAddress, count: RFC3339SecondCache.prefixCount))
            }
            return
        }
        withUnsafeBytes(of: cache.prefix) {
            UnsafeMutableRawPointer(base).copyMemory(from: $0.baseAddress!, byteCount: RFC3339SecondCache.prefixCount)
        }
        Civil.put(fraction, digits: 9, into: text, at: 20)
        text[29] = UInt8(ascii: "Z")
    }

    /// The `appendRFC3339` form as a String, for places off the hot path (CLI output, logs).
    public var rfc3339: String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(WallTime.rfc3339Count)
        appendRFC3339(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±hh:mm)`. `T` may also be `t` or a space
    /// and `Z` may be `z` (RFC 3339 section 5.6 allows both). A leap second (`:60`) folds into the next second,
    /// as POSIX time has none. Nil when malformed, when a field is out of range (Feb 30, hour 24, more than
    /// nine fraction digits) or when the instant does not fit in Int64 nanoseconds.
    public init?(rfc3339 text: String) {
        guard let nanoseconds = Civil.parseRFC3339(Array(text.utf8)) else { return nil }
        self.init(nanoseconds: nanoseconds)
    }
}

/// Proleptic Gregorian calendar arithmetic on day numbers, after Howard Hinnant's `days_from_civil` and
/// `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html): exact for negative days too,
/// without tables or loops.
enum Civil {
    /// Division rounding toward negative infinity, so instants before 1970 get a non-negative remainder.
    @inline(__always)
    static func floorDivMod(_ a: Int64, _ b: Int64) -> (quotient: Int64, remainder: Int64) {
        var q = a / b
        var r = a % b
        if r < 0 {
            q -= 1
            r += b
        }
        return (q, r)
    }

    /// Days since 1970-01-01 to (year, month 1...12, day 1...31).
    static func date(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let marchMonth = (5 * dayOfYear + 2) / 153  // 0 = March, so the leap day falls at the end
        let day = dayOfYear - (153 * marchMonth + 2) / 5 + 1
        let month = marchMonth < 10 ? marchMonth + 3 : marchMonth - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// (year, month 1...12, day 1...31) to days since 1970-01-01; the caller validates the day.
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func daysInMonth(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Writes `value` (non-negative) as exactly `digits` zero-padded decimal digits.
    @inline(__always)
    static func put(_ value: Int64, digits: Int, into text: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        var v = value
        var i = start + digits
        while i > start {
            i -= 1
            text[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v % 10)
            v /= 10
        }
    }

    static func parseRFC3339(_ text: [UInt8]) -> Int64? {
        var i = 0
        func number(_ width: Int) -> Int64? {
            guard i + width <= text.count else { return nil }
            var v: Int64 = 0
            for _ in 0..<width {
                let d = text[i] &- UInt8(ascii: "0")
                guard d < 10 else { return nil }
                v = v * 10 + Int64(d)
                i += 1
            }
            return v
        }
        func expect(_ allowed: UInt8...) -> UInt8? {
            guard i < text.count, allowed.contains(text[i]) else { return nil }
            i += 1
            return text[i - 1]
        }

        guard let year = number(4), expect(UInt8(ascii: "-")) != nil,
            let month = number(2), expect(UInt8(ascii: "-")) != nil,
            let day = number(2), expect(UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")) != nil,
            let hour = number(2), expect(UInt8(ascii: ":")) != nil,
            let minute = number(2), expect(UInt8(ascii: ":")) != nil,
            let second = number(2)
        else { return nil }
        guard (1...12).contains(month), (1...daysInMonth(year: year, month: month)).contains(day),
            hour < 24, minute < 60, second <= 60
        else { return nil }

        var fraction: Int64 = 0
        if expect(UInt8(ascii: ".")) != nil {
            var digits = 0
            while i < text.count, text[i] &- UInt8(ascii: "0") < 10 {
                guard digits < 9 else { return nil }
                fraction = fraction * 10 + Int64(text[i] - UInt8(ascii: "0"))
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<9 { fraction *= 10 }
        }

        var offset: Int64 = 0
        guard let zone = expect(UInt8(ascii: "Z"), UInt8(ascii: "z"), UInt8(ascii: "+"), UInt8(ascii: "-")) else {
            return nil
        }
        if zone == UInt8(ascii: "+") || zone == UInt8(ascii: "-") {
            guard let offsetHour = number(2), expect(UInt8(ascii: ":")) != nil, let offsetMinute = number(2),
                offsetHour < 24, offsetMinute < 60
            else { return nil }
            offset = (offsetHour * 3600 + offsetMinute * 60) * (zone == UInt8(ascii: "+") ? 1 : -1)
        }
        guard i == text.count else { return nil }

        // Four-digit years keep `seconds` far from overflow; only the scale to nanoseconds can overflow. Borrowing
        // a second for a negative instant with a fraction keeps Int64.min itself (1677-09-21T00:12:43.145224192Z)
        // reachable: seconds * 10^9 alone would overflow there.
        var seconds = days(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second - offset
        if seconds < 0 && fraction > 0 {
            seconds += 1
            fraction -= 1_000_000_000
        }
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, overflow2) = scaled.addingReportingOverflow(fraction)
        guard !overflow, !overflow2 else { return nil }
        return total
    }
}

/// The first 20 bytes of the RFC 3339 form (`YYYY-MM-DDTHH:MM:SS.`) of the last second a writer formatted.
public struct RFC3339SecondCache: Sendable {
    static let prefixCount = 20
    var second = Int64.min
    var prefix: (UInt64, UInt64, UInt32) = (0, 0, 0)
    public init() {}
}
