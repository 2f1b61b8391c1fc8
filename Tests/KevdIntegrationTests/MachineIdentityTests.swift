import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Which machine, which boot: `started` and `status` name them, and `kevctl journal --boot` selects one boot's
/// events. A second boot is made for real where kevd reads it: kevd runs in a private mount namespace with
/// another boot id bind-mounted over /proc/sys/kernel/random/boot_id (the launcher execs kevd, so its pid stays).
@Suite("machine and boot ids", .serialized)
struct MachineIdentityTests {
    static let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n"

    static func file(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What kevd reports for a missing file: "" (a minimal container has no /etc/machine-id).
    static func fileOrEmpty(_ path: String) -> String {
        (try? file(path)) ?? ""
    }

    @Test("started and status carry /etc/machine-id and the kernel's boot id")
    func startedAndStatus() throws {
        let machineID = Self.fileOrEmpty("/etc/machine-id")
        let bootID = try Self.file("/proc/sys/kernel/random/boot_id")
        let daemon = try DaemonProcess(config: Self.config)
        defer { daemon.stop() }
        let started = try daemon.waitFor("started") { $0.isEvent("kevd", "started") }
        #expect(started.data["machine_id"] as? String == machineID)
        #expect(started.data["boot_id"] as? String == bootID)
        let status = try kevctl(["status", "--socket", daemon.directory.file("state/kevd.sock"), "--json"])
        let reply = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
        #expect(reply["machine_id"] as? String == machineID)
        #expect(reply["boot_id"] as? String == bootID)
    }

    @Test(
        "kevctl journal --boot selects one boot's runs: journalctl -b's values, a boot id with or without dashes",
        .enabled(
            if: Root.shouldRun,
            "needs root (a mount namespace with another boot id bound over /proc/sys/kernel/random/boot_id); KEVD_REQUIRE_ROOT=1 makes this a failure"
        ))
    func journalBoot() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        // Without catch-up: these runs are short, and a start-up diff cut short by the stop may report a file
        // again (marked catchup), which is not what this test counts.
        let config = Self.config + "[[watch]]\npath = \"\(dir.file("w"))\"\nevents = [\"create\"]\ncatchup = false\n"
        // Boot "one": a made-up boot id, mounted over the kernel's for kevd's mount namespace only.
        let oldBoot = "0123abcd-0000-4000-8000-00000000b001"
        try (oldBoot + "\n").write(toFile: dir.file("old_boot_id"), atomically: true, encoding: .utf8)
        let fakeBoot = [
            "/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
            "mount --bind \"$KEVD_TEST_BOOT_FILE\" /proc/sys/kernel/random/boot_id && exec \"$0\" \"$@\"",
        ]
        let first = try DaemonProcess(config: config, in: dir, launcher: fakeBoot, environment: ["KEVD_TEST_BOOT_FILE": dir.file("old_boot_id")])
        let started = try first.waitFor("started in the old boot") { $0.isEvent("kevd", "started") }
        #expect(started.data["boot_id"] as? String == oldBoot)
        try Data().write(to: URL(fileURLWithPath: dir.file("w/old-boot-file")))
        try first.waitFor("the old boot's create") { $0.isEvent("inotify", "create", key: dir.file("w/old-boot-file")) }
        #expect(first.stop() == 0)
        // Two runs in this (the real) boot: one boot holds several runs.
        let bootID = try Self.file("/proc/sys/kernel/random/boot_id")
        for run in 1...2 {
            let daemon = try DaemonProcess(config: config, in: dir)
            try Data().write(to: URL(fileURLWithPath: dir.file("w/this-boot-\(run)")))
            try daemon.waitFor("this boot's create \(run)") { $0.isEvent("inotify", "create", key: dir.file("w/this-boot-\(run)")) }
            #expect(daemon.stop() == 0)
        }

        func lines(_ arguments: [String]) throws -> [[String: Any]] {
            let result = try kevctl(["journal", "--state-dir", dir.file("state")] + arguments)
            #expect(result.status == 0, "\(result.stderr)")
            return result.stdout.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }
        let all = try lines([])
        let current = try lines(["--boot"])
        let previous = try lines(["--boot", "-1"])
        let byID = try lines(["--boot", oldBoot.replacingOccurrences(of: "-", with: "")])
        let short = try lines(["-b", "-1"])
        let bare = try lines(["source=inotify", "-b"])
        let zero = try lines(["--boot", "0", "source=inotify"])
        func created(_ events: [[String: Any]]) -> [String] {
            events.filter { $0.source == "inotify" }.compactMap { $0.key }.map { ($0 as NSString).lastPathComponent }
        }
        #expect(created(current) == ["this-boot-1", "this-boot-2"])
        #expect(created(previous) == ["old-boot-file"])
        #expect(created(byID) == ["old-boot-file"])
        #expect(created(short) == ["old-boot-file"])
        #expect(created(bare) == ["this-boot-1", "this-boot-2"] && bare.count == 2)
        #expect(created(zero) == ["this-boot-1", "this-boot-2"] && zero.count == 2)
        // Each boot's started events name it; the two boots together are the whole journal.
        #expect(current.filter { $0.isEvent("kevd", "started") }.allSatisfy { $0.data["boot_id"] as? String == bootID })
        #expect(current.filter { $0.isEvent("kevd", "started") }.count == 2)
        #expect(previous.count + current.count == all.count)
        // A boot the journal does not hold is an error that names the boots it does.
        let missing = try kevctl(["journal", "--state-dir", dir.file("state"), "--boot", "-2"])
        #expect(missing.status == 1 && missing.stderr.contains("2 boots"), "\(missing.stderr)")
    }
}
