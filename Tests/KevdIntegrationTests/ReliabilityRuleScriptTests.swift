import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Rule scripts that misbehave, each fired by an emitted event while a separate subscriber receives a stream of
/// probe emits (`LatencyProbe`): kevd must end or contain the script and keep delivering to everyone else.
@Suite("Reliability: misbehaving rule scripts", .serialized)
struct ReliabilityRuleScriptTests {
    /// Starts kevd with one rule `name` (matching emits of type `name`) running `script`, fires it, and runs the
    /// probe until the run's last event (`until`) arrives.
    private func misbehave(
        _ name: String, script body: String, ruleExtra: String = "", config: String = "",
        until: (DaemonProcess, TemporaryDirectory) throws -> [String: Any]
    ) throws -> (DaemonProcess, [String: Any]) {
        let dir = try TemporaryDirectory()
        let script = try writeScript(dir, name + ".sh", body)
        try writeRuleFile(dir, "10-\(name).toml", """
            [[rule]]
            name = "\(name)"
            match = ["source=emit", "type=\(name)"]
            run = ["\(script)"]
            \(ruleExtra)
            """)
        let daemon = try DaemonProcess(config: rulesConfig(config), in: dir)
        let probe = try LatencyProbe(socket: dir.file("state/kevd.sock"), name: "rule_script_\(name)")
        usleep(200_000)  // A few probes before, for a baseline in the same figures.
        try emit(daemon, name, key: "x")
        let last: [String: Any]
        do {
            last = try until(daemon, dir)
        } catch {
            probe.finish()
            throw error
        }
        probe.finish()
        return (daemon, last)
    }

    @Test("a script that never exits and ignores SIGTERM is killed with its children after timeout + kill grace")
    func neverExits() throws {
        let marker = "3011.\(getpid())"
        let (daemon, failed) = try misbehave(
            "hang",
            script: """
                sleep \(marker) &
                (trap '' TERM; sleep \(marker)1) &
                trap '' TERM
                while :; do sleep 0.1; done
                """,
            ruleExtra: "timeout = \"1s\"\nkill_grace = \"1s\"")
        { daemon, _ in try daemon.waitFor("the hang run ends", timeout: 20) { $0.isRule("failed", "hang") } }
        #expect(failed.data["timed_out"] as? Bool == true)
        #expect(failed.string("signal") == "kill", "\(failed)")
        #expect(try waitUntilNone(marker), "children of the killed script outlived it: \(ProcessFigures.processes(matching: "sleep " + marker))")
        daemon.stop()
    }

    @Test("a child that ignores SIGTERM does not outlive a timed-out run whose script exited on SIGTERM")
    func childIgnoresTerm() throws {
        let marker = "3013.\(getpid())"
        let (daemon, failed) = try misbehave(
            "orphan",
            script: "(trap '' TERM; sleep \(marker)) &\nwait\n",
            ruleExtra: "timeout = \"1s\"\nkill_grace = \"30s\"")
        { daemon, _ in try daemon.waitFor("the orphan run ends", timeout: 20) { $0.isRule("failed", "orphan") } }
        #expect(failed.data["timed_out"] as? Bool == true)
        #expect(try waitUntilNone(marker), "a child that ignored SIGTERM outlived its timed-out run")
        daemon.stop()
    }

    @Test("a script that writes megabytes to stdout: kevd keeps only a tail and never blocks")
    func floodsStdout() throws {
        let megabytes = Reliability.size(short: 20, full: 200)
        let (daemon, succeeded) = try misbehave(
            "flood",
            script: "head -c \(megabytes * 1_000_000) /dev/zero | tr '\\0' x\necho\necho END\n",
            ruleExtra: "timeout = \"120s\"", config: "output_tail = \"4KiB\"\n")
        { daemon, _ in try daemon.waitFor("the flood run ends", timeout: 120) { $0.isRule("succeeded", "flood") || $0.isRule("failed", "flood") } }
        #expect(succeeded.isRule("succeeded", "flood"), "\(succeeded)")
        let stdout = succeeded.string("stdout") ?? ""
        #expect(stdout.utf8.count <= 4096, "kept \(stdout.utf8.count) bytes of stdout")
        #expect(stdout.hasSuffix("x\nEND\n"), "the tail: \(stdout.suffix(40).debugDescription)")
        Reliability.report("rule_script_flood", ["stdout_mb": megabytes, "duration_ms": succeeded.data["duration_ms"] ?? "-"])
        daemon.stop()
    }

    @Test("a script that forks a thousand children: kevd stays responsive and none outlive the timeout")
    func forksThousand() throws {
        let children = Reliability.size(short: 1000, full: 1000)
        let marker = "3012.\(getpid())"
        let (daemon, failed) = try misbehave(
            "forks",
            script: "i=0\nwhile [ $i -lt \(children) ]; do sleep \(marker) & i=$((i+1)); done\necho forked\nwait\n",
            ruleExtra: "timeout = \"5s\"\nkill_grace = \"1s\"")
        { daemon, _ in try daemon.waitFor("the forks run ends", timeout: 60) { $0.isRule("failed", "forks") } }
        #expect(failed.data["timed_out"] as? Bool == true, "\(failed)")
        #expect(try waitUntilNone(marker, timeout: 20), "\(ProcessFigures.processes(matching: "sleep " + marker).count) children outlived the run")
        daemon.stop()
    }

    @Test("a script that closes its stdin (and stdout, stderr) still ends as a normal run")
    func closesStdin() throws {
        let (daemon, succeeded) = try misbehave(
            "closer", script: "exec 0<&-\nexec 1>&-\nexec 2>&-\nsleep 0.2\nexit 0\n")
        { daemon, _ in try daemon.waitFor("the closer run ends", timeout: 20) { $0.isRule("succeeded", "closer") || $0.isRule("failed", "closer") } }
        #expect(succeeded.isRule("succeeded", "closer"), "\(succeeded)")
        daemon.stop()
    }
}

/// Waits until no process has `sleep <marker>` in its command line (zombies count as gone).
func waitUntilNone(_ marker: String, timeout: Double = 10) throws -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let alive = ProcessFigures.processes(matching: "sleep " + marker).filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            return stat[stat.index(close, offsetBy: 2)] != "Z"
        }
        if alive.isEmpty { return true }
        usleep(20_000)
    }
    return false
}
