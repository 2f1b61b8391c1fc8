import CKevdShim
import Glibc
import SystemPackage

/// A fanotify group reporting directory-entry events (`FAN_REPORT_DFID_NAME | FAN_REPORT_FID`), non-blocking,
/// with whole-file-system marks. Needs CAP_SYS_ADMIN and Linux 5.9 (`FAN_RENAME`: 5.17).
public final class Fanotify {
    public struct Mask: OptionSet, Sendable, Hashable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }

        public static let modify = Mask(rawValue: kevd_FAN_MODIFY)
        public static let attrib = Mask(rawValue: kevd_FAN_ATTRIB)
        public static let closeWrite = Mask(rawValue: kevd_FAN_CLOSE_WRITE)
        public static let movedFrom = Mask(rawValue: kevd_FAN_MOVED_FROM)
        public static let movedTo = Mask(rawValue: kevd_FAN_MOVED_TO)
        public static let create = Mask(rawValue: kevd_FAN_CREATE)
        public static let delete = Mask(rawValue: kevd_FAN_DELETE)
        public static let deleteSelf = Mask(rawValue: kevd_FAN_DELETE_SELF)
        public static let moveSelf = Mask(rawValue: kevd_FAN_MOVE_SELF)
        public static let queueOverflow = Mask(rawValue: kevd_FAN_Q_OVERFLOW)
        public static let rename = Mask(rawValue: kevd_FAN_RENAME)
        public static let onDirectory = Mask(rawValue: kevd_FAN_ONDIR)
    }

    public static let initFlags = kevd_FAN_CLASS_NOTIF | kevd_FAN_REPORT_DFID_NAME | kevd_FAN_REPORT_FID

    public let fd: OwnedFD
    /// The queue has no length limit (`FAN_UNLIMITED_QUEUE`): events wait in kernel memory charged to kevd's
    /// cgroup, and only a failed allocation there (the unit's `MemoryMax=`) queues an overflow.
    public let unlimitedQueue: Bool
    /// Directory-entry events (create, delete, moves) carry the child's handle too (`FAN_REPORT_TARGET_FID`,
    /// Linux 5.17): the kernel then merges only events of one inode into a record.
    public let reportsTarget: Bool

    /// A group with an unlimited queue and the child's handle on directory-entry events when asked for and had:
    /// without CAP_SYS_ADMIN the queue is the kernel's default (`fs.fanotify.max_queued_events`, 16,384), and a
    /// kernel before 5.17 refuses `FAN_REPORT_TARGET_FID` (EINVAL).
    public init(unlimitedQueue wantUnlimited: Bool = true, reportTarget wantTarget: Bool = true) throws {
        var unlimited = wantUnlimited
        var target = wantTarget
        while true {
            let flags = Self.initFlags | (unlimited ? kevd_FAN_UNLIMITED_QUEUE : 0)
                | (target ? kevd_FAN_REPORT_TARGET_FID : 0)
            let raw = kevd_fanotify_init(flags)
            if raw >= 0 {
                fd = OwnedFD(raw)
                unlimitedQueue = unlimited
                reportsTarget = target
                return
            }
            let code = errno
            if code == EINTR { continue }
            if code == EINVAL && target {
                target = false
            } else if code == EPERM && unlimited {
                unlimited = false
            } else {
                throw SyscallError(call: "fanotify_init", errno: Errno(rawValue: code))
            }
        }
    }

    /// Marks the whole file system holding `path` for `mask`.
    public func markFileSystem(path: String, mask: Mask) throws {
        _ = try syscall("fanotify_mark") {
            kevd_fanotify_mark(fd.rawValue, kevd_FAN_MARK_ADD | kevd_FAN_MARK_FILESYSTEM, mask.rawValue, path)
        }
    }

    /// Removes the mark `markFileSystem` made on the file system holding `path` (`mask` is the mask it was made
    /// with).
    public func unmarkFileSystem(path: String, mask: Mask) throws {
        _ = try syscall("fanotify_mark") {
            kevd_fanotify_mark(fd.rawValue, kevd_FAN_MARK_REMOVE | kevd_FAN_MARK_FILESYSTEM, mask.rawValue, path)
        }
    }

    /// Reads as many whole events as fit; returns the byte count, or nil when the queue is empty.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try nonBlockingSyscall("fanotify read") { Glibc.read(fd.rawValue, buffer.baseAddress, buffer.count) }
    }

    /// Whether this process may use directory-entry fanotify here, and if not, why (for the fallback report).
    public static func probe() -> String? {
        guard geteuid() == 0 else { return "not root (fanotify needs CAP_SYS_ADMIN)" }
        let fd = kevd_fanotify_init(initFlags)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case EPERM:
                // Root without CAP_SYS_ADMIN, or a seccomp filter: systemd's SystemCallFilter=@system-service
                // leaves fanotify_init, fanotify_mark and open_by_handle_at out (they are in @privileged).
                return "fanotify_init is not permitted (no CAP_SYS_ADMIN, or a system-call filter such as "
                    + "systemd's SystemCallFilter=@system-service)"
            case EINVAL:
                return "the kernel refuses fanotify directory-entry events (FAN_REPORT_DFID_NAME, Linux 5.9)"
            default:
                return "fanotify_init failed: " + String(cString: strerror(code))
            }
        }
        Glibc.close(fd)
        return nil
    }

    /// Whether the kernel knows `FAN_RENAME` (5.17+): a mark with it is refused with EINVAL before.
    public func supportsRename(path: String) -> Bool {
        kevd_fanotify_mark(fd.rawValue, kevd_FAN_MARK_ADD | kevd_FAN_MARK_FILESYSTEM, kevd_FAN_RENAME, path) == 0
    }
}

/// A file handle as fanotify and `name_to_handle_at` give it: the file system (fsid), the handle's type and its
/// bytes. Hashable, so it keys caches.
///
/// The bytes are kept inline (40 bytes: ext4, xfs, tmpfs and btrfs handles are 8 to 20), so taking a handle out
/// of a read buffer, hashing it and comparing it allocate nothing: this is done for every fanotify event. A longer
/// handle (some network file systems) keeps its bytes in an array.
public struct KernelFileHandle: Hashable, Sendable {
    public var fsid: UInt64
    public var type: Int32
    /// The handle's length in bytes.
    public private(set) var count: Int32
    private var inline: (UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0)
    private var spilled: [UInt8]?

    static let inlineCapacity = 40

    public init(fsid: UInt64, type: Int32, bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { KernelFileHandle(fsid: fsid, type: type, raw: $0) }
    }

    /// Copies the handle's bytes out of `raw` (a read buffer): no allocation for a handle of up to 40 bytes.
    public init(fsid: UInt64, type: Int32, raw: UnsafeRawBufferPointer) {
        self.fsid = fsid
        self.type = type
        count = Int32(raw.count)
        if raw.count <= Self.inlineCapacity {
            withUnsafeMutableBytes(of: &inline) { $0.copyMemory(from: raw) }
        } else {
            spilled = Array(raw)
        }
    }

    /// The handle's bytes (for `open_by_handle_at`).
    public func withBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        if let spilled { return spilled.withUnsafeBufferPointer(body) }
        var copy = inline
        return withUnsafeBytes(of: &copy) { body(UnsafeBufferPointer(rebasing: $0.bindMemory(to: UInt8.self)[0..<Int(count)])) }
    }

    public var bytes: [UInt8] { withBytes { Array($0) } }

    public static func == (a: KernelFileHandle, b: KernelFileHandle) -> Bool {
        a.inline.0 == b.inline.0 && a.inline.1 == b.inline.1 && a.fsid == b.fsid && a.type == b.type
            && a.count == b.count && a.inline.2 == b.inline.2 && a.inline.3 == b.inline.3 && a.inline.4 == b.inline.4
            && a.spilled == b.spilled
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(fsid)
        hasher.combine(UInt64(UInt32(bitPattern: type)) << 32 | UInt64(UInt32(bitPattern: count)))
        hasher.combine(inline.0)
        hasher.combine(inline.1)
        if count > 16 {
            hasher.combine(inline.2)
            hasher.combine(inline.3)
            hasher.combine(inline.4)
        }
        if let spilled { hasher.combine(spilled) }
    }

    /// The handle of `path` (following symlinks), with `fsid` filled in by the caller.
    public static func of(path: String, fsid: UInt64) -> KernelFileHandle? {
        var type: Int32 = 0
        var length: UInt32 = 128
        var bytes = [UInt8](repeating: 0, count: 128)
        let rc = bytes.withUnsafeMutableBufferPointer { kevd_name_to_handle(path, &type, $0.baseAddress, &length) }
        guard rc == 0 else { return nil }
        return KernelFileHandle(fsid: fsid, type: type, bytes: Array(bytes[0..<Int(length)]))
    }

    /// Where a handle's object is now.
    public enum Location: Equatable, Sendable {
        case path(String)
        /// Deleted (ESTALE, or unlinked while open): it will never have a path again.
        case gone
        /// Not resolvable right now (out of fds or memory, no permission): it may be next time.
        case unknown
        /// Exists, but is not below the mount `mountFD` is on (a bind mount of part of the file system): the path
        /// the kernel gives through that mount names something else. Another mount of the file system may name it.
        case unreachable
    }

    /// The path the handle's object has now (its first name, for a hard-linked file), through `mountFD` (a
    /// directory fd on the same file system).
    public func location(mountFD: Int32) -> Location {
        let fd = withBytes {
            kevd_open_by_handle_at(mountFD, type, $0.baseAddress, UInt32($0.count), kevd_O_PATH | O_CLOEXEC)
        }
        guard fd >= 0 else { return errno == ESTALE || errno == ENOENT ? .gone : .unknown }
        defer { Glibc.close(fd) }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/fd/\(fd)", &buffer, Int(PATH_MAX))
        guard n > 0 else { return .unknown }
        let text = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if text.hasSuffix(" (deleted)") { return .gone }
        guard text.hasPrefix("/") else { return .unknown }
        // Through a bind mount, an object outside the mount's subtree gets its path from the file system's root,
        // which may name another object (or none): only a path that leads back to this object is its path.
        var opened = stat()
        var named = stat()
        guard fstat(fd, &opened) == 0 else { return .unknown }
        guard lstat(text, &named) == 0, named.st_dev == opened.st_dev, named.st_ino == opened.st_ino else {
            return .unreachable
        }
        return .path(text)
    }

    /// The id of the mount `fd` is on (`statx` `STATX_MNT_ID`, Linux 5.8), so that each mount is kept once.
    public static func mountID(of fd: Int32) -> UInt64? {
        var id: UInt64 = 0
        return kevd_mount_id(fd, &id) == 0 ? id : nil
    }
}

/// One fanotify event as read: its mask and pid, and the info records kevd asks for (directory + name, the
/// object's own handle, and for `FAN_RENAME` the old and new directory + name). Names point into the read buffer.
public struct FanotifyRecord {
    public var mask: Fanotify.Mask = []
    public var pid: Int32 = 0
    public var directory: KernelFileHandle?
    public var name: UnsafeBufferPointer<UInt8>?
    public var object: KernelFileHandle?
    public var oldDirectory: KernelFileHandle?
    public var oldName: UnsafeBufferPointer<UInt8>?
    public var newDirectory: KernelFileHandle?
    public var newName: UnsafeBufferPointer<UInt8>?
}

/// Splits a buffer read from a fanotify fd into records. Trusts nothing: a length that runs past the end, or a
/// metadata version it does not know, stops decoding.
public struct FanotifyRecordDecoder: Sequence, IteratorProtocol {
    private let bytes: UnsafeRawBufferPointer
    private var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public mutating func next() -> FanotifyRecord? {
        let header = Int(kevd_fanotify_metadata_size)
        guard offset + header <= bytes.count else { return nil }
        let base = offset
        let eventLength = Int(bytes.loadUnaligned(fromByteOffset: base, as: UInt32.self))
        let version = bytes.loadUnaligned(fromByteOffset: base + 4, as: UInt8.self)
        let metadataLength = Int(bytes.loadUnaligned(fromByteOffset: base + 6, as: UInt16.self))
        guard version == kevd_FANOTIFY_METADATA_VERSION, eventLength >= header, metadataLength >= header,
            base + eventLength <= bytes.count
        else {
            offset = bytes.count
            return nil
        }
        var record = FanotifyRecord()
        record.mask = Fanotify.Mask(rawValue: bytes.loadUnaligned(fromByteOffset: base + 8, as: UInt64.self))
        let eventFD = bytes.loadUnaligned(fromByteOffset: base + 16, as: Int32.self)
        record.pid = bytes.loadUnaligned(fromByteOffset: base + 20, as: Int32.self)
        if eventFD >= 0 { Glibc.close(eventFD) }  // Never with FID reporting; closed should a kernel send one.
        var info = base + metadataLength
        let end = base + eventLength
        let fixed = Int(kevd_fanotify_info_fid_size)
        while info + 4 <= end {
            let type = Int32(bytes.loadUnaligned(fromByteOffset: info, as: UInt8.self))
            let length = Int(bytes.loadUnaligned(fromByteOffset: info + 2, as: UInt16.self))
            guard length >= 4, info + length <= end else { break }
            // struct fanotify_event_info_fid: header (4), fsid (8), then struct file_handle: bytes (4), type (4), f_handle.
            if length >= fixed + 8 {
                let fsid = bytes.loadUnaligned(fromByteOffset: info + 4, as: UInt64.self)
                let handleLength = Int(bytes.loadUnaligned(fromByteOffset: info + fixed, as: UInt32.self))
                let handleType = bytes.loadUnaligned(fromByteOffset: info + fixed + 4, as: Int32.self)
                let handleStart = info + fixed + 8
                if handleStart + handleLength <= info + length {
                    let handle = KernelFileHandle(
                        fsid: fsid, type: handleType,
                        raw: UnsafeRawBufferPointer(rebasing: bytes[handleStart..<(handleStart + handleLength)]))
                    // The name follows the handle, NUL-terminated and padded.
                    let nameStart = handleStart + handleLength
                    var nameEnd = nameStart
                    while nameEnd < info + length && bytes[nameEnd] != 0 { nameEnd += 1 }
                    let name = UnsafeRawBufferPointer(rebasing: bytes[nameStart..<nameEnd]).bindMemory(to: UInt8.self)
                    switch type {
                    case kevd_FAN_EVENT_INFO_TYPE_FID: record.object = handle
                    case kevd_FAN_EVENT_INFO_TYPE_DFID_NAME:
                        record.directory = handle
                        record.name = name
                    case kevd_FAN_EVENT_INFO_TYPE_DFID: record.directory = handle
                    case kevd_FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
                        record.oldDirectory = handle
                        record.oldName = name
                    case kevd_FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
                        record.newDirectory = handle
                        record.newName = name
                    default: break
                    }
                }
            }
            info += length
        }
        offset = end
        return record
    }
}
