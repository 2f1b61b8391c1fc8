import CKevdShim
import Glibc

/// An inotify instance (`inotify_init1`, `inotify_add_watch`, `inotify_rm_watch`), non-blocking.
public final class Inotify {
    public struct Mask: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        public static let access = Mask(rawValue: kevd_IN_ACCESS)
        public static let modify = Mask(rawValue: kevd_IN_MODIFY)
        public static let attrib = Mask(rawValue: kevd_IN_ATTRIB)
        public static let closeWrite = Mask(rawValue: kevd_IN_CLOSE_WRITE)
        public static let closeNoWrite = Mask(rawValue: kevd_IN_CLOSE_NOWRITE)
        public static let open = Mask(rawValue: kevd_IN_OPEN)
        public static let movedFrom = Mask(rawValue: kevd_IN_MOVED_FROM)
        public static let movedTo = Mask(rawValue: kevd_IN_MOVED_TO)
        public static let create = Mask(rawValue: kevd_IN_CREATE)
        public static let delete = Mask(rawValue: kevd_IN_DELETE)
        public static let deleteSelf = Mask(rawValue: kevd_IN_DELETE_SELF)
        public static let moveSelf = Mask(rawValue: kevd_IN_MOVE_SELF)
        public static let unmount = Mask(rawValue: kevd_IN_UNMOUNT)
        public static let queueOverflow = Mask(rawValue: kevd_IN_Q_OVERFLOW)
        public static let ignored = Mask(rawValue: kevd_IN_IGNORED)
        public static let onlyDirectory = Mask(rawValue: kevd_IN_ONLYDIR)
        public static let dontFollow = Mask(rawValue: kevd_IN_DONT_FOLLOW)
        public static let excludeUnlinked = Mask(rawValue: kevd_IN_EXCL_UNLINK)
        public static let isDirectory = Mask(rawValue: kevd_IN_ISDIR)
    }

    public let fd: OwnedFD

    public init() throws {
        fd = OwnedFD(try syscall("inotify_init1") { kevd_inotify_init() })
    }

    /// Adds or replaces the watch on `path`; returns its watch descriptor. The same inode always yields the
    /// same descriptor, whatever path reached it.
    public func addWatch(path: String, mask: Mask) throws -> Int32 {
        try syscall("inotify_add_watch") { inotify_add_watch(fd.rawValue, path, mask.rawValue) }
    }

    /// Removes a watch. `EINVAL` (the kernel already dropped it, e.g. the directory was deleted) is not an error.
    public func removeWatch(_ wd: Int32) {
        _ = inotify_rm_watch(fd.rawValue, wd)
    }

    /// Whether records are queued in the kernel right now: a zero-timeout `poll`, which the kernel answers by
    /// looking at the head of the queue. Not `FIONREAD`: inotify answers that by walking the whole queue under
    /// its lock, so asking after each full read cost time in proportion to the backlog, just when kevd was
    /// behind (15% of kevd's CPU in a 200k-file burst, by `perf`). Nil if the kernel would not say.
    public var hasQueuedRecords: Bool? {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        let n = poll(&entry, 1, 0)
        return n >= 0 ? n > 0 : nil
    }

    /// Reads as many whole records as fit; returns the byte count, or nil when the queue is empty.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try nonBlockingSyscall("inotify read") { Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count) }
    }
}

/// One `struct inotify_event` as read from the kernel; `name` points into the read buffer.
public struct InotifyRecord {
    public let wd: Int32
    public let mask: Inotify.Mask
    public let cookie: UInt32
    /// The file name relative to the watched directory, without the kernel's NUL padding; empty for events on
    /// the watched object itself.
    public let name: UnsafeBufferPointer<UInt8>
}

/// Splits a buffer filled by `read(2)` on an inotify fd into records.
///
/// The kernel only returns whole records, but this decoder trusts nothing: a length that runs past the end
/// stops decoding (`malformedBytes` says how many bytes were left), so corrupt input can neither crash nor hang.
public struct InotifyRecordDecoder: Sequence, IteratorProtocol {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0
    public private(set) var malformedBytes = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public mutating func next() -> InotifyRecord? {
        let header = Int(kevd_inotify_event_header_size)
        guard offset + header <= bytes.count else {
            malformedBytes = bytes.count - offset
            offset = bytes.count
            return nil
        }
        let wd = bytes.loadUnaligned(fromByteOffset: offset, as: Int32.self)
        let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
        let cookie = bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
        let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
        let nameStart = offset + header
        guard length <= bytes.count - nameStart else {
            malformedBytes = bytes.count - offset
            offset = bytes.count
            return nil
        }
        var nameLength = 0
        let base = bytes.baseAddress!.advanced(by: nameStart).assumingMemoryBound(to: UInt8.self)
        while nameLength < length && base[nameLength] != 0 { nameLength += 1 }
        offset = nameStart + length
        return InotifyRecord(
            wd: wd, mask: Inotify.Mask(rawValue: mask), cookie: cookie,
            name: UnsafeBufferPointer(start: base, count: nameLength))
    }
}

/// Lists a directory without following a final symlink (`opendir` with `O_NOFOLLOW`, `readdir`).
public enum DirectoryListing {
    public struct Entry: Sendable {
        public let name: [UInt8]
        /// nil when the file system does not say (`DT_UNKNOWN`); callers `lstat` then.
        public let isDirectory: Bool?
    }

    public static func entries(of path: String) throws -> [Entry] {
        guard let dir = kevd_opendir(path) else { throw SyscallError(call: "opendir", errno: .init(rawValue: errno)) }
        defer { kevd_closedir(dir) }
        var out: [Entry] = []
        var isDir: Int32 = 0
        while let name = kevd_readdir(dir, &isDir) {
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self),
                                            count: strlen(name))
            out.append(Entry(name: Array(bytes), isDirectory: isDir < 0 ? nil : isDir == 1))
        }
        return out
    }

    /// Opens `path` and reads its entries through, throwing them away: its inode and its entries are then in the
    /// kernel's caches (see the loop's crawl prefetcher). Errors are ignored: the crawl's own open meets them.
    public static func warm(_ path: String) {
        guard let dir = kevd_opendir(path) else { return }
        defer { kevd_closedir(dir) }
        var isDir: Int32 = 0
        while kevd_readdir(dir, &isDir) != nil {}
    }
}

/// The process's heap.
public enum Heap {
    /// Gives free heap pages back to the kernel (`malloc_trim(0)`): after a crawl, whose transient lists (the
    /// directories still to visit, each listing's names, across two threads' arenas) would otherwise stay in RSS.
    public static func trim() { _ = kevd_malloc_trim() }
}

/// `lstat` facts kevd needs about a path.
public enum FileKind: Sendable, Equatable {
    case missing
    case directory
    case other

    public static func of(_ path: String) -> FileKind {
        var st = stat()
        guard lstat(path, &st) == 0 else { return .missing }
        return (st.st_mode & S_IFMT) == S_IFDIR ? .directory : .other
    }
}

/// Directory creation shared by the journal and the socket.
public enum Directories {
    /// `mkdir -p`: creates `path` and its missing parents with `mode`; existing ones are left as they are.
    public static func make(_ path: String, mode: mode_t) throws {
        // A relative path stays relative: each prefix is made where the path itself points.
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                throw SyscallError(call: "mkdir(\(prefix))", errno: .init(rawValue: errno))
            }
        }
    }
}
