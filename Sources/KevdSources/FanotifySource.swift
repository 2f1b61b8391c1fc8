import CKevdShim
import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// File and directory changes under `[[watch]]` roots, through fanotify: one `FAN_MARK_FILESYSTEM` mark per file
/// system that holds a root (the root's own, and each mount point below it), so nothing is crawled and no watch is
/// kept per directory. Events are directory-entry events (`FAN_REPORT_DFID_NAME`): a directory's file handle and a
/// name. The directory's path comes from a cache keyed by handle (FanotifySource+Paths.swift), filled by
/// `open_by_handle_at` and kept right across directory renames; events whose directory is outside every root are
/// dropped after that one lookup.
///
/// The events are the inotify source's, with the same shaping (WatchRoot+Shaping.swift) and source name
/// (`inotify`), plus `data.pid` (the process that made the change): rules and subscribers cannot tell the
/// backends apart except through `kevd`/`started` and `status`.
///
/// The jobs, a file each: marks and configuration (here), records to events (+Events), directory paths (+Paths),
/// mounts made under a root while kevd runs (+Mounts).
public final class FanotifySource {
    typealias Root = InotifySource.Root

    /// 64 KiB per read, one read per wakeup: the fd is level-triggered, so a backlog is read turn after turn and
    /// each turn's work stays cache-sized (as the inotify source's reads). Paced as inotify's reads are while the
    /// file systems are busy (FanotifySource+Reading.swift).
    static let readBufferSize = 64 * 1024

    let fanotify: Fanotify
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    var roots: [Root] = []
    /// `st_dev` -> fsid of each file system marked (a reload removes the marks no root needs any more; an
    /// unmounted file system's mark goes with it, and is forgotten here at the next mount-table change,
    /// FanotifySource+Mounts.swift).
    var markedDevices: [UInt64: UInt64] = [:]
    /// File systems that refused a mark (overlayfs, file systems without file handles), by `st_dev`, with why:
    /// not tried again at each mount-table change.
    var refusedDevices: [UInt64: String] = [:]
    /// While `configure` marks: the devices the new roots need (the others' marks are then removed).
    var neededDevices: Set<UInt64>?
    /// Mount points below a root whose refusal was reported (once each).
    var reportedMounts: Set<String> = []
    /// The mounts of each marked file system kevd named it through (a root's, a mount point's below a root), by
    /// fsid: a directory on each is opened for `open_by_handle_at` when a handle is resolved. Not kept open: an open
    /// fd would make a file system mounted below a root impossible to unmount (EBUSY) while kevd runs. More than
    /// one when part of a file system is bind-mounted below a root, or roots reach it through different mounts: a
    /// handle is named through each in turn until one gives a path inside a root (FanotifySource+Paths.swift).
    var mounts: [UInt64: [(mount: UInt64, path: String)]] = [:]
    /// Directory handle -> path and the roots it is inside (FanotifySource+Paths.swift).
    var directories: [KernelFileHandle: DirectoryEntry] = [:] {
        didSet { lastDirectory = nil }  // Any change may change the entry the one-entry cache holds.
    }
    /// The directory of the previous event: a burst's events come from few directories, and comparing a handle
    /// (five words inline) is cheaper than hashing it (FanotifySource+Paths.swift).
    var lastDirectory: (handle: KernelFileHandle, entry: DirectoryEntry)?
    /// `FAN_RENAME` is marked (Linux 5.17+): a rename is one event with both ends. Without it, the halves
    /// (`FAN_MOVED_FROM`/`FAN_MOVED_TO`) are reported as `moved_from` and `moved_to`.
    var renameEvents = false
    /// A counter standing in for inotify's rename cookie, so `moved` carries the same fields from both backends.
    var cookie: UInt32 = 0
    var readBuffer: UnsafeMutableRawBufferPointer
    public internal(set) var overflowCount = 0
    /// Read pacing while the file systems are busy, as the inotify source's; `behind` when the last read filled
    /// the buffer (more is queued: read it at the next turn without pacing).
    let pacer: ReadPacer
    /// The unlimited queue's bound (FanotifySource+QueueBound.swift).
    let queueByteLimit: Int
    let boundTimer: TimerFD
    var boundTimerArmed = false
    var lastBoundCheck: UInt64 = 0
    /// Without `FAN_RENAME`: a `FAN_MOVED_FROM` waiting for its `FAN_MOVED_TO` (FanotifySource+Moves.swift).
    var pendingMoveFrom: PendingMoveFrom?
    let moveTimer: TimerFD
    var moveTimerArmed = false
    /// Directories moved into a tree, still to be listed, and the listing's dedup sets
    /// (FanotifySource+MovedIn.swift).
    var listing: [ListingItem] = []
    let listingWakeup: EventFD
    var synthesized: Set<String> = []
    var reportedWhileListing: Set<String> = []
    var listingSettling = false
    /// Called on the loop after an overflow was reported (file catch-up's diff).
    public var onOverflow: (() -> Void)?
    /// /proc/self/mountinfo, polled for mount changes (FanotifySource+Mounts.swift).
    var mountInfo: OwnedFD?

    static let baseMask: Fanotify.Mask = [.create, .delete, .modify, .closeWrite, .attrib, .onDirectory]

    /// Nil when fanotify can be used here; otherwise why not (kevd then falls back to inotify and says so).
    public static func unavailableReason() -> String? { Fanotify.probe() }

    public init(loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        fanotify = try Fanotify(
            unlimitedQueue: !Self.testSwitch("KEVD_TEST_FANOTIFY_BOUNDED_QUEUE"),
            reportTarget: !Self.testSwitch("KEVD_TEST_FANOTIFY_BEFORE_5_17"))
        pacer = try ReadPacer()
        moveTimer = try TimerFD(clock: .monotonic)
        boundTimer = try TimerFD(clock: .monotonic)
        queueByteLimit = Self.testValue("KEVD_TEST_FANOTIFY_QUEUE_BYTES") ?? Self.defaultQueueByteLimit
        listingWakeup = try EventFD()
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 8)
        try watchFanotifyFD()
        try loop.register(fd: pacer.timer.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.resume()
        }
        try loop.register(fd: moveTimer.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            _ = try? self.moveTimer.read()
            self.moveTimerFired()
        }
        try registerListing()
        // Timers' priority, not kernel input's: it must run while kernel input is withheld (Daemon+JournalFailure).
        try loop.register(fd: boundTimer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? self.boundTimer.read()
            self.boundTimerFired()
        }
        watchMounts()
    }

    deinit {
        loop.unregister(fd: fanotify.fd.rawValue)
        loop.unregister(fd: pacer.timer.fd.rawValue)
        loop.unregister(fd: moveTimer.fd.rawValue)
        loop.unregister(fd: boundTimer.fd.rawValue)
        loop.unregister(fd: listingWakeup.fd.rawValue)
        if let mountInfo { loop.unregister(fd: mountInfo.rawValue) }
        readBuffer.deallocate()
    }

    /// Test-only switches (the test suite sets them for one daemon; nothing else should): `..._QUEUE_BYTES`
    /// lowers the unlimited queue's bound (FanotifySource+QueueBound.swift); `..._BOUNDED_QUEUE`
    /// keeps the kernel's default queue (16,384 events), so a test can make it overflow;
    /// `..._BEFORE_5_17` behaves as on a kernel before 5.17 (no `FAN_RENAME`, no `FAN_REPORT_TARGET_FID`), so the
    /// move pairing those kernels need runs here.
    static func testSwitch(_ name: String) -> Bool {
        guard let value = getenv(name) else { return false }
        return String(cString: value) == "1"
    }

    static func testValue(_ name: String) -> Int? {
        guard let value = getenv(name) else { return nil }
        return Int(String(cString: value))
    }

    /// The kernel queue's bound (`status`): `unlimited`, or the sysctl that bounds it.
    public var queueLimit: String { fanotify.unlimitedQueue ? "unlimited" : "fs.fanotify.max_queued_events" }

    public var markCount: Int { markedDevices.count }
    public var rootCount: Int { roots.count }
    public var cachedDirectories: Int { directories.count }

    /// Replaces the roots (at start and on reload) and marks every file system they need. Nothing is crawled.
    /// Returns the roots whose own file system refuses a file-system mark (overlayfs says EOPNOTSUPP), with why:
    /// the daemon watches those with inotify instead (Daemon+WatchBackends.swift), and they are not kept here.
    @discardableResult
    public func configure(_ specs: [WatchSpec]) -> [(spec: WatchSpec, reason: String)] {
        var refused: [(spec: WatchSpec, reason: String)] = []
        var accepted: [WatchSpec] = []
        neededDevices = []
        for spec in specs {
            if let reason = markFileSystems(for: spec.path) { refused.append((spec, reason)) } else { accepted.append(spec) }
        }
        let needed = neededDevices ?? []
        neededDevices = nil
        unmarkDevices(except: needed)
        if roots.map(\.spec) != accepted {
            flushPendingMove()  // It names the old roots' directories.
            dropListing()
            let old = roots
            roots = accepted.map { spec in old.first { $0.spec == spec } ?? Root(spec: spec) }
            directories.removeAll()
        }
        return refused
    }

    /// Marks the file system of `path` (or of its nearest existing ancestor, for a root that does not exist yet:
    /// it is seen appearing there) and of every mount point below it. Returns why the root's own file system cannot
    /// be marked, if it cannot; a mount below it that cannot be marked is a `kevd`/`error` (once), and the rest of
    /// the root is watched all the same.
    @discardableResult
    func markFileSystems(for path: String) -> String? {
        var existing = path
        while FileKind.of(existing) == .missing && existing != "/" { existing = PathText.directory(of: existing) }
        // A file root: its directory (the mount fd that resolves handles must be a directory).
        if FileKind.of(existing) == .other { existing = PathText.directory(of: existing) }
        if let reason = mark(existing) { return "cannot mark the file system of \(existing): \(reason)" }
        for mountPoint in MountTable.mountPoints(below: path) {
            if let reason = mark(mountPoint), reportedMounts.insert(mountPoint).inserted {
                reportError("cannot mark a file system for fanotify: its changes are not reported", reason: reason,
                    path: mountPoint)
            }
        }
        return nil
    }

    /// Marks the file system holding `path` unless it is marked already; returns why it cannot be, if so.
    func mark(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }  // Gone meanwhile: the next mount change or reload tries again.
        let device = UInt64(st.st_dev)
        neededDevices?.insert(device)
        if let reason = refusedDevices[device] { return reason }
        var fsid: UInt64 = 0
        guard kevd_fsid(path, &fsid) == 0 else {
            refusedDevices[device] = "statfs gives no file-system id"
            return refusedDevices[device]
        }
        if markedDevices[device] != nil {
            keepMount(path, fsid: fsid)  // Marked already; this may be another mount of it (a bind mount).
            return nil
        }
        do {
            // The first mark learns whether the kernel has FAN_RENAME; every mark then asks for the same events.
            if markedDevices.isEmpty {
                renameEvents = !Self.testSwitch("KEVD_TEST_FANOTIFY_BEFORE_5_17") && fanotify.supportsRename(path: path)
            }
            try fanotify.markFileSystem(path: path, mask: markMask)
        } catch {
            // EPERM: kevd has no CAP_SYS_ADMIN (fanotify_init itself works without it since Linux 5.13, but a
            // file-system mark does not), or a system-call filter refuses the mark.
            let denied = (error as? SyscallError)?.errno.rawValue == EPERM
            refusedDevices[device] = "\(error)" + (denied ? " (file-system marks need CAP_SYS_ADMIN)" : "")
            logger.info("fanotify mark refused", metadata: ["path": "\(path)", "error": "\(error)"])
            return refusedDevices[device]
        }
        markedDevices[device] = fsid
        keepMount(path, fsid: fsid)
        logger.debug("fanotify mark", metadata: ["path": "\(path)", "fsid": "\(fsid)"])
        return nil
    }

    /// What every mark asks for: the base events, and renames as one event where the kernel has them.
    var markMask: Fanotify.Mask { Self.baseMask.union(renameEvents ? [.rename] : [.movedFrom, .movedTo]) }

    /// Removes the marks of file systems no root needs any more (a reload dropped or moved the roots on them), so
    /// their changes no longer reach kevd at all. A file system whose mount kevd can no longer reach keeps its
    /// mark (its events are dropped by the path filter, as before) until it is unmounted.
    func unmarkDevices(except needed: Set<UInt64>) {
        for (device, fsid) in markedDevices where !needed.contains(device) {
            let reachable = (mounts[fsid] ?? []).first { kept in
                var st = stat()
                return stat(kept.path, &st) == 0 && UInt64(st.st_dev) == device
            }
            guard let reachable else {
                logger.info("fanotify mark kept: its file system is not reachable", metadata: ["fsid": "\(fsid)"])
                continue
            }
            do {
                try fanotify.unmarkFileSystem(path: reachable.path, mask: markMask)
            } catch {
                logger.info("fanotify unmark failed", metadata: ["path": "\(reachable.path)", "error": "\(error)"])
                continue
            }
            logger.debug("fanotify mark removed", metadata: ["path": "\(reachable.path)", "fsid": "\(fsid)"])
            markedDevices[device] = nil
            mounts[fsid] = nil
        }
    }

    /// Keeps `path` as the way to the mount it is on, unless that mount is kept already.
    func keepMount(_ path: String, fsid: UInt64) {
        guard let opened = Self.openMount(path) else { return }
        var kept = mounts[fsid] ?? []
        guard !kept.contains(where: { $0.mount == opened.mount }) else { return }
        kept.append((opened.mount, path))
        mounts[fsid] = kept
    }

    /// A directory fd at `path` and the id of the mount it is on. Not O_PATH: open_by_handle_at refuses an O_PATH
    /// fd (EBADF).
    static func openMount(_ path: String) -> (fd: OwnedFD, mount: UInt64)? {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let owned = OwnedFD(fd)
        guard let mount = KernelFileHandle.mountID(of: fd) else { return nil }
        return (owned, mount)
    }

    func reportError(_ message: String, error: Error, path: String? = nil) {
        reportError(message, reason: "\(error)", path: path)
    }

    func reportError(_ message: String, reason: String, path: String? = nil) {
        var data = EventData()
        data.append("message", message)
        data.append("error", reason)
        if let path { data.append("path", path) }
        logger.error("\(message)", metadata: ["error": "\(reason)", "path": "\(path ?? "")"])
        pipeline.publishKevd("error", component: "fanotify", data)
    }
}

/// Mount points from /proc/self/mountinfo.
enum MountTable {
    /// Mount points strictly below `path` (each may be another file system, which needs its own mark).
    static func mountPoints(below path: String) -> [String] {
        guard let bytes = try? FileContents.read("/proc/self/mountinfo") else { return [] }
        let prefix = path == "/" ? "/" : path + "/"
        var out: [String] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            let point = unescape(fields[4])
            if point.hasPrefix(prefix) && point != path { out.append(point) }
        }
        return out
    }

    /// The ids of the mounts in the table (mountinfo's first field, statx's `stx_mnt_id`); empty if unreadable.
    static func mountIDs() -> Set<UInt64> {
        guard let bytes = try? FileContents.read("/proc/self/mountinfo") else { return [] }
        var out: Set<UInt64> = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if let id = line.split(separator: " ", maxSplits: 1).first.flatMap({ UInt64($0) }) { out.insert(id) }
        }
        return out
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
                let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
