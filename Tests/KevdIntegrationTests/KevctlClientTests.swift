import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A kevctl running in the background, its stdout read line by line.
final class KevctlProcess: @unchecked Sendable {
    let process = Process()
    private let out = Pipe()
    private let err = Pipe()

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: TestBinaries.kevctl)
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        try process.runAlone()
    }

    var pid: Int32 { process.processIdentifier }

    /// The next line of stdout, without `\n`.
    func line(timeout: Double = 10) throws -> String {
        try readLine(from: out.fileHandleForReading.fileDescriptor, timeout: timeout)
    }

    /// Lines up to and including the next empty one (an env block), without the empty line.
    func block(timeout: Double = 10) throws -> [String] {
        var lines: [String] = []
        while true {
            let line = try line(timeout: timeout)
            if line.isEmpty { return lines }
            lines.append(line)
        }
    }

    /// Waits for the exit; nil when it is still running after `timeout`.
    func exit(timeout: Double = 10) -> (reason: Process.TerminationReason, status: Int32)? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        guard !process.isRunning else { return nil }
        return (process.terminationReason, process.terminationStatus)
    }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// A daemon watching `<dir>/w` with its socket at `<dir>/state/kevd.sock`, answering requests.
struct ClientFixture {
    let dir: TemporaryDirectory
    let daemon: DaemonProcess
    var socket: String { dir.file("state/kevd.sock") }
    var config: String { daemon.configPath }

    init() throws {
        dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        // kevd may announce itself before its socket listens: wait for an answer, not a file.
        let deadline = Date().addingTimeInterval(10)
        while true {
            let status = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
            if status.status == 0 { break }
            guard Date() < deadline else {
                throw DaemonProcess.Timeout(what: "kevd's socket (\(status.stderr))", seen: 0, stderr: daemon.stderr)
            }
            usleep(20_000)
        }
    }

    func status() throws -> [String: Any] {
        let result = try kevctl(["status", "--socket", socket, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    /// Waits until kevd lists a subscriber with this pid: only then is an event sure to reach it.
    @discardableResult
    func waitForSubscriber(pid: Int32, timeout: Double = 10) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let subscribers = try status()["subscribers"] as? [[String: Any]] ?? []
            if let found = subscribers.first(where: { ($0["pid"] as? NSNumber)?.int32Value == pid }) { return found }
            guard Date() < deadline else {
                throw DaemonProcess.Timeout(what: "subscriber \(pid) in status", seen: 0, stderr: daemon.stderr)
            }
            usleep(20_000)
        }
    }
}

/// `s` as a JSON string literal the way kevd escapes it (Foundation would also escape `/`).
func jsonQuoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

@Suite("kevctl subscribe, wait, emit and status against a running kevd", .serialized)
struct KevctlClientTests {
    @Test("emit prints the durable seq, and the event is in the journal with typed data")
    func emit() throws {
        let f = try ClientFixture()
        let result = try kevctl([
            "emit", "--config", f.config, "backup.done", "--key", "nightly", "bytes=123456", "ok=true", "zip=01234",
            "note=hello world", "--string", "count=42",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let seq = try #require(Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))

        let journal = try kevctl([
            "journal", "--state-dir", f.dir.file("state"), "--from", "\(seq)", "--until", "\(seq)",
        ])
        let event = try #require(journalLines(journal.stdout).first)
        #expect(event.seq == seq)
        #expect(event.isEvent("emit", "backup.done", key: "nightly"))
        #expect(event.data["bytes"] as? Int == 123456)
        #expect(event.data["ok"] as? Bool == true)
        #expect(event.data["zip"] as? String == "01234")
        #expect(event.data["note"] as? String == "hello world")
        #expect(event.data["count"] as? String == "42")
        #expect(event.data["_uid"] as? Int == Int(getuid()))

        // --json prints the reply; an idempotency key makes a repeat a duplicate of the first.
        let once = try kevctl(["emit", "--socket", f.socket, "--json", "--idempotency-key", "k1", "job.done"])
        let again = try kevctl(["emit", "--socket", f.socket, "--json", "--idempotency-key", "k1", "job.done"])
        #expect(once.status == 0 && again.status == 0, "\(once.stderr) \(again.stderr)")
        let first = try #require(try JSONSerialization.jsonObject(with: Data(once.stdout.utf8)) as? [String: Any])
        let second = try #require(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        #expect(first["ok"] as? Bool == true)
        #expect(first["seq"] as? Int == second["seq"] as? Int)
        #expect(first["id"] as? String == second["id"] as? String)
        #expect(second["duplicate"] as? Bool == true)

        let bad = try kevctl(["emit", "--socket", f.socket, "x", "novalue"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("novalue"))
        #expect(f.daemon.stop() == 0)
    }

    @Test("wait prints the first matching event that happens while it waits, and exits 0")
    func waitForEvent() throws {
        let f = try ClientFixture()
        let target = f.dir.file("w/target")
        let waiter = try KevctlProcess(["wait", "--config", f.config, "--timeout", "30", "type=create", "key=*/target"])
        try f.waitForSubscriber(pid: waiter.pid)
        try writeFile(f.dir.file("w/other"))
        try writeFile(target)
        let line = try waiter.line()
        let event = try #require(journalLines(line).first)
        #expect(event.isEvent("inotify", "create", key: target))
        let exit = try #require(waiter.exit())
        #expect(exit.reason == .exit && exit.status == 0)
        #expect(f.daemon.stop() == 0)
    }

    @Test("wait exits 2 when --timeout passes with nothing matching")
    func waitTimeout() throws {
        let f = try ClientFixture()
        let started = Date()
        let result = try kevctl(["wait", "--socket", f.socket, "--timeout", "0.5", "type=never"])
        let elapsed = Date().timeIntervalSince(started)
        #expect(result.status == 2, "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        #expect(elapsed >= 0.5 && elapsed < 10)
        #expect(f.daemon.stop() == 0)
    }

    @Test("wait --from SEQ finds an event that happened between reading the head and starting to wait")
    func waitFromSeq() throws {
        let f = try ClientFixture()
        let head = try #require(f.status()["head"] as? Int)
        let file = f.dir.file("w/early")
        try writeFile(file)
        try f.daemon.waitFor("early create") { $0.isEvent("inotify", "create", key: file) }
        // From "new" it would wait forever; from the seq after the head it finds the event in the journal.
        let missed = try kevctl(["wait", "--socket", f.socket, "--timeout", "0.5", "key=\(file)"])
        #expect(missed.status == 2)
        let found = try kevctl([
            "wait", "--socket", f.socket, "--timeout", "10", "--from", "\(head + 1)", "key=\(file)",
        ])
        #expect(found.status == 0, "\(found.stderr)")
        let event = try #require(journalLines(found.stdout).first)
        #expect(event.isEvent("inotify", "create", key: file))
        #expect((event.seq ?? 0) > head)
        #expect(f.daemon.stop() == 0)
    }

    @Test("subscribe --format json/text/env keep a hostile file name intact and inert")
    func formats() throws {
        let f = try ClientFixture()
        let name = "we ird \"double\" 'single'\nsecond line\\ $(touch pwned) `touch pwned2`"
        let path = f.dir.file("w/" + name)
        try writeFile(path)
        let create = try f.daemon.waitFor("hostile create") { $0.isEvent("inotify", "create", key: path) }
        let seq = try #require(create.seq)
        let filter = ["--from", "\(seq)", "type=create", "data.name=*pwned2*"]

        // json: the journal's line, byte for byte.
        let json = try KevctlProcess(["subscribe", "--config", f.config] + filter)
        let jsonLine = try json.line()
        let journal = try kevctl([
            "journal", "--state-dir", f.dir.file("state"), "--from", "\(seq)", "--until", "\(seq)",
        ])
        #expect(jsonLine + "\n" == journal.stdout)
        #expect(journalLines(jsonLine).first?.key == path)

        // text: one line; the key is quoted as a JSON string.
        let text = try KevctlProcess(["subscribe", "--config", f.config, "--format", "text"] + filter)
        let textLine = try text.line()
        let time = create["time"] as? String ?? "?"
        let prefix = "\(seq) \(time) inotify create \(jsonQuoted(path)) path=\(jsonQuoted(path))"
        #expect(textLine.hasPrefix(prefix), "\(textLine)")
        #expect(textLine.contains(" name=\(jsonQuoted(name)) watch=\(f.dir.file("w")) dir=false"), "\(textLine)")

        // env: eval of one block in /bin/sh gives back the exact path and name, and runs nothing.
        let env = try KevctlProcess(["subscribe", "--config", f.config, "--format", "env"] + filter)
        let block = try env.block().joined(separator: "\n") + "\n"
        #expect(block.hasPrefix("KEVD_SEQ='\(seq)'\nKEVD_ID='\(create["id"] as? String ?? "?")'\n"))
        for (variable, expected) in [("KEVD_KEY", path), ("KEVD_DATA_NAME", name), ("KEVD_SOURCE", "inotify"),
                                     ("KEVD_DATA_DIR", "false")] {
            let shell = Process()
            shell.executableURL = URL(fileURLWithPath: "/bin/sh")
            shell.arguments = ["-c", "eval \"$1\"; printf %s \"$\(variable)\"", "sh", block]
            shell.currentDirectoryURL = URL(fileURLWithPath: f.dir.path)
            let out = Pipe()
            shell.standardOutput = out
            try shell.runAlone()
            let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            shell.waitUntilExit()
            #expect(shell.terminationStatus == 0)
            #expect(printed == expected, "\(variable)")
        }
        for file in ["pwned", "pwned2", "w/pwned", "w/pwned2"] {
            #expect(access(f.dir.file(file), F_OK) != 0, "\(file) was created: something ran the name")
        }
        #expect(f.daemon.stop() == 0)
    }

    @Test("subscribe exits 0 when its stdout pipe is closed (| head -n 1)")
    func closedPipe() throws {
        let f = try ClientFixture()
        let statusFile = f.dir.file("subscribe-status")
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = [
            "-c", "{ \"$1\" subscribe --socket \"$2\" --from all; echo $? > \"$3\"; } | head -n 1",
            "sh", TestBinaries.kevctl, f.socket, statusFile,
        ]
        let out = Pipe()
        shell.standardOutput = out
        try shell.runAlone()
        // head exits after one line; kevctl notices at its next write, so keep events coming until it has.
        let deadline = Date().addingTimeInterval(20)
        var i = 0
        while shell.isRunning && Date() < deadline {
            try writeFile(f.dir.file("w/f\(i)"))
            i += 1
            usleep(20_000)
        }
        #expect(!shell.isRunning, "kevctl subscribe did not exit after head closed the pipe")
        shell.waitUntilExit()
        let firstLine = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(journalLines(firstLine).first?.seq == 1)
        let status = try String(contentsOfFile: statusFile, encoding: .utf8)
        #expect(status.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(f.daemon.stop() == 0)
    }

    @Test("a missing socket: exit 1 and a message naming the path and what to check")
    func missingSocket() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("nowhere/kevd.sock")
        for command in [["status"], ["emit", "x"], ["wait", "type=x"], ["subscribe"]] {
            let result = try kevctl(command + ["--socket", path])
            #expect(result.status == 1, "\(command)")
            #expect(
                result.stderr.contains("kevctl: cannot connect to \(path): No such file or directory"),
                "\(result.stderr)")
            #expect(result.stderr.contains("is kevd running? set --socket or KEVD_SOCKET"))
        }
    }

    @Test("status --json parses and lists a subscriber with its credentials, name and filter; the table shows it")
    func statusListsSubscriber() throws {
        let f = try ClientFixture()
        let subscriber = try KevctlProcess(["subscribe", "--socket", f.socket, "--name", "tester", "type=nothing"])
        let listed = try f.waitForSubscriber(pid: subscriber.pid)
        #expect((listed["uid"] as? NSNumber)?.uint32Value == getuid())
        #expect(listed["name"] as? String == "tester")
        #expect(listed["filter"] as? [String] == ["type=nothing"])
        #expect(listed["next"] is NSNumber)
        #expect(listed["lag"] is NSNumber)
        #expect(["live", "journal"].contains(listed["mode"] as? String ?? ""))
        let status = try f.status()
        #expect(status["ok"] as? Bool == true)
        #expect(status["head"] is NSNumber && status["durable"] is NSNumber)

        let table = try kevctl(["status", "--socket", f.socket])
        #expect(table.status == 0)
        let row = table.stdout.split(separator: "\n").first { $0.contains("tester") }
        #expect(row?.contains("\(subscriber.pid)") == true && row?.contains("type=nothing") == true, "\(table.stdout)")
        subscriber.process.terminate()
        #expect(subscriber.exit() != nil)
        #expect(f.daemon.stop() == 0)
    }

    @Test("a named subscription acknowledges what it printed: after SIGTERM it resumes after the last printed event")
    func namedResume() throws {
        let f = try ClientFixture()
        var seqs: [Int] = []
        for i in 0..<3 {
            let emitted = try kevctl(["emit", "--socket", f.socket, "resume.test", "i=\(i)"])
            seqs.append(try #require(Int(emitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines))))
        }
        let first = try KevctlProcess([
            "subscribe", "--socket", f.socket, "--name", "r", "--from", "all", "type=resume.test",
        ])
        let printed = try (0..<3).map { _ in try #require(journalLines(try first.line()).first?.seq) }
        #expect(printed == seqs)
        first.process.terminate()
        let stopped = try #require(first.exit())
        #expect(stopped.reason == .uncaughtSignal && stopped.status == SIGTERM)

        let next = try kevctl(["emit", "--socket", f.socket, "resume.test", "i=3"])
        let nextSeq = try #require(Int(next.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let resumed = try KevctlProcess(["subscribe", "--socket", f.socket, "--name", "r", "type=resume.test"])
        #expect(journalLines(try resumed.line()).first?.seq == nextSeq)
        resumed.process.terminate()
        #expect(f.daemon.stop() == 0)
    }
}
