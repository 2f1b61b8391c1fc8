import Glibc

/// kevd refuses to start when its state directory or its socket's directory is world-writable: any local user
/// could then replace the socket with one of their own (clients would send emits to them, and trust what they
/// read), or swap journal segments and rule positions under the daemon. The sticky bit (/tmp) does not help: it
/// stops renaming other users' files, not creating a socket or a segment before kevd does.
public enum DirectorySafety {
    public struct Refusal: Error, CustomStringConvertible {
        public let path: String
        public let role: String
        public let mode: mode_t
        public var description: String {
            let octal = String(mode & 0o7777, radix: 8)
            return "refusing to start: the \(role) \(path) is world-writable (mode \(octal)); "
                + "use a directory only kevd's user (and group) can write, or run: chmod o-w \(path)"
        }
    }

    /// Checks each existing directory; one that does not exist yet is created later by kevd with a safe mode.
    public static func check(_ directories: [(path: String, role: String)]) throws {
        for (path, role) in directories {
            var st = stat()
            guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
            if st.st_mode & S_IWOTH != 0 { throw Refusal(path: path, role: role, mode: st.st_mode) }
        }
    }
}
