import Foundation
import Testing

@testable import KevdJournal

/// Inputs `scripts/fuzz` found (Fuzz/), kept as regression cases.
@Suite("Reliability: fuzz regressions (journal)")
struct ReliabilityFuzzJournalRegressionTests {
    /// The journal fuzz target's finding: a record whose seq is the largest UInt64, with its CRC right (damage the
    /// CRC cannot tell, or a hand-edited file), trapped in `JournalReader.next()` on `seq + 1`: in kevd that is
    /// a subscriber catching up or a rule replaying, so the daemon died. Seq 0 would trap the forwarder
    /// (`seq - 1`). Both are now damage like any other: reported, skipped, and the records after them read.
    @Test("records with an impossible seq are reported and skipped, not trapped on")
    func impossibleSeq() throws {
        let f = try JournalFixture()
        let journal = try f.open()
        f.write(journal, count: 5)
        journal.close()
        let segment = try #require(f.segments.first)
        var bytes = try JournalDirectory.readWhole(segment.path)
        var offsets: [Int] = []
        var offset = JournalFormat.segmentHeaderSize
        while case .record(_, _, let payload, let next) = bytes.withUnsafeBytes({ JournalFormat.decodeRecord($0, at: offset) }) {
            offsets.append(offset)
            _ = payload
            offset = next
        }
        try #require(offsets.count == 5)
        for (index, seq) in [(1, UInt64.max), (3, UInt64(0))] {
            let at = offsets[index]
            withUnsafeBytes(of: seq.littleEndian) { bytes.replaceSubrange((at + 16)..<(at + 24), with: $0) }
            let length = bytes.withUnsafeBytes { Int(JournalFormat.load(UInt32.self, from: $0, at: at + 4)) }
            let crc = bytes.withUnsafeBytes {
                JournalFormat.crc32c(UnsafeRawBufferPointer(rebasing: $0[(at + 12)..<(at + JournalFormat.recordHeaderSize + length)]))
            }
            withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange((at + 8)..<(at + 12), with: $0) }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: segment.path))

        let read = try f.readAll()
        #expect(read.seqs == [1, 3, 5])
        #expect(read.problems.map(\.offset) == [offsets[1], offsets[3]])
        #expect(read.problems.map(\.message) == ["impossible seq \(UInt64.max)", "impossible seq 0"])
        let report = try JournalVerifier.verify(directory: f.directory)
        // The verifier also names the gaps they leave in the seqs.
        #expect(report.problems.filter { $0.message.hasPrefix("impossible seq") }.map(\.offset) == [offsets[1], offsets[3]])
    }
}
