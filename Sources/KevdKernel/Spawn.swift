import CKevdShim
import Glibc
import SystemPackage

/// A process to start: the program, its whole argv and environment, its stdio, directory and credentials.
public struct SpawnRequest: Sendable {
    /// Who the child runs as; changing them needs kevd to be root.
    public struct Credentials: Equatable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
        /// The complete supplementary group list: the child gets these and no others (empty: none).
        public var groups: [UInt32]

        public init(uid: UInt32, gid: UInt32, groups: [UInt32]) {
            self.uid = uid
            self.gid = gid
            self.groups = groups
        }
    }

    /// The program to execute, by absolute path: there is no PATH search.
    public var path: String
    /// argv, argv[0] included.
    public var arguments: [String]
    /// "NAME=value" entries: the child's whole environment, nothing of kevd's is added.
    public var environment: [String]
    /// Parent fds that become the child's 0, 1 and 2, shared with it; -1 gives it /dev/null.
    public var stdin: Int32 = -1
    public var stdout: Int32 = -1
    public var stderr: Int32 = -1
    public var directory: String = "/"
    /// nil: the child keeps kevd's.
    public var credentials: Credentials? = nil
    /// PR_SET_NO_NEW_PRIVS in the child: setuid programs (sudo, su) and file capabilities no longer elevate.
    public var noNewPrivileges = false

    public init(path: String, arguments: [String], environment: [String]) {
        self.path = path
        self.arguments = arguments
        self.environment = environment
    }
}

/// A process that could not be started: the step that failed, as its system call is named ("execve", "chdir",
/// "setresuid"), or "arguments" when a string cannot be passed to C; and the errno.
public struct SpawnError: Error, Equatable, CustomStringConvertible {
    public let step: String
    public let errno: Errno
    /// e.g. "execve(/no/such): No such file or directory (errno 2)".
    public let description: String

    /// A string that holds a NUL byte, which C would take for its end: `what` names it ("argv[2]").
    init(nulByteIn what: String) {
        step = "arguments"
        errno = .invalidArgument
        description = "arguments: \(what) contains a NUL byte"
    }

    /// A step `kevd_spawn` reported, described with what it acted on.
    init(failedStep: Int32, errno code: Int32, request: SpawnRequest) {
        let (name, subject): (String, String?)
        switch Int(failedStep) {
        case KEVD_SPAWN_VFORK: (name, subject) = ("vfork", nil)
        case KEVD_SPAWN_SETSID: (name, subject) = ("setsid", nil)
        case KEVD_SPAWN_OPEN_DEV_NULL: (name, subject) = ("open", "/dev/null")
        case KEVD_SPAWN_DUP:
            (name, subject) = ("dup2", "stdio \(request.stdin), \(request.stdout), \(request.stderr)")
        case KEVD_SPAWN_SETGROUPS:
            (name, subject) = ("setgroups", request.credentials?.groups.map(String.init).joined(separator: ","))
        case KEVD_SPAWN_SETRESGID: (name, subject) = ("setresgid", request.credentials.map { "\($0.gid)" })
        case KEVD_SPAWN_SETRESUID: (name, subject) = ("setresuid", request.credentials.map { "\($0.uid)" })
        case KEVD_SPAWN_PDEATHSIG: (name, subject) = ("prctl", "PR_SET_PDEATHSIG")
        case KEVD_SPAWN_NO_NEW_PRIVS: (name, subject) = ("prctl", "PR_SET_NO_NEW_PRIVS")
        case KEVD_SPAWN_PARENT_EXITED: (name, subject) = ("getppid", "kevd exited")
        case KEVD_SPAWN_CHDIR: (name, subject) = ("chdir", request.directory)
        case KEVD_SPAWN_CLOSE_FDS: (name, subject) = ("close_range", nil)
        case KEVD_SPAWN_EXECVE: (name, subject) = ("execve", request.path)
        default: (name, subject) = ("spawn step \(failedStep)", nil)
        }
        step = name
        errno = Errno(rawValue: code)
        let call = subject.map { "\(name)(\($0))" } ?? name
        description = "\(call): \(errno.description) (errno \(code))"
    }
}

/// Starts processes: `kevd_spawn` (vfork and exec) with the C strings and arrays laid out in one block.
public enum Spawn {
    /// Starts the process and returns its pid, which is also its process group and session id, so
    /// `Children.signalGroup(pid, …)` reaches everything it starts.
    ///
    /// The child gets default signal dispositions and an empty signal mask whatever kevd's, only fds 0-2, and
    /// SIGTERM when kevd dies (`PR_SET_PDEATHSIG`; it follows the calling thread: call from a thread that lives as
    /// long as the children should, as the rules engine's spawner thread does). Returns
    /// once the child has exec'd: every failure up to and including execve is thrown, and such a child is already
    /// reaped. Allocates nothing on the heap for typical sizes: all strings and pointer arrays share one
    /// temporary block, on the stack when it fits.
    public static func start(_ request: SpawnRequest) throws(SpawnError) -> Int32 {
        let pointerCount = request.arguments.count + 1 + request.environment.count + 1
        let groupCount = request.credentials?.groups.count ?? 0
        var stringBytes = request.path.utf8.count + 1 + request.directory.utf8.count + 1
        for argument in request.arguments { stringBytes += argument.utf8.count + 1 }
        for entry in request.environment { stringBytes += entry.utf8.count + 1 }
        // Layout: argv and envp pointers (each NULL-terminated), the groups, then the string bytes.
        let pointerBytes = pointerCount * MemoryLayout<UnsafePointer<CChar>?>.stride
        let groupBytes = groupCount * MemoryLayout<UInt32>.stride
        return try withUnsafeTemporaryAllocation(
            byteCount: pointerBytes + groupBytes + stringBytes, alignment: MemoryLayout<UnsafeRawPointer>.alignment
        ) { block throws(SpawnError) -> Int32 in
            let base = block.baseAddress!
            let argv = base.bindMemory(to: UnsafePointer<CChar>?.self, capacity: pointerCount)
            let envp = argv + request.arguments.count + 1
            let groups = (base + pointerBytes).bindMemory(to: UInt32.self, capacity: groupCount)
            var strings = CStrings(base + pointerBytes + groupBytes, count: stringBytes)

            for (index, argument) in request.arguments.enumerated() {
                guard let string = strings.append(argument) else { throw SpawnError(nulByteIn: "argv[\(index)]") }
                (argv + index).initialize(to: string)
            }
            (argv + request.arguments.count).initialize(to: nil)
            for (index, entry) in request.environment.enumerated() {
                guard let string = strings.append(entry) else {
                    throw SpawnError(nulByteIn: "environment[\(index)]")
                }
                (envp + index).initialize(to: string)
            }
            (envp + request.environment.count).initialize(to: nil)
            guard let path = strings.append(request.path) else { throw SpawnError(nulByteIn: "path") }
            guard let directory = strings.append(request.directory) else { throw SpawnError(nulByteIn: "directory") }

            var spec = kevd_spawn_request()
            spec.path = path
            spec.argv = UnsafePointer(argv)
            spec.envp = UnsafePointer(envp)
            spec.directory = directory
            spec.stdio = (request.stdin, request.stdout, request.stderr)
            if let credentials = request.credentials {
                groups.initialize(from: credentials.groups, count: groupCount)
                spec.set_credentials = 1
                spec.uid = credentials.uid
                spec.gid = credentials.gid
                spec.groups = UnsafePointer(groups)
                spec.group_count = Int32(groupCount)
            }

            spec.no_new_privs = request.noNewPrivileges ? 1 : 0

            var failedStep: Int32 = 0
            var failedErrno: Int32 = 0
            let pid = kevd_spawn(&spec, &failedStep, &failedErrno)
            guard pid > 0 else { throw SpawnError(failedStep: failedStep, errno: failedErrno, request: request) }
            return pid
        }
    }
}

/// Strings copied as C strings, one after another, into a block sized for them.
private struct CStrings {
    private let base: UnsafeMutableRawPointer
    private let count: Int
    private var used = 0

    init(_ base: UnsafeMutableRawPointer, count: Int) {
        self.base = base
        self.count = count
    }

    /// Copies `string` and a terminating NUL; nil when the string holds a NUL itself.
    mutating func append(_ string: String) -> UnsafePointer<CChar>? {
        var string = string
        let start = base + used
        let length = string.withUTF8 { utf8 -> Int? in
            guard let source = utf8.baseAddress, !utf8.isEmpty else { return 0 }
            if memchr(source, 0, utf8.count) != nil { return nil }
            start.copyMemory(from: source, byteCount: utf8.count)
            return utf8.count
        }
        guard let length else { return nil }
        precondition(used + length + 1 <= count, "C strings outgrew the block sized for them")
        start.storeBytes(of: 0, toByteOffset: length, as: UInt8.self)
        used += length + 1
        return UnsafePointer(start.bindMemory(to: CChar.self, capacity: length + 1))
    }
}

/// How a child ended.
public enum ChildStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32, coreDumped: Bool)

    /// From waitid's siginfo: CLD_EXITED carries the exit status, CLD_KILLED and CLD_DUMPED the signal.
    init(code: Int32, status: Int32) {
        self = code == kevd_CLD_EXITED ? .exited(status) : .signaled(status, coreDumped: code == kevd_CLD_DUMPED)
    }

    /// "exit status 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
    public var description: String {
        switch self {
        case .exited(let status):
            return "exit status \(status)"
        case .signaled(let signal, let coreDumped):
            let name = kevd_signal_abbreviation(signal).map { "SIG" + String(cString: $0) } ?? "signal \(signal)"
            return "killed by \(name)" + (coreDumped ? " (core dumped)" : "")
        }
    }
}

/// kevd's exited children, found and reaped in two steps, and their process groups.
///
/// `nextExited` finds an exited child without reaping it and `reap` releases it. Between the two the zombie keeps
/// its pid reserved, and with it its process group id: no new process or group can get that number, so the
/// caller can safely `signalGroup(pid, SIGTERM)` to end grandchildren left in the group before reaping. Reaping
/// first would free the number, and the signal could reach an unrelated group that reused it.
public enum Children {
    /// An exited, not yet reaped child (`waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`); nil when none. Calling it
    /// again before `reap` returns the same child.
    public static func nextExited() -> (pid: Int32, status: ChildStatus)? {
        var code: Int32 = 0
        var status: Int32 = 0
        // ECHILD (no children at all) is "none" too.
        guard let pid = try? syscall("waitid", { kevd_waitid_exited(0, 1, &code, &status) }), pid > 0 else {
            return nil
        }
        return (pid, ChildStatus(code: code, status: status))
    }

    /// Reaps a child `nextExited` returned. Never blocks: a child that has not exited is left alone.
    public static func reap(_ pid: Int32) {
        precondition(pid > 0)
        var code: Int32 = 0
        var status: Int32 = 0
        _ = try? syscall("waitid") { kevd_waitid_exited(pid, 0, &code, &status) }
    }

    /// Makes the calling process the reaper of its descendants' orphans (PR_SET_CHILD_SUBREAPER): a script's
    /// grandchild that outlives it is then reaped by kevd instead of becoming a zombie under an init that does
    /// not reap (as in many containers). `nextExited` reports such orphans like any child.
    public static func becomeSubreaper() throws {
        try syscall("prctl(PR_SET_CHILD_SUBREAPER)") { kevd_become_subreaper() }
    }

    /// Sends `signal` to every process in the group (`kill(-pgid, signal)`). False when the group is empty
    /// (ESRCH); true when a member was signalled or exists but may not be (EPERM: it changed credentials).
    @discardableResult
    public static func signalGroup(_ pgid: Int32, _ signal: Int32) -> Bool {
        // 0 would signal kevd's own group, 1 every process kevd may signal.
        precondition(pgid > 1, "process group \(pgid)")
        return kill(-pgid, signal) == 0 || Glibc.errno != ESRCH
    }
}
