import Glibc

/// Whole-file reads (`open`, `read` to end of file), for the small files kevd reads off the hot path: the
/// configuration, sysctls, stored positions, journal segments.
public enum FileContents {
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
