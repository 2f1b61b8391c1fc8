import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A real `kevd` process started by a test, with its stdout (`--stdout` JSON lines) collected as events.
///
/// Waiting is always on an actual event with a deadline (`waitFor`), never a sleep.
final class DaemonProcess: @unchecked Sendable {
    // @unchecked: `lines` and `rawLines` are guarded by `condition`; the rest is immutable after init.
    let process = Process()
    let directory: TemporaryDirectory
    let configPath: String
    private let condition = NSCondition()
    private var events: [[String: Any]] = []
    private var stdoutClosed = false
    private let stderrPipe = Pipe()
    private var stderrText = Data()
    private var stderrClosed = false

    /// Starts kevd with `config` (TOML text) written into a fresh temporary directory, optionally inside the
    /// network namespace `netns` or behind a `launcher` command that execs it (so the pid stays kevd's), and
    /// waits for its `kevd`/`started` event. `environment` is added to the test's own; `arguments` go after kevd's
    /// usual ones. `stderrIsJournal` sets `JOURNAL_STREAM` to the stderr pipe's device and inode, as systemd does
    /// when it connects stderr to journald.
    init(
        config: String, in directory: TemporaryDirectory? = nil, netns: String? = nil, launcher: [String] = [],
        environment: [String: String] = [:], arguments: [String] = [], stderrIsJournal: Bool = false,
        waitForStart: Bool = true
    ) throws {
        self.directory = try directory ?? TemporaryDirectory()
        configPath = self.directory.path + "/kevd.toml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let binary = TestBinaries.kevd
        var command = launcher
        if let netns { command += ["/usr/sbin/ip", "netns", "exec", netns] }
        command += [binary, "--config", configPath, "--stdout"] + arguments
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        var environment = environment
        if stderrIsJournal {
            var st = stat()
            fstat(stderrPipe.fileHandleForWriting.fileDescriptor, &st)
            environment["JOURNAL_STREAM"] = "\(st.st_dev):\(st.st_ino)"
        }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let stdoutPipe = Pipe()
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.runAlone()
        LeftoverDaemons.register(process.processIdentifier)
        let readFD = stdoutPipe.fileHandleForReading.fileDescriptor
        let thread = Thread { [self] in self.readLines(fd: readFD) }
        thread.start()
        let errThread = Thread { [self] in
            let data = self.stderrPipe.fileHandleForReading.readDataToEndOfFile()
            self.condition.lock()
            self.stderrText = data
            self.stderrClosed = true
            self.condition.broadcast()
            self.condition.unlock()
        }
        errThread.start()
        if waitForStart {
            _ = try waitFor("kevd started", timeout: 20) { $0["source"] as? String == "kevd" && $0["type"] as? String == "started" }
        }
    }

    var pid: Int32 { process.processIdentifier }

    private func readLines(fd: Int32) {
        var pending = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending.append(buffer, count: n)
            var parsed: [[String: Any]] = []
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[pending.startIndex..<newline]
                pending.removeSubrange(pending.startIndex...newline)
                if let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any] {
                    parsed.append(object)
                } else {
                    parsed.append(["_unparsable": String(decoding: line, as: UTF8.self)])
                }
            }
            condition.lock()
            events.append(contentsOf: parsed)
            condition.broadcast()
            condition.unlock()
        }
        condition.lock()
        stdoutClosed = true
        condition.broadcast()
        condition.unlock()
    }

    /// Everything received so far.
    var received: [[String: Any]] {
        condition.lock()
        defer { condition.unlock() }
        return events
    }

    var stderr: String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: stderrText, as: UTF8.self)
    }

    /// All kevd wrote to stderr, once it has exited and the pipe is closed (or what came within `timeout`).
    func finalStderr(timeout: Double = 10) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !stderrClosed && condition.wait(until: deadline) {}
        return String(decoding: stderrText, as: UTF8.self)
    }

    struct Timeout: Error, CustomStringConvertible {
        let what: String
        let seen: Int
        let stderr: String
        var description: String { "timed out waiting for \(what) (\(seen) events seen; kevd at \(TestBinaries.kevd)); kevd stderr: \(stderr)" }
    }

    /// Waits until an event received at index >= `from` matches; returns it.
    @discardableResult
    func waitFor(
        _ what: String, from: Int = 0, timeout: Double = 10, _ matches: ([String: Any]) -> Bool
    ) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        var index = from
        while true {
            while index < events.count {
                if matches(events[index]) { return events[index] }
                index += 1
            }
            if stdoutClosed || !condition.wait(until: deadline) {
                if index < events.count { continue }
                throw Timeout(what: what, seen: events.count, stderr: String(decoding: stderrText, as: UTF8.self))
            }
        }
    }

    /// Waits until `count` events match, returning them.
    func waitForCount(
        _ what: String, count: Int, timeout: Double = 10, _ matches: ([String: Any]) -> Bool
    ) throws -> [[String: Any]] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let found = events.filter(matches)
            if found.count >= count { return found }
            if stdoutClosed || !condition.wait(until: deadline) {
                let again = events.filter(matches)
                if again.count >= count { return again }
                throw Timeout(
                    what: "\(count) × \(what) (found \(again.count))", seen: events.count,
                    stderr: String(decoding: stderrText, as: UTF8.self))
            }
        }
    }

    func signal(_ signo: Int32) {
        kill(pid, signo)
    }

    /// Sends TERM and waits for the exit; returns the exit status.
    @discardableResult
    func stop(timeout: Double = 10) -> Int32 {
        if process.isRunning { kill(pid, SIGCONT); kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Event field accessors that keep assertions short.
extension Dictionary where Key == String, Value == Any {
    var source: String? { self["source"] as? String }
    var type: String? { self["type"] as? String }
    var key: String? { self["key"] as? String }
    var seq: Int? { (self["seq"] as? NSNumber)?.intValue }
    var data: [String: Any] { self["data"] as? [String: Any] ?? [:] }
    func isEvent(_ source: String, _ type: String, key: String? = nil) -> Bool {
        self.source == source && self.type == type && (key == nil || self.key == key)
    }
}

enum TestBinaries {
    /// The built executables sit beside the test bundle (`.build/<triple>/debug/`).
    static var directory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var dir = (exe as NSString).deletingLastPathComponent
        // The bundle may be a directory (`kevdPackageTests.xctest/...`); walk up to where `kevd` is.
        while !dir.isEmpty && dir != "/" && !FileManager.default.isExecutableFile(atPath: dir + "/kevd") {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }

    static var kevd: String { directory + "/kevd" }
    static var kevctl: String { directory + "/kevctl" }
}

/// Tests that need root: skipped with a reason when not root, unless `KEVD_REQUIRE_ROOT=1` (CI) makes the
/// missing privilege a failure instead.
enum Root {
    static var isRoot: Bool { geteuid() == 0 }
    static var required: Bool { ProcessInfo.processInfo.environment["KEVD_REQUIRE_ROOT"] == "1" }
    /// Run the test when we are root, or when CI demands root (so that it fails loudly).
    static var shouldRun: Bool { isRoot || required }
    static let reason: Comment = "needs root (network namespaces, SO_RCVBUFFORCE); set KEVD_REQUIRE_ROOT=1 to fail instead of skip"

    static func check() throws {
        try #require(isRoot, "this test needs root, and KEVD_REQUIRE_ROOT=1 says it must run")
    }
}

/// Runs a command to completion; throws with its output when it fails.
@discardableResult
func run(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.runAlone()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    struct CommandFailed: Error, CustomStringConvertible {
        let description: String
    }
    guard process.terminationStatus == 0 else {
        throw CommandFailed(description: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(output)")
    }
    return output
}

/// A private network namespace for the test's own uevents, deleted at the end.
final class NetworkNamespace: @unchecked Sendable {
    let name: String
    nonisolated(unsafe) private static var counter = 0

    init() throws {
        NetworkNamespace.counter += 1
        name = "kevd-test-\(getpid())-\(NetworkNamespace.counter)-\(UInt32.random(in: 0...UInt32.max))"
        try run(["/usr/sbin/ip", "netns", "add", name])
    }

    func exec(_ arguments: [String]) throws {
        try run(["/usr/sbin/ip", "netns", "exec", name] + arguments)
    }

    deinit { _ = try? run(["/usr/sbin/ip", "netns", "del", name]) }
}
