import CKevdShim
import Glibc
import KevdEvent
import KevdKernel

// What `kevd-bench subscribers` needs around kevd: spawning it (and inotifywait), its /proc figures, and a minimal
// client of the socket protocol (docs/PROTOCOL.md). The bench has its own client on purpose: the measured path
// must be kevd's, and the bench's side must cost as little as possible (large reads, newline counting).

/// A child process started with `posix_spawnp`: stdin /dev/null, stdout to /dev/null, a file or a pipe, stderr to
/// a file (kept for the report when the child misbehaves).
final class ChildProcess {
    let pid: pid_t
    let argv: [String]
    let stderrPath: String
    /// The read end of the stdout pipe (`stdout: .pipe`), blocking, close-on-exec.
    let stdoutPipe: Int32?
    private(set) var exitStatus: Int32? = nil

    enum Stdout { case null, pipe }

    init(_ argv: [String], stdout: Stdout, stderrPath: String) throws {
        self.argv = argv
        self.stderrPath = stderrPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var fds: [Int32] = [-1, -1]
        switch stdout {
        case .null:
            posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0)
        case .pipe:
            try syscall("pipe") { pipe(&fds) }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            // 1 MiB (F_SETPIPE_SZ, 1031: Glibc's module lacks it), as bench/kevd_bench.py does.
            _ = fcntl(fds[1], 1031, 1 << 20)
            posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO)
        }
        let arguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for argument in arguments { free(argument) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, nil, arguments, environ)
        if fds[1] >= 0 { close(fds[1]) }
        guard rc == 0 else {
            if fds[0] >= 0 { close(fds[0]) }
            throw SyscallError(call: "posix_spawnp(\(argv[0]))", errno: .init(rawValue: rc))
        }
        self.pid = pid
        stdoutPipe = fds[0] >= 0 ? fds[0] : nil
        ChildRegistry.add(pid)
    }

    /// Reaps the child if it has exited; true once it has.
    @discardableResult
    func poll() -> Bool {
        if exitStatus != nil { return true }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return false }
        // WIFEXITED/WEXITSTATUS are macros: a normal exit has no signal bits, the code above them.
        exitStatus = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        ChildRegistry.remove(pid)
        return true
    }

    /// Sends `signal` and waits up to `timeout` seconds for the exit; then SIGKILL. Returns the exit status (128 +
    /// signal for a signal) and whether the child needed the SIGKILL.
    func stop(signal: Int32 = SIGTERM, timeout: Double = 10) -> (status: Int32, killed: Bool) {
        if let exitStatus { return (exitStatus, false) }
        kill(pid, signal)
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while Clock.monotonicNanoseconds() < deadline {
            if poll() { return (exitStatus!, false) }
            Sleep.nanoseconds(2_000_000)
        }
        kill(pid, SIGKILL)
        while !poll() { Sleep.nanoseconds(2_000_000) }
        return (exitStatus!, true)
    }

    /// The last `limit` bytes of stderr, for a report.
    func stderrTail(limit: Int = 2000) -> String {
        guard let bytes = try? Machine.readSmallFile(stderrPath, limit: 1 << 20) else { return "" }
        return String(decoding: bytes.suffix(limit), as: UTF8.self)
    }

    /// User + system CPU seconds of every thread, from /proc/PID/stat (10 ms tick resolution).
    var cpuSeconds: Double? { ProcFigures.cpuSeconds(pid: pid) }
}

/// The children alive, so that SIGINT/SIGTERM to the bench can end them (by pid) before it exits.
enum ChildRegistry {
    private static let capacity = 64
    nonisolated(unsafe) private static let pids: UnsafeMutablePointer<pid_t> = {
        let p = UnsafeMutablePointer<pid_t>.allocate(capacity: capacity)
        p.initialize(repeating: 0, count: capacity)
        return p
    }()

    static func add(_ pid: pid_t) {
        for i in 0..<capacity where pids[i] == 0 {
            pids[i] = pid
            return
        }
    }

    static func remove(_ pid: pid_t) {
        for i in 0..<capacity where pids[i] == pid { pids[i] = 0 }
    }

    /// Installs handlers that SIGTERM every registered child and exit 130.
    static func installSignalHandlers() {
        _ = pids
        let handler: @convention(c) (Int32) -> Void = { _ in
            for i in 0..<ChildRegistry.capacity where ChildRegistry.pids[i] > 0 { kill(ChildRegistry.pids[i], SIGTERM) }
            _exit(130)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        signal(SIGPIPE, SIG_IGN)
    }
}

/// Figures from /proc.
enum ProcFigures {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// utime + stime (fields 14 and 15) of /proc/PID/stat, all threads.
    static func cpuSeconds(pid: pid_t) -> Double? {
        guard let bytes = try? Machine.readSmallFile("/proc/\(pid)/stat"),
            let close = bytes.lastIndex(of: UInt8(ascii: ")"))
        else { return nil }
        // After the ")" of the command name: field 3 (state) is the first.
        let fields = bytes[(close + 1)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 12, let user = Int(String(decoding: fields[11], as: UTF8.self)),
            let system = Int(String(decoding: fields[12], as: UTF8.self))
        else { return nil }
        return Double(user + system) / ticksPerSecond
    }

    struct Memory {
        /// Resident set (VmRSS), its peak (VmHWM), and its anonymous part (RssAnon), in KiB.
        var rssKiB: Int
        var hwmKiB: Int
        var anonKiB: Int
        /// File-backed resident pages: the binary, the Swift runtime and the other shared libraries.
        var fileKiB: Int
        var threads: Int

        var rssMiB: Double { Double(rssKiB) / 1024 }
        var hwmMiB: Double { Double(hwmKiB) / 1024 }
        var anonMiB: Double { Double(anonKiB) / 1024 }
        var fileMiB: Double { Double(fileKiB) / 1024 }

        var json: JSONValue {
            .object([
                ("vm_rss_kib", .int(Int64(rssKiB))), ("vm_hwm_kib", .int(Int64(hwmKiB))),
                ("rss_anon_kib", .int(Int64(anonKiB))), ("rss_file_kib", .int(Int64(fileKiB))), ("threads", .int(Int64(threads))),
            ])
        }
    }

    static func memory(pid: pid_t) -> Memory? {
        guard let bytes = try? Machine.readSmallFile("/proc/\(pid)/status", limit: 16384) else { return nil }
        var values: [String: Int] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon])
            guard ["VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"].contains(name) else { continue }
            // `VmRSS:\t    1234 kB`
            let number = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" }).first
            values[name] = number.flatMap { Int($0) }
        }
        guard let rss = values["VmRSS"] else { return nil }
        return Memory(rssKiB: rss, hwmKiB: values["VmHWM"] ?? 0, anonKiB: values["RssAnon"] ?? 0, fileKiB: values["RssFile"] ?? 0,
            threads: values["Threads"] ?? 0)
    }

    /// The bench process's own CPU (all threads), for the record: on 2 cores it competes with kevd.
    static func selfCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}

/// A kevd started for one measurement: its own config in a fresh directory.
final class KevdInstance {
    let process: ChildProcess
    let socketPath: String
    let configPath: String

    /// Writes the config (`[daemon]` state dir and socket, `log_level = "warning"`, `[journal] sync = "batch"`,
    /// and a `[[watch]]` of `watch` when given), starts kevd and waits until its loop answers on the socket.
    init(kevd: String, stateDirectory: String, watch: String?, watchEvents: [String], extraConfig: String = "") throws {
        let state = stateDirectory + "/state"
        try TempDirectory.makeDirectories(state)
        socketPath = state + "/kevd.sock"
        configPath = stateDirectory + "/kevd.toml"
        var text = """
            [daemon]
            state_dir = \(Self.tomlString(state))
            socket = \(Self.tomlString(socketPath))
            log_level = "warning"

            [journal]
            sync = "batch"

            """
        if let watch {
            text += """

                [[watch]]
                path = \(Self.tomlString(watch))
                events = [\(watchEvents.map(Self.tomlString).joined(separator: ", "))]
                backend = "inotify"

                """
        }
        text += extraConfig
        try Self.writeFile(configPath, text)
        process = try ChildProcess([kevd, "--config", configPath], stdout: .null, stderrPath: stateDirectory + "/kevd.stderr")
        try waitUntilServing()
    }

    var pid: pid_t { process.pid }

    /// kevd listens before it arms its sources, but answers requests only from its loop, which runs after
    /// `started` was published: the first reply means every watch is in place.
    private func waitUntilServing(timeout: Double = 15) throws {
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while Clock.monotonicNanoseconds() < deadline {
            if process.poll() {
                throw BenchError("kevd exited during start-up (status \(process.exitStatus!)): \(process.stderrTail())")
            }
            if let client = try? LineClient(path: socketPath) {
                defer { client.close() }
                let reply = try client.request(#"{"op":"status"}"#, timeout: 5)
                guard reply.contains(#""ok":true"#) else { throw BenchError("kevd status: \(reply)") }
                return
            }
            Sleep.nanoseconds(10_000_000)
        }
        throw BenchError("kevd did not answer on \(socketPath) within \(timeout) s: \(process.stderrTail())")
    }

    func stop() -> (status: Int32, killed: Bool) { process.stop(signal: SIGTERM, timeout: 15) }

    static func tomlString(_ s: String) -> String {
        // A JSON string is a valid TOML basic string.
        JSONValue.string(s).jsonText
    }

    static func writeFile(_ path: String, _ text: String) throws {
        let fd = try syscall("open(\(path))") { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { close(fd) }
        var bytes = Array(text.utf8)
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw SyscallError(call: "write(\(path))", errno: .init(rawValue: errno)) }
    }
}

/// A blocking connection to kevd's socket that reads whole lines, for requests and handshakes. Once the handshake
/// is done, `leftover` holds whatever arrived after the last line read (events may follow a reply at once).
final class LineClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(path: String) throws {
        fd = try syscall("connect(\(path))") { kevd_unix_connect(path) }
    }

    func close() { Glibc.close(fd) }

    func send(_ line: String) throws {
        var bytes = Array((line + "\n").utf8)
        try bytes.withUnsafeMutableBytes { try writeAll(fd, UnsafeRawBufferPointer($0)) }
    }

    /// Sends a request and returns the next line (its reply, when no events are flowing on this connection).
    func request(_ line: String, timeout: Double) throws -> String {
        try send(line)
        return try readLine(timeout: timeout)
    }

    func readLine(timeout: Double) throws -> String {
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeFirst(newline + 1)
                return line
            }
            let now = Clock.monotonicNanoseconds()
            guard now < deadline else { throw BenchError("no reply from kevd within \(timeout) s") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = Glibc.poll(&p, 1, Int32((deadline - now) / 1_000_000) + 1)
            if r < 0 && errno == EINTR { continue }
            if r <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BenchError("kevd closed the connection (read \(n), errno \(errno))") }
            buffer.append(contentsOf: chunk[0..<n])
        }
    }

    /// Bytes received after the last line returned.
    var leftover: [UInt8] { buffer }

    /// Subscribes; throws unless the reply is `ok`. Returns the reply line.
    @discardableResult
    func subscribe(filter: [String], timeout: Double = 10) throws -> String {
        let terms = JSONValue.array(filter.map { .string($0) }).jsonText
        let reply = try request(#"{"op":"subscribe","filter":"# + terms + "}", timeout: timeout)
        guard reply.hasPrefix(#"{"ok":true,"op":"subscribe""#) else { throw BenchError("subscribe: \(reply)") }
        return reply
    }
}

/// Writes all of `bytes` to a blocking fd.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws {
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n < 0 {
            if errno == EINTR { continue }
            throw SyscallError(call: "write", errno: .init(rawValue: errno))
        }
        done += n
    }
}

/// `p` (0…1) of sorted `values`, nearest rank; nil when empty.
func percentile(_ sorted: [Double], _ p: Double) -> Double? {
    guard !sorted.isEmpty else { return nil }
    let rank = Int((p * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}

func medianValue(_ values: [Double]) -> Double? {
    guard !values.isEmpty else { return nil }
    return values.sorted()[(values.count - 1) / 2]
}

/// Writes a result document as `bench/results/NAME-YYYYMMDD-HHMMSS.json`; returns the path.
func writeResultDocument(_ document: JSONValue, directory: String, name: String) throws -> String {
    try TempDirectory.makeDirectories(directory)
    let stem = directory + "/\(name)-\(Machine.timestampForFileName())"
    var path = stem + ".json"
    var fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    var suffix = 2
    while fd < 0 && errno == EEXIST {
        path = stem + "-\(suffix).json"
        suffix += 1
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    }
    guard fd >= 0 else { throw SyscallError(call: "open(\(path))", errno: .init(rawValue: errno)) }
    defer { close(fd) }
    var bytes = Array((document.jsonText + "\n").utf8)
    try bytes.withUnsafeMutableBytes { try writeAll(fd, UnsafeRawBufferPointer($0)) }
    return path
}

/// `perf record -e cpu-clock -g -p PID -o FILE` around a measured window (`--perf`): a separate run, since perf
/// takes CPU the 2 cores do not have to spare.
final class PerfRecorder {
    let process: ChildProcess
    let output: String

    init?(prefix: String?, name: String, pid: pid_t) {
        guard let prefix else { return nil }
        output = prefix + "-" + name + ".data"
        do {
            process = try ChildProcess(
                ["perf", "record", "-e", "cpu-clock", "-g", "-p", "\(pid)", "-o", output], stdout: .null,
                stderrPath: output + ".stderr")
        } catch {
            print("perf: \(error)")
            return nil
        }
        // perf attaches within a few ms; give it time before the measured window starts.
        Sleep.nanoseconds(300_000_000)
    }

    func stop() {
        _ = process.stop(signal: SIGINT, timeout: 30)
        print("perf: wrote \(output) (perf report -i \(output) --no-children --sort symbol)")
    }
}
