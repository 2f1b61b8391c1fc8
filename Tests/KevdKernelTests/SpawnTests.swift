import CKevdShim
import Glibc
import KevdKernel
import KevdTestSupport
import Testing

/// Spawn, Children, Pipes and MemoryFile against real processes. Serialized: `Children.nextExited` sees every
/// child of the test process, and a child of a concurrent test would blur what these check. Every wait has a
/// deadline, and every child is killed and reaped even when a check fails.
@Suite(.serialized)
struct SpawnTests {
    @Test func hostileArgumentsArriveByteExact() throws {
        let directory = try TemporaryDirectory(prefix: "kevd-spawn")
        let hostile = [
            "with space", "new\nline", "tab\there", "\"double\" 'single'", "$(touch pwned)", "`touch pwned`",
            "; touch pwned", "-n", "--help", "", "héllo wörld ✓ 日本", "*", "\\0 \\n %s %%",
        ]
        var request = SpawnRequest(path: "/usr/bin/printf", arguments: ["printf", "%s\\0"] + hostile, environment: [])
        request.directory = directory.path

        let (output, status) = try run(request)
        #expect(status == .exited(0))
        #expect(output == Array(hostile.map { $0 + "\0" }.joined().utf8))
        #expect(access(directory.path + "/pwned", F_OK) != 0)
    }

    @Test func stringsWithANULByteAreRejected() {
        var badDirectory = SpawnRequest(path: "/bin/true", arguments: ["true"], environment: [])
        badDirectory.directory = "/\0tmp"
        let cases: [(SpawnRequest, String)] = [
            (SpawnRequest(path: "/bin/true", arguments: ["true", "a\0b"], environment: []), "argv[1]"),
            (SpawnRequest(path: "/bin/true", arguments: ["true"], environment: ["A=\0"]), "environment[0]"),
            (SpawnRequest(path: "/bin/true\0/x", arguments: ["true"], environment: []), "path"),
            (badDirectory, "directory"),
        ]
        for (request, what) in cases {
            let error = #expect(throws: SpawnError.self) { try Spawn.start(request) }
            #expect(error?.step == "arguments")
            #expect(error?.description == "arguments: \(what) contains a NUL byte")
        }
    }

    @Test func environmentIsExactlyTheGivenOne() throws {
        let environment = [
            "PATH=/usr/bin:/bin", "A=1", "MULTI=line one\nline two", "EMPTY=", "UNICODE=ünï ✓", "SPACES=  padded  ",
        ]
        let (output, status) = try run(
            SpawnRequest(path: "/usr/bin/env", arguments: ["env", "-0"], environment: environment))
        #expect(status == .exited(0))
        #expect(output == Array(environment.map { $0 + "\0" }.joined().utf8))

        let (nothing, _) = try run(SpawnRequest(path: "/usr/bin/env", arguments: ["env"], environment: []))
        #expect(nothing.isEmpty)
    }

    @Test func stdinFromAMemoryFileArrivesIntact() throws {
        // 1 MiB, far more than a pipe buffer: writing it into a pipe before the child reads would block.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let contents = (0..<(1 << 20)).map { _ -> UInt8 in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
        let input = try contents.withUnsafeBytes { try MemoryFile.make(name: "stdin", contents: $0) }
        #expect(lseek(input.rawValue, 0, SEEK_CUR) == 0)
        #expect(fcntl(input.rawValue, F_GETFD) & FD_CLOEXEC != 0)

        var request = SpawnRequest(path: "/bin/cat", arguments: ["cat"], environment: [])
        request.stdin = input.rawValue
        let (output, status) = try run(request)
        #expect(status == .exited(0))
        #expect(output.count == contents.count)
        #expect(output == contents)
    }

    @Test func childInputIsAPipeUpToPipeBufAndAMemoryFileAboveAndArrivesIntactEither() throws {
        // An event line, 4,096 bytes exactly (the most a pipe takes whole), and one byte more.
        for size in [0, 300, ChildInput.pipeLimit, ChildInput.pipeLimit + 1, 256 * 1024] {
            let contents = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let input = try contents.withUnsafeBytes { try ChildInput.make(name: "stdin", contents: $0) }
            var info = stat()
            #expect(fstat(input.rawValue, &info) == 0)
            let isPipe = info.st_mode & S_IFMT == S_IFIFO
            #expect(isPipe == (size <= ChildInput.pipeLimit), "size \(size)")
            // Blocking, like any stdin a program expects; closed on exec in kevd (the child gets its dup2 copy).
            #expect(fcntl(input.rawValue, F_GETFL) & O_NONBLOCK == 0)
            #expect(fcntl(input.rawValue, F_GETFD) & FD_CLOEXEC != 0)

            var request = SpawnRequest(path: "/bin/cat", arguments: ["cat"], environment: [])
            request.stdin = input.rawValue
            let (output, status) = try run(request)
            #expect(status == .exited(0))
            #expect(output == contents, "size \(size)")
        }
    }

    @Test func pipeEndsAreCloseOnExecAndOnlyTheReadEndIsNonBlocking() throws {
        let pipe = try Pipes.make()
        #expect(fcntl(pipe.read.rawValue, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(pipe.write.rawValue, F_GETFL) & O_NONBLOCK == 0)
        #expect(fcntl(pipe.read.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        #expect(fcntl(pipe.write.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        var byte: UInt8 = 0
        let nothing = try withUnsafeMutableBytes(of: &byte) { try Pipes.readAvailable(pipe.read.rawValue, into: $0) }
        #expect(nothing == nil)
    }

    @Test func missingStdioIsDevNullAndOneFdCanServeTwice() throws {
        // stdout and stderr given the same fd; stdin not given.
        let pipe = try Pipes.make()
        var request = SpawnRequest(
            path: "/bin/sh", arguments: ["sh", "-c", "readlink /proc/$$/fd/0; echo to-stderr >&2"],
            environment: ["PATH=/usr/bin:/bin"])
        request.stdout = pipe.write.rawValue
        request.stderr = pipe.write.rawValue
        let child = try Started(request)
        defer { child.end() }
        pipe.write.close()
        #expect(String(decoding: try readToEnd(pipe.read), as: UTF8.self) == "/dev/null\nto-stderr\n")
        #expect(try child.wait() == .exited(0))
    }

    @Test(
        .enabled(if: fcntl(0, F_GETFD) >= 0 && fcntl(1, F_GETFD) >= 0, "needs the test process's fds 0 and 1 open"))
    func stdioSourcesAmongZeroToTwoAreNotOverwritten() throws {
        // The child's stdin is the test's fd 1 and its stdout the test's fd 0: installing either first must not
        // destroy the source of the other. The shell reports its own fds (/proc/$$) on the pipe, redirecting in a
        // subshell: dash applies a simple command's redirections to itself before it forks.
        let pipe = try Pipes.make()
        var request = SpawnRequest(
            path: "/bin/sh", arguments: ["sh", "-c", "(readlink /proc/$$/fd/0 /proc/$$/fd/1) >&2; exit 0"],
            environment: ["PATH=/usr/bin:/bin"])
        request.stdin = 1
        request.stdout = 0
        request.stderr = pipe.write.rawValue
        let child = try Started(request)
        defer { child.end() }
        pipe.write.close()
        let expected = "\(try link("/proc/self/fd/1"))\n\(try link("/proc/self/fd/0"))\n"
        let reported = String(decoding: try readToEnd(pipe.read), as: UTF8.self)
        #expect(reported == expected)
        #expect(try child.wait() == .exited(0))
    }

    @Test func fdsAboveTwoAreClosedEvenWithoutCloseOnExec() throws {
        let leaked = open("/dev/null", O_RDONLY)  // deliberately without O_CLOEXEC
        try #require(leaked >= 0)
        defer { close(leaked) }
        let high = fcntl(leaked, F_DUPFD, 900)  // F_DUPFD, not F_DUPFD_CLOEXEC: inheritable too
        try #require(high >= 0)
        defer { close(high) }

        let script = "for fd in 0 1 2 \(leaked) \(high); do [ -e /proc/$$/fd/$fd ] && printf '%s ' $fd; done; exit 0"
        let (output, status) = try run(
            SpawnRequest(path: "/bin/sh", arguments: ["sh", "-c", script], environment: []))
        #expect(status == .exited(0))
        #expect(String(decoding: output, as: UTF8.self) == "0 1 2 ")
    }

    @Test func signalMaskIsEmptyAndDispositionsDefaultInTheChild() throws {
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        sigaddset(&blocked, SIGUSR1)
        var saved = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        let savedPipeAction = signal(SIGPIPE, SIG_IGN)
        defer { signal(SIGPIPE, savedPipeAction) }

        let own = try signalFields(file: "/proc/thread-self/status")
        #expect(own["SigBlk"] != "0000000000000000")
        #expect(own["SigIgn"] != "0000000000000000")

        // cat reads its own status: no shell in between to change either.
        let (output, status) = try run(
            SpawnRequest(path: "/bin/cat", arguments: ["cat", "/proc/self/status"], environment: []))
        #expect(status == .exited(0))
        let child = signalFields(String(decoding: output, as: UTF8.self))
        #expect(child["SigBlk"] == "0000000000000000")
        #expect(child["SigIgn"] == "0000000000000000")
    }

    @Test func childLeadsItsOwnSessionAndProcessGroup() throws {
        let child = try Started(SpawnRequest(path: "/bin/sleep", arguments: ["sleep", "30"], environment: []))
        defer { child.end() }
        #expect(getpgid(child.pid) == child.pid)
        #expect(getsid(child.pid) == child.pid)
        #expect(getpgid(child.pid) != getpgid(0))
        kill(child.pid, SIGKILL)
        #expect(try child.wait() == .signaled(SIGKILL, coreDumped: false))
    }

    @Test func signalGroupReachesGrandchildren() throws {
        let pipe = try Pipes.make()
        var request = SpawnRequest(
            path: "/bin/sh", arguments: ["sh", "-c", "sleep 300 & echo $!; wait"], environment: ["PATH=/usr/bin:/bin"])
        request.stdout = pipe.write.rawValue
        let child = try Started(request)
        defer { child.end() }
        pipe.write.close()

        let line = try readLine(pipe.read)
        let grandchild = try #require(Int32(line))
        #expect(getpgid(grandchild) == child.pid)

        #expect(Children.signalGroup(child.pid, SIGKILL))
        #expect(try child.wait() == .signaled(SIGKILL, coreDumped: false))
        // Reparented, the grandchild is reaped by init (or a subreaper); one that does not reap leaves a zombie,
        // which is dead too.
        let vanished = try waitUntil(
            "grandchild \(grandchild) to die", timeout: Double(timeoutNanoseconds) / 1e9, interval: 0.001
        ) {
            if kill(grandchild, 0) != 0 && errno == ESRCH { return true }
            return processState(grandchild) == "Z" ? false : nil
        }
        if vanished { #expect(!Children.signalGroup(child.pid, SIGKILL)) }
    }

    @Test func nextExitedFindsAnExitWithoutReapingItAndReapReapsIt() throws {
        let pid = try Spawn.start(SpawnRequest(path: "/bin/sh", arguments: ["sh", "-c", "exit 3"], environment: []))
        defer {
            kill(pid, SIGKILL)
            Children.reap(pid)
        }
        try waitUntilExited(pid)

        let first = Children.nextExited()
        #expect(first?.pid == pid)
        #expect(first?.status == .exited(3))
        #expect(Children.nextExited()?.pid == pid)
        // Not reaped: the zombie still holds the pid.
        #expect(kill(pid, 0) == 0)

        Children.reap(pid)
        var code: Int32 = 0
        var status: Int32 = 0
        #expect(kevd_waitid_exited(pid, 1, &code, &status) == -1 && errno == ECHILD)
        #expect(Children.nextExited()?.pid != pid)
    }

    @Test func nextExitedReportsAKillingSignal() throws {
        let pid = try Spawn.start(SpawnRequest(path: "/bin/sleep", arguments: ["sleep", "30"], environment: []))
        defer {
            kill(pid, SIGKILL)
            Children.reap(pid)
        }
        kill(pid, SIGKILL)
        try waitUntilExited(pid)
        let exited = Children.nextExited()
        #expect(exited?.pid == pid)
        #expect(exited?.status == .signaled(SIGKILL, coreDumped: false))
        #expect(exited?.status.description == "killed by SIGKILL")
    }

    @Test func childStatusDescriptions() {
        #expect(ChildStatus.exited(3).description == "exit status 3")
        #expect(ChildStatus.signaled(SIGKILL, coreDumped: false).description == "killed by SIGKILL")
        #expect(ChildStatus.signaled(SIGSEGV, coreDumped: true).description == "killed by SIGSEGV (core dumped)")
        #expect(ChildStatus.signaled(40, coreDumped: false).description == "killed by signal 40")
    }

    @Test func aMissingProgramThrowsExecveENOENTAndLeavesNoZombie() throws {
        let error = #expect(throws: SpawnError.self) {
            try Spawn.start(SpawnRequest(path: "/no/such/program", arguments: ["program"], environment: []))
        }
        #expect(error?.step == "execve")
        #expect(error?.errno == .noSuchFileOrDirectory)
        #expect(error?.description == "execve(/no/such/program): No such file or directory (errno 2)")
        // A child that never exec'd still bears the test process's name.
        #expect(try zombieChildrenNamedLikeUs().isEmpty)
    }

    @Test func aMissingDirectoryThrowsChdir() throws {
        var request = SpawnRequest(path: "/bin/true", arguments: ["true"], environment: [])
        request.directory = "/no/such/directory"
        let error = #expect(throws: SpawnError.self) { try Spawn.start(request) }
        #expect(error?.step == "chdir")
        #expect(error?.description == "chdir(/no/such/directory): No such file or directory (errno 2)")
        #expect(try zombieChildrenNamedLikeUs().isEmpty)
    }

    @Test func theChildRunsInTheRequestedDirectory() throws {
        let directory = try TemporaryDirectory(prefix: "kevd-spawn")
        var request = SpawnRequest(path: "/bin/pwd", arguments: ["pwd"], environment: [])
        request.directory = directory.path
        let (output, status) = try run(request)
        #expect(status == .exited(0))
        let resolved = try #require(realpath(directory.path, nil))
        defer { free(resolved) }
        #expect(String(decoding: output, as: UTF8.self) == String(cString: resolved) + "\n")
    }

    @Test(
        .enabled(
            if: geteuid() == 0 || requireRoot,
            "dropping credentials needs root (KEVD_REQUIRE_ROOT=1 makes a non-root run fail instead)"))
    func credentialsAreDropped() throws {
        try #require(geteuid() == 0, "KEVD_REQUIRE_ROOT=1, but the tests run as uid \(geteuid())")
        var request = SpawnRequest(path: "/usr/bin/id", arguments: ["id"], environment: [])
        request.credentials = .init(uid: 65534, gid: 65534, groups: [65534])
        let (output, status) = try run(request)
        #expect(status == .exited(0))
        // "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)": no euid=/egid= (all ids changed), one group.
        let fields = String(decoding: output, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" })
        #expect(fields.count == 3)
        #expect(fields.first?.hasPrefix("uid=65534(") == true)
        #expect(fields.dropFirst().first?.hasPrefix("gid=65534(") == true)
        #expect(fields.last?.hasPrefix("groups=65534(") == true)
        #expect(fields.last?.contains(",") == false)
    }
}

private let requireRoot = getenv("KEVD_REQUIRE_ROOT").map { String(cString: $0) == "1" } ?? false

/// How long any wait may take before the test fails.
private let timeoutNanoseconds: UInt64 = 10_000_000_000

private struct TimedOut: Error, CustomStringConvertible {
    let description: String
}

/// A started child that a test must not leave behind: `end()`, deferred, kills its process group and reaps it
/// unless the test already reaped it.
private final class Started {
    let pid: Int32
    private var reaped = false

    init(_ request: SpawnRequest) throws { pid = try Spawn.start(request) }

    /// Waits for the child to exit, then reaps it.
    func wait() throws -> ChildStatus {
        var status: Int32 = 0
        _ = try waitUntil("pid \(pid) to exit", timeout: Double(timeoutNanoseconds) / 1e9, interval: 0.001) {
            let result = waitpid(pid, &status, WNOHANG)
            if result < 0 && errno != EINTR { throw SyscallError(call: "waitpid", errno: .init(rawValue: errno)) }
            return result == pid ? true : nil
        }
        reaped = true
        if kevd_WIFEXITED(status) != 0 { return .exited(kevd_WEXITSTATUS(status)) }
        return .signaled(kevd_WTERMSIG(status), coreDumped: status & 0x80 != 0)
    }

    func end() {
        guard !reaped else { return }
        Children.signalGroup(pid, SIGKILL)
        _ = try? wait()
    }
}

/// Runs `request` to its end with stdout captured: what it wrote, and how it ended.
private func run(_ request: SpawnRequest) throws -> (output: [UInt8], status: ChildStatus) {
    let pipe = try Pipes.make()
    var request = request
    request.stdout = pipe.write.rawValue
    let child = try Started(request)
    defer { child.end() }
    pipe.write.close()
    let output = try readToEnd(pipe.read)
    return (output, try child.wait())
}

/// Waits until `pid` has exited, leaving it unreaped.
private func waitUntilExited(_ pid: Int32) throws {
    var code: Int32 = 0
    var status: Int32 = 0
    _ = try waitUntil("pid \(pid) to exit", timeout: Double(timeoutNanoseconds) / 1e9, interval: 0.001) {
        kevd_waitid_exited(pid, 1, &code, &status) == pid ? true : nil
    }
}

/// Reads `fd`, non-blocking, until `done` says the bytes so far suffice or end of file.
private func readBytes(_ fd: OwnedFD, until done: ([UInt8]) -> Bool) throws -> [UInt8] {
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    let deadline = Clock.monotonicNanoseconds() + timeoutNanoseconds
    while !done(bytes) {
        if let count = try buffer.withUnsafeMutableBytes({ try Pipes.readAvailable(fd.rawValue, into: $0) }) {
            if count == 0 { break }
            bytes += buffer.prefix(count)
            continue
        }
        let now = Clock.monotonicNanoseconds()
        guard now < deadline else { throw TimedOut(description: "timed out reading fd \(fd.rawValue)") }
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, Int32((deadline - now) / 1_000_000) + 1)
    }
    return bytes
}

private func readToEnd(_ fd: OwnedFD) throws -> [UInt8] { try readBytes(fd, until: { _ in false }) }

/// The first line, without its newline.
private func readLine(_ fd: OwnedFD) throws -> String {
    let bytes = try readBytes(fd, until: { $0.contains(UInt8(ascii: "\n")) })
    return String(decoding: bytes.prefix(while: { $0 != UInt8(ascii: "\n") }), as: UTF8.self)
}

/// SigBlk, SigIgn and the other "Name:\tvalue" lines of a /proc status file.
private func signalFields(_ status: String) -> [String: String] {
    var fields: [String: String] = [:]
    for line in status.split(separator: "\n") where line.hasPrefix("Sig") {
        let parts = line.split(separator: ":", maxSplits: 1)
        if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingPrefix(while: \.isWhitespace).description }
    }
    return fields
}

private func signalFields(file path: String) throws -> [String: String] {
    signalFields(String(decoding: try FileContents.read(path), as: UTF8.self))
}

/// The state letter of a process ("S", "Z"), nil when it is gone.
private func processState(_ pid: Int32) -> String? {
    guard let stat = try? FileContents.read("/proc/\(pid)/stat") else { return nil }
    // "pid (comm) S ...": the comm may hold spaces and parentheses, the last ')' ends it.
    guard let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else { return nil }
    return String(decoding: [stat[close + 2]], as: UTF8.self)
}

/// Zombie children of this process that carry its own name: a vfork child that failed before execve does.
private func zombieChildrenNamedLikeUs() throws -> [Int32] {
    let ownName = try FileContents.read("/proc/self/comm")
    var zombies: [Int32] = []
    let tasks = try #require(kevd_opendir("/proc/self/task"))
    defer { kevd_closedir(tasks) }
    var isDirectory: Int32 = 0
    while let task = kevd_readdir(tasks, &isDirectory) {
        let children = (try? FileContents.read("/proc/self/task/\(String(cString: task))/children")) ?? []
        for pid in String(decoding: children, as: UTF8.self).split(separator: " ").compactMap({ Int32($0) }) {
            let name = try? FileContents.read("/proc/\(pid)/comm")
            if processState(pid) == "Z" && name == ownName { zombies.append(pid) }
        }
    }
    return zombies
}

/// readlink(2) of a path.
private func link(_ path: String) throws -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = try syscall("readlink") { readlink(path, &buffer, buffer.count - 1) }
    return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

