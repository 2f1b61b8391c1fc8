import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A config whose rules come only from `<dir>/rules` (not the machine's /etc/kevd/rules.d).
func rulesConfig(_ extra: String = "") -> String {
    serverConfig("\n[rules]\ndirectories = [\"rules\"]\n" + extra)
}

/// Writes a rule file (mode 0644: kevd refuses group- or world-writable ones) into `<dir>/rules`, atomically
/// (a rename), as an editor or a package manager would.
func writeRuleFile(_ dir: TemporaryDirectory, _ name: String, _ text: String, mode: mode_t = 0o644) throws {
    if access(dir.file("rules"), F_OK) != 0 { try makeDirectory(dir.file("rules")) }
    let tmp = dir.file("rules/.\(name).tmp")
    try text.write(toFile: tmp, atomically: false, encoding: .utf8)
    chmod(tmp, mode)
    guard rename(tmp, dir.file("rules/" + name)) == 0 else { throw POSIXError(.EIO) }
}

/// An executable script in the test directory.
func writeScript(_ dir: TemporaryDirectory, _ name: String, _ body: String) throws -> String {
    let path = dir.file(name)
    try ("#!/bin/sh\n" + body).write(toFile: path, atomically: false, encoding: .utf8)
    chmod(path, 0o755)
    return path
}

/// A rule `block` for the emitted events of `type` whose script waits until the file `<dir>/go` exists (make it
/// to release the runs), with a timeout long enough never to end a run during a test.
func writeBlockingRule(_ dir: TemporaryDirectory, type: String) throws {
    let script = try writeScript(dir, "block.sh", "while [ ! -e \(dir.file("go")) ]; do sleep 0.05; done\n")
    try writeRuleFile(dir, "10-block.toml", """
        [[rule]]
        name = "block"
        match = ["source=emit", "type=\(type)"]
        run = ["\(script)"]
        timeout = "10m"
        """)
}

extension Dictionary where Key == String, Value == Any {
    func isRule(_ type: String, _ rule: String) -> Bool { isEvent("kevd", "rule." + type, key: rule) }
    var int: (String) -> Int? { { (self.data[$0] as? NSNumber)?.intValue } }
    var string: (String) -> String? { { self.data[$0] as? String } }
}

/// Emits through the socket as `kevctl emit` does; returns the event's seq.
@discardableResult
func emit(_ daemon: DaemonProcess, _ type: String, key: String, _ fields: [String] = []) throws -> Int {
    let result = try kevctl(["emit", "--socket", daemon.directory.file("state/kevd.sock"), type, "--key", key] + fields)
    #expect(result.status == 0, "kevctl emit: \(result.stderr)")
    return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
}

@Suite("rules", .serialized)
struct RulesTests {
    @Test("hostile file names reach the script intact as single arguments and in its environment; nothing runs them")
    func hostileNames() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        // File names cannot hold a `/`: the command would create `kevd-pwned` in the script's cwd (/).
        let pwned = "/kevd-pwned"
        unlink(pwned)
        let script = try writeScript(dir, "show.sh", """
            printf '%s\\n' "$#"
            for a; do printf '[%s]' "$a"; done
            printf '\\n<%s>\\n' "$KEVD_DATA_NAME"
            cat > "$0.stdin.$KEVD_SEQ"
            """)
        try writeRuleFile(dir, "10-show.toml", """
            [[watch]]
            path = "../w"
            events = ["close_write"]

            [[rule]]
            name = "show"
            match = ["source=inotify", "type=close_write"]
            run = ["\(script)", "{key}", "name={data.name}", "{data.name}"]
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        let names = ["a b", "new\nline", "q'u\"o`te", "$(touch kevd-pwned)", "`touch kevd-pwned`", "-rf", "; rm -rf x", "*"]
        for name in names {
            try writeFile(dir.file("w/" + name))
            let done = try daemon.waitFor("run for \(name.debugDescription)") {
                $0.isRule("succeeded", "show") && $0.string("cause_key") == dir.file("w/" + name)
            }
            let path = dir.file("w/" + name)
            #expect(done.string("stdout") == "3\n[\(path)][name=\(name)][\(name)]\n<\(name)>\n")
            // stdin is the triggering event's own JSON line.
            let stdinFile = script + ".stdin.\(done.int("cause_seq")!)"
            let line = try String(contentsOfFile: stdinFile, encoding: .utf8)
            let event = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(event?["key"] as? String == path)
            #expect(event?["id"] as? String == done.string("cause"))
        }
        #expect(access(pwned, F_OK) != 0, "a file name was executed")
    }

    @Test("the environment is clean: a fixed PATH, KEVD_* variables, sanitized data names, cwd /")
    func environment() throws {
        let dir = try TemporaryDirectory()
        let script = try writeScript(dir, "env.sh", "pwd; env | sort\n")
        try writeRuleFile(dir, "10-env.toml", """
            [[rule]]
            name = "env"
            match = ["source=emit", "type=show-env"]
            run = ["\(script)"]
            """)
        setenv("KEVD_TEST_LEAK", "leaked", 1)
        defer { unsetenv("KEVD_TEST_LEAK") }
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        let seq = try emit(daemon, "show-env", key: "k1", ["ID_FS.TYPE=ext4", "--string", "dev-name=/dev/sda"])
        let done = try daemon.waitFor("env run") { $0.isRule("succeeded", "env") }
        let lines = (done.string("stdout") ?? "").split(separator: "\n").map(String.init)
        #expect(lines.first == "/")
        let env = Set(lines.dropFirst().filter { $0 != "PWD=/" && !$0.hasPrefix("SHLVL=") && !$0.hasPrefix("_=") })
        let id = done.string("cause")!
        #expect(env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
        #expect(env.contains("KEVD_EVENT_ID=\(id)"))
        #expect(env.contains("KEVD_SEQ=\(seq)"))
        #expect(env.contains("KEVD_SOURCE=emit"))
        #expect(env.contains("KEVD_TYPE=show-env"))
        #expect(env.contains("KEVD_KEY=k1"))
        #expect(env.contains("KEVD_RULE=env"))
        #expect(env.contains("KEVD_SOCKET=\(dir.file("state/kevd.sock"))"))
        #expect(env.contains("KEVD_DEPTH=1"))
        #expect(env.contains("KEVD_DATA_ID_FS_TYPE=ext4"))
        #expect(env.contains("KEVD_DATA_DEV_NAME=/dev/sda"))
        let unexpected = env.filter { !$0.hasPrefix("KEVD_") && !$0.hasPrefix("PATH=") }
        #expect(unexpected.isEmpty, "inherited: \(unexpected)")
    }

    @Test("a rule with user and group runs its script as that user, with that user's groups", .enabled(if: Root.shouldRun, Root.reason))
    func dropsPrivileges() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-nobody.toml", """
            [[rule]]
            name = "nobody"
            match = ["type=whoami"]
            run = ["/usr/bin/id"]
            user = "nobody"
            group = "nogroup"
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(daemon, "whoami", key: "k")
        let done = try daemon.waitFor("the run") { $0.isRule("succeeded", "nobody") }
        #expect(done.string("stdout") == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n")
    }

    @Test("no_new_privs = true: the kernel reports NoNewPrivs 1 for the script; without it, 0")
    func noNewPrivileges() throws {
        let dir = try TemporaryDirectory()
        for (name, option) in [("locked", "no_new_privs = true"), ("plain", "")] {
            try writeRuleFile(dir, "10-\(name).toml", """
                [[rule]]
                name = "\(name)"
                match = ["type=privs"]
                run = ["/bin/grep", "NoNewPrivs", "/proc/self/status"]
                \(option)
                """)
        }
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(daemon, "privs", key: "k")
        let locked = try daemon.waitFor("the locked run") { $0.isRule("succeeded", "locked") }
        let plain = try daemon.waitFor("the plain run") { $0.isRule("succeeded", "plain") }
        #expect(locked.string("stdout") == "NoNewPrivs:\t1\n")
        #expect(plain.string("stdout") == "NoNewPrivs:\t0\n")
    }

    @Test("a timeout ends the whole process group, grandchild included, and the run fails as timed out")
    func timeoutKillsGroup() throws {
        let dir = try TemporaryDirectory()
        let script = try writeScript(dir, "hang.sh", "sleep 300 &\necho $! > \"$1\"\nwait\n")
        try writeRuleFile(dir, "10-hang.toml", """
            [[rule]]
            name = "hang"
            match = ["type=hang"]
            run = ["\(script)", "\(dir.file("grandchild.pid"))"]
            timeout = "500ms"
            kill_grace = "2s"
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(daemon, "hang", key: "x")
        let failed = try daemon.waitFor("timed-out run", timeout: 15) { $0.isRule("failed", "hang") }
        #expect(failed.data["timed_out"] as? Bool == true)
        #expect(failed.string("signal") == "term")
        let grandchild = Int32((try String(contentsOfFile: dir.file("grandchild.pid"), encoding: .utf8))
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        #expect(try waitUntilGone(grandchild), "the grandchild sleep \(grandchild) survived the timeout")
        try daemon.waitFor("dead letter") { $0.isRule("dead", "hang") }
    }

    @Test("output is watched only after a short delay: a script printing more than a pipe holds still finishes, and a timeout shorter than the delay still fires")
    func lateOutputWatchAndShortTimeout() throws {
        let dir = try TemporaryDirectory()
        // 300 KB in one go, more than a pipe holds: the script waits in write until kevd watches its stdout (or
        // reads it at exit, which it cannot reach while it waits), then prints END.
        let chatty = try writeScript(dir, "chatty.sh", "head -c 300000 /dev/zero | tr '\\0' x\necho\necho END\n")
        let hang = try writeScript(dir, "hang.sh", "exec sleep 300\n")
        try writeRuleFile(dir, "10-late.toml", """
            [[rule]]
            name = "chatty"
            match = ["type=chatty"]
            run = ["\(chatty)"]
            timeout = "20s"

            [[rule]]
            name = "short"
            match = ["type=short"]
            run = ["\(hang)"]
            timeout = "20ms"
            kill_grace = "2s"
            retries = 0
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(daemon, "chatty", key: "c")
        let done = try daemon.waitFor("chatty run", timeout: 15) { $0.isRule("succeeded", "chatty") || $0.isRule("failed", "chatty") }
        #expect(done.isRule("succeeded", "chatty"), "\(done)")
        #expect(done.string("stdout")?.hasSuffix("xxx\nEND\n") == true, "\(done.string("stdout") ?? "nil")")
        try emit(daemon, "short", key: "s")
        let failed = try daemon.waitFor("timed-out run", timeout: 15) { $0.isRule("failed", "short") }
        #expect(failed.data["timed_out"] as? Bool == true)
        #expect(failed.string("signal") == "term")
        // Not before its time (a timeout shorter than the watch delay is scheduled at the start, not at the watch).
        let elapsed = (failed.data["duration_ms"] as? NSNumber)?.doubleValue ?? -1
        #expect(elapsed >= 20 && elapsed < 1000, "duration_ms \(elapsed)")
    }

    @Test("concurrency bounds the runs in flight and runs for one key never overlap and keep seq order")
    func concurrencyAndKeyOrder() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-work.toml", """
            [[rule]]
            name = "work"
            match = ["source=emit", "type=job"]
            run = ["/bin/sleep", "0.05"]
            concurrency = 3
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        let socket = try RawClient(daemon.directory.file("state/kevd.sock"))
        let total = 60
        for i in 0..<total { socket.send("{\"op\":\"emit\",\"type\":\"job\",\"key\":\"k\(i % 5)\"}\n") }
        let finished = try daemon.waitForCount("runs", count: total, timeout: 60) { $0.isRule("succeeded", "work") }
        #expect(finished.count == total)
        var inFlight: [String: Int] = [:]
        var maxInFlight = 0
        var lastSeq: [String: Int] = [:]
        for event in daemon.received where event.key == "work" {
            guard let key = event.string("cause_key"), let seq = event.int("cause_seq") else { continue }
            if event.isRule("started", "work") {
                #expect(inFlight[key, default: 0] == 0, "two runs for key \(key) at once")
                #expect(seq > lastSeq[key, default: 0], "key \(key) ran seq \(seq) after \(lastSeq[key] ?? 0)")
                lastSeq[key] = seq
                inFlight[key, default: 0] += 1
                maxInFlight = max(maxInFlight, inFlight.values.reduce(0, +))
            } else if event.isRule("succeeded", "work") {
                inFlight[key, default: 0] -= 1
            }
        }
        #expect(maxInFlight <= 3)
        #expect(maxInFlight >= 2, "runs for different keys never overlapped")
    }

    @Test("debounce runs once per key when it settles, with the latest event")
    func debounce() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-settle.toml", """
            [[rule]]
            name = "settle"
            match = ["source=emit", "type=change"]
            run = ["/bin/echo", "{key}", "{data.n}"]
            debounce = "400ms"
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        let socket = try RawClient(daemon.directory.file("state/kevd.sock"))
        for n in 1...10 { socket.send("{\"op\":\"emit\",\"type\":\"change\",\"key\":\"a\",\"data\":{\"n\":\(n)}}\n") }
        for n in 1...4 { socket.send("{\"op\":\"emit\",\"type\":\"change\",\"key\":\"b\",\"data\":{\"n\":\(n)}}\n") }
        let runs = try daemon.waitForCount("settled runs", count: 2, timeout: 15) { $0.isRule("succeeded", "settle") }
        let byKey = Dictionary(uniqueKeysWithValues: runs.map { ($0.string("cause_key")!, $0) })
        #expect(byKey["a"]?.string("stdout") == "a 10\n")
        #expect(byKey["a"]?.int("debounced_events") == 10)
        #expect(byKey["b"]?.string("stdout") == "b 4\n")
        // Nothing else was pending: a later event for `a` starts a new quiet period and exactly one more run.
        try emit(daemon, "change", key: "a", ["n=11"])
        let again = try daemon.waitForCount("the next run", count: 3, timeout: 15) { $0.isRule("succeeded", "settle") }
        #expect(again.count == 3)
        #expect(daemon.received.filter { $0.isRule("started", "settle") }.count == 3)
    }

    @Test("catch_up = false skips matches that arrive while the rule is busy, and does not run history after a restart")
    func catchUpOff() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-now.toml", """
            [[rule]]
            name = "now"
            match = ["source=emit", "type=tick"]
            run = ["/bin/sleep", "0.5"]
            catch_up = false
            """)
        do {
            let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
            let socket = try RawClient(daemon.directory.file("state/kevd.sock"))
            for _ in 1...3 { socket.send("{\"op\":\"emit\",\"type\":\"tick\",\"key\":\"k\"}\n") }
            try daemon.waitForCount("the three emits", count: 3) { $0.isEvent("emit", "tick") }
            try daemon.waitFor("the one run") { $0.isRule("succeeded", "now") }
            let status = try kevctl(["rules", "list", "--json", "--socket", dir.file("state/kevd.sock")])
            #expect(status.stdout.contains("\"skipped\":2"), "\(status.stdout)")
            #expect(daemon.received.filter { $0.isRule("started", "now") }.count == 1)
            daemon.stop()
        }
        // A match journaled while the rule is not loaded (its stored position stays behind it): a catch_up rule
        // would run it when it comes back; this one does not.
        let file = dir.file("rules/10-now.toml")
        guard rename(file, file + ".off") == 0 else { throw POSIXError(.EIO) }
        do {
            let without = try DaemonProcess(config: rulesConfig(), in: dir)
            try emit(without, "tick", key: "k")
            without.stop()
        }
        guard rename(file + ".off", file) == 0 else { throw POSIXError(.EIO) }
        let restarted = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(restarted, "other", key: "marker")
        try restarted.waitFor("the marker") { $0.isEvent("emit", "other") }
        #expect(!restarted.received.contains { $0.isRule("started", "now") })
    }

    @Test("a failing script is retried with backoff, then dead-lettered, and a rule can alert on the dead letter")
    func retriesThenDeadLetter() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-flaky.toml", """
            [[rule]]
            name = "flaky"
            match = ["source=emit", "type=flaky"]
            run = ["/bin/sh", "-c", "echo attempt $KEVD_ATTEMPT >&2; exit 3"]
            retries = 2
            backoff = "100ms"

            [[rule]]
            name = "alert"
            match = ["source=kevd", "type=rule.dead", "data.rule=flaky"]
            run = ["/bin/echo", "dead:", "{data.rule}", "{data.cause}"]
            """)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try emit(daemon, "flaky", key: "x")
        let alert = try daemon.waitFor("the alert", timeout: 15) { $0.isRule("succeeded", "alert") }
        let failures = daemon.received.filter { $0.isRule("failed", "flaky") }
        #expect(failures.map { $0.int("attempt") } == [1, 2, 3])
        #expect(failures.map { $0.data["will_retry"] as? Bool } == [true, true, false])
        #expect(failures.map { $0.int("exit_status") } == [3, 3, 3])
        #expect(failures.last?.string("stderr") == "attempt 3\n")
        let dead = try #require(daemon.received.first { $0.isRule("dead", "flaky") })
        #expect(dead.int("attempts") == 3)
        #expect(alert.string("stdout") == "dead: flaky \(dead.string("cause")!)\n")
        #expect(alert.string("cause") == dead["id"] as? String)
    }

    @Test("kill -9 mid-run, then a restart runs the interrupted and the pending matches with the same event ids")
    func atLeastOnceAcrossCrash() throws {
        let dir = try TemporaryDirectory()
        let log = dir.file("runs.log")
        try writeRuleFile(dir, "10-slow.toml", """
            [[rule]]
            name = "slow"
            match = ["source=emit", "type=work"]
            run = ["/bin/sh", "-c", "sleep 0.5; echo \\"$KEVD_EVENT_ID\\" >> \\"$1\\"", "slow", "\(log)"]
            """)
        var ids: [String] = []
        do {
            let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
            for i in 1...3 { try emit(daemon, "work", key: "k\(i)") }
            ids = daemon.received.filter { $0.isEvent("emit", "work") }.compactMap { $0["id"] as? String }
            try daemon.waitFor("the first run") { $0.isRule("started", "slow") }
            daemon.signal(SIGKILL)
            _ = daemon.stop()
        }
        #expect(ids.count == 3)
        let before = Set(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init))
        #expect(before.count < 3, "everything finished before the crash; the test proves nothing")
        let restarted = try DaemonProcess(config: rulesConfig(), in: dir)
        let runs = try restarted.waitForCount("runs after the restart", count: 3, timeout: 20) {
            $0.isRule("succeeded", "slow")
        }
        let ran = Set(runs.compactMap { $0.string("cause") })
        #expect(ran.isSuperset(of: ids), "not run after the restart: \(Set(ids).subtracting(ran))")
        let after = Set((try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n").map(String.init))
        #expect(after == Set(ids))
    }

    @Test("an insecure rule file is refused at start, naming the file, and its rules do not run")
    func insecureFileRefused() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-open.toml", """
            [[rule]]
            name = "open"
            match = ["type=x"]
            run = ["/bin/true"]
            """, mode: 0o664)
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        let error = try daemon.waitFor("refusal") { $0.isEvent("kevd", "error", key: "rules") }
        #expect((error.string("error") ?? "").contains(dir.file("rules/10-open.toml") + ": rule file is writable by group or others"))
        try emit(daemon, "x", key: "k")
        let status = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        #expect(!status.stdout.contains("\"name\":\"open\""))
        #expect(!daemon.received.contains { $0.isRule("started", "open") })
    }

    @Test("an invalid edit keeps the running rules and reports file:line:col; a fixed file is picked up")
    func invalidEditKeepsRules() throws {
        let dir = try TemporaryDirectory()
        let rule = { (word: String) in
            """
            [[rule]]
            name = "greet"
            match = ["type=hello"]
            run = ["/bin/echo", "\(word)"]
            """
        }
        try writeRuleFile(dir, "10-greet.toml", rule("one"))
        let daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        try writeRuleFile(dir, "10-greet.toml", rule("two") + "\ntimeout = \"soon\"\n")
        let error = try daemon.waitFor("the reload error") { $0.isEvent("kevd", "error", key: "rules") }
        #expect(error.string("error") == dir.file("rules/10-greet.toml") + ":5:1: bad duration 'soon': expected a number, found 's'")
        try emit(daemon, "hello", key: "k")
        let old = try daemon.waitFor("a run with the old rule") { $0.isRule("succeeded", "greet") }
        #expect(old.string("stdout") == "one\n")
        try writeRuleFile(dir, "10-greet.toml", rule("three"))
        try daemon.waitFor("the reload") { $0.isEvent("kevd", "reloaded", key: "rules") }
        try emit(daemon, "hello", key: "k")
        let runs = try daemon.waitForCount("a run with the new rule", count: 2) { $0.isRule("succeeded", "greet") }
        #expect(runs.last?.string("stdout") == "three\n")
    }

    @Test("the cascade limit stops a rule that triggers itself")
    func cascadeLimit() throws {
        let dir = try TemporaryDirectory()
        try writeRuleFile(dir, "10-loop.toml", """
            [[rule]]
            name = "loop"
            match = ["source=emit", "type=again"]
            run = ["\(TestBinaries.kevctl)", "emit", "again", "--key", "loop"]
            """)
        let daemon = try DaemonProcess(config: rulesConfig("cascade_limit = 4\n"), in: dir)
        try emit(daemon, "again", key: "loop")
        let refused = try daemon.waitFor("the refusal", timeout: 20) {
            $0.isEvent("kevd", "error", key: "rules") && $0.string("reason") == "cascade_limit"
        }
        #expect(refused.int("depth") == 5)
        let emitted = daemon.received.filter { $0.isEvent("emit", "again") }
        #expect(emitted.map { ($0.data["_depth"] as? NSNumber)?.intValue ?? 0 } == [0, 1, 2, 3, 4])
        // Every emit but the first was caused by the run before it.
        let runs = daemon.received.filter { $0.isRule("started", "loop") }
        #expect(runs.count == 4)
        #expect(emitted.dropFirst().map { $0.data["_cause"] as? String } == runs.map { $0.string("cause") })
    }
}

/// Whether `pid` is gone (or a zombie nobody reaps, as in a container without an init) within `timeout`.
func waitUntilGone(_ pid: Int32, timeout: Double = 10) throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "Z"
        {
            return true
        }
        usleep(10_000)
    }
    return false
}
