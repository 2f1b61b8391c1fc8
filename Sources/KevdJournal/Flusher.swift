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
final class Flusher: @unchecked Sendable {
    // @unchecked: all mutable state is inside `state` (a Mutex) or owned by the flusher thread.
    private struct State {
        var fd: Int32 = -1
        var upTo: UInt64 = 0
        /// The size `fd` had when `upTo` was written: what a sync makes durable, and may then drop.
        var bytes = 0
        var retired: [(fd: OwnedFD, directory: String, upTo: UInt64)] = []
        var stopping = false
        /// True from a request until the flusher takes the work: further requests need no wakeup.
        var signalled = false
    }

    private let state = Mutex(State())
    /// Its own lock, held only to add one measurement or copy the figures: the loop reading them never waits
    /// for a sync, only for that copy.
    private let figures = Mutex(SyncFigures())
    private let wakeup: EventFD
    private let interval: Int64
    private let report: @Sendable (UInt64) -> Void
    private var thread: WorkerThread? = nil

    /// Throws when the thread cannot start (`pthread_create` failed: a thread or process limit).
    init(interval: Int64, report: @escaping @Sendable (UInt64) -> Void) throws {
        self.interval = interval
        self.report = report
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

    /// Takes ownership of a segment fd that is no longer written (everything up to `upTo` is in it): synced,
    /// closed, and its directory synced, off the loop.
    func retire(_ fd: OwnedFD, directory: String, upTo: UInt64) {
        state.withLock { state in
            state.retired.append((fd, directory, upTo))
            // The fd number may be reused once closed: never sync it as the active segment again.
            if state.fd == fd.rawValue { state.fd = -1 }
        }
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
            let (fd, upTo, bytes, retired, stopping) = state.withLock { state in
                let work = (state.fd, state.upTo, state.bytes, state.retired, state.stopping)
                state.retired.removeAll()
                state.signalled = false
                return work
            }
            lastSync = Int64(Clock.monotonicNanoseconds())
            var durable = reported
            for old in retired {
                timedDataSync(old.fd.rawValue)
                _ = posix_fadvise(old.fd.rawValue, 0, 0, POSIX_FADV_DONTNEED)
                if droppedFD == old.fd.rawValue { droppedFD = -1 }
                old.fd.close()
                Self.syncDirectory(old.directory)
                durable = max(durable, old.upTo)
            }
            if fd >= 0 && upTo > durable {
                timedDataSync(fd)
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
            if durable > reported {
                reported = durable
                report(durable)
            }
            if stopping { return }
        }
    }

    /// `fdatasync`, measured for kevd's stats.
    private func timedDataSync(_ fd: Int32) {
        let start = Clock.monotonicNanoseconds()
        _ = fdatasync(fd)
        let elapsed = Clock.monotonicNanoseconds() &- start
        figures.withLock { $0.add(elapsed) }
    }

    /// The figures so far; `resettingWindow` starts a new window for `windowMaxNanoseconds`.
    func syncFigures(resettingWindow: Bool) -> SyncFigures {
        figures.withLock { figures in
            defer { if resettingWindow { figures.windowMaxNanoseconds = 0 } }
            return figures
        }
    }

    private static let pageSize = max(4096, sysconf(Int32(_SC_PAGESIZE)))

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
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
