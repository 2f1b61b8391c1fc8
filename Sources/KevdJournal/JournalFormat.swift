import CKevdShim

/// The journal's on-disk format (docs/JOURNAL.md describes it for readers in other languages).
///
/// A journal is a directory of segment files named by the seq of their first record, zero-padded to 20 digits
/// (`00000000000000000001.seg`), so lexical order is seq order. A segment is a 32-byte header followed by
/// records, each starting at an 8-byte aligned offset:
///
/// Segment header (little-endian):  magic "KEVDJRNL" (8) · version u32 = 1 · header size u32 = 32 ·
/// first seq u64 · creation time i64 (Unix ns).
///
/// Record: magic u32 0x5256454B ("KEVR") · payload length u32 · CRC-32C u32 · flags u32 = 0 · seq u64 ·
/// time i64 (Unix ns) · payload · zero padding to the next multiple of 8. The CRC covers everything after
/// itself: flags, seq, time and payload. The payload is the event's JSON line, newline included, exactly as
/// subscribers receive it. Every record is self-checking, so a reader that meets a damaged one can skip ahead
/// 8 bytes at a time to the next valid magic.
public enum JournalFormat {
    public static let segmentMagic: [UInt8] = Array("KEVDJRNL".utf8)
    public static let version: UInt32 = 1
    public static let segmentHeaderSize = 32
    public static let recordMagic: UInt32 = 0x5256_454B
    public static let recordHeaderSize = 32
    /// Larger payloads are rejected when writing and treated as corruption when reading.
    public static let maxPayload = 16 * 1024 * 1024
    public static let segmentSuffix = ".seg"

    public static func segmentName(firstSeq: UInt64) -> String {
        let digits = String(firstSeq)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + segmentSuffix
    }

    /// The first seq a segment file name stands for; nil for other files.
    public static func firstSeq(ofSegmentNamed name: String) -> UInt64? {
        guard name.hasSuffix(segmentSuffix), name.utf8.count == 20 + segmentSuffix.utf8.count else { return nil }
        return UInt64(name.dropLast(segmentSuffix.count))
    }

    @inline(__always)
    public static func padded(_ n: Int) -> Int { (n + 7) & ~7 }

    public static func crc32c(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        kevd_crc32c(initial, bytes.baseAddress, bytes.count)
    }

    static func store<T: FixedWidthInteger>(_ value: T, at pointer: UnsafeMutableRawPointer) {
        pointer.storeBytes(of: value.littleEndian, as: T.self)
    }

    static func load<T: FixedWidthInteger>(_ type: T.Type, from bytes: UnsafeRawBufferPointer, at offset: Int) -> T {
        T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// Writes a segment header into 32 bytes at `pointer`.
    static func writeSegmentHeader(firstSeq: UInt64, createdNanoseconds: Int64, to pointer: UnsafeMutableRawPointer) {
        pointer.copyMemory(from: segmentMagic, byteCount: 8)
        store(version, at: pointer + 8)
        store(UInt32(segmentHeaderSize), at: pointer + 12)
        store(firstSeq, at: pointer + 16)
        store(createdNanoseconds, at: pointer + 24)
    }

    public struct SegmentHeader: Equatable, Sendable {
        public let firstSeq: UInt64
        public let createdNanoseconds: Int64
    }

    static func readSegmentHeader(_ bytes: UnsafeRawBufferPointer) -> SegmentHeader? {
        guard bytes.count >= segmentHeaderSize, bytes.prefix(8).elementsEqual(segmentMagic),
            load(UInt32.self, from: bytes, at: 8) == version,
            load(UInt32.self, from: bytes, at: 12) == UInt32(segmentHeaderSize)
        else { return nil }
        return SegmentHeader(firstSeq: load(UInt64.self, from: bytes, at: 16), createdNanoseconds: load(Int64.self, from: bytes, at: 24))
    }

    /// What one position of a segment holds.
    public enum Decoded {
        /// A valid record: its fields, the payload's range in the buffer, and where the next record starts.
        case record(seq: UInt64, time: Int64, payload: Range<Int>, next: Int)
        /// Not enough bytes for the record the header announces (the tail is being written, or was torn).
        case incomplete
        /// Damaged: bad magic, impossible length, a CRC mismatch, or an impossible seq (0 or the largest).
        case corrupt(String)
    }

    /// Decodes the record at `offset` of `bytes` (a segment's contents, or a window of them).
    public static func decodeRecord(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Decoded {
        guard offset + recordHeaderSize <= bytes.count else { return .incomplete }
        guard load(UInt32.self, from: bytes, at: offset) == recordMagic else { return .corrupt("bad record magic") }
        let length = Int(load(UInt32.self, from: bytes, at: offset + 4))
        guard length > 0, length <= maxPayload else { return .corrupt("impossible payload length \(length)") }
        let end = offset + recordHeaderSize + length
        guard end <= bytes.count else { return .incomplete }
        let stored = load(UInt32.self, from: bytes, at: offset + 8)
        let computed = crc32c(UnsafeRawBufferPointer(rebasing: bytes[(offset + 12)..<end]))
        guard stored == computed else { return .corrupt("CRC mismatch") }
        let seq = load(UInt64.self, from: bytes, at: offset + 16)
        // Seqs start at 1 and cannot reach the top; every reader computes seq + 1 or seq - 1, which would trap on
        // such a record (found by fuzzing: damage that kept its CRC right).
        guard seq > 0, seq < .max else { return .corrupt("impossible seq \(seq)") }
        let time = load(Int64.self, from: bytes, at: offset + 24)
        return .record(seq: seq, time: time, payload: (offset + recordHeaderSize)..<end, next: min(padded(end), bytes.count))
    }
}
