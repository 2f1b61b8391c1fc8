import Glibc
import KevdKernel

/// Reads a journal directory, in seq order, while the daemon may be writing it (another process, read-only).
///
/// It holds a window of a few hundred KiB of the current segment, not the segment, so many readers (catching-up
/// subscribers) cost little memory. A damaged record is reported as a `Problem` (segment and offset) and
/// skipped: the reader moves ahead 8 bytes at a time to the next record that checks out. At the end of the
/// newest segment, `next()` returns nil; call it again later to follow new records.
///
/// Segments may overlap after a failed sync (`Journal+SyncFailure.swift`): the records in doubt were written
/// again to a new segment named by the first of them, and the abandoned segment may still hold its copies (or
/// damage) past that seq. A segment is therefore read only up to the next segment's first seq, and the reader
/// never returns a seq at or below one it returned already.
public final class JournalReader {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let segment: String
        public let offset: Int
        public let message: String
        public var description: String { "\(segment) at offset \(offset): \(message)" }
    }

    /// A record; `payload` (the event's JSON line) is valid until the next call to `next()`.
    public struct Record {
        public let seq: UInt64
        public let time: Int64
        public let payload: UnsafeRawBufferPointer
    }

    public enum Start: Sendable, Equatable {
        case first
        case seq(UInt64)
        /// Unix nanoseconds.
        case time(Int64)
    }

    /// Bytes read ahead per refill.
    static let chunk = 256 * 1024

    public let directory: String
    public private(set) var problems: [Problem] = []
    public var onProblem: ((Problem) -> Void)?
    /// Set by `seek` when the requested seq or time is older than the oldest record kept (retention).
    public private(set) var startsAt: UInt64? = nil
    /// The seq after the last record returned: where a caller resumes.
    public private(set) var nextSeq: UInt64 = 0

    private var segments: [JournalDirectory.Segment] = []
    private var index = 0
    private var fd: Int32 = -1
    /// File bytes [windowStart, windowStart + window.count) of the current segment.
    private var window: [UInt8] = []
    private var windowStart = 0
    /// Absolute offset in the current segment of the next record.
    private var offset = JournalFormat.segmentHeaderSize
    private var retriedOffset = -1
    private var resyncing = false
    private var minimumSeq: UInt64 = 0
    private var minimumTime: Int64 = .min
    /// The last seq returned since `seek` (0: none), and the last valid seq met in the current segment.
    private var lastReturned: UInt64 = 0
    private var lastInSegment: UInt64 = 0

    public init(directory: String) throws {
        self.directory = directory
        segments = try JournalDirectory.segments(in: directory)
        try load(0)
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// The first seq still in the journal (nil when it is empty).
    public var firstAvailableSeq: UInt64? { segments.first?.firstSeq }

    /// Positions the reader so that `next()` returns the first record at or after `start`.
    public func seek(_ start: Start) throws {
        startsAt = nil
        minimumSeq = 0
        minimumTime = .min
        lastReturned = 0
        segments = try JournalDirectory.segments(in: directory)
        switch start {
        case .first:
            try load(0)
        case .seq(let seq):
            minimumSeq = seq
            if let first = segments.first, seq < first.firstSeq, seq > 0 { startsAt = first.firstSeq }
            let i = segments.lastIndex { $0.firstSeq <= seq } ?? 0
            try load(i)
        case .time(let t):
            minimumTime = t
            var chosen = 0
            for (i, segment) in segments.enumerated() {
                guard let first = JournalDirectory.firstRecordTime(of: segment) else { continue }
                if first <= t { chosen = i } else { break }
            }
            if chosen == 0, let first = segments.first, let firstTime = JournalDirectory.firstRecordTime(of: first),
                firstTime > t
            {
                startsAt = first.firstSeq
            }
            try load(chosen)
        }
    }

    /// The next record, or nil when there is none yet.
    public func next() throws -> Record? {
        while true {
            guard index < segments.count else {
                try refreshSegments()
                guard index < segments.count else { return nil }
                try load(index)
                continue
            }
            let relative = offset - windowStart
            let decoded = window.withUnsafeBytes { JournalFormat.decodeRecord($0, at: relative) }
            switch decoded {
            case .record(let seq, let time, let payload, let next):
                let afterDamage = resyncing
                resyncing = false
                if superseded(from: seq) {
                    try load(index + 1)
                    continue
                }
                if isNewest && !afterDamage && seq != lastInSegment &+ 1 {
                    // A gap between two sound records of the newest segment: only writes that went on after a failed
                    // sync dropped the file's unsynced tail make one (start-up cuts any other). The journal writes
                    // those records again to a new segment and cuts this one back: not read past meanwhile.
                    try refreshSegments()
                    if isNewest { return nil }
                    continue
                }
                offset = windowStart + next
                lastInSegment = seq
                if seq < minimumSeq || time < minimumTime || seq <= lastReturned { continue }
                lastReturned = seq
                nextSeq = seq + 1
                return window.withUnsafeBytes { raw in
                    Record(seq: seq, time: time, payload: UnsafeRawBufferPointer(rebasing: raw[payload]))
                }
            case .incomplete:
                if try fill(atLeast: neededBytes()) { continue }
                if resyncing && offset < windowStart + window.count {
                    // A candidate whose claimed length runs past the end is not a record either: keep scanning.
                    offset += 8
                    continue
                }
                if isNewest {
                    try refreshSegments()
                    if isNewest { return nil }
                }
                let end = windowStart + window.count
                if offset < end && !resyncing && !superseded(from: lastInSegment + 1) {
                    report(offset, "truncated record at the end of the segment (\(end - offset) bytes)")
                }
                try load(index + 1)
            case .corrupt(let why):
                // The newest segment may be mid-write: read it again once before calling it damage (not while
                // scanning past damage already reported, or every step would re-read).
                if isNewest && !resyncing && retriedOffset != offset {
                    retriedOffset = offset
                    window.removeAll(keepingCapacity: true)
                    windowStart = offset
                    continue
                }
                if !isNewest && superseded(from: lastInSegment + 1) {
                    // Damage past the records the next segment takes over: the abandoned tail of a failed sync.
                    try load(index + 1)
                    continue
                }
                if !resyncing { report(offset, why) }
                resyncing = true
                offset = JournalFormat.padded(offset + 1)
            }
        }
    }

    private var isNewest: Bool { index == segments.count - 1 }

    /// True when the next segment starts at or before `seq`: from there on it, not this one, holds the records.
    private func superseded(from seq: UInt64) -> Bool {
        index + 1 < segments.count && seq >= segments[index + 1].firstSeq
    }

    /// How many bytes from `offset` the record there needs, as far as its header tells.
    private func neededBytes() -> Int {
        let relative = offset - windowStart
        guard relative + JournalFormat.recordHeaderSize <= window.count else { return JournalFormat.recordHeaderSize }
        let length = window.withUnsafeBytes { JournalFormat.load(UInt32.self, from: $0, at: relative + 4) }
        return JournalFormat.recordHeaderSize + min(Int(length), JournalFormat.maxPayload) + 8
    }

    /// Makes the window hold at least `count` bytes from `offset` (or all the file has); true when it grew.
    private func fill(atLeast count: Int) throws -> Bool {
        guard fd >= 0 else { return false }
        if offset > windowStart {
            // Drop what was consumed, so the window stays small.
            let drop = min(offset - windowStart, window.count)
            window.removeFirst(drop)
            windowStart += drop
        }
        let have = windowStart + window.count
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) > have else { return false }
        // Never more than the file holds: a damaged length field can claim up to 16 MiB.
        let want = min(max(count - window.count, Self.chunk), Int(st.st_size) - have)
        let old = window.count
        window.append(contentsOf: repeatElement(0, count: want))
        let n = window.withUnsafeMutableBytes { raw in pread(fd, raw.baseAddress! + old, want, off_t(have)) }
        window.removeLast(want - max(n, 0))
        return n > 0
    }

    private func report(_ at: Int, _ message: String) {
        let problem = Problem(segment: segments[index].name, offset: at, message: message)
        problems.append(problem)
        onProblem?(problem)
    }

    private func load(_ i: Int) throws {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
        index = i
        offset = JournalFormat.segmentHeaderSize
        window.removeAll(keepingCapacity: true)
        windowStart = 0
        retriedOffset = -1
        resyncing = false
        lastInSegment = i < segments.count ? segments[i].firstSeq &- 1 : 0
        guard i < segments.count else { return }
        fd = open(segments[i].path, O_RDONLY | O_CLOEXEC)
        // Deleted by retention while we were reading: the next one has what follows.
        guard fd >= 0 else { return }
        _ = try fill(atLeast: JournalFormat.segmentHeaderSize)
        if window.count >= JournalFormat.segmentHeaderSize,
            window.withUnsafeBytes({ JournalFormat.readSegmentHeader($0) }) == nil
        {
            report(0, "bad segment header")
        }
    }

    private func refreshSegments() throws {
        let current = index < segments.count ? segments[index].firstSeq : nil
        segments = try JournalDirectory.segments(in: directory)
        if let current, let i = segments.firstIndex(where: { $0.firstSeq == current }) {
            index = i
        } else if let current {
            let nextIndex = segments.firstIndex { $0.firstSeq > current } ?? segments.count
            if nextIndex < segments.count { try load(nextIndex) } else { index = nextIndex }
        }
    }
}

/// `kevctl journal --verify`: every record's CRC, and seq continuity within and across segments.
public enum JournalVerifier {
    public struct Report: Sendable {
        public var segments = 0
        public var records = 0
        public var firstSeq: UInt64? = nil
        public var lastSeq: UInt64? = nil
        public var problems: [JournalReader.Problem] = []
        /// Segments whose tail the next segment took over (the abandoned segment of a failed sync, not cut).
        public var superseded = 0
    }

    public static func verify(directory: String) throws -> Report {
        var report = Report()
        let segments = try JournalDirectory.segments(in: directory)
        report.segments = segments.count
        var expected: UInt64? = nil
        for (i, segment) in segments.enumerated() {
            let bytes = try JournalDirectory.readWhole(segment.path)
            func problem(_ offset: Int, _ message: String) {
                report.problems.append(.init(segment: segment.name, offset: offset, message: message))
            }
            bytes.withUnsafeBytes { raw in
                guard let header = JournalFormat.readSegmentHeader(raw) else {
                    problem(0, "bad segment header")
                    return
                }
                if header.firstSeq != segment.firstSeq {
                    problem(0, "header says first seq \(header.firstSeq), file name says \(segment.firstSeq)")
                }
                if let e = expected, segment.firstSeq != e {
                    problem(0, "sequence gap: expected seq \(e), segment starts at \(segment.firstSeq)")
                }
                var next = segment.firstSeq
                var offset = JournalFormat.segmentHeaderSize
                // After a failed sync the next segment holds the records from its first seq on, written again; this
                // one's copies (or damage) from there are superseded, not problems (`JournalReader`).
                let successorFirst = i + 1 < segments.count ? segments[i + 1].firstSeq : UInt64.max
                while offset < raw.count {
                    if next >= successorFirst {
                        report.superseded += 1
                        break
                    }
                    switch JournalFormat.decodeRecord(raw, at: offset) {
                    case .record(let seq, _, _, _) where seq >= successorFirst:
                        report.superseded += 1
                        offset = raw.count
                    case .record(let seq, _, _, let end):
                        if seq != next { problem(offset, "sequence gap: expected seq \(next), found \(seq)") }
                        report.firstSeq = report.firstSeq ?? seq
                        report.lastSeq = seq
                        report.records += 1
                        next = seq + 1
                        offset = end
                    case .incomplete:
                        // The newest segment's tail may be mid-write by a running daemon.
                        if i != segments.count - 1 { problem(offset, "truncated record at the end of the segment") }
                        offset = raw.count
                    case .corrupt(let why):
                        problem(offset, why)
                        var candidate = JournalFormat.padded(offset + 1)
                        offset = raw.count
                        while candidate < raw.count {
                            if case .record = JournalFormat.decodeRecord(raw, at: candidate) {
                                offset = candidate
                                break
                            }
                            candidate += 8
                        }
                    }
                }
                expected = next
            }
        }
        return report
    }
}
