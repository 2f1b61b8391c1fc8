import Foundation
import Glibc
import Testing

@testable import KevdJournal

@Suite("Reliability: journal write failures")
struct ReliabilityJournalWriteFailureTests {
    @Test("a segment that cannot be created leaves the batch pending and returns (no spin); the next turn retries")
    func segmentCannotBeCreated() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 4096
        options.sync = .none
        let journal = try f.open(options)
        // Directories where the next segments would go: the O_EXCL create fails, as it would for lack of space
        // or inodes. (Before the fix, writePending retried the rotation forever and never returned.)
        let blockers = (2...200).map { f.directory + "/" + JournalFormat.segmentName(firstSeq: UInt64($0)) }
        for path in blockers { mkdir(path, 0o700) }
        for i in 0..<100 { journal.append(f.event(i)) }
        journal.writePending()
        #expect(journal.lastError?.contains("cannot start a new journal segment") == true, "\(journal.lastError ?? "nil")")
        #expect(journal.writtenSeq > 0 && journal.writtenSeq < 100)
        #expect(journal.pendingBytes > 0)
        journal.writePending()
        #expect(journal.lastError != nil)

        for path in blockers { rmdir(path) }
        journal.writePending()
        #expect(journal.lastError == nil)
        #expect(journal.pendingBytes == 0)
        #expect(journal.writtenSeq == 100)
        journal.close()
        #expect(try f.readAll().seqs == Array(1...100))
        #expect(try JournalVerifier.verify(directory: f.directory).problems.isEmpty)
    }
}
