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
public final class InotifySource {
    typealias Role = WatchRole

    /// A class, not a struct: every event reads its root, and copying a struct of strings, a set and arrays
    /// retains and releases each of them (a tenth of the loop's time went to reference counting).
    final class Root: @unchecked Sendable {
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

    struct PendingMove {
        let fromPath: String
        let fromName: [UInt8]
        /// The watch of the directory it left, and its name there as text: a moved directory's own watch is found
        /// by these (`WatchTable.child`).
        let fromDirWD: Int32
        let fromNameText: String
        let isDirectory: Bool
        let roots: [Int]
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
    static let moveGraceNanoseconds: Int64 = 2_000_000

    let inotify: Inotify
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    var roots: [Root] = []
    var table = WatchTable()
    var pendingMoves: [UInt32: PendingMove] = [:]
    var pendingMoveOrder: [UInt32] = []
    private let moveTimer: TimerFD
    private var moveTimerArmed = false
    /// Paces reads under sustained load (see `readable`).
    private let paceTimer: TimerFD
    private var paused = false
    private var lastRead: UInt64 = 0
    /// Bytes of records read since `windowStart`: the load that turns pacing on (`busy`).
    private var windowBytes = 0
    private var windowStart: UInt64 = 0
    private var busy = false
    /// The last drain stopped at a full read: the queue holds more, so the next read is not paced.
    private var behind = false
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
    private var readBuffer: UnsafeMutableRawBufferPointer
    /// Set while a watch limit error is outstanding, so a storm of failing adds reports once.
    var watchLimitReported = false
    public internal(set) var overflowCount = 0

    public init(loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        inotify = try Inotify()
        moveTimer = try TimerFD(clock: .monotonic)
        paceTimer = try TimerFD(clock: .monotonic)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 8)
        crawlWakeup = try EventFD()
        try watchInotifyFD()
        try registerCrawl()
        prefetcher = startPrefetcher()
        try loop.register(fd: paceTimer.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            _ = try? self.paceTimer.read()
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
        loop.unregister(fd: paceTimer.fd.rawValue)
        loop.unregister(fd: crawlWakeup.fd.rawValue)
        prefetcher?.stop()
        readBuffer.deallocate()
    }

    public var watchCount: Int { table.count }

    // MARK: Reading

    /// Reads per wakeup at most. Only short reads (the queue was emptied) are repeated, to confirm it empty when
    /// a listing's names are pending; a full read always ends the turn (see `drain`).
    static let readsPerWakeup = 4
    /// `struct inotify_event` with the longest name (NAME_MAX 255, NUL, padding).
    static let largestRecord = 16 + 256 + 16

    /// At most one read per this many nanoseconds while the tree is busy: see `readable`. 4 ms rather than 1:
    /// a quarter of the turns (each a timer, two `epoll_ctl`s, the journal's and stdout's writes) for ~7 % less
    /// CPU per event in the 1M-file benchmark; 4 ms at 250,000 events/s is ~1,000 records, half a read.
    static let readIntervalNanoseconds: UInt64 = 4_000_000
    /// Busy: more than this many bytes of records in a 10 ms window (16 KiB: about 50,000 events/s with short
    /// names). Below it, every event is read at once.
    static let busyWindowNanoseconds: UInt64 = 10_000_000
    static let busyWindowBytes = 16 * 1024

    private func watchInotifyFD() throws {
        try loop.register(fd: inotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.readable()
        }
    }

    /// The inotify fd has events. A tree that is busy for a while (a build, an rsync, a generator) wakes the loop
    /// for every few events, and each wakeup costs more than the events it brings: a context switch,
    /// `epoll_wait`, the read, and the journal's and stdout's `write`s at the end of the turn. So while the tree
    /// is busy, a wakeup that comes less than `readIntervalNanoseconds` after the previous read takes the fd
    /// out of the wait set until that time is up, and the next read takes everything queued meanwhile (at
    /// 250,000 events/s, ~1,000 records: far from the kernel's 16,384). Out of the set, not masked: a masked fd's
    /// new events still wake `epoll_wait` for nothing. In the inotify benchmark this took kevd's CPU per event
    /// from 3.5 to about 2.5 µs. Interactive rates (a few thousand events a second) are never held back, and
    /// neither is a backlog (`behind`): it is read turn after turn until the queue is empty.
    private func readable() {
        let now = Clock.monotonicNanoseconds()
        if now &- windowStart >= Self.busyWindowNanoseconds {
            busy = windowBytes >= Self.busyWindowBytes
            windowBytes = 0
            windowStart = now
        }
        let due = lastRead &+ Self.readIntervalNanoseconds
        if busy, !behind, now < due, !paused, (try? paceTimer.arm(delay: Int64(due - now), interval: 0)) != nil {
            loop.unregister(fd: inotify.fd.rawValue)
            paused = true
            return
        }
        lastRead = now
        drain()
    }

    /// The pace timer: back in the wait set, and read what came meanwhile.
    private func resume() {
        if paused {
            // Should re-registering fail (epoll out of memory), the timer tries again: the source is never lost.
            paused = (try? watchInotifyFD()) == nil
            if paused { _ = try? paceTimer.arm(delay: Int64(Self.readIntervalNanoseconds), interval: 0) }
        }
        lastRead = Clock.monotonicNanoseconds()
        drain()
    }

    /// Reads and handles what is queued. When the queue was emptied, the listing's duplicate filter is reset and
    /// unpaired moves get a short wait for their partner.
    ///
    /// At most one full buffer per turn: a turn's events are encoded into the journal's and stdout's buffers and
    /// written at its end, so the records read in one turn set the working set. When a stall (kevd not scheduled
    /// for a while) left a backlog, reading all of it at once made each turn tens of MB, the encoding ran
    /// from memory instead of cache at twice the cost per event, the backlog grew instead of shrinking, and the
    /// kernel queue overflowed (seen in the 1M-file benchmark). Turns of one read stay cache-sized.
    @discardableResult
    func drain() -> Bool {
        var emptied = false
        var full = false
        for _ in 0..<Self.readsPerWakeup {
            let count: Int?
            do {
                count = try inotify.read(into: readBuffer)
            } catch {
                reportError("inotify read failed", error: error)
                return false
            }
            guard let count, count > 0 else {
                emptied = true
                break
            }
            windowBytes += count
            var decoder = InotifyRecordDecoder(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
            while let record = decoder.next() { handle(record) }
            // The kernel returns every queued event that fits: a read with room to spare emptied the queue, and
            // another read would only say EAGAIN (epoll wakes us for anything newer). Not after a listing, though:
            // the IN_CREATEs it may duplicate were queued after this read, and must be read before the filter
            // of synthesized names is reset. A full read ends the turn whatever follows.
            full = count >= Self.readBufferSize - Self.largestRecord
            if full { break }
            if synthesized.isEmpty {
                emptied = true
                break
            }
        }
        // The last read may have taken the last records: the kernel says how many bytes are queued, so the queue
        // is seen empty now rather than at the next event. If records are left, the level-triggered fd brings
        // the loop back for them next turn.
        if !emptied { emptied = inotify.queuedBytes == 0 }
        behind = full && !emptied
        guard emptied else {
            if !pendingMoves.isEmpty && !moveTimerArmed { armMoveTimer() }
            return false
        }
        // Every real IN_CREATE that a listing could duplicate was queued before the listing ran, so it has been
        // read by now.
        synthesized.removeAll(keepingCapacity: true)
        if !pendingMoves.isEmpty && !moveTimerArmed { armMoveTimer() }
        return true
    }

    private func armMoveTimer() {
        do {
            try moveTimer.arm(delay: Self.moveGraceNanoseconds, interval: 0)
            moveTimerArmed = true
        } catch {
            flushPendingMoves()  // No timer: report unpaired halves now rather than never.
        }
    }

    func handle(_ record: InotifyRecord) {
        let mask = record.mask
        if mask.contains(.queueOverflow) {
            handleOverflow()
            return
        }
        guard let watched = table.entry(record.wd) else { return }  // a watch removed while events were queued
        if mask.contains(.ignored) {
            watchVanished(wd: record.wd)
            return
        }
        let isDirectory = mask.contains(.isDirectory)
        // The first role inline; nested roots alone have more (read after, as the role list may change meanwhile).
        if let role = WatchRole(packed: watched.firstRole) { handle(record, role: role, isDirectory: isDirectory) }
        if watched.hasMoreRoles {
            for role in table.moreRoles(of: record.wd) { handle(record, role: role, isDirectory: isDirectory) }
        }
        if mask.contains(.movedTo), pendingMoves.removeValue(forKey: record.cookie) != nil {
            pendingMoveOrder.removeAll { $0 == record.cookie }
        }
    }

    private func handle(_ record: InotifyRecord, role: WatchRole, isDirectory: Bool) {
        let mask = record.mask
        switch role {
        case .tree(let root):
            // A watch removed by an earlier role's handling (a root moved away) has no path any more.
            guard let dirPath = table.path(of: record.wd) else { return }
            handleTree(record, in: dirPath, root: root, isDirectory: isDirectory)
        case .file(let root):
            handleFileRoot(record, root: root)
        case .waiting(let root):
            if record.name.isEmpty {
                if mask.contains(.deleteSelf) || mask.contains(.moveSelf) { establish(root: root, announce: true) }
            } else if mask.contains(.create) || mask.contains(.movedTo) {
                establish(root: root, announce: true)
            }
        }
    }

    private func handleTree(_ record: InotifyRecord, in dirPath: String, root index: Int, isDirectory: Bool) {
        let mask = record.mask
        let root = roots[index]
        if record.name.isEmpty {
            // Events on the directory itself. Only the root's own are news: a subdirectory's deletion was already
            // reported by its parent as `delete`.
            guard dirPath == root.spec.path else { return }
            if mask.contains(.deleteSelf) {
                emit(.deleteSelf, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            } else if mask.contains(.unmount) {
                emit(.unmount, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            } else if mask.contains(.moveSelf) {
                establish(root: index, announce: true)
            } else if mask.contains(.attrib) {
                emit(.attrib, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            }
            return
        }
        let name = ByteText(record.name)
        let path = Self.join(dirPath, name.string)
        if isExcluded(path: path, name: name.string, root: root) { return }

        if mask.contains(.create) {
            if !synthesized.isEmpty && synthesized.remove(path) != nil { return }
            emit(.create, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
            if isDirectory && root.spec.recursive {
                watchNewDirectory(path, parent: record.wd, name: name.string, root: index)
            }
        } else if mask.contains(.closeWrite) {
            emit(.closeWrite, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.modify) {
            emit(.modify, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.attrib) {
            emit(.attrib, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.delete) {
            if !synthesized.isEmpty { synthesized.remove(path) }
            emit(.delete, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.movedFrom) {
            if !synthesized.isEmpty { synthesized.remove(path) }
            movedFrom(record, path: path, name: name.string, root: index, isDirectory: isDirectory)
        } else if mask.contains(.movedTo) {
            movedTo(record, path: path, name: name.string, root: index, isDirectory: isDirectory)
        }
    }

    private func handleFileRoot(_ record: InotifyRecord, root index: Int) {
        let mask = record.mask
        let path = roots[index].spec.path
        if mask.contains(.closeWrite) {
            emit(.closeWrite, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.modify) {
            emit(.modify, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.attrib) {
            emit(.attrib, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.deleteSelf) {
            emit(.deleteSelf, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.moveSelf) {
            // Editors save by renaming a new file over the old one: wait for the path again.
            establish(root: index, announce: true)
        }
    }

    // MARK: Moves

    private func movedFrom(_ record: InotifyRecord, path: String, name: String, root: Int, isDirectory: Bool) {
        if var pending = pendingMoves[record.cookie] {
            // The same rename seen through a second root that also contains the source directory.
            if !pending.roots.contains(root) {
                pending = PendingMove(
                    fromPath: pending.fromPath, fromName: pending.fromName, fromDirWD: pending.fromDirWD,
                    fromNameText: pending.fromNameText, isDirectory: pending.isDirectory, roots: pending.roots + [root])
                pendingMoves[record.cookie] = pending
            }
            return
        }
        pendingMoves[record.cookie] = PendingMove(
            fromPath: path, fromName: Array(record.name), fromDirWD: record.wd, fromNameText: name,
            isDirectory: isDirectory, roots: [root])
        pendingMoveOrder.append(record.cookie)
    }

    private func movedTo(_ record: InotifyRecord, path: String, name: String, root index: Int, isDirectory: Bool) {
        let root = roots[index]
        if let pending = pendingMoves[record.cookie] {
            // The moved directory's watch, if it has one, now lives at the destination (its subtree follows).
            var followed = false
            if isDirectory, let wd = table.child(of: pending.fromDirWD, named: pending.fromNameText) {
                table.move(wd, toParent: record.wd, name: name, path: path)
                followed = true
            } else if isDirectory, table.child(of: record.wd, named: name) != nil {
                followed = true  // A second root's view of the same rename: moved already.
            }
            // Report once per root that saw the destination.
            if wants(.moved, root: index) {
                var data = baseData(root: index, path: path, nameBytes: record.name, isDirectory: isDirectory)
                data.append("from", pending.fromPath)
                data.append("to", path)
                data.append("cookie", Int(record.cookie))
                pipeline.publish(EventDraft(source: .inotify, type: "moved", key: path, data: data))
            }
            // `handle` forgets the pending half after every role of this record has seen it.
            if isDirectory && root.spec.recursive && !followed {
                watchNewDirectory(path, parent: record.wd, name: name, root: index)
            }
            return
        }
        if wants(.movedTo, root: index) {
            var data = baseData(root: index, path: path, nameBytes: record.name, isDirectory: isDirectory)
            data.append("cookie", Int(record.cookie))
            pipeline.publish(EventDraft(source: .inotify, type: "moved_to", key: path, data: data))
        }
        // A directory moved in from outside: watch it and report what it holds.
        if isDirectory && root.spec.recursive { watchNewDirectory(path, parent: record.wd, name: name, root: index) }
    }

    /// Reports moves whose partner never came: the file left the watched trees (or came from outside them).
    func flushPendingMoves() {
        for cookie in pendingMoveOrder {
            guard let pending = pendingMoves.removeValue(forKey: cookie) else { continue }
            for root in pending.roots where wants(.movedFrom, root: root) {
                var data = baseData(
                    root: root, path: pending.fromPath, nameBytes: pending.fromName, isDirectory: pending.isDirectory)
                data.append("cookie", Int(cookie))
                pipeline.publish(EventDraft(source: .inotify, type: "moved_from", key: pending.fromPath, data: data))
            }
            if pending.isDirectory { removeSubtree(parent: pending.fromDirWD, name: pending.fromNameText) }
        }
        pendingMoveOrder.removeAll()
    }

    // MARK: Events

    func wants(_ type: FileEventType, root: Int) -> Bool { roots[root].events & type.bit != 0 }

    func isExcluded(path: String, name: String, root: Root) -> Bool {
        if root.excludeNames.isEmpty && root.excludePaths.isEmpty { return false }
        for glob in root.excludeNames where fnmatch(glob, name, 0) == 0 { return true }
        if !root.excludePaths.isEmpty {
            let relative = String(path.dropFirst(root.spec.path == "/" ? 1 : root.spec.path.count + 1))
            for glob in root.excludePaths where fnmatch(glob, relative, FNM_PATHNAME) == 0 { return true }
        }
        // A name glob also hides everything below an excluded directory.
        if root.excludeNames.isEmpty { return false }
        let relative = path.dropFirst(root.spec.path == "/" ? 1 : root.spec.path.count + 1)
        for component in relative.split(separator: "/").dropLast() {
            let text = String(component)
            for glob in root.excludeNames where fnmatch(glob, text, 0) == 0 { return true }
        }
        return false
    }

    /// `name` is `nameBytes` as text, when the caller has it already.
    private func baseData(
        root: Int, path: String, nameBytes: UnsafeBufferPointer<UInt8>?, name known: ByteText? = nil,
        isDirectory: Bool
    ) -> EventData {
        var data = EventData(capacity: 7)
        if let nameBytes {
            // The path's own bytes are its directory's (valid UTF-8: watched paths are Strings) plus the name's.
            let name = known ?? ByteText(nameBytes)
            data.append("path", path)
            if !name.isLossless {
                var raw = Array(path.utf8.dropLast(name.string.utf8.count))
                raw.append(contentsOf: nameBytes)
                data.append("path_base64", Base64.encode(raw))
            }
            data.append("name", name.string)
            if !name.isLossless { data.append("name_base64", Base64.encode(nameBytes)) }
        } else {
            data.append("path", path)
            data.append("name", lastComponent(path))
        }
        data.append("watch", roots[root].spec.path)
        data.append("dir", isDirectory)
        return data
    }

    private func baseData(root: Int, path: String, nameBytes: [UInt8], isDirectory: Bool) -> EventData {
        nameBytes.withUnsafeBufferPointer { baseData(root: root, path: path, nameBytes: $0, isDirectory: isDirectory) }
    }

    /// `dir/name` in one allocation (this runs for every event).
    static func join(_ dir: String, _ name: String) -> String {
        if dir == "/" { return "/" + name }
        var dir = dir
        var name = name
        return dir.withUTF8 { d in
            name.withUTF8 { n in
                String(unsafeUninitializedCapacity: d.count + 1 + n.count) { out in
                    _ = out.initialize(from: d)
                    out[d.count] = UInt8(ascii: "/")
                    _ = UnsafeMutableBufferPointer(rebasing: out[(d.count + 1)...]).initialize(from: n)
                    return d.count + 1 + n.count
                }
            }
        }
    }

    private func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    func emit(
        _ type: FileEventType, root: Int, path: String, nameBytes: UnsafeBufferPointer<UInt8>?,
        name: ByteText? = nil, isDirectory: Bool, synthetic: Bool = false
    ) {
        guard wants(type, root: root) else { return }
        var data = baseData(root: root, path: path, nameBytes: nameBytes, name: name, isDirectory: isDirectory)
        if synthetic { data.append("synthetic", true) }
        pipeline.publish(source: .inotify, type: type.rawValue, key: path, data: data)
    }

    func emit(
        _ type: FileEventType, root: Int, path: String, nameBytes: [UInt8], isDirectory: Bool, synthetic: Bool
    ) {
        nameBytes.withUnsafeBufferPointer {
            emit(type, root: root, path: path, nameBytes: $0, isDirectory: isDirectory, synthetic: synthetic)
        }
    }

    func reportWatchLimit(path: String) {
        guard !watchLimitReported else { return }
        watchLimitReported = true
        var data = EventData()
        data.append("message", "inotify watch limit reached; raise fs.inotify.max_user_watches")
        data.append("limit", "fs.inotify.max_user_watches")
        if let value = SysctlValue.read("/proc/sys/fs/inotify/max_user_watches") { data.append("max_user_watches", value) }
        data.append("watches", table.count)
        data.append("path", path)
        logger.error("inotify watch limit reached", metadata: ["path": "\(path)", "inotify.watches": "\(table.count)"])
        pipeline.publishKevd("error", component: "inotify", data)
    }

    func reportError(_ message: String, error: Error, path: String? = nil) {
        var data = EventData()
        data.append("message", message)
        data.append("error", "\(error)")
        if let path { data.append("path", path) }
        logger.error("\(message)", metadata: ["error": "\(error)", "path": "\(path ?? "")"])
        pipeline.publishKevd("error", component: "inotify", data)
    }
}

/// Reads one integer from /proc/sys.
enum SysctlValue {
    static func read(_ path: String) -> Int? {
        guard let bytes = try? FileContents.read(path) else { return nil }  // Unreadable: the report omits it.
        return Int(String(decoding: bytes.filter { $0 > 0x20 }, as: UTF8.self))
    }
}
