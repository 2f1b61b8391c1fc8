import KevdTestSupport
import Testing
@testable import KevdSchedule

private let second: Int64 = 1_000_000_000

@Suite("Duration text")
struct DurationTextTests {
    @Test(
        "valid durations",
        arguments: [
            ("250ms", 250_000_000),
            ("30s", 30 * second),
            ("5m", 300 * second),
            ("1h30m", 5_400 * second),
            ("2d", 172_800 * second),
            ("1h 30m", 5_400 * second),
            ("1.5s", 1_500_000_000),
            ("90", 90 * second),
            ("1.5", 1_500_000_000),
            ("0", 0),
            ("10us", 10_000),
            ("10\u{00B5}s", 10_000),  // MICRO SIGN
            ("10\u{03BC}s", 10_000),  // GREEK SMALL LETTER MU
            ("100ns", 100),
            ("1sec", second),
            ("2min", 120 * second),
            ("3hr", 10_800 * second),
            ("1w", 604_800 * second),
            ("0.1s", 100_000_000),
            ("1.25m", 75 * second),
            ("  30s\t", 30 * second),
            ("30 s", 30 * second),
            ("1d\t2h 3m  4s", (86_400 + 7_200 + 180 + 4) * second),
            ("30m1h", 5_400 * second),
            ("0.000000001s", 1),
            ("1.0000000009s", second),  // below a nanosecond: truncated
            ("0.5ns", 0),
            ("9223372036.854775807s", Int64.max),
            ("106751d23h47m16s854ms775us807ns", Int64.max),
        ] as [(String, Int64)]
    )
    func valid(text: String, nanoseconds: Int64) throws {
        #expect(try DurationText.parseNanoseconds(text) == nanoseconds)
    }

    @Test(
        "invalid durations report message and character offset",
        arguments: [
            ("", 0, "empty"),
            ("   ", 3, "empty"),
            ("5x", 1, "unknown duration unit 'x'"),
            ("1h30", 2, "needs a unit"),
            ("5 5s", 0, "needs a unit"),
            ("30s5", 3, "needs a unit"),
            ("h", 0, "expected a number, found 'h'"),
            ("-5s", 0, "negative"),
            ("5M", 1, "unknown duration unit 'M'"),
            ("5S", 1, "lower-case"),
            ("1.s", 2, "digit after the decimal point"),
            ("1.", 2, "digit after the decimal point"),
            (".5s", 0, "expected a number"),
            ("1h 30m x", 7, "expected a number, found 'x'"),
            ("300y", 3, "unknown duration unit 'y'"),
            ("1h,30m", 2, "expected a number, found ','"),
            ("9223372037s", 0, "too large"),
            ("100000000000000000000s", 0, "too large"),
            ("1h 2h 300000d", 6, "too large"),
            ("100000d 100000d", 8, "too large"),  // each part fits, the sum does not
            ("10\u{00B5}s x", 5, "found 'x'"),  // µ is one character: offsets count characters, not bytes
            ("1e3s", 1, "unknown duration unit 'e'"),
        ] as [(String, Int, String)]
    )
    func invalid(text: String, offset: Int, fragment: String) {
        #expect(throws: DurationParseError.self) { try DurationText.parseNanoseconds(text) }
        do {
            _ = try DurationText.parseNanoseconds(text)
        } catch {
            #expect(error.offset == offset, "\(text.debugDescription): \(error)")
            #expect(error.message.contains(fragment), "\(text.debugDescription): \(error)")
            #expect(error.description.contains("offset \(offset)"))
        }
    }

    @Test(
        "formatting",
        arguments: [
            (0, "0s"),
            (250_000_000, "250ms"),
            (5_400 * second, "1h30m"),
            (1_500_000_000, "1s500ms"),
            (90 * second, "1m30s"),
            (2 * 86_400 * second, "2d"),
            (90_061_001_001_001, "1d1h1m1s1ms1us1ns"),
            (-30 * second, "-30s"),
            (Int64.max, "106751d23h47m16s854ms775us807ns"),
            (Int64.min, "-106751d23h47m16s854ms775us808ns"),
        ] as [(Int64, String)]
    )
    func format(nanoseconds: Int64, text: String) {
        #expect(DurationText.format(nanoseconds: nanoseconds) == text)
    }

    @Test("format then parse gives back the same value")
    func roundTrip() throws {
        var rng = SplitMix64(seed: 0xD0_2A_71_04)
        for _ in 0..<2_000 {
            // Spread over magnitudes so every unit appears.
            let value = Int64.random(in: 0...Int64.max, using: &rng) >> Int.random(in: 0...62, using: &rng)
            let text = DurationText.format(nanoseconds: value)
            #expect(try DurationText.parseNanoseconds(text) == value, "\(value) -> \(text)")
        }
    }
}

@Suite("Byte size text")
struct ByteSizeTextTests {
    @Test(
        "valid sizes",
        arguments: [
            ("16M", 16 << 20),
            ("16MiB", 16 << 20),
            ("64K", 64 << 10),
            ("64KiB", 64 << 10),
            ("1G", 1 << 30),
            ("2T", 2 << 40),
            ("3P", 3 << 50),
            ("7E", 7 << 60),
            ("4096", 4096),
            ("4096B", 4096),
            ("1.5M", 1_572_864),
            ("1.1K", 1126),  // 1126.4 truncated
            ("1.0", 1),
            ("10MB", 10_000_000),
            ("1kB", 1000),
            ("1KB", 1000),
            ("1GB", 1_000_000_000),
            ("2 KiB", 2048),
            (" 0 ", 0),
        ] as [(String, Int64)]
    )
    func valid(text: String, bytes: Int64) throws {
        #expect(try ByteSizeText.parseBytes(text) == bytes)
    }

    @Test(
        "invalid sizes report message and character offset",
        arguments: [
            ("", 0, "empty"),
            ("16X", 2, "unknown size unit 'X'"),
            ("16mb", 2, "unknown size unit 'mb'"),
            ("-1M", 0, "negative"),
            ("16M extra", 4, "unexpected 'e'"),
            ("16M2", 3, "unexpected '2'"),
            ("1.5", 0, "whole number"),
            ("1.5B", 0, "whole number"),
            ("8E", 0, "too large"),
            ("8EiB", 0, "too large"),
            ("M", 0, "expected a number"),
            ("1.M", 2, "digit after the decimal point"),
        ] as [(String, Int, String)]
    )
    func invalid(text: String, offset: Int, fragment: String) {
        #expect(throws: ByteSizeParseError.self) { try ByteSizeText.parseBytes(text) }
        do {
            _ = try ByteSizeText.parseBytes(text)
        } catch {
            #expect(error.offset == offset, "\(text.debugDescription): \(error)")
            #expect(error.message.contains(fragment), "\(text.debugDescription): \(error)")
        }
    }

    @Test(
        "formatting",
        arguments: [
            (0, "0B"), (16 << 20, "16MiB"), (1_572_864, "1536KiB"), (4097, "4097B"), (1 << 30, "1GiB"),
            (1000, "1000B"), (-2048, "-2KiB"), (Int64.max, "9223372036854775807B"),
        ] as [(Int64, String)]
    )
    func format(bytes: Int64, text: String) throws {
        #expect(ByteSizeText.format(bytes: bytes) == text)
        if bytes >= 0 { #expect(try ByteSizeText.parseBytes(text) == bytes) }
    }
}
