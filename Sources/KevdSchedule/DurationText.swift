// Human-written durations ("1h30m", "250ms") and byte sizes ("16MiB", "1.5M") as they appear in config files,
// parsed to exact integers and formatted back for logs. Pure arithmetic: no Foundation, no floating point, so
// "0.1s" is exactly 100_000_000 ns rather than whatever a Double happens to round to.

/// A duration or byte-size string that could not be parsed.
///
/// `offset` is the 0-based index, in `Character`s, of the part of the input that is wrong, so a config loader can
/// add it to the column where the string value starts and point at the exact spot.
public struct QuantityParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, phrased for a person editing a config file.
    public let message: String
    /// 0-based `Character` offset of the offending part within the parsed text.
    public let offset: Int

    public init(message: String, offset: Int) {
        self.message = message
        self.offset = offset
    }

    public var description: String { "\(message) (at offset \(offset))" }
}

/// Durations and sizes fail the same way; the names say which parser threw.
public typealias DurationParseError = QuantityParseError
public typealias ByteSizeParseError = QuantityParseError

/// Parsing and formatting of durations, always as `Int64` nanoseconds.
///
/// Grammar: one or more components `<number><unit>`, optionally separated by spaces or tabs, summed:
/// `"1h30m"`, `"1h 30m"`, `"1.5s"`, `"250 ms"`. Units (case-sensitive, because systemd reads `M` as months and we
/// would rather reject it than guess): `ns`, `us`, `µs`, `ms`, `s`, `sec`, `m`, `min`, `h`, `hr`, `d` (86400 s),
/// `w` (7 d). A lone number without unit means seconds (`"90"`); inside a multi-part duration every number needs a
/// unit. Decimals need digits on both sides of the point; parts below one nanosecond are truncated. Negative
/// durations and values above `Int64.max` ns (about 292 years) are errors.
public enum DurationText {
    /// The unit table; `µ` is accepted both as MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC) because
    /// keyboards and editors produce either.
    static let units: [(name: String, nanoseconds: Int64)] = [
        ("ns", 1),
        ("us", 1_000), ("\u{00B5}s", 1_000), ("\u{03BC}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000), ("sec", 1_000_000_000),
        ("m", 60_000_000_000), ("min", 60_000_000_000),
        ("h", 3_600_000_000_000), ("hr", 3_600_000_000_000),
        ("d", 86_400_000_000_000),
        ("w", 604_800_000_000_000),
    ]

    static let unitList = "ns, us, µs, ms, s, sec, m, min, h, hr, d, w"
    static let tooLarge = "duration is too large (limit is about 292 years)"

    /// Parses a human duration into nanoseconds.
    ///
    /// - Parameter text: e.g. `"250ms"`, `"1h 30m"`, `"1.5s"`, `"90"` (seconds). Leading and trailing blanks are
    ///   ignored.
    /// - Returns: the total in nanoseconds, never negative.
    /// - Throws: `DurationParseError` pointing at the first bad character or component.
    public static func parseNanoseconds(_ text: String) throws(DurationParseError) -> Int64 {
        let chars = Array(text)
        var i = skipBlanks(chars, 0)
        guard i < chars.count else {
            throw DurationParseError(message: "empty duration", offset: i)
        }
        var total: Int64 = 0
        var components = 0
        while i < chars.count {
            let numberStart = i
            let literal: DecimalLiteral
            switch DecimalLiteral.scan(chars, &i) {
            case .success(let value): literal = value
            case .failure(let failure):
                throw DurationParseError(message: failure.message(what: "duration"), offset: failure.offset)
            }
            i = skipBlanks(chars, i)
            let unitStart = i
            while i < chars.count, chars[i].isLetter { i += 1 }
            let unitNanoseconds: Int64
            if unitStart == i {
                // A bare number is only unambiguous on its own; "1h 30" could mean 30 s or 30 m.
                guard components == 0, skipBlanks(chars, i) == chars.count else {
                    throw DurationParseError(message: "number needs a unit (\(unitList))", offset: numberStart)
                }
                unitNanoseconds = 1_000_000_000
            } else {
                let unit = String(chars[unitStart..<i])
                guard let found = units.first(where: { $0.name == unit }) else {
                    throw DurationParseError(
                        message: "unknown duration unit '\(unit)' (use \(unitList); units are lower-case)",
                        offset: unitStart
                    )
                }
                unitNanoseconds = found.nanoseconds
            }
            guard let value = literal.scaled(by: unitNanoseconds) else {
                throw DurationParseError(message: tooLarge, offset: numberStart)
            }
            let (sum, overflow) = total.addingReportingOverflow(value)
            guard !overflow else {
                throw DurationParseError(message: tooLarge, offset: numberStart)
            }
            total = sum
            components += 1
            i = skipBlanks(chars, i)
        }
        return total
    }

    /// Formats nanoseconds compactly for logs, largest unit first: `"1h30m"`, `"250ms"`, `"1s500ms"`, `"0s"`.
    ///
    /// Exact (no rounding) and accepted back by `parseNanoseconds` for non-negative values. Days are the largest unit
    /// because "14d" reads more easily in a log than "2w".
    public static func format(nanoseconds: Int64) -> String {
        if nanoseconds == 0 { return "0s" }
        // magnitude, because -Int64.min does not fit in Int64.
        var rest = nanoseconds.magnitude
        var out = nanoseconds < 0 ? "-" : ""
        let parts: [(String, UInt64)] = [
            ("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
            ("ms", 1_000_000), ("us", 1_000), ("ns", 1),
        ]
        for (name, size) in parts where rest >= size {
            out += "\(rest / size)\(name)"
            rest %= size
        }
        return out
    }
}

/// Parsing and formatting of byte sizes, as `Int64` bytes.
///
/// Grammar: `<number>[blanks]<unit>?`. No unit or `B` means bytes (then the number must be whole). `K`, `M`, `G`,
/// `T`, `P`, `E` and their IEC spellings `KiB`, `MiB`, ... are powers of 1024, as in most Unix tools; the SI
/// spellings `kB`/`KB`, `MB`, `GB`, `TB`, `PB`, `EB` are powers of 1000. Fractions are allowed with a unit
/// (`"1.5M"` = 1572864) and truncated to whole bytes.
public enum ByteSizeText {
    static let units: [(name: String, bytes: Int64)] = {
        var table: [(String, Int64)] = [("B", 1)]
        var binary: Int64 = 1
        var decimal: Int64 = 1
        for prefix in ["K", "M", "G", "T", "P", "E"] {
            binary *= 1024
            decimal *= 1000
            table.append((prefix, binary))
            table.append((prefix + "iB", binary))
            table.append((prefix + "B", decimal))
        }
        // SI writes kilo with a lower-case k; accept the correct spelling as well as the common one.
        table.append(("kB", 1000))
        return table
    }()

    static let unitList = "B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB, E/EiB (powers of 1024) or kB, MB, GB, TB, PB, EB "
        + "(powers of 1000)"

    /// Parses a byte size such as `"16M"`, `"16MiB"`, `"64K"`, `"1G"`, `"4096"`, `"1.5M"`, `"10MB"`.
    ///
    /// - Returns: the size in bytes, never negative.
    /// - Throws: `ByteSizeParseError` pointing at the first bad character.
    public static func parseBytes(_ text: String) throws(ByteSizeParseError) -> Int64 {
        let chars = Array(text)
        var i = skipBlanks(chars, 0)
        guard i < chars.count else {
            throw ByteSizeParseError(message: "empty size", offset: i)
        }
        let numberStart = i
        let literal: DecimalLiteral
        switch DecimalLiteral.scan(chars, &i) {
        case .success(let value): literal = value
        case .failure(let failure):
            throw ByteSizeParseError(message: failure.message(what: "size"), offset: failure.offset)
        }
        i = skipBlanks(chars, i)
        let unitStart = i
        while i < chars.count, chars[i].isLetter { i += 1 }
        var multiplier: Int64 = 1
        if unitStart < i {
            let unit = String(chars[unitStart..<i])
            guard let found = units.first(where: { $0.name == unit }) else {
                throw ByteSizeParseError(message: "unknown size unit '\(unit)' (use \(unitList))", offset: unitStart)
            }
            multiplier = found.bytes
        }
        let end = skipBlanks(chars, i)
        guard end == chars.count else {
            throw ByteSizeParseError(message: "unexpected '\(chars[end])' after the size", offset: end)
        }
        if multiplier == 1 && literal.fractionDigits > 0 && literal.fraction != 0 {
            throw ByteSizeParseError(message: "a byte count must be a whole number", offset: numberStart)
        }
        guard let value = literal.scaled(by: multiplier) else {
            throw ByteSizeParseError(message: "size is too large (limit is 8 EiB)", offset: numberStart)
        }
        return value
    }

    /// Formats a size exactly, in the largest binary unit that divides it: `"16MiB"`, `"1536KiB"`, `"4097B"`.
    ///
    /// The output is accepted back by `parseBytes` for non-negative values.
    public static func format(bytes: Int64) -> String {
        let magnitude = bytes.magnitude
        let sign = bytes < 0 ? "-" : ""
        if magnitude == 0 { return "0B" }
        for (name, size) in [("EiB", UInt64(1) << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30),
                             ("MiB", 1 << 20), ("KiB", 1 << 10)] where magnitude % size == 0 {
            return "\(sign)\(magnitude / size)\(name)"
        }
        return "\(sign)\(magnitude)B"
    }
}

// MARK: - Shared scanning

/// Spaces and tabs only: config values are single-line strings, and treating other Unicode spaces as separators
/// would hide copy-paste accidents.
@inline(__always)
func skipBlanks(_ chars: [Character], _ start: Int) -> Int {
    var i = start
    while i < chars.count, chars[i] == " " || chars[i] == "\t" { i += 1 }
    return i
}

@inline(__always)
func asciiDigit(_ c: Character) -> Int? {
    guard let a = c.asciiValue, a >= 48, a <= 57 else { return nil }
    return Int(a - 48)
}

/// `digits [. digits]`, kept as integers so scaling by a unit is exact.
struct DecimalLiteral {
    /// The integer part, or nil if it does not fit in Int64 (reported as "too large" only after the unit is known).
    var integer: Int64?
    /// Up to 18 significant fraction digits, as an integer: "1.05" has fraction 5 with 2 digits. Later digits
    /// cannot change the result by a whole unit of anything we scale to, so they are dropped.
    var fraction: Int64 = 0
    var fractionDigits = 0

    struct Failure: Error {
        enum Kind { case negative, expectedNumber, expectedFractionDigit }
        let kind: Kind
        let offset: Int
        let found: Character?

        func message(what: String) -> String {
            switch kind {
            case .negative: return "a \(what) cannot be negative"
            case .expectedFractionDigit: return "expected a digit after the decimal point"
            case .expectedNumber:
                if let found { return "expected a number, found '\(found)'" }
                return "expected a number"
            }
        }
    }

    static func scan(_ chars: [Character], _ i: inout Int) -> Result<DecimalLiteral, Failure> {
        guard i < chars.count else { return .failure(Failure(kind: .expectedNumber, offset: i, found: nil)) }
        if chars[i] == "-" { return .failure(Failure(kind: .negative, offset: i, found: nil)) }
        guard asciiDigit(chars[i]) != nil else {
            return .failure(Failure(kind: .expectedNumber, offset: i, found: chars[i]))
        }
        var literal = DecimalLiteral(integer: 0)
        while i < chars.count, let d = asciiDigit(chars[i]) {
            if let current = literal.integer {
                let (times10, o1) = current.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(Int64(d))
                literal.integer = (o1 || o2) ? nil : sum
            }
            i += 1
        }
        if i < chars.count, chars[i] == "." {
            i += 1
            guard i < chars.count, asciiDigit(chars[i]) != nil else {
                return .failure(Failure(kind: .expectedFractionDigit, offset: i, found: nil))
            }
            while i < chars.count, let d = asciiDigit(chars[i]) {
                if literal.fractionDigits < 18 {
                    literal.fraction = literal.fraction * 10 + Int64(d)
                    literal.fractionDigits += 1
                }
                i += 1
            }
        }
        return .success(literal)
    }

    /// `self × unit`, truncated toward zero, or nil on overflow.
    func scaled(by unit: Int64) -> Int64? {
        guard let integer else { return nil }
        let (whole, overflow) = integer.multipliedReportingOverflow(by: unit)
        guard !overflow else { return nil }
        guard fractionDigits > 0 else { return whole }
        // fraction < 10^18 and unit < 2^63, so the product fits in 128 bits and the quotient is below `unit`.
        var power: UInt64 = 1
        for _ in 0..<fractionDigits { power *= 10 }
        let product = UInt64(fraction).multipliedFullWidth(by: UInt64(unit))
        let (part, _) = power.dividingFullWidth(product)
        let (sum, overflow2) = whole.addingReportingOverflow(Int64(part))
        return overflow2 ? nil : sum
    }
}
