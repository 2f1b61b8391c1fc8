import Glibc
import Logging
import Testing

@testable import KevdJournal

/// Retention and the journal's consumers, without a daemon: what `enforceRetention` spares for the lowest seq a
/// consumer needs, and where the hard ceiling overrides it.
@Suite("journal retention spares consumers")
struct RetentionSparingTests {
    func journal(_ f: JournalFixture, hard: Int64) throws -> Journal {
        var options = Journal.Options()
        options.segmentBytes = 8192
        options.maxBytes = 40_000
        options.maxBytesHard = hard
        return try f.open(options)
    }

    @Test("segments at or after the lowest need are kept past max_bytes; once it moves on they go")
    func spared() throws {
        let f = try JournalFixture()
        let journal = try journal(f, hard: 0)
        var need: UInt64? = 2
        journal.consumers.register { need }
        f.write(journal, count: 1000)
        #expect(f.segments.first?.firstSeq == 1, "a segment holding seq 2 was deleted")
        #expect(f.segments.reduce(0) { $0 + $1.size } > 100_000)
        need = 900
        let result = journal.enforceRetention()
        #expect(!result.deleted.isEmpty && result.deletedUnread.isEmpty)
        let first = try #require(f.segments.first)
        #expect(first.firstSeq <= 900, "the segment holding seq 900 was deleted")
        #expect(f.segments.reduce(0) { $0 + $1.size } <= 40_000 + 8192 * 2)
        journal.close()
    }

    @Test("past max_bytes_hard unread segments go, oldest first, just enough to get under it")
    func hardCeiling() throws {
        let f = try JournalFixture()
        let journal = try journal(f, hard: 80_000)
        journal.consumers.register { 1 }
        f.write(journal, count: 1000)
        let total = f.segments.reduce(0) { $0 + $1.size }
        #expect(total <= 80_000 + 8192 && total > 80_000 - 8192 * 2, "\(total) bytes kept")
        #expect(f.segments.first?.firstSeq ?? 0 > 1)
        journal.close()
    }

    @Test("below the free-space floor unread segments go as if past the hard ceiling, just until it is met")
    func freeSpaceFloor() throws {
        let f = try JournalFixture()
        let journal = try journal(f, hard: 0)
        journal.consumers.register { 1 }
        f.write(journal, count: 1000)
        let before = f.segments
        let active = try #require(before.last).firstSeq
        // Plenty free: nothing unread goes.
        var result = try JournalDirectory.retain(
            directory: f.directory, keepingFrom: active, maxBytes: 40_000, maxAgeNanoseconds: 0, now: 0, needed: 1,
            hardMaxBytes: 0, freeBytes: 1 << 30, minFree: 1 << 20)
        #expect(result.deleted.isEmpty && f.segments == before)
        // 20,000 bytes short of the floor: the oldest segments go until that much is freed, no further.
        result = try JournalDirectory.retain(
            directory: f.directory, keepingFrom: active, maxBytes: 40_000, maxAgeNanoseconds: 0, now: 0, needed: 1,
            hardMaxBytes: 0, freeBytes: (1 << 20) - 20_000, minFree: 1 << 20)
        let freed = before.prefix(result.deleted.count).reduce(0) { $0 + $1.size }
        #expect(result.deletedUnread == result.deleted && freed >= 20_000 && freed - before[result.deleted.count - 1].size < 20_000)
        journal.close()
    }

    @Test("a directory that cannot be listed is reported once per episode, and its end too")
    func unlistable() throws {
        let f = try JournalFixture()
        let journal = try journal(f, hard: 0)
        var reports: [String?] = []
        journal.onRetentionProblem = { reports.append($0) }
        f.write(journal, count: 10)
        #expect(rename(f.directory, f.directory + ".moved") == 0)
        let file = open(f.directory, O_CREAT | O_WRONLY, 0o600)
        close(file)
        journal.enforceRetention()
        journal.enforceRetention()
        #expect(reports.count == 1 && reports.first??.contains("cannot list") == true, "\(reports)")
        unlink(f.directory)
        #expect(rename(f.directory + ".moved", f.directory) == 0)
        journal.enforceRetention()
        #expect(reports.count == 2 && reports.last! == nil)
        journal.close()
    }
}
