import Glibc

/// Whole-file reads (`open`, `read` to end of file), for the small files kevd reads off the hot path: the
/// configuration, sysctls, stored positions, journal segments; and whole-file durable replacement.
public enum FileContents {
    /// Replaces `path` with `bytes` so that a crash leaves the old or the new content, never a mix: written to
    /// `path.tmp`, `fsync`ed, renamed over `path`, then the folder `fsync`ed so the rename itself is durable.
    /// It blocks on the disk: for helper threads, never the loop. On failure `errno` says why.
    ///
    /// Every step is checked, the folder's `fsync` too: a position whose rename may not survive a power cut is
    /// not stored, and the caller keeps its previous position (the failure is reported, never taken for success).
    public static func replace(_ path: String, with bytes: [UInt8], mode: mode_t = 0o640) -> Bool {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return false }
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        var ok = written == bytes.count
        if !ok && written >= 0 { errno = ENOSPC }  // A short write of a small file: the disk is full.
        if ok && !syncRetryingInterrupts(fd) { ok = false }
        let code = errno
        Glibc.close(fd)
        errno = code
        guard ok, rename(tmp, path) == 0 else { return false }
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let dir = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { return false }
        // EINVAL: a file system that cannot sync directories (PostgreSQL ignores it too); anything else fails.
        let synced = syncRetryingInterrupts(dir) || errno == EINVAL
        let dirCode = errno
        Glibc.close(dir)
        errno = dirCode
        return synced
    }

    /// `fsync`, retried on EINTR only; false (with `errno`) when it fails.
    private static func syncRetryingInterrupts(_ fd: Int32) -> Bool {
        while fsync(fd) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }

    public static func read(_ path: String) throws -> [UInt8] {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        var st = stat()
        try syscall("fstat(\(path))") { fstat(fd, &st) }
        // The size is only a hint: /proc files report 0, and a journal segment may grow while it is read.
        var bytes = [UInt8](repeating: 0, count: max(Int(st.st_size), 4096))
        var count = 0
        while true {
            if count == bytes.count { bytes.append(contentsOf: repeatElement(0, count: bytes.count)) }
            let n = try bytes.withUnsafeMutableBytes { raw in
                try syscall("read(\(path))") { Glibc.read(fd, raw.baseAddress! + count, raw.count - count) }
            }
            if n == 0 { break }
            count += n
        }
        bytes.removeLast(bytes.count - count)
        return bytes
    }
}
