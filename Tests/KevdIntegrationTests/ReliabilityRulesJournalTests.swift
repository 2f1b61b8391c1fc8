import Foundation
import Glibc
import KevdTestSupport
import Testing

@Suite("Reliability: rules while the journal cannot write", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct ReliabilityRulesJournalTests {
    @Test("no rule runs for an event the journal has not written: runs wait while the disk is full, and run once it has room")
    func runsWaitForTheJournal() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("state"))
        try makeDirectory(dir.file("w"))
        let runs = dir.file("runs.log")
        // Each run checks, as it runs, whether its own event is in the journal's files (the script runs in kevd's
        // mount namespace, where the state directory is the small tmpfs). The log is outside the tmpfs. That check
        // is what a user would look at, but a run started too early may still reach its grep after the disk has
        // room again: the status and `rule.started` checks below are the ones that catch an early start every
        // time (with the engine ignoring the journal, the status check fails).
        let script = try writeScript(dir, "check.sh", """
            if grep -qrF "$KEVD_EVENT_ID" '\(dir.file("state/journal"))'; then found=journaled; else found=MISSING; fi
            printf '%s %s\\n' "${KEVD_KEY##*/}" "$found" >> '\(runs)'
            """)
        try writeRuleFile(dir, "10-check.toml", """
            [[rule]]
            name = "check"
            match = ["source=inotify", "type=create", "key=*/trigger-*"]
            run = ["\(script)"]
            """)
        let config = diskFullConfig(events: ["create"])
        // As in ReliabilityDiskFullTests: the tmpfs is mounted in a private mount namespace kevd runs in.
        let launcher = tmpfsLauncher(mountingOn: dir.file("state"), bytes: 16 << 20)
        let daemon = try DaemonProcess(config: config, in: dir, launcher: launcher)
        defer { _ = daemon.stop() }
        let state = "/proc/\(daemon.pid)/root" + dir.file("state")
        let client = try RawClient(dir.file("kevd.sock"))

        // The check itself works: a run while the disk has room finds its event.
        try writeFile(dir.file("w/trigger-before"))
        try daemon.waitFor("the first run") { $0.isRule("succeeded", "check") }
        #expect(try lines(runs) == ["trigger-before journaled"])

        // The disk fills; more events than a page's remainder make the journal fail.
        let filler = state + "/filler"
        try fillToTheLastByte(filler)
        let marker = daemon.received.count
        for i in 0..<50 { try writeFile(dir.file("w/fill-\(i)")) }
        try daemon.waitFor("kevd/error for the journal", from: marker, timeout: 20) { $0.isEvent("kevd", "error", key: "journal") }

        // Matching events while the journal cannot write them: published (the stdout sink shows them, the rules
        // engine took them in the same turn), held back from the rule.
        let triggers = 10
        for i in 0..<triggers { try writeFile(dir.file("w/trigger-\(i)")) }
        try daemon.waitForCount("the triggers' events", count: triggers) {
            $0.isEvent("inotify", "create") && ($0.key ?? "").contains("/trigger-") && !($0.key ?? "").hasSuffix("-before")
        }
        // A status answered after the turns that took the triggers in (and ended with the rules' dispatch): the
        // rule holds them all, nothing started.
        let status = try client.request(#"{"op":"status"}"#)
        let check = try #require(activeRule(status, "check"), "\(status)")
        #expect(check["pending"] as? Int == triggers && check["running"] as? Int == 0 && check["runs"] as? Int == 1, "\(check)")
        #expect((status["journal"] as? [String: Any])?["error"] is String, "the journal was expected to be failing: \(status)")
        #expect(!daemon.received[marker...].contains { $0.isRule("started", "check") }, "a run started while the journal could not write")

        // Room again: the held runs run, each for an event the journal now has.
        unlink(filler)
        try daemon.waitFor("kevd/resumed", from: marker, timeout: 20) { $0.isEvent("kevd", "resumed", key: "journal") }
        let ran = try daemon.waitForCount("the held runs", count: triggers + 1, timeout: 60) { $0.isRule("succeeded", "check") }
        #expect(ran.count == triggers + 1)
        let logged = try lines(runs)
        #expect(logged.count == triggers + 1, "\(logged)")
        #expect(logged.allSatisfy { $0.hasSuffix(" journaled") }, "runs for events missing from the journal: \(logged.filter { !$0.hasSuffix(" journaled") })")
        #expect(Set(logged) == Set(["trigger-before journaled"] + (0..<triggers).map { "trigger-\($0) journaled" }))
    }

    private func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// Writes `path` until its file system is full, to the last byte.
    private func fillToTheLastByte(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x2E, count: 64 * 1024)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        while write(fd, chunk, 1) == 1 {}
    }
}
