import CKevdShim
import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import Logging
import Synchronization

/// A journal sync policy as the command line names it: `none`, `always`, `batch` (5 ms) or `batch:1ms`.
struct SyncPolicy: Equatable, CustomStringConvertible {
    var sync: Journal.Options.Sync
    /// The group-commit interval (`batch`); 0 for `always`, which syncs as soon as the previous sync is done.
    var intervalNanoseconds: Int64

    static let none = SyncPolicy(sync: .none, intervalNanoseconds: 0)
    static let always = SyncPolicy(sync: .always, intervalNanoseconds: 0)
    static func batch(milliseconds: Int64) -> SyncPolicy {
        SyncPolicy(sync: .batch, intervalNanoseconds: milliseconds * 1_000_000)
    }

    var description: String {
        switch sync {
        case .none, .always: return sync.rawValue
        case .batch:
            let ms = Double(intervalNanoseconds) / 1e6
            return ms == ms.rounded() ? "batch \(Int(ms)) ms" : "batch \(ms) ms"
        }
    }

    /// The JSON key: `none`, `always`, `batch-1ms`, `batch-500us`.
    var key: String {
        switch sync {
        case .none, .always: return sync.rawValue
        case .batch:
            if intervalNanoseconds % 1_000_000 == 0 { return "batch-\(intervalNanoseconds / 1_000_000)ms" }
            return "batch-\(intervalNanoseconds / 1_000)us"
        }
    }
}

/// One timed run of appending `count` events.
struct AppendResult {
    var events: Int
    /// Bytes in the files at the end: segment headers, record headers, payloads, padding.
    var bytes: Int
    /// Until the last `write` returned.
    var writeSeconds: Double
    /// Until the last durable report (for `none`, the same as `writeSeconds`).
    var durableSeconds: Double
    /// Sync rounds (the journal flusher's `fdatasync`s; the ceiling's). Nil for `none`.
    var syncs: Int?
    /// CPU time of the appending thread until the last `write` returned: near `writeSeconds` when the loop is
    /// CPU-bound, lower when it waited (in `write`, or for a core the machine's other work had).
    var loopCPUSeconds: Double

    var loopBusyPercent: Double { 100 * loopCPUSeconds / writeSeconds }

    var eventsPerSecond: Double { Double(events) / durableSeconds }
    var megabytesPerSecond: Double { Double(bytes) / 1e6 / durableSeconds }
}

/// Where the durable seq reported from a sync thread is seen by the appending thread, and when it reached the end.
final class DurableProgress: JournalDurabilityObserver, @unchecked Sendable {
    func durableAdvanced(_ seq: UInt64) { report(seq) }

    // @unchecked: the shared state is atomics and an eventfd, both safe from any thread.
    let target: UInt64
    private let durable = Atomic<UInt64>(0)
    private let reportCount = Atomic<Int>(0)
    private let reachedAt = Atomic<UInt64>(0)
    private let reached: EventFD

    init(target: UInt64) throws {
        self.target = target
        reached = try EventFD(blocking: true)
    }

    /// Called from the sync thread: the time is taken there, so waking the waiter is not measured.
    func report(_ seq: UInt64) {
        reportCount.add(1, ordering: .relaxed)
        durable.store(seq, ordering: .releasing)
        if seq >= target {
            reachedAt.store(Clock.monotonicNanoseconds(), ordering: .releasing)
            reached.signal()
        }
    }

    /// Blocks until `target` is durable; returns the monotonic time it became so.
    func wait() -> UInt64 {
        while durable.load(ordering: .acquiring) < target { _ = try? reached.drain() }
        return reachedAt.load(ordering: .acquiring)
    }

    /// The same for a journal, whose observers hear of durability on its own thread (the loop's, here this one):
    /// waits on the journal's flusher eventfd and applies what it reports. The time includes that wakeup, as it
    /// does in the daemon.
    func wait(applyingReportsOf journal: Journal) -> UInt64 {
        while durable.load(ordering: .acquiring) < target {
            var pfd = pollfd(fd: journal.flusherReports.fd.rawValue, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 100)
            journal.applyFlusherReports()
        }
        return reachedAt.load(ordering: .acquiring)
    }

    var reports: Int { reportCount.load(ordering: .relaxed) }
}

/// Appends through `Journal` as the daemon does: per event, the pipeline encodes the JSON line once (for every
/// sink) and `Journal.append(_:line:)` copies it; `writePending` once per loop turn (here: once per `batch` events);
/// durability reported by the journal's flusher thread.
///
/// With `lines`, the lines come pre-encoded, as the ceiling's do: the journal's own cost, without JSON.
enum JournalAppendRun {
    static func run(
        policy: SyncPolicy, workload: Workload, lines: EncodedLines?, count: Int, batch: Int, directory: String,
        logger: Logger
    ) throws -> AppendResult {
        var options = Journal.Options()
        options.sync = policy.sync
        if policy.sync == .batch { options.batchIntervalNanoseconds = policy.intervalNanoseconds }
        let journal = try Journal(directory: directory, options: options, logger: logger)
        let progress = try DurableProgress(target: UInt64(count))
        journal.addDurabilityObserver(progress)
        // The pipeline's reused line buffer.
        let line = ByteBuffer(capacity: 4096)

        let start = Clock.monotonicNanoseconds()
        let startCPU = ThreadCPU.nanoseconds()
        var seq: UInt64 = 1
        while seq <= UInt64(count) {
            let end = min(seq + UInt64(batch), UInt64(count) + 1)
            if let lines {
                while seq < end {
                    journal.append(workload.event(seq: seq), line: lines.payload(seq: seq))
                    seq += 1
                }
            } else {
                while seq < end {
                    let event = workload.event(seq: seq)
                    line.removeAll()
                    JSONLineEncoder.append(event, to: line)
                    journal.append(event, line: line.bytes)
                    seq += 1
                }
            }
            journal.writePending()
        }
        // A partial write leaves the rest pending for the next turn; the daemon's next turn is this loop.
        while journal.writtenSeq < UInt64(count) {
            if let error = journal.lastError { throw BenchError("journal: \(error)") }
            journal.writePending()
        }
        let written = Clock.monotonicNanoseconds()
        let loopCPU = ThreadCPU.nanoseconds() - startCPU
        // `none` reports from inside `writePending`, before `written` was read: its run ends when the writes did.
        let durable = policy.sync == .none ? written : progress.wait(applyingReportsOf: journal)
        // The flusher's syncs (each one that made progress): the observers hear of several at once.
        let syncs = Int(journal.syncFigures().count)
        journal.close()

        let bytes = try JournalDirectory.segments(in: directory).reduce(0) { $0 + $1.size }
        return AppendResult(
            events: count, bytes: bytes, writeSeconds: Seconds.between(start, written),
            durableSeconds: Seconds.between(start, durable), syncs: policy.sync == .none ? nil : syncs,
            loopCPUSeconds: Double(loopCPU) / 1e9)
    }
}

/// The ceiling: the same record bytes (header, CRC-32C, pre-encoded payload, padding) written with plain `write`s
/// of the same batch sizes to one file, and `fdatasync` from a separate thread with the journal's group-commit
/// policy. No JSON encoding, no segments, no locks: what the disk and the kernel allow at this batch size.
///
/// With `lines` nil, each event is encoded into the batch with `JSONLineEncoder` instead ("ceiling + JSON"):
/// the journal's work without the journal's code, which tells the cost of JSON from the journal's own overhead.
enum CeilingRun {
    static func run(
        policy: SyncPolicy, workload: Workload, lines: EncodedLines?, count: Int, batch: Int, path: String
    ) throws -> AppendResult {
        let fd = try syscall("open(\(path))") {
            open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o640)
        }
        defer { close(fd) }
        let syncer = policy.sync == .none ? nil : try CeilingSyncer(
            fd: fd, intervalNanoseconds: policy.intervalNanoseconds, target: UInt64(count))
        let buffer = ByteBuffer(capacity: 1024 * 1024)

        let start = Clock.monotonicNanoseconds()
        let startCPU = ThreadCPU.nanoseconds()
        writeSegmentHeader(into: buffer, firstSeq: 1, created: workload.time(seq: 0))
        var seq: UInt64 = 1
        while seq <= UInt64(count) {
            let end = min(seq + UInt64(batch), UInt64(count) + 1)
            if let lines {
                while seq < end {
                    appendRecord(lines.payload(seq: seq), seq: seq, time: workload.time(seq: seq), to: buffer)
                    seq += 1
                }
            } else {
                while seq < end {
                    appendEncodedRecord(workload.event(seq: seq), to: buffer)
                    seq += 1
                }
            }
            try writeAll(fd, buffer)
            buffer.removeAll()
            syncer?.written(upTo: seq - 1)
        }
        let written = Clock.monotonicNanoseconds()
        let loopCPU = ThreadCPU.nanoseconds() - startCPU
        let durable = syncer?.waitAndStop() ?? written

        var st = stat()
        try syscall("fstat") { fstat(fd, &st) }
        return AppendResult(
            events: count, bytes: Int(st.st_size), writeSeconds: Seconds.between(start, written),
            durableSeconds: Seconds.between(start, durable), syncs: syncer?.syncs,
            loopCPUSeconds: Double(loopCPU) / 1e9)
    }

    /// The record framing of `JournalFormat`, written out here so the ceiling depends on nothing of the journal's
    /// append path.
    @inline(__always)
    static func appendRecord(_ payload: UnsafeRawBufferPointer, seq: UInt64, time: Int64, to buffer: ByteBuffer) {
        let size = JournalFormat.recordHeaderSize + JournalFormat.padded(payload.count)
        let record = UnsafeMutableRawPointer(buffer.reserve(size))
        record.storeBytes(of: JournalFormat.recordMagic.littleEndian, as: UInt32.self)
        record.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 4, as: UInt32.self)
        record.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        record.storeBytes(of: seq.littleEndian, toByteOffset: 16, as: UInt64.self)
        record.storeBytes(of: time.littleEndian, toByteOffset: 24, as: Int64.self)
        let body = record + JournalFormat.recordHeaderSize
        body.copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        let padding = size - JournalFormat.recordHeaderSize - payload.count
        (body + payload.count).initializeMemory(as: UInt8.self, repeating: 0, count: padding)
        let crc = kevd_crc32c(0, record + 12, 20 + payload.count)
        record.storeBytes(of: crc.littleEndian, toByteOffset: 8, as: UInt32.self)
        buffer.commit(size)
    }

    /// The same framing around a payload encoded in place, as `Journal.append` does it.
    @inline(__always)
    static func appendEncodedRecord(_ event: Event, to buffer: ByteBuffer) {
        let headerAt = buffer.count
        _ = buffer.reserve(JournalFormat.recordHeaderSize)
        buffer.commit(JournalFormat.recordHeaderSize)
        JSONLineEncoder.append(event, to: buffer)
        let length = buffer.count - headerAt - JournalFormat.recordHeaderSize
        let padding = JournalFormat.padded(length) - length
        buffer.reserve(padding).initialize(repeating: 0, count: padding)
        buffer.commit(padding)
        // Only now: encoding may have moved the buffer.
        let record = UnsafeMutableRawPointer(buffer.base + headerAt)
        record.storeBytes(of: JournalFormat.recordMagic.littleEndian, as: UInt32.self)
        record.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 4, as: UInt32.self)
        record.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        record.storeBytes(of: event.seq.littleEndian, toByteOffset: 16, as: UInt64.self)
        record.storeBytes(of: event.time.nanoseconds.littleEndian, toByteOffset: 24, as: Int64.self)
        let crc = kevd_crc32c(0, record + 12, 20 + length)
        record.storeBytes(of: crc.littleEndian, toByteOffset: 8, as: UInt32.self)
    }

    static func writeSegmentHeader(into buffer: ByteBuffer, firstSeq: UInt64, created: Int64) {
        let header = UnsafeMutableRawPointer(buffer.reserve(JournalFormat.segmentHeaderSize))
        header.copyMemory(from: JournalFormat.segmentMagic, byteCount: 8)
        header.storeBytes(of: JournalFormat.version.littleEndian, toByteOffset: 8, as: UInt32.self)
        header.storeBytes(of: UInt32(JournalFormat.segmentHeaderSize).littleEndian, toByteOffset: 12, as: UInt32.self)
        header.storeBytes(of: firstSeq.littleEndian, toByteOffset: 16, as: UInt64.self)
        header.storeBytes(of: created.littleEndian, toByteOffset: 24, as: Int64.self)
        buffer.commit(JournalFormat.segmentHeaderSize)
    }

    static func writeAll(_ fd: Int32, _ buffer: ByteBuffer) throws {
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.base + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw SyscallError(call: "write", errno: .init(rawValue: errno))
            }
            offset += n
        }
    }
}

/// The ceiling's sync thread: the journal flusher's group-commit policy (sleep until `interval` after the previous
/// sync started, then one `fdatasync` covers every write so far) with atomics instead of a lock.
final class CeilingSyncer: @unchecked Sendable {
    // @unchecked: shared state is atomics and eventfds; `thread` is only touched by the owner.
    private let fd: Int32
    private let interval: Int64
    private let progress: DurableProgress
    private let written = Atomic<UInt64>(0)
    private let stopping = Atomic<Bool>(false)
    private let syncCount = Atomic<Int>(0)
    private let wakeup: EventFD
    private var thread: pthread_t? = nil

    init(fd: Int32, intervalNanoseconds: Int64, target: UInt64) throws {
        self.fd = fd
        interval = intervalNanoseconds
        progress = try DurableProgress(target: target)
        wakeup = try EventFD(blocking: true)
        thread = startThread { [self] in run() }
    }

    /// Everything up to `seq` has been written: the next sync covers it.
    func written(upTo seq: UInt64) {
        written.store(seq, ordering: .releasing)
        wakeup.signal()
    }

    /// Waits for the final sync, joins the thread, and returns when the final sync finished.
    func waitAndStop() -> UInt64 {
        let reached = progress.wait()
        stopping.store(true, ordering: .releasing)
        wakeup.signal()
        if let thread { pthread_join(thread, nil) }
        thread = nil
        return reached
    }

    var syncs: Int { syncCount.load(ordering: .relaxed) }

    private func run() {
        var lastSync: Int64 = 0
        var durable: UInt64 = 0
        while !stopping.load(ordering: .acquiring) {
            _ = try? wakeup.drain()
            if interval > 0 {
                let wait = lastSync + interval - Int64(Clock.monotonicNanoseconds())
                if wait > 0 { Sleep.nanoseconds(wait) }
            }
            let upTo = written.load(ordering: .acquiring)
            lastSync = Int64(Clock.monotonicNanoseconds())
            if upTo > durable {
                _ = fdatasync(fd)
                syncCount.add(1, ordering: .relaxed)
                durable = upTo
                progress.report(durable)
            }
        }
    }
}

/// The calling thread's CPU time (user + system).
enum ThreadCPU {
    static func nanoseconds() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }
}

enum Sleep {
    static func nanoseconds(_ ns: Int64) {
        var request = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

/// Starts a joinable pthread running `body` (the journal's flusher is a pthread too, not a Dispatch queue).
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body))
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, box.toOpaque())
    precondition(rc == 0, "pthread_create failed: \(rc)")
    return thread
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
