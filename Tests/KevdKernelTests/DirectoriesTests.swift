import Glibc
import KevdKernel
import KevdTestSupport
import Testing

@Suite("mkdir -p")
struct DirectoriesTests {
    /// A relative path is made below the current directory, not below `/` (it once was: `kevd-bench`'s default
    /// `bench/results` became `/bench/results`, and writing the results then failed).
    @Test("a relative path is made relative to the current directory")
    func relativePath() throws {
        let top = ".build/directories-test-\(getpid())"
        defer {
            rmdir(top + "/a/b")
            rmdir(top + "/a")
            rmdir(top)
        }
        try Directories.make(top + "/a/b", mode: 0o755)
        var info = stat()
        #expect(stat(top + "/a/b", &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR)
        #expect(stat("/" + top, &info) != 0, "nothing was made below /")
    }

    @Test("an absolute path, and one that exists already")
    func absolutePath() throws {
        let base = try makeTemporaryDirectory(prefix: "kevd-dirs")
        defer {
            rmdir(base + "/x/y")
            rmdir(base + "/x")
            rmdir(base)
        }
        try Directories.make(base + "/x/y", mode: 0o700)
        try Directories.make(base + "/x/y", mode: 0o700)
        var info = stat()
        #expect(stat(base + "/x/y", &info) == 0 && info.st_mode & 0o777 == 0o700)
    }
}
