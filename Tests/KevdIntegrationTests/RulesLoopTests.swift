import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The named rule's entry in a `status` reply, if it is active.
func activeRule(_ status: [String: Any], _ name: String) -> [String: Any]? {
    let rules = status["rules"] as? [String: Any]
    return (rules?["active"] as? [[String: Any]] ?? []).first { $0["name"] as? String == name }
}

/// Emits `count` events on `client`, `batch` requests per write, and checks every reply is `ok`.
func pipelinedEmits(_ client: RawClient, count: Int, batch: Int = 1000, line: (Int) -> String) throws {
    var sent = 0
    while sent < count {
        let n = min(batch, count - sent)
        var text = ""
        for i in sent..<(sent + n) { text += line(i) + "\n" }
        client.send(text)
        for _ in 0..<n {
            let reply = try client.line(timeout: 30)
            try #require(reply["ok"] as? Bool == true, "emit reply: \(reply)")
        }
        sent += n
    }
}

@Suite("rules: the loop never waits for them", .serialized)
struct RulesLoopTests {
    /// The emit limits out of the way: the test writes a large journal through the socket.
    static let config = rulesConfig() + "\n[server]\nemit_rate_per_uid = 100000000\nemit_burst_per_uid = 100000000\n"

    @Test("a rule catching up over a large journal reads it a slice per turn: status is answered at several points of its progress")
    func catchUpInSlices() throws {
        let dir = try TemporaryDirectory()
        let rule = """
            [[rule]]
            name = "late"
            match = ["source=emit", "type=needle"]
            run = ["/bin/true"]
            """
        // 1. The rule's position is stored near the journal's start.
        try writeRuleFile(dir, "10-late.toml", rule)
        var daemon = try DaemonProcess(config: Self.config, in: dir)
        let first = try RawClient(dir.file("state/kevd.sock"))
        try #require(activeRule(try first.request(#"{"op":"status"}"#), "late") != nil)
        #expect(daemon.stop() == 0)

        // 2. Without the rule (its stored position is kept), a large journal: haystack events and three needles.
        unlink(dir.file("rules/10-late.toml"))
        daemon = try DaemonProcess(config: Self.config, in: dir)
        let socket = dir.file("state/kevd.sock")
        let writer = try RawClient(socket)
        let count = 150_000
        let needles: Set<Int> = [1_000, 100_000, count - 1]
        try pipelinedEmits(writer, count: count) { i in
            #"{"op":"emit","type":"\#(needles.contains(i) ? "needle" : "hay")","key":"k\#(i)"}"#
        }
        let poller = try RawClient(socket)

        // 3. The rule comes back (a reload): it catches up over everything from its stored position, while a
        // client asks for `status` as fast as it is answered.
        try writeRuleFile(dir, "10-late.toml", rule)
        var samples: [(catchingUp: Bool, position: Int)] = []
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let status = try poller.request(#"{"op":"status"}"#)
            guard let late = activeRule(status, "late") else { continue }
            let catchingUp = late["catching_up"] as? Bool ?? false
            samples.append((catchingUp, late["position"] as? Int ?? -1))
            if !catchingUp { break }
        }
        let during = samples.filter(\.catchingUp).map(\.position)
        let end = try #require(samples.last, "the rule never appeared in status")
        #expect(!end.catchingUp, "the catch-up did not end within 120 s: \(samples.suffix(3))")
        // Answers came between slices: at several different positions of the catch-up, never going back.
        #expect(Set(during).count >= 3, "status answered at \(Set(during).count) points of the catch-up: \(during.prefix(10))")
        #expect(during == during.sorted(), "the position went back while catching up")
        // What it read, it ran: the three needles. (Not from kevd's stdout, which drops events when the test reads
        // 150,000 of them slower than kevd writes them.)
        var succeeded = 0
        while Date() < deadline, succeeded < 3 {
            succeeded = activeRule(try poller.request(#"{"op":"status"}"#), "late")?["succeeded"] as? Int ?? 0
            if succeeded < 3 { usleep(20_000) }
        }
        #expect(succeeded == 3)
        #expect(daemon.stop() == 0)
        let journaled = try kevctl(["journal", "--state-dir", dir.file("state"), "key=late", "type=rule.succeeded"]).stdout
        let causes = journaled.split(separator: "\n").compactMap {
            ((try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any])?.string("cause_key")
        }
        #expect(Set(causes) == Set(needles.map { "k\($0)" }), "\(causes)")
    }

    @Test("a burst of short runs started off the loop: each run starts once and ends once, started before it ends; nothing is left running")
    func burstOfShortRuns() throws {
        let dir = try TemporaryDirectory()
        // /bin/true exits before its pid can reach the loop, often: its SIGCHLD then comes first.
        try writeRuleFile(dir, "10-burst.toml", """
            [[rule]]
            name = "burst"
            match = ["source=emit", "type=burst"]
            run = ["/bin/true"]
            concurrency = 8
            """)
        let daemon = try DaemonProcess(config: Self.config, in: dir)
        let socket = dir.file("state/kevd.sock")
        let count = 2_000
        try pipelinedEmits(try RawClient(socket), count: count, batch: 500) { #"{"op":"emit","type":"burst","key":"k\#($0)"}"# }
        let succeeded = try daemon.waitForCount("every run", count: count, timeout: 120) { $0.isRule("succeeded", "burst") }
        let events = daemon.received.filter { ($0["key"] as? String) == "burst" && ($0["source"] as? String) == "kevd" }
        var started: [String: Int] = [:]
        var ended: [String: Int] = [:]
        var outOfOrder: [String] = []
        // The pid each run was reported started with; its end must name the same one. /bin/true often exits
        // before its pid reaches the loop: `rule.started` must still come first, in the journal's order.
        var startedPID: [String: Int] = [:]
        var pidMismatches: [String] = []
        for event in events {
            guard let cause = event.string("cause") else { continue }
            let pid = (event.data["pid"] as? NSNumber)?.intValue ?? 0
            switch event.type {
            case "rule.started":
                started[cause, default: 0] += 1
                startedPID[cause] = pid
            case "rule.succeeded", "rule.failed":
                ended[cause, default: 0] += 1
                if started[cause] == nil { outOfOrder.append(cause) }
                if pid <= 0 || startedPID[cause] != pid { pidMismatches.append("\(cause): \(startedPID[cause] ?? 0) vs \(pid)") }
            default: break
            }
        }
        #expect(pidMismatches.isEmpty, "runs whose end names another pid than their start: \(pidMismatches.prefix(5))")
        #expect(succeeded.count == count)
        #expect(started.count == count && started.values.allSatisfy { $0 == 1 }, "runs started: \(started.count)")
        #expect(ended.count == count && ended.values.allSatisfy { $0 == 1 }, "runs ended: \(ended.count)")
        #expect(outOfOrder.isEmpty, "runs that ended before they started: \(outOfOrder.prefix(5))")
        #expect(!events.contains { $0.type == "rule.failed" || $0.type == "rule.dead" })
        let status = try RawClient(socket).request(#"{"op":"status"}"#)
        let burst = try #require(activeRule(status, "burst"))
        #expect(burst["running"] as? Int == 0 && burst["runs"] as? Int == count && burst["succeeded"] as? Int == count, "\(burst)")
        // Every child was reaped: none is left, zombie or not, under any of kevd's threads (the spawner thread is
        // their parent).
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/task")) ?? []
        #expect(!tasks.isEmpty)
        let children = tasks.map { (try? String(contentsOfFile: "/proc/\(daemon.pid)/task/\($0)/children", encoding: .utf8)) ?? "" }
            .joined().trimmingCharacters(in: .whitespaces)
        #expect(children.isEmpty, "kevd's children left: \(children)")
        #expect(daemon.stop() == 0)
    }

    @Test("a run that keeps running is reported started while it runs, with its pid, though no other run's end brings the pid to the loop")
    func startedWhileItRuns() throws {
        let dir = try TemporaryDirectory()
        let marker = "3022.\(getpid())"
        // One run and nothing else happening (with `sync = "none"`, not even the journal flusher's durable
        // reports make loop turns): the spawner's report must bring the pid to the loop, not the run's exit. Kept
        // as the guard for any change that folds the spawner's reports into other turns (one was tried and
        // measured dearer: README's Benchmarks, the rules row).
        try writeRuleFile(dir, "10-long.toml", """
            [[rule]]
            name = "long"
            match = ["source=emit", "type=long"]
            run = ["/bin/sleep", "\(marker)"]
            """)
        let daemon = try DaemonProcess(config: Self.config + "\n[journal]\nsync = \"none\"\n", in: dir)
        let socket = dir.file("state/kevd.sock")
        let emitted = Date()
        try pipelinedEmits(try RawClient(socket), count: 1) { _ in #"{"op":"emit","type":"long","key":"k"}"# }
        let started = try daemon.waitFor("rule.started", timeout: 20) { $0.isRule("started", "long") }
        let elapsed = Date().timeIntervalSince(emitted)
        let pid = try #require((started.data["pid"] as? NSNumber)?.int32Value)
        // The pid is the script's, and the script is still running: `rule.started` did not wait for its end.
        let commandLine = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        #expect(commandLine.contains(marker), "pid \(pid) is not the running script: \(commandLine)")
        #expect(!daemon.received.contains { $0.isRule("succeeded", "long") || $0.isRule("failed", "long") })
        // Generous for a loaded machine; the point is that it came long before the script's 3,022 s.
        #expect(elapsed < 10, "rule.started came \(elapsed) s after the emit")
        let status = try RawClient(socket).request(#"{"op":"status"}"#)
        #expect(activeRule(status, "long")?["running"] as? Int == 1)
        #expect(daemon.stop() == 0)
        #expect(try waitUntilNone(marker), "the script outlived kevd")
    }

    @Test("timeouts that come due before the spawner has reported the pid: each run is still ended and reported timed out")
    func timeoutBeforeThePidArrives() throws {
        let dir = try TemporaryDirectory()
        let marker = "3021.\(getpid())"
        // A timeout of 1 µs comes due before the spawner thread can report the pid, nearly always: the signal
        // must wait for the pid and then reach the run's process group.
        try writeRuleFile(dir, "10-quick.toml", """
            [[rule]]
            name = "quick"
            match = ["source=emit", "type=quick"]
            run = ["/bin/sleep", "\(marker)"]
            concurrency = 8
            timeout = "1us"
            kill_grace = "5s"
            retries = 0
            """)
        let daemon = try DaemonProcess(config: Self.config, in: dir)
        let count = 40
        try pipelinedEmits(try RawClient(dir.file("state/kevd.sock")), count: count) { #"{"op":"emit","type":"quick","key":"k\#($0)"}"# }
        let failed = try daemon.waitForCount("every run ends", count: count, timeout: 60) { $0.isRule("failed", "quick") }
        #expect(failed.allSatisfy { $0.data["timed_out"] as? Bool == true }, "\(failed.first { $0.data["timed_out"] as? Bool != true } ?? [:])")
        #expect(failed.allSatisfy { $0.string("signal") == "term" }, "\(failed.map { $0.string("signal") ?? "-" })")
        #expect(try waitUntilNone(marker), "sleeps outlived their runs")
        #expect(daemon.stop() == 0)
    }
}
