import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Helpers of the kevctl rules tests, in a namespace so they cannot collide with other suites' free functions.
enum RulesCLI {
    /// A config whose rules come only from `<dir>/rules.d` (never the machine's /etc/kevd/rules.d).
    static func config(_ extra: String = "") -> String {
        serverConfig("\n[rules]\ndirectories = [\"rules.d\"]\n" + extra)
    }

    /// Writes `text` to `path` with exactly `mode` (whatever the umask): kevd refuses rule files that group or
    /// others may write, so the tests choose the mode rather than inherit one.
    static func write(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        guard chmod(path, mode) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    /// Waits until kevd answers on its socket: it may announce itself before it listens.
    static func waitForSocket(_ daemon: DaemonProcess) throws -> String {
        let socket = daemon.directory.file("state/kevd.sock")
        let deadline = Date().addingTimeInterval(10)
        while true {
            let status = try kevctl(["status", "--socket", socket, "--json"])
            if status.status == 0 { return socket }
            guard Date() < deadline else {
                throw DaemonProcess.Timeout(what: "kevd's socket (\(status.stderr))", seen: 0, stderr: daemon.stderr)
            }
            usleep(20_000)
        }
    }

    /// The rule of the `test` examples: matches only USB disks being added.
    static let usbRule = """
        [[rule]]
        name = "usb-disk"
        match = ["source=udev", "type=add", "data.ID_BUS=usb"]
        run = ["/bin/true", "{key}"]
        """
}

@Suite("kevctl rules and emit's cause", .serialized)
struct KevctlRulesTests {
    // MARK: check

    @Test("rules check: a good file is ok (exit 0, nothing on stdout, a summary on stderr)")
    func checkGood() throws {
        let dir = try TemporaryDirectory()
        let file = dir.file("10-usb.toml")
        try RulesCLI.write(file, RulesCLI.usbRule)
        let result = try kevctl(["rules", "check", file])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout == "")
        #expect(result.stderr == "1 rule file, 1 rule: ok\n")
    }

    @Test("rules check: a bad term, an unknown placeholder and an unknown key, each as file:line:col: message; exit 1")
    func checkProblems() throws {
        let dir = try TemporaryDirectory()
        let file = dir.file("20-bad.toml")
        try RulesCLI.write(file, """
            [[rule]]
            name = "bad-term"
            match = ["colour=red"]
            run = ["/bin/true"]

            [[rule]]
            name = "bad-placeholder"
            match = []
            run = ["/bin/echo", "{kye}"]

            [[rule]]
            name = "bad-key"
            match = []
            run = ["/bin/true"]
            timout = "5s"

            """)
        let result = try kevctl(["rules", "check", file])
        #expect(result.status == 1)
        #expect(
            result.stdout.split(separator: "\n").map(String.init) == [
                "\(file):3:1: filter term 'colour=red': unknown field 'colour' (expected source, type, key, id, seq or data.NAME)",
                "\(file):9:1: run[1] '{kye}': unknown placeholder '{kye}' (expected {seq}, {id}, {time}, {source}, "
                    + "{type}, {key}, {rule} or {data.NAME}; {{ and }} for literal braces)",
                "\(file):15:1: unknown key 'timout' in [rule]; expected one of: name, match, run, shell, user, group, "
                    + "timeout, kill_grace, concurrency, debounce, max_wait, retries, backoff, catch_up, no_new_privs",
            ], "\(result.stdout)")
        #expect(result.stderr == "1 rule file, 0 rules: 3 problems\n")
    }

    @Test("rules check: a group-writable rule file is refused, like cron and sudo do; exit 1")
    func checkGroupWritable() throws {
        let dir = try TemporaryDirectory()
        let file = dir.file("10-usb.toml")
        try RulesCLI.write(file, RulesCLI.usbRule, mode: 0o664)
        let result = try kevctl(["rules", "check", file])
        #expect(result.status == 1)
        #expect(
            result.stdout
                == "\(file): rule file is writable by group or others (mode 0664); refusing it, like cron and sudo do\n")
        #expect(result.stderr == "1 rule file, 0 rules: 1 problem\n")
    }

    @Test("rules check without FILEs reads the config's directories (overriding, masking); a missing config is a problem")
    func checkConfigDirectories() throws {
        let dir = try TemporaryDirectory()
        let config = dir.file("kevd.toml")
        try RulesCLI.write(config, serverConfig("\n[rules]\ndirectories = [\"etc\", \"lib\"]\n"))
        for sub in ["etc", "lib"] { try makeDirectory(dir.file(sub)) }
        try RulesCLI.write(dir.file("lib/10-usb.toml"), RulesCLI.usbRule)
        // Overridden by etc's file of the same name: only the second rule exists.
        try RulesCLI.write(
            dir.file("lib/20-other.toml"), "[[rule]]\nname = \"lib-only\"\nmatch = []\nrun = [\"/bin/true\"]\n")
        try RulesCLI.write(
            dir.file("etc/20-other.toml"), "[[rule]]\nname = \"etc-wins\"\nmatch = []\nrun = [\"/bin/true\"]\n")
        try RulesCLI.write(dir.file("lib/30-off.toml"), "this is not TOML [[[")
        #expect(symlink("/dev/null", dir.file("etc/30-off.toml")) == 0)

        let result = try kevctl(["rules", "check", "--config", config])
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout == "")
        #expect(result.stderr == "2 rule files (1 masked), 2 rules: ok\n")

        let missing = dir.file("nowhere.toml")
        let none = try kevctl(["rules", "check", "--config", missing])
        #expect(none.status == 1)
        #expect(none.stdout.hasPrefix("\(missing): cannot read: "), "\(none.stdout)")
        #expect(none.stderr == "0 rule files, 0 rules: 1 problem\n")

        let usage = try kevctl(["rules", "check", "--no-such-option"])
        #expect(usage.status == 64)
    }

    // MARK: test

    @Test("rules test --event: the no-match line names the failing term; a matching rule prints match")
    func testEvent() throws {
        let dir = try TemporaryDirectory()
        let file = dir.file("10-usb.toml")
        // usb-disk on lines 1-4, a blank line, any-add from line 6.
        try RulesCLI.write(file, RulesCLI.usbRule + "\n\n" + """
            [[rule]]
            name = "any-add"
            match = ["type=add"]
            run = ["/bin/true"]

            """)
        let event = #"{"source":"udev","type":"add","key":"/devices/x","data":{"SUBSYSTEM":"block"}}"#
        let result = try kevctl(["rules", "test", "--event", event, file])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout == """
                event seq=0 source=udev type=add key=/devices/x
                  no match usb-disk: term 'data.ID_BUS=usb' failed: the event has no data.ID_BUS
                  match    any-add  (\(file):6)

                """)

        let usb = #"{"source":"udev","type":"add","key":"/devices/y","data":{"ID_BUS":"usb"}}"#
        let matched = try kevctl(["rules", "test", file, "--event", usb])
        #expect(matched.status == 0, "\(matched.stderr)")
        #expect(matched.stdout.contains("\n  match    usb-disk  (\(file):1)\n"), "\(matched.stdout)")

        // A present field that fails says what it is; --json gives the same as objects.
        let ata = #"{"source":"udev","type":"add","data":{"ID_BUS":"ata"}}"#
        let json = try kevctl(["rules", "test", file, "--json", "--event", ata])
        #expect(json.status == 0, "\(json.stderr)")
        let rows = journalLines(json.stdout)
        #expect(rows.count == 2)
        #expect(rows.first?["rule"] as? String == "usb-disk")
        #expect(rows.first?["match"] as? Bool == false)
        #expect(rows.first?["failed"] as? String == "data.ID_BUS=usb")
        #expect(rows.first?["field"] as? String == "data.ID_BUS")
        #expect(rows.first?["value"] as? String == "ata")
        #expect(rows.last?["rule"] as? String == "any-add" && rows.last?["match"] as? Bool == true)
        #expect(rows.last?["file"] as? String == file && rows.last?["line"] as? Int == 6)
        let text = try kevctl(["rules", "test", file, "--event", ata])
        #expect(text.stdout.contains("  no match usb-disk: term 'data.ID_BUS=usb' failed: data.ID_BUS is \"ata\"\n"))

        // Errors: bad JSON, a misspelled member, no event at all (usage).
        let bad = try kevctl(["rules", "test", file, "--event", #"{"source":"udev""#])
        #expect(bad.status == 1 && bad.stderr.contains("--event: not JSON"), "\(bad.stderr)")
        let typo = try kevctl(["rules", "test", file, "--event", #"{"source":"udev","type":"add","dat":{}}"#])
        #expect(typo.status == 1 && typo.stderr.contains("unknown member \"dat\""), "\(typo.stderr)")
        #expect(try kevctl(["rules", "test", file]).status == 64)
    }

    @Test("rules test --from-journal tests a journaled event (daemon stopped); an unknown seq exits 1")
    func testFromJournal() throws {
        let daemon = try DaemonProcess(config: RulesCLI.config())
        let dir = daemon.directory
        let socket = try RulesCLI.waitForSocket(daemon)
        let emitted = try kevctl(["emit", "--socket", socket, "disk.added", "--key", "/dev/sdb", "ID_BUS=usb"])
        #expect(emitted.status == 0, "\(emitted.stderr)")
        let seq = try #require(Int(emitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(daemon.stop() == 0)

        let file = dir.file("50-emit.toml")
        try RulesCLI.write(file, """
            [[rule]]
            name = "usb-emit"
            match = ["source=emit", "data.ID_BUS=usb"]
            run = ["/bin/true"]

            [[rule]]
            name = "ata-only"
            match = ["source=emit", "data.ID_BUS=ata"]
            run = ["/bin/true"]

            """)
        let result = try kevctl(["rules", "test", "--config", daemon.configPath, file, "--from-journal", "\(seq)"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout == """
                event seq=\(seq) source=emit type=disk.added key=/dev/sdb
                  match    usb-emit  (\(file):1)
                  no match ata-only: term 'data.ID_BUS=ata' failed: data.ID_BUS is "usb"

                """)

        let unknown = try kevctl(["rules", "test", "--config", daemon.configPath, file, "--from-journal", "999"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("seq 999 is not in the journal"), "\(unknown.stderr)")
    }

    // MARK: emit's cause and depth

    @Test("emit in a rule's environment: _cause and _depth; above the cascade limit refused with a kevd/error event")
    func emitCause() throws {
        let daemon = try DaemonProcess(config: RulesCLI.config())
        let socket = try RulesCLI.waitForSocket(daemon)
        let state = daemon.directory.file("state")
        let cause = "01a2080d-6fe8-7439-8963-e56c7bd2e211"

        let chained = try kevctl(
            ["emit", "--socket", socket, "chain.step", "n=1"], environment: ["KEVD_EVENT_ID": cause, "KEVD_DEPTH": "3"])
        #expect(chained.status == 0, "\(chained.stderr)")
        let seq = try #require(Int(chained.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let read = try kevctl(["journal", "--state-dir", state, "--from", "\(seq)", "--until", "\(seq)"])
        let event = try #require(journalLines(read.stdout).first)
        #expect(event.isEvent("emit", "chain.step"))
        #expect(event.data["_cause"] as? String == cause)
        #expect(event.data["_depth"] as? Int == 3)
        // After the credentials, in this order.
        #expect(read.stdout.contains(#""_pid":"#) && read.stdout.contains(#","_cause":"\#(cause)","_depth":3}"#), "\(read.stdout)")

        // No KEVD_DEPTH (or an unreadable one): one run deep. No KEVD_EVENT_ID: no cause at all.
        let shallow = try kevctl(
            ["emit", "--socket", socket, "chain.shallow"], environment: ["KEVD_EVENT_ID": cause, "KEVD_DEPTH": "x"])
        let shallowSeq = try #require(Int(shallow.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let plain = try kevctl(["emit", "--socket", socket, "chain.none"], environment: ["KEVD_DEPTH": "5"])
        let plainSeq = try #require(Int(plain.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let both = journalLines(
            try kevctl(["journal", "--state-dir", state, "--from", "\(shallowSeq)", "--until", "\(plainSeq)"]).stdout)
        #expect(both.first?.data["_depth"] as? Int == 1)
        #expect(both.last?.data["_cause"] == nil && both.last?.data["_depth"] == nil)

        // Deeper than the limit (8): refused, and said so in the journal.
        let deep = try kevctl(
            ["emit", "--socket", socket, "chain.deep"], environment: ["KEVD_EVENT_ID": cause, "KEVD_DEPTH": "9"])
        #expect(deep.status == 1)
        #expect(deep.stdout == "")
        #expect(
            deep.stderr.contains("cascade limit: this emit is 9 rule runs deep (limit 8, [rules] cascade_limit); refused"),
            "\(deep.stderr)")
        let error = try daemon.waitFor("kevd/error cascade_limit") {
            $0.isEvent("kevd", "error", key: "rules") && $0.data["reason"] as? String == "cascade_limit"
        }
        #expect(error.data["cause"] as? String == cause)
        #expect(error.data["depth"] as? Int == 9)
        #expect(error.data["uid"] as? Int == Int(getuid()))
        #expect(error.data["pid"] is NSNumber)
        #expect((error.data["message"] as? String)?.hasPrefix("cascade limit: ") == true)

        // The protocol: depth needs a cause, and the connection stays usable after a refusal.
        let client = try RawClient(socket)
        let alone = try client.request(#"{"op":"emit","type":"x","depth":2}"#)
        #expect(alone["ok"] as? Bool == false)
        #expect((alone["error"] as? String)?.contains("\"depth\" needs a \"cause\"") == true, "\(alone)")
        let refused = try client.request(#"{"op":"emit","type":"x","cause":"c","depth":100}"#)
        #expect(refused["ok"] as? Bool == false)
        let long = try client.request(#"{"op":"emit","type":"x","cause":"\#(String(repeating: "c", count: 65))"}"#)
        #expect(long["ok"] as? Bool == false)
        let fine = try client.request(#"{"op":"emit","type":"x","cause":"c","depth":0}"#)
        #expect(fine["ok"] as? Bool == true, "\(fine)")

        #expect(daemon.stop() == 0)
        let journal = journalLines(
            try kevctl(["journal", "--state-dir", state, "source=kevd", "type=error", "data.reason=cascade_limit"]).stdout)
        #expect(journal.compactMap { $0.data["depth"] as? Int } == [9, 100])
        #expect(journalLines(try kevctl(["journal", "--state-dir", state, "type=chain.deep"]).stdout).isEmpty)
    }

    // MARK: list

    // Depends on the rules engine's `rules` member in the status reply (KevdDaemon, KevdRules): written against
    // the shape agreed for it ({"active":[{"name","file","line","runs",…}],"files","masked","error"}).
    @Test("rules list shows the daemon's active rules; --json prints the status reply's rules member")
    func list() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("rules.d"))
        let file = dir.file("rules.d/10-list.toml")
        try RulesCLI.write(file, """
            [[rule]]
            name = "listed-rule"
            match = ["type=never.happens"]
            run = ["/bin/true"]

            """)
        let daemon = try DaemonProcess(config: RulesCLI.config(), in: dir)
        let socket = try RulesCLI.waitForSocket(daemon)

        let table = try kevctl(["rules", "list", "--socket", socket])
        #expect(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            == ["NAME", "RUNS", "FAILED", "DEAD", "RUNNING", "PENDING", "LAG", "FILE:LINE"], "\(table.stdout)")
        let row = lines.first { $0.hasPrefix("listed-rule ") }?.split(separator: " ").map(String.init)
        #expect(row == ["listed-rule", "0", "0", "0", "0", "0", "0", "\(file):1"], "\(table.stdout)")

        let json = try kevctl(["rules", "list", "--socket", socket, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let rules = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let active = rules["active"] as? [[String: Any]] ?? []
        #expect(active.map { $0["name"] as? String } == ["listed-rule"])
        #expect(active.first?["file"] as? String == file)
        #expect(active.first?["line"] as? Int == 1)
        #expect(rules["files"] as? [String] == [file])
        #expect(daemon.stop() == 0)
    }
}
