import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The input source on real uinput devices: Tests/VM/guest/uinput-emit.c (the test bed's emitter), built with
/// gcc, creates them. Needs /dev/uinput (the `uinput` module) and root.
///
/// A host without /dev/uinput (a container, like the one kevd is developed in) skips the suite: that is a
/// limit of the platform, not of privilege, so KEVD_REQUIRE_ROOT=1 does not turn it into a failure. The same
/// checks run on the booted test bed regardless (Tests/VM/scenarios/input.py), where the Debian kernel has the
/// module.
enum UInput {
    static var available: Bool { access("/dev/uinput", W_OK) == 0 }
    static let reason: Comment = "no writable /dev/uinput on this host (no uinput module, or not root): the test bed's input scenario covers it"

    /// Builds the emitter into `dir` and returns its path.
    static func emitter(in dir: TemporaryDirectory) throws -> String {
        var source = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { source.deleteLastPathComponent() }
        let binary = dir.file("uinput-emit")
        try run(["/usr/bin/gcc", "-O2", "-o", binary, source.path + "/Tests/VM/guest/uinput-emit.c"])
        return binary
    }

    /// Starts the emitter with `steps`; its device lives until the steps are done.
    static func start(_ binary: String, name: String, _ steps: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [name] + steps
        process.standardOutput = FileHandle.nullDevice
        try process.runAlone()
        return process
    }

    /// Waits for a file the emitter creates (its `ready=` step), with a deadline.
    static func waitForFile(_ path: String, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while access(path, F_OK) != 0 {
            try #require(Date() < deadline, "the uinput emitter did not create \(path)")
            usleep(10_000)
        }
    }
}

@Suite("input source (uinput)", .enabled(if: UInput.available, UInput.reason), .serialized)
struct InputTests {
    @Test("initial lid state, hotplug, lid toggles, unconfigured keys dropped, removal while a key is held")
    func uinputDevices() throws {
        let dir = try TemporaryDirectory()
        let emitter = try UInput.emitter(in: dir)
        let nameA = "kevd-test lid A \(getpid())", nameB = "kevd-test lid B \(getpid())"
        let a = try UInput.start(emitter, name: nameA, ["lid=1", "ready=" + dir.file("a-ready"), "wait=" + dir.file("a-done")])
        defer { _ = creat(dir.file("a-done"), 0o644); a.waitUntilExit() }
        try UInput.waitForFile(dir.file("a-ready"))
        let daemon = try DaemonProcess(
            config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[input]\nkeys = [\"power\", \"lid\"]\n", in: dir)
        defer { daemon.stop() }
        let fromDevice = { (name: String) in { (e: [String: Any]) in e.source == "input" && e.data["device"] as? String == name } }

        let initial = try daemon.waitFor("lid A's position at start") { fromDevice(nameA)($0) && $0.type == "switch" }
        #expect(initial.key == "lid" && initial.data["state"] as? Bool == true && initial.data["catchup"] as? Bool == true)

        let b = try UInput.start(emitter, name: nameB, [
            "wait=" + dir.file("b1"), "lid=1", "wait=" + dir.file("b2"), "lid=0",
            "wait=" + dir.file("b3"), "key=30:1", "key=30:0", "key=116:1", "wait=" + dir.file("b4"),
        ])
        defer { _ = creat(dir.file("b4"), 0o644); b.waitUntilExit() }
        let opened = try daemon.waitFor("lid B opened") { fromDevice(nameB)($0) && $0.type == "opened" }
        #expect(opened.data["reason"] as? String == "added")
        _ = creat(dir.file("b1"), 0o644)
        let closed = try daemon.waitFor("lid B closed") { fromDevice(nameB)($0) && $0.type == "switch" && $0.data["state"] as? Bool == true }
        #expect(closed.data["catchup"] == nil)
        _ = creat(dir.file("b2"), 0o644)
        try daemon.waitFor("lid B open") { fromDevice(nameB)($0) && $0.type == "switch" && $0.data["state"] as? Bool == false && $0.data["catchup"] == nil }
        _ = creat(dir.file("b3"), 0o644)
        try daemon.waitFor("power pressed on B") { fromDevice(nameB)($0) && $0.type == "press" && $0.key == "power" }
        _ = creat(dir.file("b4"), 0o644)
        b.waitUntilExit()
        try daemon.waitFor("power released as B went") { fromDevice(nameB)($0) && $0.type == "release" && $0.key == "power" }
        try daemon.waitFor("B closed") { fromDevice(nameB)($0) && $0.type == "closed" }
        let typed = try daemon.waitForCount("events", count: 0) { $0.data["code"] as? Int == 30 }
        #expect(typed.isEmpty, "KEY_A, not configured, became an event")
    }
}

@Suite("input and acpi sources start")
struct InputSourcesStartTests {
    /// Runs on any host: the ACPI socket resolves the kernel's `acpi_event` family and joins its group, and the
    /// input source starts with whatever /dev/input holds (nothing, in a container). `[acpi]` is only asked
    /// for where the kernel runs ACPI (/sys/firmware/acpi): elsewhere it has no `acpi_event` family, and kevd
    /// rightly reports a `kevd`/`error`.
    @Test("kevd starts with [input] and [acpi] and reports no error for either")
    func start() throws {
        let dir = try TemporaryDirectory()
        let acpi = access("/sys/firmware/acpi", F_OK) == 0 ? "[acpi]\n" : ""
        let daemon = try DaemonProcess(
            config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[input]\ninhibit = []\n" + acpi, in: dir)
        defer { daemon.stop() }
        let errors = try daemon.waitForCount("errors", count: 0) {
            $0.isEvent("kevd", "error") && ($0.key == "input" || $0.key == "acpi")
        }
        #expect(errors.isEmpty, "\(errors)")
        #expect(daemon.stop() == 0)
    }
}
