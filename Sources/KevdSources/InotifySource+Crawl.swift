import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// Crawls: watching whole trees (at start-up, for new roots on reload, after an overflow, for a directory moved in)
/// without holding the loop.
///
/// A crawl is a stack of directories still to watch and list. The first directory of each request is done at once
/// (its watch, its listing, its synthetic creates), exactly as a new directory always was; its subdirectories go
/// to the prefetcher thread (`CrawlPrefetcher`), which reads each into the kernel's caches and hands it back, and
/// the loop watches and lists them in slices of `crawlSliceNanoseconds`, one slice a turn, while it goes on
/// reading inotify, answering clients, firing timers, taking signals and pinging the watchdog.
///
/// Why the watching and listing stay on the loop and only the disk reads move to a thread: the watch table, the
/// dedup filter of synthetic creates (`synthesized`) and the order "watch, then list, then read the queue" are the
/// loop's, and they are what make the synthetic-create rules hold. A crawler thread that watched directories itself
/// would have to hand every new watch descriptor to the loop before the loop reads an event for it, and learn from
/// the loop which names were already reported. What made a slice long was never that work but a cold cache: the
/// kernel reading a directory's inode and entries from the disk while the loop waited (a slice of 4 ms took up
/// to 650 ms on a cold 100,000-directory tree). The prefetcher takes those waits; the loop's own calls then find
/// everything in memory (longest slice 2 to 7 ms in the same benchmark), and the two threads' work overlaps, so
/// the cold crawl is also faster. Without the thread (it could not start) the loop reads cold directories itself,
/// still one directory beyond the budget at most.
extension InotifySource {
    /// One directory still to watch and list: `name` inside the watch `parent` (or a whole path, for a root).
    struct CrawlItem: Sendable {
        let parent: Int32
        let name: String
        /// The root by identity, not index: a reload renumbers roots (and keeps the objects of those that stay).
        let root: Root
        /// Report what the listing finds as synthetic creates (a directory that appeared while watched).
        let announce: Bool
    }

    struct CrawlState {
        /// Directories ready to watch and list (read into the caches by the prefetcher, when there is one).
        var stack: [CrawlItem] = []
        /// Directories with the prefetcher: the crawl is not done until they are back and listed.
        var inFlight = 0
        /// The wakeup is signalled: the loop runs a slice every turn until the stack is empty.
        var active = false
        /// The crawl is a rescan: its end drops the watches it did not confirm.
        var rescanning = false
        var started: UInt64 = 0
        /// Directories listed by the crawl in progress (the last one's, once done).
        var listed = 0
        var completed = 0
        /// The longest slice of the running (or last) crawl, in nanoseconds: what it held the loop for at most.
        var longestSlice: UInt64 = 0
        var waiters: [() -> Void] = []
    }

    /// Work per turn at most (plus the directory that crosses it): 4 ms, well under the 100 ms a client may wait.
    static let crawlSliceNanoseconds: UInt64 = 4_000_000

    /// What `status` shows of the crawl.
    public struct CrawlProgress: Sendable {
        public let running: Bool
        public let rescan: Bool
        /// Directories listed so far by the running crawl (by the last one, when none runs).
        public let listed: Int
        /// Directories found and not yet watched.
        public let queued: Int
        public let seconds: Double
        /// Crawls finished since start (the start-up crawl, reloads, rescans).
        public let completed: Int
        /// The longest slice of the running (or last) crawl: the longest it held the loop.
        public let longestSliceSeconds: Double
    }

    public var crawlProgress: CrawlProgress {
        let elapsed = crawl.active ? Double(Clock.monotonicNanoseconds() &- crawl.started) / 1e9 : 0
        return CrawlProgress(
            running: crawl.active, rescan: crawl.rescanning, listed: crawl.listed, queued: crawl.stack.count + crawl.inFlight,
            seconds: elapsed, completed: crawl.completed, longestSliceSeconds: Double(crawl.longestSlice) / 1e9)
    }

    /// Runs `body` once every configured watch is armed: now, or when the running crawl ends. `kevd`/`started`
    /// and systemd's READY wait for it.
    public func whenWatchesArmed(_ body: @escaping () -> Void) {
        if crawl.active { crawl.waiters.append(body) } else { body() }
    }

    /// The prefetcher's thread, or none (the crawl then reads cold directories on the loop, as it must without it).
    func startPrefetcher() -> CrawlPrefetcher? {
        // The prefetcher's thread never calls `deliver`: it posts it to the loop's inbox, so it runs on the loop
        // thread, where the source lives. The compiler cannot see that hand-off, hence the unchecked reference.
        nonisolated(unsafe) weak let source = self
        do {
            return try CrawlPrefetcher(inbox: loop.inbox) { jobs in source?.prefetched(jobs) }
        } catch {
            logger.warning("no crawl prefetcher; cold directories are read on the loop", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Directories the prefetcher read: ready for the loop.
    func prefetched(_ jobs: [CrawlPrefetcher.Job]) {
        crawl.inFlight -= jobs.count
        crawl.stack.append(contentsOf: jobs.reversed().lazy.map(\.item))
        if crawl.active { crawlWakeup.signal() }
    }

    func registerCrawl() throws {
        // Kernel input's priority: a journal that cannot write pauses the crawl too (its synthetic creates are
        // events like any other).
        try loop.register(fd: crawlWakeup.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.crawlSlice()
        }
    }

    // MARK: Configuration

    /// Replaces the configured roots (at start and on reload). Roots that stay keep their watches, so they see
    /// no gap and need no crawl; new roots are crawled, removed ones unwatched.
    public func configure(_ specs: [WatchSpec]) {
        let old = roots
        if old.map(\.spec) == specs { return }
        // Old root index -> new index, for each root that stays (the first unclaimed equal spec). A root that stays
        // keeps its object, so the crawl's queued directories still name it.
        var kept: [Int: Int] = [:]
        var claimed = Set<Int>()
        var new: [Root?] = Array(repeating: nil, count: specs.count)
        for (i, root) in old.enumerated() {
            if let j = specs.indices.first(where: { !claimed.contains($0) && specs[$0] == root.spec }) {
                kept[i] = j
                claimed.insert(j)
                new[j] = root
            }
        }
        roots = specs.indices.map { new[$0] ?? Root(spec: specs[$0]) }
        // Unpaired move halves name old indices: report them now rather than under the wrong root.
        flushPendingMoves()
        table.mapRoles { role in kept[role.root].map { role.with(root: $0) } }
        // Queued directories of removed roots are skipped when their turn comes (`crawlDirectory`).
        for index in roots.indices where !claimed.contains(index) { establish(root: index, announce: false) }
        removeWatchesWithoutRoles()
        if crawl.active && crawl.stack.isEmpty && crawl.inFlight == 0 { finishCrawl() }
    }

    // MARK: Overflow

    /// The kernel queue overflowed (`fs.inotify.max_queued_events`): events were lost. Say so, then re-establish
    /// every watch (in slices), so new directories created meanwhile are watched (and reported, with what they hold,
    /// as synthetic creates) and vanished ones are forgotten.
    func handleOverflow() {
        overflowCount += 1
        for root in roots { pipeline.publish(root.overflowDraft(overflows: overflowCount)) }
        logger.warning("inotify queue overflowed; rescanning", metadata: ["inotify.watches": "\(table.count)"])
        rescan()
        onOverflow?()
    }

    /// Re-adds every watch from the file system as it is now; watches the rescan does not confirm are dropped when
    /// it ends. Until a watch is confirmed, its old roles go on serving its events.
    func rescan() {
        generation &+= 1
        movePairer.removeAll()
        // Directories with the prefetcher come back and are listed again in the new generation, harmlessly: a
        // directory already listed in it is not listed twice.
        crawl.stack.removeAll()
        crawl.rescanning = true
        startCrawl()
        for index in roots.indices {
            let spec = roots[index].spec
            switch FileKind.of(spec.path) {
            case .directory:
                watchDirectory(
                    spec.path, parent: WatchTable.noParent, name: spec.path, root: index, recurse: spec.recursive,
                    announce: false)
            default:
                establish(root: index, announce: false)
            }
        }
        if crawl.stack.isEmpty && crawl.inFlight == 0 { finishCrawl() }
    }

    // MARK: Slices

    /// A crawl has work on the stack: the loop comes back for it every turn until it is done.
    func startCrawl() {
        guard !crawl.active else { return }
        crawl.active = true
        crawl.started = Clock.monotonicNanoseconds()
        crawl.listed = 0
        crawl.longestSlice = 0
        crawlWakeup.signal()
    }

    /// One turn's share of the crawl.
    func crawlSlice() {
        guard crawl.active else {
            _ = try? crawlWakeup.drain()  // EAGAIN-only: a late wakeup of a crawl already finished.
            return
        }
        let start = Clock.monotonicNanoseconds()
        let deadline = start &+ Self.crawlSliceNanoseconds
        var now = start
        while let item = crawl.stack.popLast() {
            crawlDirectory(item)
            now = Clock.monotonicNanoseconds()
            if now >= deadline { break }
        }
        crawl.longestSlice = max(crawl.longestSlice, now &- start)
        guard crawl.stack.isEmpty else { return }
        if crawl.inFlight == 0 {
            finishCrawl()
        } else {
            _ = try? crawlWakeup.drain()  // EAGAIN-only. Nothing to do until the prefetcher delivers (`prefetched`).
        }
    }

    private func crawlDirectory(_ item: CrawlItem) {
        // A root removed by a reload since: its directories are not watched.
        guard let index = roots.firstIndex(where: { $0 === item.root }) else { return }
        let path: String
        if item.parent == WatchTable.noParent {
            path = item.name
        } else {
            // The parent vanished since it was listed: its subtree went with it (and was reported).
            guard let parentPath = table.path(of: item.parent) else { return }
            path = Self.join(parentPath, item.name)
        }
        watchDirectory(
            path, parent: item.parent, name: item.name, root: index, recurse: item.root.spec.recursive,
            announce: item.announce)
    }

    func finishCrawl() {
        _ = try? crawlWakeup.drain()  // EAGAIN-only: nothing signalled since the last drain.
        let wasActive = crawl.active
        crawl.active = false
        let rescanned = crawl.rescanning
        if crawl.rescanning {
            crawl.rescanning = false
            for wd in table.notConfirmed(in: generation) {
                table.remove(wd)
                inotify.removeWatch(wd)
            }
        }
        removeWatchesWithoutRoles()
        let elapsed = Double(Clock.monotonicNanoseconds() &- crawl.started) / 1e9
        if wasActive {
            crawl.completed += 1
            Heap.trim()
            logger.info(
                rescanned ? "inotify rescan done" : "inotify crawl done",
                metadata: [
                    "inotify.watches": "\(table.count)", "inotify.listed": "\(crawl.listed)",
                    "inotify.seconds": "\(elapsed)", "inotify.longest_slice_ms": "\(crawl.longestSlice / 1_000_000)",
                ])
        }
        let waiters = crawl.waiters
        crawl.waiters.removeAll()
        for body in waiters { body() }
    }
}
