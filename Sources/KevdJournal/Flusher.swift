import CKevdShim
import Glibc
import KevdKernel
import Synchronization

/// The journal's sync thread: `fdatasync` off the loop, with group commit.
///
/// The loop says "written up to seq S on fd F" (`request`); the flusher waits until at least `interval` has
/// passed since its previous sync started (so one sync covers every write of that window), syncs, and reports
/// S through `report`. Retired segments (after a rotation) are synced, closed, and their directory synced so
/// the new segment's name is durable too.
///
/// Once synced, the journal's pages are dropped from the page cache (`POSIX_FADV_DONTNEED`), as PostgreSQL does
/// for its WAL. The journal is written once and read rarely (replay, a subscriber catching up), so keeping it
/// cached would fill the machine's page cache with it, and every write would take fresh memory; dropped pages
/// are reused by the next writes instead. On tmpfs the call does nothing: there the pages are the file.
///
/// A sync that fails (EIO, ENOSPC, EDQUOT, any errno) is never reported as progress, and neither is any later
/// one on the same file: after a failed writeback Linux may have dropped the dirty pages and cleared the error,
/// so a retry that succeeds proves nothing (PostgreSQL's "fsyncgate"). The flusher stops, records the failure
/// (`failure`), wakes the loop through `onFailure`, and syncs nothing more until the journal has written the
/// records in doubt again to a new segment and called `recover`.
///
/// The repair's first progress is proven with `syncfs` as well. Before Linux 6.5, ext4 without a journal skips
/// the disk's cache flush in `fsync` when the inode is clean, and the kernel's writeback thread can clean it (write
/// the data and the inode, no flush) between kevd's write and its sync: seen in the test bed while every flush
/// failed, a directory `fsync` and a new segment's `fdatasync` both returned 0 with no flush issued at all. A
/// normal append dirties the inode (its size grows), so it rarely meets that; a repair retried on a failing disk
/// meets it within seconds. `syncfs` always ends with a flush there, and reports its error.
final class Flusher: @unchecked Sendable {
    // @unchecked: all mutable state is inside `state` (a Mutex) or owned by the flusher thread.
    private struct State {
        var fd: Int32 = -1
        var upTo: UInt64 = 0
        /// The size `fd` had when `upTo` was written: what a sync makes durable, and may then drop.
        var bytes = 0
        var retired: [(fd: HandedOver, directory: String, upTo: UInt64)] = []
        var stopping = false
        /// True from a request until the flusher takes the work: further requests need no wakeup.
        var signalled = false
        /// Set by a failed sync, cleared by `recover`: nothing is synced or reported meanwhile.
        var failure: SyncFailure? = nil
        /// After `recover`: the directory (new segment, removed ones) and the abandoned segment's cut, made durable
        /// before anything in the new segment is reported.
        var recovery: (directory: String, cut: (path: String, size: Int)?)? = nil
    }

    /// A sync that failed: what, with which errno, and the last seq reported durable before it.
    struct SyncFailure: Sendable, Equatable {
        var errno: Int32
        var call: String
        var durable: UInt64
    }

    private let state = Mutex(State())
    /// Its own lock, held only to add one measurement or copy the figures: the loop reading them never waits
    /// for a sync, only for that copy.
    private let figures = Mutex(SyncFigures())
    private let wakeup: EventFD
    private let interval: Int64
    private let report: @Sendable (UInt64) -> Void
    private let onFailure: @Sendable () -> Void
    /// Read by the loop once per turn without taking the lock: true while `state.failure` is set.
    private let failing = Atomic<Bool>(false)
    /// The last seq reported durable, for the loop to drop what it kept for a rewrite without waiting for the report
    /// to travel through its inbox.
    private let reportedSeq = Atomic<UInt64>(0)
    private var thread: WorkerThread? = nil

    /// Throws when the thread cannot start (`pthread_create` failed: a thread or process limit).
    init(interval: Int64, report: @escaping @Sendable (UInt64) -> Void, onFailure: @escaping @Sendable () -> Void = {}) throws {
        self.interval = interval
        self.report = report
        self.onFailure = onFailure
        // Blocking mode: the flusher thread sleeps in read() until there is work.
        wakeup = try! EventFD(blocking: true)  // eventfd(2) fails only without fds or memory; kevd cannot run then
        thread = try WorkerThread(name: "kevd-flusher") { [self] in run() }
    }

    func request(fd: Int32, upTo seq: UInt64, bytes: Int) {
        // One eventfd write per sync window, not per loop turn: a turn that finds the flusher already
        // signalled only records how far it may sync.
        let mustSignal = state.withLock { state in
            state.fd = fd
            state.upTo = max(state.upTo, seq)
            state.bytes = bytes
            defer { state.signalled = true }
            return !state.signalled
        }
        if mustSignal { wakeup.signal() }
    }

    /// A segment's fd on its way from the journal (loop thread) to the flusher thread.
    struct HandedOver: @unchecked Sendable {
        // @unchecked: `OwnedFD` is not Sendable, but the journal hands it over in `retire` and never touches it
        // again (its `segment` is already the new one); from then on only the flusher thread uses it.
        let fd: OwnedFD
        var rawValue: Int32 { fd.rawValue }
        func close() { fd.close() }
    }

    /// Takes ownership of a segment fd that is no longer written (everything up to `upTo` is in it): synced,
    /// closed, and its directory synced, off the loop.
    func retire(_ fd: OwnedFD, directory: String, upTo: UInt64) {
        let handedOver = HandedOver(fd: fd)
        state.withLock { state in
            state.retired.append((handedOver, directory, upTo))
            // The fd number may be reused once closed: never sync it as the active segment again.
            if state.fd == fd.rawValue { state.fd = -1 }
        }
        wakeup.signal()
    }

    /// True once a sync failed, until `recover`: a relaxed load, for the loop's per-turn check.
    var hasFailed: Bool { failing.load(ordering: .relaxed) }

    /// Everything through this seq was synced (a relaxed load; it only grows).
    var durable: UInt64 { reportedSeq.load(ordering: .relaxed) }

    /// The failure being handled, if any.
    var failure: SyncFailure? { state.withLock { $0.failure } }

    /// The journal abandoned the damaged segment and writes the records in doubt again from `durable + 1` into a
    /// new one: sync again, starting with `directory` (the new file's name and the removed ones) and, best effort,
    /// cutting the abandoned segment back to what its last good sync covered.
    func recover(durable: UInt64, directory: String, cut: (path: String, size: Int)?) {
        state.withLock { state in
            state.failure = nil
            state.fd = -1
            state.upTo = durable
            state.bytes = 0
            state.recovery = (directory, cut)
        }
        failing.store(false, ordering: .relaxed)
        wakeup.signal()
    }

    /// Finishes outstanding work and joins the thread.
    func stop() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
        thread?.join()
    }

    private func run() {
        var lastSync: Int64 = 0
        var reported: UInt64 = 0
        // How much of the active segment was dropped from the page cache already.
        var droppedFD: Int32 = -1
        var droppedBytes = 0
        // After `recover`: the directory whose file system the first progress is also proven on (`syncfs`).
        var proving: String? = nil
        while true {
            _ = try? wakeup.drain()  // Blocks until signalled; an error here can only be EINTR-like noise.
            if interval > 0 {
                let wait = lastSync + interval - Int64(Clock.monotonicNanoseconds())
                if wait > 0 {
                    var remaining = timespec(tv_sec: Int(wait / 1_000_000_000), tv_nsec: Int(wait % 1_000_000_000))
                    var request = remaining
                    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
                }
            }
            let (fd, upTo, bytes, retired, stopping, failed, recovery) = state.withLock { state in
                let work = (
                    state.fd, state.upTo, state.bytes, state.retired, state.stopping, state.failure != nil, state.recovery
                )
                state.retired.removeAll()
                state.recovery = nil
                state.signalled = false
                return work
            }
            if failed {
                // Segments retired after the failure hold records in doubt: closed unsynced, the journal rewrites them.
                for old in retired { old.fd.close() }
                if stopping { return }
                continue
            }
            lastSync = Int64(Clock.monotonicNanoseconds())
            var durable = reported
            var failure: SyncFailure? = nil
            if let recovery {
                droppedFD = -1
                proving = recovery.directory
                if let cut = recovery.cut { Self.cut(cut.path, to: cut.size) }
                if let code = Self.syncDirectory(recovery.directory) {
                    failure = SyncFailure(errno: code, call: "fsync(\(recovery.directory))", durable: reported)
                }
            }
            for (i, old) in retired.enumerated() where failure == nil {
                if let code = timedDataSync(old.fd.rawValue) {
                    failure = SyncFailure(errno: code, call: "fdatasync(retired segment)", durable: durable)
                    for rest in retired[i...] { rest.fd.close() }
                    break
                }
                _ = posix_fadvise(old.fd.rawValue, 0, 0, POSIX_FADV_DONTNEED)
                if droppedFD == old.fd.rawValue { droppedFD = -1 }
                old.fd.close()
                if let code = Self.syncDirectory(old.directory) {
                    failure = SyncFailure(errno: code, call: "fsync(\(old.directory))", durable: durable)
                    for rest in retired[(i + 1)...] { rest.fd.close() }
                    break
                }
                durable = max(durable, old.upTo)
            }
            if failure == nil && fd >= 0 && upTo > durable {
                if let code = timedDataSync(fd) {
                    failure = SyncFailure(errno: code, call: "fdatasync(segment)", durable: durable)
                } else {
                    durable = upTo
                    if fd != droppedFD {
                        droppedFD = fd
                        droppedBytes = 0
                    }
                    // Whole pages only, and never the partly written last one: the next write fills it, and were it
                    // dropped, that write would first wait for it to be read back from the disk. (Given a range that
                    // ends at the end of the file, the kernel drops the last page too.)
                    let whole = bytes - bytes % Self.pageSize
                    if whole > droppedBytes {
                        _ = posix_fadvise(fd, off_t(droppedBytes), off_t(whole - droppedBytes), POSIX_FADV_DONTNEED)
                        droppedBytes = whole
                    }
                }
            }
            if failure == nil, durable > reported, let directory = proving {
                if let code = Self.syncFileSystem(of: directory) {
                    failure = SyncFailure(errno: code, call: "syncfs(\(directory))", durable: reported)
                    durable = reported
                } else {
                    proving = nil
                }
            }
            // What synced before a failure in the same round is durable all the same, and is reported first.
            if durable > reported {
                reported = durable
                reportedSeq.store(durable, ordering: .relaxed)
                report(durable)
            }
            if let failure {
                state.withLock { state in
                    state.failure = failure
                    state.fd = -1
                }
                failing.store(true, ordering: .relaxed)
                onFailure()
            }
            if stopping { return }
        }
    }

    /// `fdatasync`, measured for kevd's stats; the errno when it fails.
    private func timedDataSync(_ fd: Int32) -> Int32? {
        let start = Clock.monotonicNanoseconds()
        let result = Self.dataSync(fd)
        let elapsed = Clock.monotonicNanoseconds() &- start
        figures.withLock { $0.add(elapsed) }
        return result
    }

    /// `fdatasync`, retried on EINTR only; the errno when it fails.
    static func dataSync(_ fd: Int32) -> Int32? {
        while fdatasync(fd) != 0 {
            if errno != EINTR { return errno }
        }
        return nil
    }

    /// Best effort: the abandoned segment back to the size its last good sync covered, so that the records in
    /// doubt are not left behind it. Never grows a file (the kernel may already have dropped the pages).
    private static func cut(_ path: String, to size: Int) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) > size, ftruncate(fd, off_t(size)) == 0 else { return }
        _ = dataSync(fd)
    }

    /// The figures so far; `resettingWindow` starts a new window for `windowMaxNanoseconds`.
    func syncFigures(resettingWindow: Bool) -> SyncFigures {
        figures.withLock { figures in
            defer { if resettingWindow { figures.windowMaxNanoseconds = 0 } }
            return figures
        }
    }

    private static let pageSize = max(4096, sysconf(Int32(_SC_PAGESIZE)))

    /// `syncfs` of the file system holding `directory`: every dirty page and inode on it written, then the disk's
    /// cache flushed; the errno when it fails (opening the directory too). Its error is the file system's since
    /// the directory was opened here, so an older failure elsewhere on it does not count.
    static func syncFileSystem(of directory: String) -> Int32? {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        return kevd_syncfs(fd) == 0 ? nil : errno
    }

    /// `fsync` of a directory, so that names created or removed in it are durable; the errno when it fails
    /// (opening it too: a directory that cannot be synced is no better than one whose sync failed). EINVAL is
    /// not a failure: a file system that cannot sync directories says so with it (PostgreSQL ignores it too).
    static func syncDirectory(_ path: String) -> Int32? {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno == EINVAL { return nil }
            if errno != EINTR { return errno }
        }
        return nil
    }
}

/// How the journal's `fdatasync` calls went, measured on the flusher thread (for `kevd`/`stats`).
public struct SyncFigures: Sendable, Equatable {
    /// Calls since the journal opened.
    public var count: UInt64 = 0
    /// Their total duration.
    public var totalNanoseconds: UInt64 = 0
    /// The duration of the latest.
    public var lastNanoseconds: UInt64 = 0
    /// The longest since the window was last reset (`Journal.syncFigures(resettingWindow:)`).
    public var windowMaxNanoseconds: UInt64 = 0

    public init() {}

    mutating func add(_ nanoseconds: UInt64) {
        count += 1
        totalNanoseconds &+= nanoseconds
        lastNanoseconds = nanoseconds
        windowMaxNanoseconds = max(windowMaxNanoseconds, nanoseconds)
    }
}
