import Glibc
import KevdEvent
import KevdKernel

/// A failed `fdatasync`/`fsync`, and the repair: the journal never builds on records whose sync failed.
///
/// After a failed writeback Linux may have dropped the dirty pages and cleared the error, so a later sync that
/// succeeds proves nothing (PostgreSQL's 2018 "fsyncgate"; Rebello et al., USENIX ATC 2020). Everything written
/// since the last good sync is in doubt. The journal still holds those records' bytes (`retained`, until a sync
/// covers them), so it:
/// 1. keeps `durableSeq` where the last good sync left it (nothing in doubt is acknowledged, stored as a
///    position, forwarded or handed to a rule), and sets `syncFailure` (emits refused, one `kevd`/`error`);
/// 2. abandons the damaged segment: segments that hold only records in doubt are removed, and the one holding
///    `durableSeq` is cut back (by the flusher, best effort) to the size its last good sync covered;
/// 3. writes the records in doubt, and those that came since, into a new segment named `durableSeq + 1`; the
///    flusher syncs the directory and then the segment, and only that sync's success advances `durableSeq` and
///    ends the episode (`kevd`/`resumed`).
/// Should the cut not reach the disk, the abandoned segment overlaps its successor: readers and start-up read a
/// segment only up to the next segment's first seq (`JournalReader`), so each seq is read once, from the copy
/// written last. A new failure during the repair starts it again, no more than once a second.
extension Journal {
    /// What failed, and which seqs it put in doubt.
    public struct SyncFailure: Sendable, Equatable {
        public var errno: Int32
        /// The call that failed, with its file (`fdatasync(segment)`, `fsync(/var/lib/kevd/journal)`).
        public var call: String
        /// The seqs in doubt: written after the last good sync, rewritten from memory by the repair.
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        /// The errno's symbolic name (`EIO`, `ENOSPC`, or the number).
        public var errnoName: String { Self.name(of: errno) }
        public var message: String {
            "journal sync failed (\(call): \(errnoName), \(String(cString: strerror(errno)))); seqs \(firstSeq)-\(lastSeq) are in doubt and written again to a new segment"
        }

        static func name(of code: Int32) -> String {
            switch code {
            case EIO: "EIO"
            case ENOSPC: "ENOSPC"
            case EDQUOT: "EDQUOT"
            case EROFS: "EROFS"
            case EBADF: "EBADF"
            case EINVAL: "EINVAL"
            case ENOENT: "ENOENT"
            case EACCES: "EACCES"
            case ENOTCONN: "ENOTCONN"
            default: "errno \(code)"
            }
        }
    }

    /// Where a written chunk ends (the kept buffer's number, the offset in it), and where the segment it went to
    /// then ended.
    struct UnsyncedChunk {
        var lastSeq: UInt64
        var segmentFirstSeq: UInt64
        var segmentSize: Int
        var buffer: Int
        var end: Int
    }

    /// Bytes kept in memory because their sync has not succeeded yet (the daemon pauses kernel input past a limit).
    public var unsyncedBytes: Int { retainedBytes + writeOffset - oldestSynced }

    /// A turn's buffer written whole is set aside until a sync covers it, and a spare one takes its place.
    func setAsideWritten() {
        guard writeOffset == pending.count, !pending.isEmpty else { return }
        if retained.isEmpty && oldestSynced == pending.count {
            // Synced already (the flusher was quicker than this turn): nothing to keep.
            pending.removeAll()
            writeOffset = 0
            oldestSynced = 0
            return
        }
        retained.append(pending)
        retainedBytes += pending.count
        pending = spare.popLast() ?? ByteBuffer(capacity: 1024 * 1024)
        writeOffset = 0
    }

    private func release(_ buffer: ByteBuffer) {
        buffer.removeAll()
        if spare.count < 4 { spare.append(buffer) }
    }

    /// A sync covered everything through `seq`: its bytes need not be kept any more.
    func trimUnsynced(through seq: UInt64) {
        var last: UnsyncedChunk? = nil
        while unsyncedHead < unsyncedChunks.count, unsyncedChunks[unsyncedHead].lastSeq <= seq {
            last = unsyncedChunks[unsyncedHead]
            unsyncedHead += 1
        }
        guard let last else { return }
        syncedEnd = (last.segmentFirstSeq, last.segmentSize)
        // Buffers older than the one this chunk ended in are covered whole; so is that one if it ended there.
        while !retained.isEmpty
            && (oldestBufferID < last.buffer || (oldestBufferID == last.buffer && last.end == retained[0].count))
        {
            let buffer = retained.removeFirst()
            retainedBytes -= buffer.count
            release(buffer)
            oldestBufferID += 1
            oldestSynced = 0
        }
        if oldestBufferID == last.buffer { oldestSynced = last.end }
        if unsyncedHead == unsyncedChunks.count {
            unsyncedChunks.removeAll(keepingCapacity: true)
            unsyncedHead = 0
        } else if unsyncedHead > 4096 {
            unsyncedChunks.removeFirst(unsyncedHead)
            unsyncedHead = 0
        }
    }

    /// The flusher reported a failed sync: stop writing where it failed and put everything after the last good
    /// sync back in the queue, ahead of what is pending, to be written again to a new segment.
    func handleSyncFailure() {
        guard let flusher, let failure = flusher.failure else { return }
        markDurable(failure.durable)
        let first = durableSeq + 1
        let last = max(writtenSeq, syncFailure?.lastSeq ?? 0, first)
        let episode = SyncFailure(errno: failure.errno, call: failure.call, firstSeq: first, lastSeq: last)
        let repeated = syncFailure != nil
        repairAttempts += 1
        // Logged once per distinct failure, not once per attempt of a repair that keeps failing.
        let log = syncFailure?.errno != episode.errno || syncFailure?.call != episode.call
        syncFailure = episode
        logger.log(
            level: log ? .error : .debug,
            "journal sync failed",
            metadata: [
                "journal.segment": "\(segmentFirstSeq)", "error": "\(episode.errnoName)", "call": "\(failure.call)",
                "journal.first_seq": "\(first)", "journal.last_seq": "\(last)",
            ])
        // The record stream from `first` on (a sync's seq always ends a written chunk): the kept buffers past what
        // was synced, then `pending` whole (a partly written chunk's start included), all to be written again.
        let stream = ByteBuffer(capacity: max(64 * 1024, unsyncedBytes + pending.count))
        for (i, buffer) in (retained + [pending]).enumerated() {
            let from = i == 0 ? oldestSynced : 0
            stream.append(UnsafeRawBufferPointer(rebasing: buffer.bytes[from...]))
        }
        for buffer in retained { release(buffer) }
        retained.removeAll()
        retainedBytes = 0
        pending = stream
        oldestBufferID += 1
        oldestSynced = 0
        writeOffset = 0
        unsyncedChunks.removeAll(keepingCapacity: true)
        unsyncedHead = 0
        chunkRemaining = 0
        writtenSeq = durableSeq
        segment.close()
        // Segments that start after the last good sync hold nothing else: removed, so that the new segment is the
        // only copy of their seqs (its name may be one of theirs). Their names' removal is synced with the new one.
        // One that cannot be removed is logged; if it has the new segment's name, creating that fails and is
        // retried every second.
        do {
            for old in try JournalDirectory.segments(in: directory) where old.firstSeq > durableSeq {
                if unlink(old.path) != 0 && errno != ENOENT {
                    logger.error(
                        "cannot remove a journal segment in doubt",
                        metadata: ["journal.segment": "\(old.name)", "error": "\(String(cString: strerror(errno)))"])
                }
            }
        } catch {
            logger.error("cannot list the journal's segments", metadata: ["error": "\(error)"])
        }
        awaitingSegment = true
        // A failure while repairing waits a second before the next attempt: a disk that fails every sync must not
        // make the loop rewrite its backlog every turn.
        recoveryRetryAt = repeated ? Clock.monotonicNanoseconds() + 1_000_000_000 : 0
    }

    /// Creates the segment the records in doubt go to, then lets the flusher sync again. False while it cannot
    /// (the batch stays pending; the daemon's retry timer brings the next attempt).
    func startRecoverySegment() -> Bool {
        guard Clock.monotonicNanoseconds() >= recoveryRetryAt else { return false }
        let first = durableSeq + 1
        do {
            let fd = try Self.createSegment(in: directory, firstSeq: first)
            segment = OwnedFD(fd)
        } catch {
            failed("cannot start a new journal segment: \(error)")
            recoveryRetryAt = Clock.monotonicNanoseconds() + 1_000_000_000
            return false
        }
        segmentFirstSeq = first
        segmentSize = JournalFormat.segmentHeaderSize
        awaitingSegment = false
        writeError = nil
        // The segment that holds `durableSeq` (unless nothing is durable yet, or it was removed above).
        let cut: (path: String, size: Int)? =
            syncedEnd.segmentFirstSeq <= durableSeq && durableSeq > 0
            ? (directory + "/" + JournalFormat.segmentName(firstSeq: syncedEnd.segmentFirstSeq), syncedEnd.size) : nil
        flusher?.recover(durable: durableSeq, directory: directory, cut: cut)
        logger.log(
            level: repairAttempts <= 1 ? .warning : .debug,
            "journal records in doubt are written again to a new segment",
            metadata: ["journal.segment": "\(first)", "journal.pending_bytes": "\(pending.count)", "attempt": "\(repairAttempts)"])
        return true
    }

    /// The records a failed sync put in doubt are durable in the new segment: the episode ends.
    func syncRepaired(_ failure: SyncFailure) {
        syncFailure = nil
        defer { repairAttempts = 0 }
        logger.warning(
            "journal sync failure repaired",
            metadata: [
                "attempts": "\(repairAttempts)","journal.first_seq": "\(failure.firstSeq)", "journal.last_seq": "\(failure.lastSeq)", "journal.durable_seq": "\(durableSeq)"])
    }
}
