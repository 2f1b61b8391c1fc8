import CKevdShim
import Foundation
import Glibc
import KevdEvent
import KevdKernel
import KevdTestSupport
import Logging
import Testing

@testable import KevdJournal

/// A journal in a temporary directory, plus helpers to write events and read them back.
final class JournalFixture {
    let directory: String
    var nextSeq: UInt64 = 1
    let idBase = EventIDBase(randA: 7, randB: 11)

    init() throws {
        directory = try makeTemporaryDirectory(prefix: "kevd-journal") + "/journal"
    }

    /// A journal in `directory`, whose parent the fixture removes at the end.
    init(directory: String) {
        self.directory = directory
    }

    deinit { try? FileManager.default.removeItem(atPath: (directory as NSString).deletingLastPathComponent) }

    func open(_ options: Journal.Options = .init()) throws -> Journal {
        let journal = try Journal(directory: directory, options: options, logger: Logger(label: "test"))
        nextSeq = journal.nextSeq
        return journal
    }

    func event(_ i: Int, time: Int64? = nil) -> Event {
        var data = EventData()
        data.append("path", "/srv/drop/file-\(i)")
        data.append("n", i)
        let seq = nextSeq
        nextSeq += 1
        let wall = time ?? 1_790_000_000_000_000_000 + Int64(seq) * 1_000_000
        return Event(
            seq: seq, id: EventID(unixMilliseconds: UInt64(wall / 1_000_000), seq: seq, base: idBase),
            time: WallTime(nanoseconds: wall), mono: seq, source: .inotify, type: "create", key: "/srv/drop/file-\(i)",
            data: data)
    }

    /// Appends `count` events, one write per `batch`.
    @discardableResult
    func write(_ journal: Journal, count: Int, batch: Int = 10, time: ((Int) -> Int64)? = nil) -> [Event] {
        var written: [Event] = []
        for i in 0..<count {
            let e = event(i, time: time?(i))
            journal.append(e)
            written.append(e)
            if (i + 1) % batch == 0 { journal.writePending() }
        }
        journal.writePending()
        return written
    }

    func readAll(from start: JournalReader.Start = .first) throws -> (seqs: [UInt64], payloads: [[UInt8]], problems: [JournalReader.Problem]) {
        let reader = try JournalReader(directory: directory)
        try reader.seek(start)
        var seqs: [UInt64] = []
        var payloads: [[UInt8]] = []
        while let record = try reader.next() {
            seqs.append(record.seq)
            payloads.append(Array(record.payload))
        }
        return (seqs, payloads, reader.problems)
    }

    var segments: [JournalDirectory.Segment] { (try? JournalDirectory.segments(in: directory)) ?? [] }
}

@Suite("journal")
struct JournalTests {
    @Test("CRC-32C matches the standard check value, in hardware and in the portable table")
    func crcCheckValue() {
        let check = Array("123456789".utf8)
        #expect(check.withUnsafeBytes { kevd_crc32c(0, $0.baseAddress, $0.count) } == 0xE306_9283)
        #expect(check.withUnsafeBytes { kevd_crc32c_portable(0, $0.baseAddress, $0.count) } == 0xE306_9283)
        for length in [0, 1, 7, 8, 9, 63, 64, 1000] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255) }
            let hw = bytes.withUnsafeBytes { kevd_crc32c(0, $0.baseAddress, $0.count) }
            let sw = bytes.withUnsafeBytes { kevd_crc32c_portable(0, $0.baseAddress, $0.count) }
            #expect(hw == sw)
        }
    }

    @Test("events round-trip: payloads are the JSON lines, seqs in order")
    func roundTrip() throws {
        let f = try JournalFixture()
        let journal = try f.open()
        let events = f.write(journal, count: 500)
        journal.close()
        let read = try f.readAll()
        #expect(read.seqs == Array(1...500))
        #expect(read.payloads == events.map { var line: [UInt8] = []; JSONLineEncoder.append($0, to: &line); return line })
        #expect(read.problems.isEmpty)
        #expect(try JournalVerifier.verify(directory: f.directory).problems.isEmpty)
    }

    @Test("segments rotate by size, are named by their first seq, and read as one sequence; seq continues after reopening")
    func rotationAndRestart() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 8192
        var journal = try f.open(options)
        f.write(journal, count: 300, batch: 300)
        journal.close()
        let segments = f.segments
        #expect(segments.count > 3)
        #expect(segments.first?.name == "00000000000000000001.seg")
        // One batch of 300 records was split at record boundaries: no segment grew past the limit (beyond a
        // single record, which always fits in an empty segment).
        #expect(segments.allSatisfy { $0.size <= 8192 })
        journal = try f.open(options)
        #expect(journal.nextSeq == 301)
        f.write(journal, count: 50)
        journal.close()
        #expect(try f.readAll().seqs == Array(1...350))
        let report = try JournalVerifier.verify(directory: f.directory)
        #expect(report.problems.isEmpty && report.records == 350)
    }

    /// One damage function each: what a crash, a bad disk or a stray write can leave at the tail.
    static let damages: [(String, (String) throws -> Void)] = [
        ("truncated mid-record", { path in try Self.truncate(path, by: 37) }),
        ("torn padding", { path in try Self.truncate(path, by: 3) }),
        ("flipped bit in the last payload", { path in try Self.flip(path, atFromEnd: 20) }),
        ("flipped bit in the last header", { path in try Self.flipLastHeader(path) }),
        ("garbage appended", { path in try Self.append(path, Array(repeating: 0xA5, count: 777)) }),
        ("zeros appended", { path in try Self.append(path, Array(repeating: 0, count: 4096)) }),
    ]

    @Test("a damaged tail is cut at the first bad record, reported, and appending continues without a gap",
          arguments: damages.indices)
    func tailRecovery(_ index: Int) throws {
        let (name, damage) = Self.damages[index]
        let f = try JournalFixture()
        var journal = try f.open()
        f.write(journal, count: 100)
        journal.close()
        let last = try #require(f.segments.last)
        let sizeBefore = last.size
        try damage(last.path)
        journal = try f.open()
        let recovery = journal.recovery
        #expect(recovery.truncatedBytes > 0, "\(name): something was cut")
        let kept = recovery.nextSeq - 1
        #expect(kept >= 98 && kept <= 100, "\(name): at most the damaged records are lost (kept \(kept))")
        #expect((f.segments.last?.size ?? 0) <= sizeBefore)
        f.write(journal, count: 10)
        journal.close()
        let read = try f.readAll()
        #expect(read.seqs == Array(1...(kept + 10)), "\(name): gap-free after recovery")
        #expect(try JournalVerifier.verify(directory: f.directory).problems.isEmpty, "\(name): verify passes")
    }

    @Test("a damaged record in an older segment is reported with segment and offset, and skipped by readers")
    func middleCorruption() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 8192
        let journal = try f.open(options)
        f.write(journal, count: 200)
        journal.close()
        let first = try #require(f.segments.first)
        // Flip a byte inside the third record's payload.
        let bytes = try JournalDirectory.readWhole(first.path)
        var offset = JournalFormat.segmentHeaderSize
        for _ in 0..<2 {
            guard case .record(_, _, _, let next) = bytes.withUnsafeBytes({ JournalFormat.decodeRecord($0, at: offset) })
            else { Issue.record("setup"); return }
            offset = next
        }
        try Self.flip(first.path, at: offset + JournalFormat.recordHeaderSize + 5)
        let read = try f.readAll()
        #expect(read.problems.count == 1)
        #expect(read.problems.first?.segment == first.name)
        #expect(read.problems.first?.offset == offset)
        #expect(!read.seqs.contains(3))
        #expect(read.seqs.count == 199)
        let report = try JournalVerifier.verify(directory: f.directory)
        #expect(report.problems.contains { $0.segment == first.name && $0.offset == offset && $0.message == "CRC mismatch" })
    }

    @Test("retention deletes whole old segments; a reader asking for deleted seqs is told where the journal starts")
    func retention() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 8192
        options.maxBytes = 40_000
        let journal = try f.open(options)
        f.write(journal, count: 1000)
        journal.close()
        let segments = f.segments
        #expect(segments.first?.firstSeq ?? 0 > 1)
        #expect(segments.reduce(0) { $0 + $1.size } <= 40_000 + 8192 * 2)
        let reader = try JournalReader(directory: f.directory)
        try reader.seek(.seq(1))
        #expect(reader.startsAt == segments.first?.firstSeq)
        #expect(try reader.next()?.seq == segments.first?.firstSeq)
        #expect(try JournalVerifier.verify(directory: f.directory).problems.isEmpty)
    }

    @Test("seek by seq and by time lands on the first record at or after it")
    func seek() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 4096
        let journal = try f.open(options)
        let base: Int64 = 1_800_000_000_000_000_000
        f.write(journal, count: 400, time: { base + Int64($0) * 1_000_000_000 })
        journal.close()
        #expect(try f.readAll(from: .seq(250)).seqs.first == 250)
        #expect(try f.readAll(from: .seq(250)).seqs.count == 151)
        // Event i (seq i+1) is at base + i s; asking for base + 99.5 s gives seq 101.
        #expect(try f.readAll(from: .time(base + 99_500_000_000)).seqs.first == 101)
        #expect(try f.readAll(from: .time(base - 1)).seqs.first == 1)
        #expect(try f.readAll(from: .time(base + 10_000_000_000_000)).seqs.isEmpty)
    }

    @Test("a reader follows records written after it reached the end, across a rotation")
    func readWhileWriting() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.segmentBytes = 4096
        let journal = try f.open(options)
        f.write(journal, count: 5)
        let reader = try JournalReader(directory: f.directory)
        var seen: [UInt64] = []
        while let r = try reader.next() { seen.append(r.seq) }
        #expect(seen == [1, 2, 3, 4, 5])
        f.write(journal, count: 200, batch: 7)
        while let r = try reader.next() { seen.append(r.seq) }
        #expect(seen == Array(1...205))
        #expect(f.segments.count > 1)
        journal.close()
    }

    @Test("durability is reported by the flusher for batch and always, immediately for none")
    func durability() throws {
        for sync in [Journal.Options.Sync.batch, .always, .none] {
            let f = try JournalFixture()
            var options = Journal.Options()
            options.sync = sync
            options.batchIntervalNanoseconds = 1_000_000
            let journal = try f.open(options)
            let durable = LockedMax()
            journal.addDurabilityObserver(durable)
            f.write(journal, count: 50)
            let deadline = Date().addingTimeInterval(5)
            // The loop's part: the flusher's reports are applied on the journal's thread.
            while durable.value < 50 && Date() < deadline {
                journal.applyFlusherReports()
                usleep(1000)
            }
            #expect(durable.value == 50, "\(sync)")
            journal.close()
        }
    }

    @Test("synced journal pages leave the page cache, in the active segment and in retired ones; records read back whole")
    func syncedPagesAreDropped() throws {
        let f = try JournalFixture()
        guard PageCache.dropsPages(inDirectoryOf: f.directory) else {
            // tmpfs: the pages are the file, and POSIX_FADV_DONTNEED leaves them.
            print("skipped: this file system keeps a file's pages cached whatever kevd advises (tmpfs?)")
            return
        }
        var options = Journal.Options()
        options.batchIntervalNanoseconds = 1_000_000
        options.segmentBytes = 256 * 1024
        let journal = try f.open(options)
        let durable = LockedMax()
        journal.addDurabilityObserver(durable)
        let count = 6000
        f.write(journal, count: count, batch: 200)
        let deadline = Date().addingTimeInterval(30)
        while durable.value < UInt64(count) && Date() < deadline {
            journal.applyFlusherReports()
            usleep(1000)
        }
        #expect(durable.value == UInt64(count))

        let segments = f.segments
        #expect(segments.count >= 3, "rotations expected: \(segments.count) segments")
        for segment in segments {
            let (whole, resident) = try PageCache.residentWholePages(segment.path)
            #expect(whole > 0)
            #expect(resident == 0, "\(segment.name): \(resident) of \(whole) whole pages still cached")
        }
        #expect(try f.readAll().seqs == Array(1...UInt64(count)))
        journal.close()
    }

    @Test("random bytes as a segment never crash or hang the reader or the verifier")
    func randomSegments() throws {
        let f = try JournalFixture()
        let journal = try f.open()
        f.write(journal, count: 20)
        journal.close()
        let path = try #require(f.segments.first).path
        let valid = try JournalDirectory.readWhole(path)
        var generator = SystemRandomNumberGenerator()
        for round in 0..<300 {
            var bytes = valid
            switch round % 3 {
            case 0:  // random mutations of a valid segment
                for _ in 0..<Int.random(in: 1...20, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            case 1:  // random length field values
                let at = JournalFormat.segmentHeaderSize + 4
                bytes.replaceSubrange(at..<(at + 4), with: (0..<4).map { _ in UInt8.random(in: 0...255, using: &generator) })
            default:  // pure noise after a valid header
                bytes = Array(valid.prefix(32)) + (0..<Int.random(in: 0...2000, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            _ = try f.readAll()
            _ = try JournalVerifier.verify(directory: f.directory)
        }
    }

    // MARK: Damage functions

    static func truncate(_ path: String, by n: Int) throws {
        var st = stat()
        stat(path, &st)
        #expect(Glibc.truncate(path, st.st_size - off_t(n)) == 0)
    }

    static func flip(_ path: String, atFromEnd n: Int) throws {
        var st = stat()
        stat(path, &st)
        try flip(path, at: Int(st.st_size) - n)
    }

    static func flip(_ path: String, at offset: Int) throws {
        var bytes = try JournalDirectory.readWhole(path)
        bytes[offset] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func flipLastHeader(_ path: String) throws {
        let bytes = try JournalDirectory.readWhole(path)
        var offset = JournalFormat.segmentHeaderSize
        var last = offset
        while case .record(_, _, _, let next) = bytes.withUnsafeBytes({ JournalFormat.decodeRecord($0, at: offset) }) {
            last = offset
            offset = next
        }
        try flip(path, at: last + 16)  // the seq field
    }

    static func append(_ path: String, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(bytes))
        try handle.close()
    }
}

final class LockedMax: JournalDurabilityObserver, @unchecked Sendable {
    func durableAdvanced(_ seq: UInt64) { update(seq) }

    private let lock = NSLock()
    private var stored: UInt64 = 0
    func update(_ v: UInt64) {
        lock.lock()
        stored = max(stored, v)
        lock.unlock()
    }
    var value: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}

/// What the page cache holds of a file (`mincore` on a read-only mapping; mapping it faults nothing in).
enum PageCache {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Of the file's whole pages (a partly written last page is left out), how many are cached.
    static func residentWholePages(_ path: String) throws -> (whole: Int, resident: Int) {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        let size = Int(st.st_size)
        let whole = size / pageSize
        guard whole > 0 else { return (0, 0) }
        guard let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        defer { munmap(map, size) }
        var vector = [UInt8](repeating: 0, count: (size + pageSize - 1) / pageSize)
        guard mincore(map, size, &vector) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return (whole, vector.prefix(whole).filter { $0 & 1 != 0 }.count)
    }

    /// Whether a synced file's pages can be dropped here: tries it on a scratch file next to `directory`.
    static func dropsPages(inDirectoryOf directory: String) -> Bool {
        let path = (directory as NSString).deletingLastPathComponent + "/page-cache-probe"
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer {
            Glibc.close(fd)
            unlink(path)
        }
        let bytes = [UInt8](repeating: 0x61, count: 16 * pageSize)
        guard write(fd, bytes, bytes.count) == bytes.count, fdatasync(fd) == 0 else { return false }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        return (try? residentWholePages(path))?.resident == 0
    }
}
