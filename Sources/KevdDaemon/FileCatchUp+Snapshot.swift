import Glibc
import KevdEvent
import KevdKernel

/// The snapshot file, `state_dir/catchup/<hash of the root's path>.snap`: written by the catch-up's helper thread
/// to a temporary file, synced, then renamed over the old one, so a crash leaves the old snapshot or the new one.
///
/// Layout (little-endian): the magic `KEVDSNP1`, the seq (u64), the root's path (u32 length, bytes), the entry
/// count (u64), then each entry: the relative path's length (u16), inode (u64), size (i64), mtime ns (i64),
/// ctime ns (i64), mode, uid, gid (u32 each), then the path's bytes: 46 bytes plus the relative path per entry.
extension FileCatchUp {
    static let magic = Array("KEVDSNP1".utf8)
    static let fixedEntryBytes = 46

    /// The snapshot's file for `root` in `directory`: a hash of the path names it (FNV-1a, 64 bits), and the path
    /// itself is stored inside and checked on load, so a collision reads as "no snapshot", never as another's.
    static func snapshotPath(directory: String, root: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in root.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return directory + "/" + String(repeating: "0", count: 16 - hex.count) + hex + ".snap"
    }

    /// The name of `root`'s snapshot file in its directory.
    static func snapshotName(root: String) -> String {
        let path = snapshotPath(directory: "", root: root)
        return String(path.dropFirst())
    }

    /// Deletes the snapshots in `directory` that are not in `keep` (a root no longer watched, or watched without
    /// catch-up, would otherwise keep its snapshot, about 54 bytes an entry, for ever), and every temporary file a
    /// killed write left. On the catch-up's thread, between jobs' writes: a large file's unlink may take a while.
    /// Returns how many snapshots it deleted; what it cannot delete is added to `errors`.
    static func pruneSnapshots(in directory: String, keeping keep: Set<String>, errors: inout [String]) -> Int {
        guard let dir = opendir(directory) else {
            errors.append("cannot list \(directory): \(String(cString: strerror(errno)))")
            return 0
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name.hasSuffix(".snap.tmp") || (name.hasSuffix(".snap") && !keep.contains(name)) { names.append(name) }
        }
        var pruned = 0
        for name in names {
            if unlink(directory + "/" + name) == 0 {
                if name.hasSuffix(".snap") { pruned += 1 }
            } else if errno != ENOENT {
                errors.append("cannot delete \(directory)/\(name): \(String(cString: strerror(errno)))")
            }
        }
        return pruned
    }

    struct SnapshotError: Error, CustomStringConvertible {
        let description: String
    }

    static func write(_ snapshot: Snapshot, to path: String) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SnapshotError(description: "open \(temporary): \(String(cString: strerror(errno)))") }
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1 << 20)
        func flush() throws {
            var offset = 0
            while offset < buffer.count {
                let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw SnapshotError(description: "write \(temporary): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
            buffer.removeAll(keepingCapacity: true)
        }
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
        }
        do {
            buffer.append(contentsOf: magic)
            put(snapshot.seq)
            put(UInt32(snapshot.root.utf8.count))
            buffer.append(contentsOf: snapshot.root.utf8)
            put(UInt64(snapshot.entries.count))
            for entry in snapshot.entries {
                // The path's own bytes (a name that is not UTF-8 kept as it is on disk).
                let name = entry.raw ?? Array(entry.path.utf8)
                put(UInt16(truncatingIfNeeded: name.count))
                put(entry.state.inode)
                put(entry.state.size)
                put(entry.state.mtime)
                put(entry.state.ctime)
                put(entry.state.mode)
                put(entry.state.uid)
                put(entry.state.gid)
                buffer.append(contentsOf: name)
                if buffer.count >= 1 << 20 { try flush() }
            }
            try flush()
            guard fsync(fd) == 0 else { throw SnapshotError(description: "fsync \(temporary): \(String(cString: strerror(errno)))") }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            throw SnapshotError(description: "rename \(temporary): \(String(cString: strerror(errno)))")
        }
    }

    /// The snapshot of `root` at `path`; nil when there is none (or it is another root's). A damaged one throws.
    static func read(_ path: String, root: String) throws -> Snapshot? {
        let bytes: [UInt8]
        do {
            bytes = try FileContents.read(path)
        } catch let error as SyscallError where error.errno.rawValue == ENOENT {
            return nil
        } catch {
            throw SnapshotError(description: "\(error)")
        }
        var offset = 0
        let damaged = SnapshotError(description: "\(path) is damaged (truncated or not a snapshot)")
        func take<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard offset + MemoryLayout<T>.size <= bytes.count else { throw damaged }
            var value = T.zero
            withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes[offset..<offset + MemoryLayout<T>.size]) }
            offset += MemoryLayout<T>.size
            return T(littleEndian: value)
        }
        func text(_ count: Int) throws -> String {
            guard offset + count <= bytes.count else { throw damaged }
            defer { offset += count }
            return String(decoding: bytes[offset..<offset + count], as: UTF8.self)
        }
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else { throw damaged }
        offset = magic.count
        let seq = try take(UInt64.self)
        let stored = try text(Int(try take(UInt32.self)))
        guard stored == root else { return nil }
        let count = try take(UInt64.self)
        guard count <= UInt64(bytes.count / fixedEntryBytes) else { throw damaged }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            let length = Int(try take(UInt16.self))
            let state = State(
                inode: try take(UInt64.self), size: try take(Int64.self), mtime: try take(Int64.self),
                ctime: try take(Int64.self), mode: try take(UInt32.self), uid: try take(UInt32.self),
                gid: try take(UInt32.self))
            guard offset + length <= bytes.count else { throw damaged }
            let path = ByteText(bytes[offset..<offset + length])
            entries.append(Entry(path: path.string, state: state, raw: path.isLossless ? nil : Array(bytes[offset..<offset + length])))
            offset += length
        }
        return Snapshot(root: root, seq: seq, entries: entries)
    }
}
