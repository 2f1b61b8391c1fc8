import Glibc
import KevdKernel

/// The journal directory's files: listing segments, reading them, deleting old ones.
public enum JournalDirectory {
    public struct Segment: Sendable, Equatable {
        public let name: String
        public let path: String
        public let firstSeq: UInt64
        public let size: Int
    }

    /// Segment files in seq order. Other files are ignored.
    public static func segments(in directory: String) throws -> [Segment] {
        var out: [Segment] = []
        for entry in try DirectoryListing.entries(of: directory) {
            let name = String(decoding: entry.name, as: UTF8.self)
            guard let first = JournalFormat.firstSeq(ofSegmentNamed: name) else { continue }
            let path = directory + "/" + name
            var st = stat()
            guard stat(path, &st) == 0 else { continue }  // Deleted by retention meanwhile.
            out.append(Segment(name: name, path: path, firstSeq: first, size: Int(st.st_size)))
        }
        return out.sorted { $0.firstSeq < $1.firstSeq }
    }

    public static func readWhole(_ path: String) throws -> [UInt8] {
        try FileContents.read(path)
    }

    /// The time of a segment's first record, from its first bytes (nil when it has none yet).
    public static func firstRecordTime(of segment: Segment) -> Int64? {
        let fd = open(segment.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: JournalFormat.segmentHeaderSize + JournalFormat.recordHeaderSize)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count else { return nil }
        return bytes.withUnsafeBytes { raw -> Int64? in
            guard JournalFormat.load(UInt32.self, from: raw, at: JournalFormat.segmentHeaderSize) == JournalFormat.recordMagic
            else { return nil }
            return JournalFormat.load(Int64.self, from: raw, at: JournalFormat.segmentHeaderSize + 24)
        }
    }

    /// Deletes whole segments, oldest first, while the journal is larger than `maxBytes` or a segment's records
    /// are all older than `maxAgeNanoseconds` (judged by the next segment's first record). The segment starting
    /// at `keepingFrom` (the active one) and everything after it are never deleted. Returns the deleted names.
    /// (`kevctl journal --vacuum-*`: no consumer is asked, and a directory that cannot be listed deletes nothing.)
    public static func vacuum(
        directory: String, keepingFrom active: UInt64, maxBytes: Int64, maxAgeNanoseconds: Int64, now: Int64
    ) -> [String] {
        (try? retain(
            directory: directory, keepingFrom: active, maxBytes: maxBytes, maxAgeNanoseconds: maxAgeNanoseconds,
            now: now, needed: nil, hardMaxBytes: 0))?.deleted ?? []
    }

    /// What one retention pass did.
    public struct Retention: Sendable, Equatable {
        public var deleted: [String] = []
        /// Deleted although a consumer had not read them: the hard ceiling (each consumer reports its own gap).
        public var deletedUnread: [String] = []
        /// Kept past `maxBytes`/`maxAge` because a consumer has not read them yet.
        public var spared: [String] = []
        /// Bytes of the segments left.
        public var bytes: Int64 = 0
    }

    /// Retention as the daemon runs it: like `vacuum`, but a segment holding any seq at or after `needed` (the
    /// lowest seq a forwarder or rule has not passed) is spared past `maxBytes`/`maxAge`, and deleted only
    /// while the journal is larger than `hardMaxBytes` (0: never) or the file system has less than `minFree`
    /// bytes free (`freeBytes`, nil when unknown; 0: no floor). Throws when the directory cannot be listed.
    public static func retain(
        directory: String, keepingFrom active: UInt64, maxBytes: Int64, maxAgeNanoseconds: Int64, now: Int64,
        needed: UInt64?, hardMaxBytes: Int64, freeBytes: Int64? = nil, minFree: Int64 = 0
    ) throws -> Retention {
        let segments = try Self.segments(in: directory)
        var total = segments.reduce(Int64(0)) { $0 + Int64($1.size) }
        var result = Retention()
        var free = freeBytes
        for (i, segment) in segments.enumerated() where segment.firstSeq < active {
            var remove = maxBytes > 0 && total > maxBytes
            if !remove, maxAgeNanoseconds > 0, i + 1 < segments.count,
                let nextStart = firstRecordTime(of: segments[i + 1]), nextStart < now - maxAgeNanoseconds
            {
                remove = true
            }
            guard remove else { break }
            // The segment holds seqs up to the next one's first: unread if that reaches what a consumer needs.
            let lastSeq = i + 1 < segments.count ? segments[i + 1].firstSeq - 1 : UInt64.max
            let unread = needed.map { lastSeq >= $0 } ?? false
            if unread {
                let overCeiling = hardMaxBytes > 0 && total > hardMaxBytes
                let diskShort = minFree > 0 && (free.map { $0 < minFree } ?? false)
                guard overCeiling || diskShort else {
                    result.spared = segments[i...].filter { $0.firstSeq < active }.map(\.name)
                    break
                }
            }
            if unlink(segment.path) == 0 || errno == ENOENT {
                total -= Int64(segment.size)
                free = free.map { $0 + Int64(segment.size) }
                result.deleted.append(segment.name)
                if unread { result.deletedUnread.append(segment.name) }
            }
        }
        result.bytes = total
        return result
    }
}
