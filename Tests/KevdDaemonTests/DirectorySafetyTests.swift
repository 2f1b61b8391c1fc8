import Glibc
import KevdTestSupport
import Testing

@testable import KevdDaemon

@Suite("daemon: directory safety")
struct DirectorySafetyTests {
    func directory(_ parent: TemporaryDirectory, _ name: String, mode: mode_t) -> String {
        let path = parent.path + "/" + name
        mkdir(path, 0o700)
        chmod(path, mode)  // Past the umask.
        return path
    }

    @Test("a world-writable directory is refused, sticky bit or not, with the chmod that fixes it; others pass")
    func worldWritable() throws {
        let parent = try TemporaryDirectory(prefix: "kevd-dirsafety")
        let everyone = directory(parent, "everyone", mode: 0o777)
        let sticky = directory(parent, "sticky", mode: 0o1777)
        let group = directory(parent, "group", mode: 0o770)
        let closed = directory(parent, "closed", mode: 0o755)
        for path in [everyone, sticky] {
            #expect {
                try DirectorySafety.check([(path, "state directory")])
            } throws: { error in
                let text = "\(error)"
                return text.contains("state directory \(path) is world-writable") && text.contains("chmod o-w \(path)")
            }
        }
        try DirectorySafety.check([(group, "socket directory"), (closed, "state directory")])
        // Not there yet (kevd creates it with a safe mode), or not a directory: nothing to refuse.
        try DirectorySafety.check([(parent.path + "/missing", "state directory")])
        let file = parent.path + "/file"
        close(open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0o666))
        chmod(file, 0o666)
        try DirectorySafety.check([(file, "state directory")])
    }
}
