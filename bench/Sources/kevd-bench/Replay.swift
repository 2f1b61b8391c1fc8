import Glibc
import KevdJournal
import KevdKernel

/// Reading the journal back: `kevctl journal` as a user runs it, and `JournalReader` alone in this process, so
/// that reading and CRC checking can be told apart from JSON output.
enum Replay {
    struct ProcessResult {
        var seconds: Double
        /// User + system CPU of the child, from `wait4`.
        var cpuSeconds: Double
        var exitStatus: Int32
    }

    /// Runs `kevctl journal --state-dir stateDir` with stdout on /dev/null and times it from spawn to exit.
    static func kevctl(_ kevctl: String, stateDir: String) throws -> ProcessResult {
        try spawnAndWait([kevctl, "journal", "--state-dir", stateDir], stdout: "/dev/null")
    }

    struct ReaderResult {
        var records: Int
        var payloadBytes: Int
        var seconds: Double
    }

    /// Reads every record with `JournalReader` (each CRC checked), touching nothing but the payload's size.
    static func reader(directory: String) throws -> ReaderResult {
        let start = Clock.monotonicNanoseconds()
        let reader = try JournalReader(directory: directory)
        var records = 0
        var bytes = 0
        while let record = try reader.next() {
            records += 1
            bytes += record.payload.count
        }
        return ReaderResult(records: records, payloadBytes: bytes, seconds: Seconds.since(start))
    }

    static func spawnAndWait(_ argv: [String], stdout: String) throws -> ProcessResult {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout, O_WRONLY, 0)
        let arguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for argument in arguments { free(argument) } }

        var pid: pid_t = 0
        let start = Clock.monotonicNanoseconds()
        let rc = posix_spawn(&pid, argv[0], &actions, nil, arguments, environ)
        guard rc == 0 else { throw SyscallError(call: "posix_spawn(\(argv[0]))", errno: .init(rawValue: rc)) }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw SyscallError(call: "wait4", errno: .init(rawValue: errno)) }
        }
        let seconds = Seconds.since(start)
        func cpu(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        // WIFEXITED/WEXITSTATUS are macros Swift cannot call: a normal exit has no signal bits, the code above them.
        let exitStatus = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return ProcessResult(
            seconds: seconds, cpuSeconds: cpu(usage.ru_utime) + cpu(usage.ru_stime), exitStatus: exitStatus)
    }
}
