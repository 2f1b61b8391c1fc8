import KevdEvent
import KevdJournal
import KevdFuzzSupport

/// A journal segment of arbitrary bytes, read as `kevctl journal`, a catching-up subscriber and a rule's
/// replay read one: every record that checks out is returned, damage is reported (segment and offset) and
/// skipped, never a crash or a loop. A valid segment after it holds a sentinel record, which the reader must
/// still reach: damage in one segment loses nothing after it.
let directory = Fuzz.scratchDirectory("journal")
let segment = directory + "/" + JournalFormat.segmentName(firstSeq: 1)
let sentinelSeq: UInt64 = 1_000_000_000
let sentinelPayload = Array(#"{"sentinel":true}"#.utf8)

/// A segment as the journal writes it: header, then one record (magic, length, CRC-32C, seq, time, payload).
func sentinelSegment() -> [UInt8] {
    func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    var bytes = JournalFormat.segmentMagic + le(JournalFormat.version) + le(UInt32(JournalFormat.segmentHeaderSize))
        + le(sentinelSeq) + le(Int64(1_700_000_000_000_000_000))
    // The CRC covers everything after itself: flags, seq, time and payload.
    let covered = le(UInt32(0)) + le(sentinelSeq) + le(Int64(1_700_000_000_000_000_000)) + sentinelPayload
    let crc = covered.withUnsafeBytes { JournalFormat.crc32c($0) }
    bytes += le(JournalFormat.recordMagic) + le(UInt32(sentinelPayload.count)) + le(crc) + covered
    while bytes.count % 8 != 0 { bytes.append(0) }
    return bytes
}

let sentinelWritten: Void = sentinelSegment().withUnsafeBytes {
    Fuzz.write($0, to: directory + "/" + JournalFormat.segmentName(firstSeq: sentinelSeq))
}

/// A mutated record almost never has the right CRC, so the fuzzer would rarely get past the check into what
/// follows (payload decoding, lengths that hold). When bit 0 of the segment header's creation time (a field no
/// reader checks) is set, every record the bytes announce gets its CRC made right first.
func fixingCRCs(_ input: UnsafeRawBufferPointer) -> [UInt8] {
    var bytes = Array(input)
    guard bytes.count > 24, bytes[24] & 1 == 1 else { return bytes }
    func load(_ at: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self) } }
    var offset = JournalFormat.segmentHeaderSize
    while offset + JournalFormat.recordHeaderSize <= bytes.count {
        let length = Int(load(offset + 4))
        let end = offset + JournalFormat.recordHeaderSize + length
        guard load(offset) == JournalFormat.recordMagic, length > 0, end <= bytes.count else {
            offset += 8
            continue
        }
        let crc = bytes.withUnsafeBytes { JournalFormat.crc32c(UnsafeRawBufferPointer(rebasing: $0[(offset + 12)..<end])) }
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange((offset + 8)..<(offset + 12), with: $0) }
        offset = JournalFormat.padded(end)
    }
    return bytes
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJournal(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    _ = sentinelWritten
    fixingCRCs(UnsafeRawBufferPointer(start: start, count: count)).withUnsafeBytes { Fuzz.write($0, to: segment) }
    do {
        let reader = try JournalReader(directory: directory)
        var last: (seq: UInt64, payload: [UInt8])? = nil
        var records = 0
        while let record = try reader.next() {
            records += 1
            // Each record takes at least a header and 8 bytes of payload; more would mean reading one twice.
            Fuzz.check(records <= count / 40 + 2, "more records (\(records)) than \(count) bytes can hold")
            _ = try? Event(jsonLine: record.payload)
            last = (record.seq, Array(record.payload))
        }
        Fuzz.check(last?.seq == sentinelSeq && last?.payload == sentinelPayload, "the record after a damaged segment was lost")
        for problem in reader.problems {
            Fuzz.check(problem.offset >= 0 && problem.offset <= count, "a problem outside the segment: \(problem)")
        }
        let report = try JournalVerifier.verify(directory: directory)
        Fuzz.check(report.lastSeq == sentinelSeq, "verify lost the sentinel")
    } catch {
        Fuzz.check(false, "reading the journal threw: \(error)")
    }
    return 0
}

@_cdecl("FuzzJournal_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzJournal)
}
