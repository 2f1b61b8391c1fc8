import CKevdShim
import Glibc
import KevdEvent
import KevdKernel
import Logging

/// The append side of the journal, owned by the loop thread.
///
/// `append` encodes a record into a pending buffer (no syscall); `writePending`, called once per loop turn,
/// hands the whole batch to the kernel with one `write` (page cache: safe across a kevd crash). Making it
/// durable across a power cut is the `Flusher` thread's job: it `fdatasync`s and signals `flusherReports`, and
/// the loop moves `durableSeq` and tells the `JournalDurabilityObserver`s (`Journal+Durability.swift`), so the
/// loop never waits for the disk. Synced pages are then dropped from the page cache (see `Flusher`).
///
/// A failed sync is never taken for progress: `durableSeq` stays at the last seq whose sync succeeded, the
/// records written since are in doubt, and the journal writes them again from memory into a new segment
/// (`Journal+SyncFailure.swift`).
public final class Journal {
    public struct Options: Sendable, Equatable {
        public enum Sync: String, Sendable { case batch, always, none }
        public var sync: Sync = .batch
        /// Group commit: at most one `fdatasync` per this many nanoseconds (`batch`).
        public var batchIntervalNanoseconds: Int64 = 5_000_000
        public var segmentBytes: Int = 64 * 1024 * 1024
        /// Retention: whole old segments are deleted past these (0: no limit).
        public var maxBytes: Int64 = 0
        public var maxAgeNanoseconds: Int64 = 0
        /// Retention's hard ceiling: segments a consumer has not read are deleted only past it (0: never).
        public var maxBytesHard: Int64 = 0
        /// Retention's free-space floor: unread segments are deleted too while the file system has less free.
        public var minFreeBytes: Int64 = 0
        public init() {}
    }

    /// What start-up found and repaired.
    public struct Recovery: Sendable, Equatable {
        public var segments = 0
        /// Bytes cut from the tail of the last segment (a torn or damaged write).
        public var truncatedBytes = 0
        public var truncatedSegment: String? = nil
        /// The seq the next event gets; if anything was truncated, the first seq that is given again.
        public var nextSeq: UInt64 = 1
        /// Segments removed because they held no valid record (a crash while creating one).
        public var removedSegments: [String] = []
    }

    public let directory: String
    public let options: Options
    let logger: Logger
    public private(set) var nextSeq: UInt64
    /// Everything up to here has been handed to the kernel.
    public internal(set) var writtenSeq: UInt64
    /// Everything up to here survives a power cut (per the sync policy). Moved on the loop thread only
    /// (`Journal+Durability.swift`).
    public internal(set) var durableSeq: UInt64
    /// Why the journal cannot take events now (a failed write, or a failed sync being repaired); nil when it can.
    /// The server refuses emits while it is set, and the daemon turns it into one `kevd`/`error` episode.
    public var lastError: String? { syncFailure?.message ?? writeError }
    var writeError: String? = nil
    /// The failed sync being repaired: set when the flusher reports it, cleared once the records it put in doubt
    /// are durable in a new segment.
    public internal(set) var syncFailure: SyncFailure? = nil

    var segment: OwnedFD
    var segmentFirstSeq: UInt64
    var segmentSize: Int
    var pending = ByteBuffer(capacity: 1024 * 1024)
    /// Bytes of the chunk being written that a partial `write` left (they start mid-record).
    var chunkRemaining = 0
    private var chunkLastSeq: UInt64 = 0
    var flusher: Flusher?
    /// `pending[0..<writeOffset]` is written, the rest is not.
    var writeOffset = 0
    /// The record bytes written since the last good sync are kept (not with `sync = none`): what a failed sync
    /// puts in doubt, to be written again. A turn's buffer, once written whole, is set aside here (no copy) and
    /// `pending` takes a spare one; buffers go back to `spare` as syncs cover them, so the hot path keeps reusing
    /// a few warm buffers. Oldest first; then `pending` itself.
    var retained: [ByteBuffer] = []
    var retainedBytes = 0
    var spare: [ByteBuffer] = []
    /// The number of the oldest kept buffer (`retained.first`, else `pending`); each buffer set aside takes the next.
    var oldestBufferID = 0
    /// Bytes at the front of the oldest kept buffer that a sync already covers.
    var oldestSynced = 0
    /// One entry per written chunk, oldest first from `unsyncedHead`: how far a sync that covers it reaches.
    var unsyncedChunks: [UnsyncedChunk] = []
    var unsyncedHead = 0
    /// The segment holding `durableSeq`, and its size when that sync covered it: where a damaged segment is cut.
    var syncedEnd: (segmentFirstSeq: UInt64, size: Int)
    /// After a failed sync: no segment to write to until the new one is created (not before `recoveryRetryAt`).
    var awaitingSegment = false
    var recoveryRetryAt: UInt64 = 0
    /// Failed syncs in the current episode (the first repair is logged, not every retry).
    var repairAttempts = 0
    /// Told on the loop thread when `durableSeq` advances (`Journal+Durability.swift`).
    var durabilityObservers: [WeakDurabilityObserver] = []
    /// Signalled by the flusher thread when it synced further or a sync failed: the loop watches it (readable)
    /// and calls `applyFlusherReports`. Never signalled with `sync = none`.
    public let flusherReports: EventFD
    /// The readers with stored positions: what retention must spare, and what they lost (Journal+Retention.swift).
    public let consumers = JournalConsumers()
    /// Retention's failure in progress (its directory cannot be listed), reported once per episode.
    var retentionProblem: String? = nil
    /// Called on the loop thread when retention starts failing (the message) and when it works again (nil).
    public var onRetentionProblem: ((String?) -> Void)?

    /// Opens (creating if needed) the journal in `directory` and repairs its tail.
    public init(directory: String, options: Options, logger: Logger) throws {
        self.directory = directory
        self.options = options
        self.logger = logger
        flusherReports = try EventFD()
        try Directories.make(directory, mode: 0o750)
        var recovery = Recovery()
        let segments = try JournalDirectory.segments(in: directory)
        recovery.segments = segments.count
        var last = segments.last
        // A segment without a valid header was being created when kevd stopped: it holds nothing.
        while let candidate = last, try Self.isHeaderless(candidate.path) {
            unlink(candidate.path)
            recovery.removedSegments.append(candidate.name)
            last = segments.last { $0.firstSeq < candidate.firstSeq }
        }
        if let last {
            let scan = try Self.scanTail(of: last)
            if scan.validEnd < scan.size {
                try syscall("truncate") { Glibc.truncate(last.path, off_t(scan.validEnd)) }
                recovery.truncatedBytes = scan.size - scan.validEnd
                recovery.truncatedSegment = last.name
            }
            nextSeq = scan.nextSeq
            segmentFirstSeq = last.firstSeq
            segmentSize = scan.validEnd
            segment = OwnedFD(try syscall("open") { open(last.path, O_WRONLY | O_APPEND | O_CLOEXEC) })
        } else {
            nextSeq = 1
            segmentFirstSeq = 1
            segmentSize = 0
            segment = OwnedFD(try Self.createSegment(in: directory, firstSeq: 1))
            segmentSize = JournalFormat.segmentHeaderSize
        }
        recovery.nextSeq = nextSeq
        writtenSeq = nextSeq - 1
        durableSeq = nextSeq - 1
        syncedEnd = (segmentFirstSeq, segmentSize)
        self.recovery = recovery
        if options.sync != .none {
            // What start-up found is taken as durable, so it must be: the repair, the removed files, and a tail an
            // earlier run wrote but was killed before syncing. A failure here stops kevd (a non-zero exit; the
            // next start's recovery reads the files again) rather than building on records in doubt.
            if let code = Flusher.dataSync(segment.rawValue) {
                throw SyscallError(call: "fdatasync(\(segmentFirstSeq))", errno: .init(rawValue: code))
            }
            if let code = Flusher.syncDirectory(directory) {
                throw SyscallError(call: "fsync(\(directory))", errno: .init(rawValue: code))
            }
            // The flusher only wakes the loop; the loop reads how far it synced (`applyFlusherReports`).
            flusher = try Flusher(
                interval: options.sync == .always ? 0 : options.batchIntervalNanoseconds,
                report: { [flusherReports] _ in flusherReports.signal() },
                onFailure: { [flusherReports] in flusherReports.signal() })
        }
    }

    public let recovery: Recovery

    deinit { flusher?.stop() }

    /// Adds `event` to the pending batch. Its payload is exactly `JSONLineEncoder`'s line.
    public func append(_ event: Event) {
        appendRecord(seq: event.seq, time: event.time.nanoseconds) { JSONLineEncoder.append(event, to: $0) }
    }

    /// Adds `event` whose JSON line the caller already encoded (the pipeline encodes each event once for all
    /// sinks): the payload is copied, not encoded again.
    public func append(_ event: Event, line: UnsafeRawBufferPointer) {
        appendRecord(seq: event.seq, time: event.time.nanoseconds) { $0.append(line) }
    }

    private func appendRecord(seq: UInt64, time: Int64, payload write: (ByteBuffer) -> Void) {
        precondition(seq == nextSeq, "journal seq \(nextSeq) but event seq \(seq)")
        let headerAt = pending.count
        _ = pending.reserve(JournalFormat.recordHeaderSize)
        pending.commit(JournalFormat.recordHeaderSize)
        write(pending)
        let payloadLength = pending.count - headerAt - JournalFormat.recordHeaderSize
        let padding = JournalFormat.padded(payloadLength) - payloadLength
        let pad = pending.reserve(padding)
        pad.initialize(repeating: 0, count: padding)
        pending.commit(padding)
        let header = UnsafeMutableRawPointer(pending.base + headerAt)
        JournalFormat.store(JournalFormat.recordMagic, at: header)
        JournalFormat.store(UInt32(payloadLength), at: header + 4)
        JournalFormat.store(UInt32(0), at: header + 12)
        JournalFormat.store(seq, at: header + 16)
        JournalFormat.store(time, at: header + 24)
        let covered = UnsafeRawBufferPointer(start: header + 12, count: 20 + payloadLength)
        JournalFormat.store(JournalFormat.crc32c(covered), at: header + 8)
        nextSeq += 1
    }

    /// Writes the pending batch, once per loop turn: one `write` per segment it touches. A batch is split at a
    /// record boundary when the segment would grow past `segmentBytes`, so segments keep their size.
    public func writePending() {
        // Handled once per failure: until the new segment exists (`awaitingSegment`), the flusher stays failed.
        if !awaitingSegment, let flusher, flusher.hasFailed { handleSyncFailure() }
        if awaitingSegment && !startRecoverySegment() { return }
        while writeOffset < pending.count {
            if chunkRemaining == 0 {
                let (bytes, lastSeq) = wholeRecordsFitting()
                if bytes == 0 {
                    // A segment that cannot be created (ENOSPC, EMFILE) leaves the batch pending like a failed
                    // write; looping on it would spin the loop forever.
                    guard rotate() else { return }
                    continue
                }
                chunkRemaining = bytes
                chunkLastSeq = lastSeq
            }
            let n = kevd_write_some(segment.rawValue, pending.base + writeOffset, chunkRemaining)
            if n < 0 {
                // Kept pending and retried next turn (ENOSPC, EIO); reported once per distinct error.
                failed("journal write failed: \(String(cString: strerror(errno)))")
                return
            }
            segmentSize += n
            // Kept until a sync covers them (`trimUnsynced`); without syncs there is nothing to wait for.
            if flusher != nil { writeOffset += n } else { pending.removeFirst(n) }
            chunkRemaining -= n
            guard chunkRemaining == 0 else { return }  // A partial write: the rest goes next turn, in order.
            writeError = nil
            writtenSeq = chunkLastSeq
            if flusher != nil {
                unsyncedChunks.append(
                    UnsyncedChunk(
                        lastSeq: writtenSeq, segmentFirstSeq: segmentFirstSeq, segmentSize: segmentSize,
                        buffer: oldestBufferID + retained.count, end: writeOffset))
            }
        }
        if let flusher {
            setAsideWritten()
            // What a sync already covers need not be kept for a rewrite: dropped now, whoever applies the report.
            if unsyncedHead < unsyncedChunks.count { trimUnsynced(through: flusher.durable) }
            flusher.request(fd: segment.rawValue, upTo: writtenSeq, bytes: segmentSize)
        } else {
            pending.removeAll()
        }
        if flusher == nil && writtenSeq > durableSeq {
            // `sync = none`: written is as durable as it gets; the observers hear of it on progress only.
            durableSeq = writtenSeq
            notifyDurable()
        }
    }

    /// Records the error that keeps the pending batch from the file, logging it once per distinct error (the
    /// daemon turns the episode into one `kevd`/`error` event and refuses emits until it clears).
    func failed(_ message: String) {
        guard writeError != message else { return }
        writeError = message
        logger.error("journal write failed", metadata: ["journal.segment": "\(segmentFirstSeq)", "error": "\(message)"])
    }

    /// Bytes appended but not yet handed to the kernel: they only grow while writes fail (`lastError`), so the
    /// daemon bounds them by pausing its kernel sources.
    public var pendingBytes: Int { pending.count - writeOffset }

    /// Bytes of whole pending records that fit in the current segment (at least one record when the segment is
    /// empty, whatever its size), and the seq of the last of them.
    private func wholeRecordsFitting() -> (bytes: Int, lastSeq: UInt64) {
        let raw = UnsafeRawBufferPointer(rebasing: pending.bytes[writeOffset...])
        var offset = 0
        var lastSeq = writtenSeq
        while offset + JournalFormat.recordHeaderSize <= raw.count {
            let length = Int(JournalFormat.load(UInt32.self, from: raw, at: offset + 4))
            let size = JournalFormat.padded(JournalFormat.recordHeaderSize + length)
            let segmentEmpty = segmentSize + offset <= JournalFormat.segmentHeaderSize
            if segmentSize + offset + size > options.segmentBytes && !segmentEmpty { break }
            lastSeq = JournalFormat.load(UInt64.self, from: raw, at: offset + 16)
            offset += size
        }
        return (offset, lastSeq)
    }

    /// The flusher's `fdatasync` figures (all zero with `sync = none`); `resettingWindow` starts a new window for
    /// the maximum. Takes the flusher's figures lock only for a copy, never waits for a sync.
    public func syncFigures(resettingWindow: Bool = false) -> SyncFigures {
        flusher?.syncFigures(resettingWindow: resettingWindow) ?? SyncFigures()
    }

    /// Waits for everything written to be durable: for a clean shutdown only (it blocks). False when it could not
    /// be (a failed sync, a batch that could not be written): what was not synced is then in doubt, for start-up
    /// recovery to judge, and kevd exits non-zero.
    @discardableResult
    public func close() -> Bool {
        writePending()
        var failedSync = false
        if let flusher {
            flusher.stop()
            failedSync = flusher.hasFailed
            self.flusher = nil
        }
        guard !failedSync, syncFailure == nil, pendingBytes == 0, segment.isOpen else {
            logger.error(
                "journal not synced at shutdown",
                metadata: ["journal.durable_seq": "\(durableSeq)", "journal.written_seq": "\(writtenSeq)", "error": "\(lastError ?? "sync failed")"])
            return false
        }
        if options.sync != .none, let code = Flusher.dataSync(segment.rawValue) {
            logger.error(
                "journal not synced at shutdown",
                metadata: ["journal.durable_seq": "\(durableSeq)", "error": "\(String(cString: strerror(code)))"])
            return false
        }
        let advanced = writtenSeq > durableSeq
        durableSeq = writtenSeq
        // The observers hear of the last advance too: forwarders send the tail before they are stopped.
        if advanced { notifyDurable() }
        return true
    }

    /// Starts a new segment named by the next seq to write. The old one is synced by the flusher before it is
    /// closed; the new file and its directory entry are synced the same way.
    private func rotate() -> Bool {
        let first = pendingFirstSeq
        do {
            let fd = try Self.createSegment(in: directory, firstSeq: first)
            let old = segment
            segment = OwnedFD(fd)
            segmentFirstSeq = first
            segmentSize = JournalFormat.segmentHeaderSize
            if let flusher {
                flusher.retire(old, directory: directory, upTo: writtenSeq)
            }
            enforceRetention()
            return true
        } catch {
            failed("cannot start a new journal segment: \(error)")
            return false
        }
    }

    private var pendingFirstSeq: UInt64 {
        let raw = UnsafeRawBufferPointer(rebasing: pending.bytes[writeOffset...])
        return raw.count >= JournalFormat.recordHeaderSize ? JournalFormat.load(UInt64.self, from: raw, at: 16) : nextSeq
    }

    /// The first seq of the segment being written: retention never deletes it (Journal+Retention.swift).
    var activeSegmentFirstSeq: UInt64 { segmentFirstSeq }

    // MARK: Start-up

    static func createSegment(in directory: String, firstSeq: UInt64) throws -> Int32 {
        let path = directory + "/" + JournalFormat.segmentName(firstSeq: firstSeq)
        let fd = try syscall("open(\(path))") { open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o640) }
        var header = [UInt8](repeating: 0, count: JournalFormat.segmentHeaderSize)
        header.withUnsafeMutableBytes {
            JournalFormat.writeSegmentHeader(firstSeq: firstSeq, createdNanoseconds: Clock.realtimeNanoseconds(), to: $0.baseAddress!)
        }
        let n = header.withUnsafeBytes { kevd_write_some(fd, $0.baseAddress, $0.count) }
        guard n == JournalFormat.segmentHeaderSize else {
            let code = errno
            Glibc.close(fd)
            unlink(path)
            throw SyscallError(call: "write(segment header)", errno: .init(rawValue: code))
        }
        return fd
    }

    static func isHeaderless(_ path: String) throws -> Bool {
        var header = [UInt8](repeating: 0, count: JournalFormat.segmentHeaderSize)
        let fd = try syscall("open") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        return n < JournalFormat.segmentHeaderSize || header.withUnsafeBytes({ JournalFormat.readSegmentHeader($0) }) == nil
    }

    struct TailScan {
        var size: Int
        var validEnd: Int
        var nextSeq: UInt64
    }

    /// Reads the last segment and finds where its valid records end: the first record that is torn, damaged,
    /// or out of sequence ends the journal.
    static func scanTail(of segment: JournalDirectory.Segment) throws -> TailScan {
        let bytes = try JournalDirectory.readWhole(segment.path)
        return bytes.withUnsafeBytes { raw in
            var offset = JournalFormat.segmentHeaderSize
            var expected = segment.firstSeq
            while offset < raw.count {
                // A record whose padding is missing was torn with it: appending after it would lose alignment.
                guard case .record(let seq, _, _, let next) = JournalFormat.decodeRecord(raw, at: offset), seq == expected,
                    next % 8 == 0
                else { break }
                expected += 1
                offset = next
            }
            return TailScan(size: raw.count, validEnd: min(offset, raw.count), nextSeq: expected)
        }
    }
}
