import Glibc
import KevdKernel

/// Reads a journal directory, in seq order, while the daemon may be writing it (another process, read-only).
///
/// A damaged record is reported as a `Problem` (segment and offset) and skipped: the reader moves ahead 8 bytes
/// at a time to the next record that checks out. At the end of the newest segment, `next()` returns nil; call it
/// again later to follow new records.
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

    public let directory: String
    public private(set) var problems: [Problem] = []
    public var onProblem: ((Problem) -> Void)?
    /// Set by `seek` when the requested seq or time is older than the oldest record kept (retention).
    public private(set) var startsAt: UInt64? = nil

    private var segments: [JournalDirectory.Segment] = []
    private var index = 0
    private var bytes: [UInt8] = []
    private var offset = JournalFormat.segmentHeaderSize
    private var retriedOffset = -1
    private var minimumSeq: UInt64 = 0
    private var minimumTime: Int64 = .min

    public init(directory: String) throws {
        self.directory = directory
        segments = try JournalDirectory.segments(in: directory)
        try load(0)
    }

    /// The first seq still in the journal (nil when it is empty).
    public var firstAvailableSeq: UInt64? { segments.first?.firstSeq }

    /// Positions the reader so that `next()` returns the first record at or after `start`.
    public func seek(_ start: Start) throws {
        startsAt = nil
        minimumSeq = 0
        minimumTime = .min
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
            let decoded = bytes.withUnsafeBytes { JournalFormat.decodeRecord($0, at: offset) }
            switch decoded {
            case .record(let seq, let time, let payload, let next):
                offset = next
                if seq < minimumSeq || time < minimumTime { continue }
                return bytes.withUnsafeBytes { raw in
                    Record(seq: seq, time: time, payload: UnsafeRawBufferPointer(rebasing: raw[payload]))
                }
            case .incomplete:
                if try growCurrent() { continue }
                if isNewest {
                    try refreshSegments()
                    if isNewest { return nil }
                }
                if offset < bytes.count {
                    report(offset, "truncated record at the end of the segment (\(bytes.count - offset) bytes)")
                }
                try load(index + 1)
            case .corrupt(let why):
                // The newest segment may be mid-write: read the tail again once before calling it damage.
                if isNewest && retriedOffset != offset {
                    retriedOffset = offset
                    try reloadTail()
                    continue
                }
                report(offset, why)
                offset = resync(after: offset)
            }
        }
    }

    private var isNewest: Bool { index == segments.count - 1 }

    private func report(_ at: Int, _ message: String) {
        let problem = Problem(segment: segments[index].name, offset: at, message: message)
        problems.append(problem)
        onProblem?(problem)
    }

    /// The next 8-aligned offset after `start` where a valid record begins (or the end of the bytes).
    private func resync(after start: Int) -> Int {
        var candidate = JournalFormat.padded(start + 1)
        while candidate < bytes.count {
            let found = bytes.withUnsafeBytes { raw -> Bool in
                if case .record = JournalFormat.decodeRecord(raw, at: candidate) { return true }
                return false
            }
            if found { return candidate }
            candidate += 8
        }
        return bytes.count
    }

    private func load(_ i: Int) throws {
        index = i
        offset = JournalFormat.segmentHeaderSize
        retriedOffset = -1
        guard i < segments.count else {
            bytes = []
            return
        }
        do {
            bytes = try JournalDirectory.readWhole(segments[i].path)
        } catch let error as SyscallError where error.errno == .noSuchFileOrDirectory {
            // Deleted by retention while we were reading: the next one has what follows.
            bytes = []
            offset = 0
            return
        }
        if bytes.count >= JournalFormat.segmentHeaderSize,
            bytes.withUnsafeBytes({ JournalFormat.readSegmentHeader($0) }) == nil
        {
            report(0, "bad segment header")
        }
    }

    /// Appends what was written to the current segment since it was read; true when it grew.
    private func growCurrent() throws -> Bool {
        let path = segments[index].path
        var st = stat()
        guard stat(path, &st) == 0, Int(st.st_size) > bytes.count else { return false }
        let fd = try syscall("open") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        let old = bytes.count
        bytes += [UInt8](repeating: 0, count: Int(st.st_size) - old)
        let n = try bytes.withUnsafeMutableBytes { raw in
            try syscall("pread") { pread(fd, raw.baseAddress! + old, raw.count - old, off_t(old)) }
        }
        bytes.removeLast(bytes.count - old - n)
        return n > 0
    }

    private func reloadTail() throws {
        let fresh = try JournalDirectory.readWhole(segments[index].path)
        if fresh.count >= offset { bytes = fresh }
    }

    private func refreshSegments() throws {
        let current = index < segments.count ? segments[index].firstSeq : nil
        segments = try JournalDirectory.segments(in: directory)
        if let current, let i = segments.firstIndex(where: { $0.firstSeq == current }) {
            index = i
        } else if let current {
            index = segments.firstIndex { $0.firstSeq > current } ?? segments.count
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
                while offset < raw.count {
                    switch JournalFormat.decodeRecord(raw, at: offset) {
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
