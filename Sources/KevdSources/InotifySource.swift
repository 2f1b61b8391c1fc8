import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// File and directory changes under the configured `[[watch]]` paths.
///
/// - Recursive trees are race-free: a new subdirectory is watched first and listed second, and what the listing
///   finds is reported as `create` with `data.synthetic = true` (the files made before the watch existed).
///   A real `IN_CREATE` for a name the listing already reported is dropped, so nothing is reported twice.
/// - A path that does not exist yet is watched through its nearest existing ancestor and picked up when it
///   appears; a root that is deleted or moved away goes back to waiting the same way.
/// - `IN_MOVED_FROM`/`IN_MOVED_TO` with one cookie become one `moved` event. The kernel queues both halves
///   inside `rename(2)`, but a read can end between them, so an unpaired half waits a few milliseconds for its
///   partner before it is reported alone.
/// - `IN_Q_OVERFLOW` is reported per root as `inotify`/`overflow`, then every watch is re-established by a
///   rescan; a directory the rescan finds unwatched is reported, with its contents, as synthetic creates.
///   `ENOSPC` from `inotify_add_watch` is reported as `kevd`/`error` naming the sysctl.
/// - Crawls (start-up, new roots on reload, rescans, directories moved in) run in slices of a few milliseconds
///   on the loop, between its other work: see InotifySource+Crawl.swift.
///
/// The jobs, a file each: reading and its pacing (+Reading), records to roles (+Records), move pairing
/// (+Moves, MovePairer), event shaping (+Shaping), the watch table's upkeep (+Watches, WatchTable) and crawls
/// (+Crawl, CrawlPrefetcher).
public final class InotifySource {
    typealias Role = WatchRole

    /// A class, not a struct: every event reads its root, and copying a struct of strings, a set and arrays
    /// retains and releases each of them (a tenth of the loop's time went to reference counting).
    final class Root: Sendable {
        let spec: WatchSpec
        /// `spec.events` as bits (`FileEventType.bit`): checked for every event, so no hashing.
        let events: UInt32
        let excludeNames: [String]
        let excludePaths: [String]

        init(spec: WatchSpec) {
            self.spec = spec
            events = spec.events.reduce(UInt32(0)) { $0 | $1.bit }
            excludeNames = spec.exclude.filter { !$0.contains("/") }
            excludePaths = spec.exclude.filter { $0.contains("/") }
        }
    }

    /// The kernel events every watch asks for; roles and configured types filter in user space. One mask for all
    /// means re-adding a watch for another role can never narrow it.
    static let watchMask: Inotify.Mask = [
        .create, .modify, .closeWrite, .attrib, .delete, .movedFrom, .movedTo, .deleteSelf, .moveSelf,
        .dontFollow, .excludeUnlinked,
    ]

    /// 64 KiB: about 2,000 short-name events per read. Larger reads save few syscalls but make a turn's work
    /// outgrow the CPU caches (see `drain`).
    static let readBufferSize = 64 * 1024
    static let moveGraceNanoseconds = MovePairer.graceNanoseconds

    let inotify: Inotify
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    var roots: [Root] = []
    var table = WatchTable()
    /// `IN_MOVED_FROM` halves waiting for their `IN_MOVED_TO` (InotifySource+Moves.swift).
    var movePairer = MovePairer()
    let moveTimer: TimerFD
    var moveTimerArmed = false
    /// Paces reads under sustained load; `behind` when the last drain stopped at a full read.
    let pacer: ReadPacer
    /// Paths a listing reported as synthetic creates since the queue was last empty: their real IN_CREATE, if
    /// any, is a duplicate.
    var synthesized: Set<String> = []
    /// The crawl generation: bumped by each rescan, whose end drops the watches it did not confirm.
    var generation: UInt32 = 0
    /// The crawl in progress, if any (see InotifySource+Crawl.swift).
    var crawl = CrawlState()
    let crawlWakeup: EventFD
    /// Reads the crawl's next directories into the caches on its own thread (nil if it could not start).
    var prefetcher: CrawlPrefetcher?
    var readBuffer: UnsafeMutableRawBufferPointer
    /// Set while a watch limit error is outstanding, so a storm of failing adds reports once.
    var watchLimitReported = false
    public internal(set) var overflowCount = 0
    /// Called on the loop after an overflow was reported and its rescan started (file catch-up's diff).
    public var onOverflow: (() -> Void)?

    public init(loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        inotify = try Inotify()
        moveTimer = try TimerFD(clock: .monotonic)
        pacer = try ReadPacer()
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 8)
        crawlWakeup = try EventFD()
        try watchInotifyFD()
        try registerCrawl()
        prefetcher = startPrefetcher()
        try loop.register(fd: pacer.timer.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.resume()
        }
        try loop.register(fd: moveTimer.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            _ = try? self.moveTimer.read()  // EAGAIN-only; the flush below is what matters.
            self.moveTimerArmed = false
            // Partners queued within the grace period are paired by the drain; if the queue could not be emptied
            // in one go, the drain re-arms the wait instead.
            if self.drain() { self.flushPendingMoves() }
        }
    }

    deinit {
        loop.unregister(fd: inotify.fd.rawValue)
        loop.unregister(fd: moveTimer.fd.rawValue)
        loop.unregister(fd: pacer.timer.fd.rawValue)
        loop.unregister(fd: crawlWakeup.fd.rawValue)
        prefetcher?.stop()
        readBuffer.deallocate()
    }

    public var watchCount: Int { table.count }
}
