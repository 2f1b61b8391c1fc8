import Foundation
import Glibc
import Testing

@testable import KevdJournal

/// After a failed sync the journal writes the records in doubt again to a new segment named by the first of them;
/// if the abandoned segment could not be cut back, its copies (or damage) overlap the new segment. Readers,
/// `--verify` and start-up must then read each seq once, from the new segment.
/// Writes a file whole (test helper).
enum FileContentsWriter {
    static func write(_ bytes: [UInt8], to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }
}

@Suite("Journal: segments that overlap after a failed sync")
struct JournalOverlapTests {
    /// A journal of records 1...20 in one segment, and a second segment holding 11...25 (as a repair writes them),
    /// the first one's tail left as it was (`damageTail`: overwritten with zeros, as dropped pages read back).
    private func overlapping(damageTail: Bool) throws -> JournalFixture {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.sync = .none
        let journal = try f.open(options)
        f.write(journal, count: 20)
        journal.close()
        let first = f.directory + "/" + JournalFormat.segmentName(firstSeq: 1)
        let bytes = try JournalDirectory.readWhole(first)
        // Where record 11 starts: the copy from there on belongs to the new segment.
        var offset = JournalFormat.segmentHeaderSize
        var cut = 0
        bytes.withUnsafeBytes { raw in
            while case .record(let seq, _, _, let next) = JournalFormat.decodeRecord(raw, at: offset) {
                if seq == 11 { cut = offset }
                offset = next
            }
        }
        #expect(cut > 0)
        // The new segment: records 11...25, written by a journal that starts there.
        let second = f.directory + "/" + JournalFormat.segmentName(firstSeq: 11)
        let fd = try Journal.createSegment(in: f.directory, firstSeq: 11)
        let tail = Array(bytes[cut...])
        #expect(tail.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == tail.count)
        close(fd)
        if damageTail {
            let zeros = [UInt8](repeating: 0, count: bytes.count - cut)
            let out = open(first, O_WRONLY | O_CLOEXEC)
            #expect(zeros.withUnsafeBytes { pwrite(out, $0.baseAddress, $0.count, off_t(cut)) } == zeros.count)
            close(out)
        }
        f.nextSeq = 21
        let reopened = try f.open(options)
        #expect(reopened.nextSeq == 21, "start-up continues after the new segment's last record")
        f.write(reopened, count: 5)
        reopened.close()
        #expect(FileManager.default.fileExists(atPath: second))
        return f
    }

    @Test("the new segment's copy is read, once, whether the old tail holds copies or damage")
    func readOnce() throws {
        for damage in [false, true] {
            let f = try overlapping(damageTail: damage)
            let all = try f.readAll()
            #expect(all.seqs == Array(1...25), "damage \(damage): \(all.seqs)")
            #expect(all.problems.isEmpty, "damage \(damage): \(all.problems)")
            let from15 = try f.readAll(from: .seq(15))
            #expect(from15.seqs == Array(15...25))
            let report = try JournalVerifier.verify(directory: f.directory)
            #expect(report.problems.isEmpty, "damage \(damage): \(report.problems)")
            #expect(report.records == 25 && report.superseded == 1, "damage \(damage): \(report.records) records, \(report.superseded) superseded")
        }
    }

    @Test("a gap inside the newest segment (writes after a failed sync dropped its tail) is not read past until the repair")
    func newestSegmentGapWaits() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.sync = .none
        let journal = try f.open(options)
        f.write(journal, count: 20)
        journal.close()
        let path = f.directory + "/" + JournalFormat.segmentName(firstSeq: 1)
        let bytes = try JournalDirectory.readWhole(path)
        var starts: [UInt64: Int] = [:]
        var offset = JournalFormat.segmentHeaderSize
        bytes.withUnsafeBytes { raw in
            while case .record(let seq, _, _, let next) = JournalFormat.decodeRecord(raw, at: offset) {
                starts[seq] = offset
                offset = next
            }
        }
        // Records 11 and 12 dropped from the middle: 1...10, then 13...20.
        let gapped = Array(bytes[..<starts[11]!]) + Array(bytes[starts[13]!...])
        #expect(FileContentsWriter.write(gapped, to: path))
        let reader = try JournalReader(directory: f.directory)
        var seen: [UInt64] = []
        while let record = try reader.next() { seen.append(record.seq) }
        #expect(seen == Array(1...10), "read past the gap: \(seen)")
        // The repair: the damaged segment cut back, the records written again to a segment of their own.
        #expect(truncate(path, off_t(starts[11]!)) == 0)
        let fd = try Journal.createSegment(in: f.directory, firstSeq: 11)
        let tail = Array(bytes[starts[11]!...])
        #expect(tail.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == tail.count)
        close(fd)
        while let record = try reader.next() { seen.append(record.seq) }
        #expect(seen == Array(1...20), "\(seen)")
    }

    @Test("a reader that returned a seq never returns it again when the journal rewrites it")
    func readerNeverGoesBack() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.sync = .none
        let journal = try f.open(options)
        f.write(journal, count: 20)
        let reader = try JournalReader(directory: f.directory)
        var seen: [UInt64] = []
        while let record = try reader.next() { seen.append(record.seq) }
        #expect(seen == Array(1...20))
        journal.close()
        // The repair: records 11...20 written again to a segment of their own, then more.
        let bytes = try JournalDirectory.readWhole(f.directory + "/" + JournalFormat.segmentName(firstSeq: 1))
        var offset = JournalFormat.segmentHeaderSize
        var cut = 0
        bytes.withUnsafeBytes { raw in
            while case .record(let seq, _, _, let next) = JournalFormat.decodeRecord(raw, at: offset) {
                if seq == 11 { cut = offset }
                offset = next
            }
        }
        let fd = try Journal.createSegment(in: f.directory, firstSeq: 11)
        let tail = Array(bytes[cut...])
        #expect(tail.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == tail.count)
        close(fd)
        f.nextSeq = 21
        let reopened = try f.open(options)
        f.write(reopened, count: 3)
        reopened.close()
        while let record = try reader.next() { seen.append(record.seq) }
        #expect(seen == Array(1...23), "\(seen)")
    }
}
