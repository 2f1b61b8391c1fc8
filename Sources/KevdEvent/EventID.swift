/// A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 bits that make it unique.
///
/// kevd fills the unique bits from a 74-bit random value drawn once per daemon start, plus the event's seq.
/// Two events of one run differ by seq; two runs differ by their random base. So an id never names two
/// events, even when a crash loses unsynced records and their seq numbers are given again, and ids sort by
/// time to the millisecond.
public struct EventID: Sendable, Hashable {
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Builds the id of event `seq` stamped at `unixMilliseconds`, from the run's random base.
    public init(unixMilliseconds: UInt64, seq: UInt64, base: EventIDBase) {
        let randA = (base.randA &+ UInt64(truncatingIfNeeded: seq >> 62)) & 0xFFF
        high = (unixMilliseconds & 0xFFFF_FFFF_FFFF) << 16 | 0x7000 | randA
        low = 0x8000_0000_0000_0000 | ((base.randB &+ seq) & 0x3FFF_FFFF_FFFF_FFFF)
    }

    /// The canonical 36-character lower-case form.
    public var string: String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(36)
        appendCanonical(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    public func appendCanonical(to out: inout [UInt8]) {
        var text: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &text) { raw in
            writeCanonical(to: raw.baseAddress!)
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<36]))
        }
    }

    /// Stores the 36-byte canonical form at `p`: four or eight hex digits per word operation rather than one per
    /// digit (it is written for every event; a digit at a time was a third of the encoder's own time).
    @inline(__always)
    public func writeCanonical(to p: UnsafeMutableRawPointer) {
        let dash = UInt8(ascii: "-")
        p.storeBytes(of: Self.hex8(UInt32(truncatingIfNeeded: high >> 32)), as: UInt64.self)
        p.storeBytes(of: dash, toByteOffset: 8, as: UInt8.self)
        p.storeBytes(of: Self.hex4(UInt16(truncatingIfNeeded: high >> 16)), toByteOffset: 9, as: UInt32.self)
        p.storeBytes(of: dash, toByteOffset: 13, as: UInt8.self)
        p.storeBytes(of: Self.hex4(UInt16(truncatingIfNeeded: high)), toByteOffset: 14, as: UInt32.self)
        p.storeBytes(of: dash, toByteOffset: 18, as: UInt8.self)
        p.storeBytes(of: Self.hex4(UInt16(truncatingIfNeeded: low >> 48)), toByteOffset: 19, as: UInt32.self)
        p.storeBytes(of: dash, toByteOffset: 23, as: UInt8.self)
        p.storeBytes(of: Self.hex4(UInt16(truncatingIfNeeded: low >> 32)), toByteOffset: 24, as: UInt32.self)
        p.storeBytes(of: Self.hex8(UInt32(truncatingIfNeeded: low)), toByteOffset: 28, as: UInt64.self)
    }

    /// The eight lower-case hex digits of `value` as the bytes of a word, most significant digit first in memory.
    @inline(__always)
    static func hex8(_ value: UInt32) -> UInt64 {
        // Spread the nibbles one per byte, the least significant in the lowest byte...
        var x = UInt64(value)
        x = (x & 0xFFFF_0000) << 16 | (x & 0xFFFF)
        x = (x & 0x0000_FF00_0000_FF00) << 8 | (x & 0x0000_00FF_0000_00FF)
        x = (x & 0x00F0_00F0_00F0_00F0) << 4 | (x & 0x000F_000F_000F_000F)
        // ...make each its digit ('a' is '0' + 10 + 39: add 39 where the nibble is 10 or more)...
        let letters = ((x &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
        x = x &+ 0x3030_3030_3030_3030 &+ letters &* 39
        // ...and order the bytes so that the most significant digit is stored first, whatever the byte order.
        return x.byteSwapped.littleEndian
    }

    /// The four lower-case hex digits of `value`, as `hex8` does it.
    @inline(__always)
    static func hex4(_ value: UInt16) -> UInt32 {
        var x = UInt32(value)
        x = (x & 0xFF00) << 8 | (x & 0x00FF)
        x = (x & 0x00F0_00F0) << 4 | (x & 0x000F_000F)
        let letters = ((x &+ 0x0606_0606) >> 4) & 0x0101_0101
        x = x &+ 0x3030_3030 &+ letters &* 39
        return x.byteSwapped.littleEndian
    }

    /// Parses the canonical form (case-insensitive); nil when malformed.
    public init?(_ text: String) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var nibbles = 0
        for (i, c) in text.utf8.enumerated() {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard c == UInt8(ascii: "-") else { return nil }
                continue
            }
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            if nibbles < 16 { high = high << 4 | UInt64(v) } else { low = low << 4 | UInt64(v) }
            nibbles += 1
        }
        guard nibbles == 32, text.utf8.count == 36 else { return nil }
        self.high = high
        self.low = low
    }
}

/// The random part shared by all ids of one daemon run.
public struct EventIDBase: Sendable, Hashable {
    public let randA: UInt64
    public let randB: UInt64
    public init(randA: UInt64, randB: UInt64) {
        self.randA = randA & 0xFFF
        self.randB = randB & 0x3FFF_FFFF_FFFF_FFFF
    }
}
