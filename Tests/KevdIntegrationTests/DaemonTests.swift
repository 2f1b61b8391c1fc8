import Foundation
import Glibc
import KevdTestSupport
import Testing

@Suite("signals, timers and reload")
struct DaemonTests {
    @Test("USR1 and USR2 become signal events naming the sender; TERM stops cleanly with exit 0")
    func signals() throws {
        let daemon = try DaemonProcess(config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\nlog_level = \"warning\"\n")
        daemon.signal(SIGUSR1)
        let usr1 = try daemon.waitFor("usr1") { $0.isEvent("signal", "usr1", key: "usr1") }
        #expect(usr1.data["signo"] as? Int == Int(SIGUSR1))
        #expect(usr1.data["pid"] as? Int == Int(getpid()))
        #expect(usr1.data["uid"] as? Int == Int(getuid()))
        daemon.signal(SIGUSR2)
        try daemon.waitFor("usr2") { $0.isEvent("signal", "usr2", key: "usr2") }
        daemon.signal(SIGTERM)
        let stopping = try daemon.waitFor("stopping") { $0.isEvent("kevd", "stopping") }
        #expect(stopping.data["signal"] as? String == "term")
        #expect(daemon.stop() == 0)
    }

    @Test("SIGPIPE (a subscriber gone mid-write) does not stop kevd, whatever signal mask it inherited")
    func sigpipeIsIgnored() throws {
        let daemon = try DaemonProcess(config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n")
        daemon.signal(SIGPIPE)
        daemon.signal(SIGUSR1)
        try daemon.waitFor("usr1 after a SIGPIPE") { $0.isEvent("signal", "usr1") }
        #expect(daemon.stop() == 0)
    }

    @Test("a world-writable state or socket directory (sticky or not) is refused at start, naming it; o-w fixes it")
    func worldWritableDirectoriesAreRefused() throws {
        for (directory, mode) in [("state", mode_t(0o777)), ("sock", mode_t(0o1777))] {
            let dir = try TemporaryDirectory()
            try makeDirectory(dir.file("state"))
            try makeDirectory(dir.file("sock"))
            #expect(chmod(dir.file(directory), mode) == 0)
            let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"sock/kevd.sock\"\n"
            let refused = try DaemonProcess(config: config, in: dir, waitForStart: false)
            let deadline = Date().addingTimeInterval(10)
            while refused.process.isRunning && Date() < deadline { usleep(10_000) }
            #expect(!refused.process.isRunning, "kevd started with a world-writable \(directory)")
            #expect(refused.stop() == 1)
            let stderr = refused.finalStderr()
            #expect(stderr.contains("\(dir.file(directory)) is world-writable (mode \(String(mode, radix: 8)))"), "\(stderr)")
            #expect(access(dir.file("sock/kevd.sock"), F_OK) != 0, "kevd bound its socket before refusing")

            #expect(chmod(dir.file(directory), 0o750) == 0)
            let started = try DaemonProcess(config: config, in: dir)
            #expect(started.stop() == 0)
        }
    }

    @Test("INT stops cleanly too")
    func interrupt() throws {
        let daemon = try DaemonProcess(config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n")
        daemon.signal(SIGINT)
        try daemon.waitFor("stopping") { $0.isEvent("kevd", "stopping") && $0.data["signal"] as? String == "int" }
        #expect(daemon.stop() == 0)
    }

    @Test("an interval timer fires with its schedule, and overruns while kevd is held are counted, not lost")
    func intervalTimer() throws {
        let daemon = try DaemonProcess(config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[[timer]]\nname = \"tick\"\nevery = \"100ms\"\n")
        let first = try daemon.waitFor("first fire") { $0.isEvent("timer", "fired", key: "tick") }
        // Not `== 0`: on a loaded machine the loop may first read the timerfd more than a period after arming it,
        // and then the first fire honestly counts that overrun.
        #expect((first.data["overruns"] as? Int).map { $0 >= 0 } == true)
        #expect((first.data["scheduled"] as? String)?.hasSuffix("Z") == true)
        #expect(first.data["every"] as? String == "100ms")

        daemon.signal(SIGSTOP)
        // Hold the daemon for at least 8 periods, measured, not assumed.
        let held = Date()
        while Date().timeIntervalSince(held) < 0.8 { usleep(50_000) }
        let before = daemon.received.count
        daemon.signal(SIGCONT)
        let after = try daemon.waitFor("fire after hold", from: before) { $0.isEvent("timer", "fired", key: "tick") }
        #expect((after.data["overruns"] as? Int ?? 0) >= 5)
        daemon.stop()
    }

    @Test("HUP applies a new valid config; a broken one is reported with file:line:col and the old one keeps working")
    func reload() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("a"))
        try makeDirectory(dir.file("b"))
        let daemon = try DaemonProcess(config: watchConfig("a"), in: dir)

        try watchConfig("b").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("reloaded") { $0.isEvent("kevd", "reloaded") }
        try writeFile(dir.file("b/new"))
        try daemon.waitFor("event from the new watch") { $0.isEvent("inotify", "create", key: dir.file("b/new")) }

        try (watchConfig("b") + "\nbogus_key = 1\n").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let error = try daemon.waitFor("reload error") { $0.isEvent("kevd", "error") }
        let message = error.data["error"] as? String ?? ""
        #expect(message.contains(daemon.configPath + ":"))
        #expect(message.contains("bogus_key"))
        try writeFile(dir.file("b/still"))
        try daemon.waitFor("old config still active") { $0.isEvent("inotify", "create", key: dir.file("b/still")) }
        daemon.stop()
    }
}

@Suite("configuration errors")
struct ConfigErrorTests {
    func check(_ text: String, in directory: TemporaryDirectory? = nil) throws -> (status: Int32, stderr: String) {
        let dir = try directory ?? TemporaryDirectory()
        let path = dir.file("bad.toml")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestBinaries.kevd)
        process.arguments = ["--config", path, "--check"]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = Pipe()
        try process.runAlone()
        let stderr = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, stderr.replacingOccurrences(of: path, with: "FILE"))
    }

    @Test("--check reads the rule files too and names a bad one's file, line and column")
    func badRuleFile() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "20-bad.toml", "[[rule]]\nname = \"x\"\nmatch = [\"type=a\"]\nrun = [\"/bin/echo\", \"{kye}\"]\n")
        let result = try check("[rules]\ndirectories = [\"rules\"]\n", in: dir)
        #expect(result.status == 2)
        #expect(result.stderr.contains(dir.file("rules/20-bad.toml") + ":4:1: run[1] '{kye}': unknown placeholder '{kye}'"))
    }

    @Test("an unknown key names file, line and column, and exits 2")
    func unknownKey() throws {
        let result = try check("[daemon]\nstate_dir = \"s\"\n\n[[watch]]\npath = \"/tmp\"\n  recursiv = true\n")
        #expect(result.status == 2)
        #expect(result.stderr.contains("FILE:6:3: unknown key 'recursiv' in [watch]"))
    }

    @Test("a TOML syntax error names its line and column")
    func syntaxError() throws {
        let result = try check("[daemon]\nstate_dir = \"unterminated\n")
        #expect(result.status == 2)
        #expect(result.stderr.contains("FILE:2:"))
    }

    @Test("a bad duration in the second timer points at that timer's key")
    func badDuration() throws {
        let result = try check("[[timer]]\nname = \"a\"\nevery = \"1s\"\n\n[[timer]]\nname = \"b\"\nevery = \"5 parsecs\"\n")
        #expect(result.status == 2)
        #expect(result.stderr.contains("FILE:7:1: bad duration '5 parsecs'"))
    }

    @Test("a valid config checks clean")
    func valid() throws {
        let result = try check("[[timer]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\n[udev]\nenabled = false\n")
        #expect(result.status == 0)
        #expect(result.stderr.isEmpty)
    }
}
