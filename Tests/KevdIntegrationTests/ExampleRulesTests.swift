import Dispatch
import Foundation
import Glibc
import KevdTestSupport
import Testing

/// The example rule files of `Rules/`, as shipped: each test copies a file unmodified into a test's rules
/// directory (with mode 0644, which a checkout's umask may not give) and runs it in a real kevd. Only the nightly
/// timer's schedule is rewritten, since a test cannot wait for 03:00.
enum ExampleRules {
    /// The repository's `Rules/` folder, found from this file's path.
    static var directory: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path + "/Rules"
    }

    static let files = [
        "10-usb-storage.toml", "20-inbox-settled.toml", "30-nightly-disk-report.toml", "40-power-button.toml",
        "41-lid.toml", "90-dead-letter-alert.toml",
    ]

    static func text(_ name: String) throws -> String {
        try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
    }

    /// Copies example `name` into `<dir>/rules`, unmodified.
    static func install(_ name: String, in dir: TemporaryDirectory) throws {
        try writeRuleFile(dir, name, try text(name))
    }

    /// The examples log through `logger`. A test run should not put fake USB disks and dead letters into the
    /// machine's syslog: as root, kevd runs in a private mount namespace where /dev/log is /dev/null, so logger
    /// fails and the scripts fall back to what the tests read anyway, their stdout. (Not as root: where a syslog
    /// daemon listens, the test runs' messages reach it, tagged kevd.)
    static var launcher: [String] {
        guard Root.isRoot, access("/dev/log", F_OK) == 0 else { return [] }
        return [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            "mount --bind /dev/null /dev/log 2>/dev/null; exec \"$@\"", "kevd-test",
        ]
    }

    static func start(_ dir: TemporaryDirectory, config: String = rulesConfig(), netns: String? = nil) throws -> DaemonProcess {
        try DaemonProcess(config: config, in: dir, netns: netns, launcher: launcher)
    }

    /// `kevctl rules test --json` of `events` against `files`: per event, each rule's result object.
    static func dryRun(_ files: [String], _ events: [String]) throws -> [[String: Any]] {
        let result = try kevctl(["rules", "test", "--json"] + events.flatMap { ["--event", $0] } + files)
        #expect(result.status == 0, "kevctl rules test: \(result.stderr)")
        #expect(result.stderr == "", "kevctl rules test: \(result.stderr)")
        return result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}

/// USB and SATA disks as udevd announces them after its rules ran (Debian 12, systemd 252): the properties of
/// `udevadm info`, trimmed to the ones that matter.
enum SampleDisks {
    static let usbPath = "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdz"
    static let sataPath = "/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdy"
    static let enclosurePath = "/devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdx"

    static let usbDisk: [(String, String)] = [
        ("ACTION", "add"), ("DEVPATH", usbPath), ("SUBSYSTEM", "block"), ("DEVNAME", "/dev/sdz"), ("DEVTYPE", "disk"),
        ("DISKSEQ", "42"), ("SEQNUM", "4242"), ("MAJOR", "65"), ("MINOR", "144"), ("ID_VENDOR", "SanDisk"),
        ("ID_VENDOR_ID", "0781"), ("ID_MODEL", "Ultra"), ("ID_MODEL_ID", "5581"), ("ID_REVISION", "1.00"),
        ("ID_SERIAL", "SanDisk_Ultra_4C530001230119105432-0:0"), ("ID_SERIAL_SHORT", "4C530001230119105432"),
        ("ID_TYPE", "disk"), ("ID_INSTANCE", "0:0"), ("ID_BUS", "usb"), ("ID_USB_INTERFACES", ":080650:"),
        ("ID_USB_DRIVER", "usb-storage"), ("ID_USB_VENDOR", "SanDisk"), ("ID_USB_MODEL", "Ultra"),
        ("ID_PATH", "pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0"), ("ID_PART_TABLE_TYPE", "dos"),
        ("DEVLINKS", "/dev/disk/by-id/usb-SanDisk_Ultra_4C530001230119105432-0:0"), ("TAGS", ":systemd:"),
    ]

    /// A SATA SSD in a USB enclosure: udevd's ata_id answered, so ID_BUS is ata and there is no ID_VENDOR;
    /// the USB side is in ID_USB_*.
    static let enclosureDisk: [(String, String)] = [
        ("ACTION", "add"), ("DEVPATH", enclosurePath), ("SUBSYSTEM", "block"), ("DEVNAME", "/dev/sdx"),
        ("DEVTYPE", "disk"), ("SEQNUM", "4250"), ("ID_BUS", "ata"), ("ID_ATA", "1"),
        ("ID_MODEL", "Samsung_SSD_870_EVO_1TB"), ("ID_SERIAL", "Samsung_SSD_870_EVO_1TB_S6PTNX0T123456A"),
        ("ID_SERIAL_SHORT", "S6PTNX0T123456A"), ("ID_USB_VENDOR", "JMicron"), ("ID_USB_MODEL", "USB_to_ATA_bridge"),
        ("ID_USB_DRIVER", "uas"),
    ]

    static let sataDisk: [(String, String)] = [
        ("ACTION", "add"), ("DEVPATH", sataPath), ("SUBSYSTEM", "block"), ("DEVNAME", "/dev/sdy"), ("DEVTYPE", "disk"),
        ("SEQNUM", "4243"), ("ID_BUS", "ata"), ("ID_ATA", "1"), ("ID_MODEL", "WDC_WD40EFRX-68N32N0"),
        ("ID_SERIAL", "WDC_WD40EFRX-68N32N0_WD-WCC7K1234567"), ("ID_SERIAL_SHORT", "WD-WCC7K1234567"),
        ("ID_PATH", "pci-0000:00:17.0-ata-1"),
    ]

    /// The event kevd would journal for `properties` (as `kevctl rules test --event` takes it).
    static func eventJSON(_ properties: [(String, String)], type: String = "add") throws -> String {
        var data: [String: Any] = [:]
        for (name, value) in properties { data[name] = value }
        let key = data["DEVPATH"] as? String ?? ""
        let object: [String: Any] = ["source": "udev", "type": type, "key": key, "data": data]
        return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }
}

/// Hands kevd a device event without the device: a message in udevd's own format ("libudev" header, then
/// KEY=value strings), sent to the udev multicast group of a private network namespace, where only the test's
/// kevd listens. libudev accepts it from root, as it would from udevd.
enum FakeUdev {
    /// Whether libudev's "udev" monitor listens at all: it turns itself off when udevd is not running and /dev
    /// is not a devtmpfs (a container), so that a container never sees its host's device events.
    static var monitorListens: Bool {
        if access("/run/udev/control", F_OK) == 0 { return true }
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").last { $0.split(separator: " ").dropFirst().first == "/dev" }?
            .split(separator: " ").dropFirst(2).first == "devtmpfs"
    }

    /// The message: struct udev_monitor_netlink_header (magic big-endian, the rest in host order; no filter
    /// hashes, so only monitors without a subsystem filter take it), then the properties.
    static func message(_ properties: [(String, String)]) -> [UInt8] {
        var body: [UInt8] = []
        for (name, value) in properties { body += Array("\(name)=\(value)".utf8) + [0] }
        var out = Array("libudev".utf8) + [0]
        out += withUnsafeBytes(of: UInt32(0xfeed_cafe).bigEndian, Array.init)
        for field in [40, 40, UInt32(body.count), 0, 0, 0, 0] as [UInt32] { out += withUnsafeBytes(of: field, Array.init) }
        return out + body
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The outcome of the sending thread, read once it has signalled.
    private final class Outcome: @unchecked Sendable {
        var failure: String? = nil
    }

    static func send(netns: String, _ properties: [(String, String)]) throws {
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let bytes = message(properties)
        // setns changes the calling thread only: a thread of its own, back in its namespace before it ends.
        let thread = Thread {
            outcome.failure = sendFromThread(netns: netns, bytes)
            done.signal()
        }
        thread.start()
        done.wait()
        if let failure = outcome.failure { throw Failure(description: failure) }
    }

    /// struct sockaddr_nl (Glibc does not export it): family, padding, port id, multicast groups.
    private static func netlinkAddress(groups: UInt32) -> [UInt8] {
        withUnsafeBytes(of: UInt16(AF_NETLINK), Array.init) + [0, 0] + withUnsafeBytes(of: UInt32(0), Array.init)
            + withUnsafeBytes(of: groups, Array.init)
    }

    private static func sendFromThread(netns: String, _ message: [UInt8]) -> String? {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "setns") else { return "no setns in libc" }
        let setns = unsafeBitCast(symbol, to: SetNS.self)
        let newNet: Int32 = 0x4000_0000  // CLONE_NEWNET
        let kobjectUevent: Int32 = 15  // NETLINK_KOBJECT_UEVENT
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        let target = open("/run/netns/\(netns)", O_RDONLY | O_CLOEXEC)
        defer {
            close(home)
            close(target)
        }
        guard home >= 0, target >= 0 else { return "cannot open the namespaces: errno \(errno)" }
        guard setns(target, newNet) == 0 else { return "setns: errno \(errno)" }
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), kobjectUevent)
        let socketErrno = errno
        guard setns(home, newNet) == 0 else { fatalError("cannot return to the test's network namespace") }
        guard fd >= 0 else { return "socket: errno \(socketErrno)" }
        defer { close(fd) }
        let local = netlinkAddress(groups: 0)
        let bound = local.withUnsafeBytes {
            bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(local.count))
        }
        guard bound == 0 else { return "bind: errno \(errno)" }
        let group = netlinkAddress(groups: 2)  // libudev's "udev" group: events after udevd's rules
        let sent = message.withUnsafeBytes { bytes in
            group.withUnsafeBytes {
                sendto(fd, bytes.baseAddress, bytes.count, 0, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                    socklen_t(group.count))
            }
        }
        return sent == message.count ? nil : "sendto: errno \(errno)"
    }
}

@Suite("example rules (Rules/)", .serialized)
struct ExampleRulesTests {
    @Test("all examples check clean together, and kevd starts on the embedded dev/kevd.toml with them without errors")
    func examplesLoad() throws {
        let dir = try TemporaryDirectory()
        for name in ExampleRules.files { try ExampleRules.install(name, in: dir) }
        let shipped = try FileManager.default.contentsOfDirectory(atPath: ExampleRules.directory)
            .filter { $0.hasSuffix(".toml") }.sorted()
        #expect(shipped == ExampleRules.files, "Rules/ holds rule files these tests do not cover")

        let check = try kevctl(["rules", "check"] + ExampleRules.files.map { dir.file("rules/" + $0) })
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout == "")
        #expect(check.stderr == "6 rule files, 8 rules: ok\n")

        // dev/kevd.toml as scripts/run uses it, with its rules directory pointed at the copies.
        var repo = URL(fileURLWithPath: ExampleRules.directory)
        repo.deleteLastPathComponent()
        let devConfig = try String(contentsOfFile: repo.path + "/dev/kevd.toml", encoding: .utf8)
        #expect(devConfig.contains("directories = [\"../Rules\"]"))
        let config = devConfig.replacingOccurrences(of: "directories = [\"../Rules\"]", with: "directories = [\"rules\"]")
        let daemon = try ExampleRules.start(dir, config: config)
        let started = try daemon.waitFor("started") { $0.isEvent("kevd", "started", key: "daemon") }
        #expect(started.int("rules") == 8)
        let errors = daemon.received.filter { $0.isEvent("kevd", "error") }
        #expect(errors.isEmpty, "errors at start: \(errors)")
        let status = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        #expect(status.status == 0, "\(status.stderr)")
        let reply = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let rules = reply?["rules"] as? [String: Any]
        let active = (rules?["active"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(active == [
            "usb-storage-log", "inbox-changed", "inbox-settled", "nightly-disk-report", "power-button", "acpi-power-button",
            "lid-switch", "dead-letter-alert",
        ])
        #expect(rules?["error"] is NSNull, "\(rules?["error"] ?? "")")
        let timers = (reply?["sources"] as? [String: Any])?["timers"] as? [String]
        #expect(timers == ["heartbeat", "nightly-disk-report"])
        #expect(daemon.stop() == 0)
    }

    // MARK: 10-usb-storage.toml

    @Test("usb-storage-log: a dry run matches USB disks (even with ID_BUS=ata) and names the failing term for others")
    func usbStorageDryRun() throws {
        let dir = try TemporaryDirectory()
        try ExampleRules.install("10-usb-storage.toml", in: dir)
        let file = dir.file("rules/10-usb-storage.toml")
        let check = try kevctl(["rules", "check", file])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")

        let partition = SampleDisks.usbDisk.map { $0.0 == "DEVTYPE" ? ($0.0, "partition") : $0 }
        let results = try ExampleRules.dryRun([file], [
            try SampleDisks.eventJSON(SampleDisks.usbDisk),
            try SampleDisks.eventJSON(SampleDisks.enclosureDisk),
            try SampleDisks.eventJSON(SampleDisks.sataDisk),
            try SampleDisks.eventJSON(partition),
            try SampleDisks.eventJSON(SampleDisks.usbDisk, type: "remove"),
        ])
        try #require(results.count == 5)
        #expect(results.allSatisfy { $0["rule"] as? String == "usb-storage-log" })
        #expect(results.map { $0["match"] as? Bool } == [true, true, false, false, false])
        #expect(results.map { $0["failed"] as? String } == [nil, nil, "key=*/usb[0-9]*/*", "data.DEVTYPE=disk", "type=add"])
        #expect(results[2]["value"] as? String == SampleDisks.sataPath)
        #expect(results[3]["value"] as? String == "partition")
    }

    @Test(
        "usb-storage-log: an injected udev add for a USB disk runs it and logs the disk; a SATA disk does not",
        .enabled(if: Root.shouldRun, Root.reason),
        .enabled(if: FakeUdev.monitorListens, "libudev's udev monitor is off here (no udevd, /dev not devtmpfs)"))
    func usbStorageThroughDaemon() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        try ExampleRules.install("10-usb-storage.toml", in: dir)
        let daemon = try ExampleRules.start(dir, config: rulesConfig("\n[udev]\nsource = \"udev\"\n"), netns: netns.name)
        try daemon.waitFor("udev source") { $0.isEvent("kevd", "started") && $0.data["udev"] as? String == "udev" }

        try FakeUdev.send(netns: netns.name, SampleDisks.sataDisk)
        let sata = try daemon.waitFor("the SATA disk's event") { $0.isEvent("udev", "add", key: SampleDisks.sataPath) }
        #expect(sata.data["ID_BUS"] as? String == "ata")
        try FakeUdev.send(netns: netns.name, SampleDisks.usbDisk)
        let usb = try daemon.waitFor("the USB disk's event") { $0.isEvent("udev", "add", key: SampleDisks.usbPath) }
        #expect(usb.data["devnode"] as? String == "/dev/sdz")

        let run = try daemon.waitFor("the rule's run") { $0.isRule("succeeded", "usb-storage-log") }
        #expect(run.string("cause") == usb["id"] as? String)
        #expect(run.string("stdout") == "new USB disk /dev/sdz: SanDisk Ultra, serial 4C530001230119105432\n")

        try FakeUdev.send(netns: netns.name, SampleDisks.enclosureDisk)
        let enclosure = try daemon.waitFor("the enclosure's run") {
            $0.isRule("succeeded", "usb-storage-log") && $0.string("cause_key") == SampleDisks.enclosurePath
        }
        #expect(enclosure.string("stdout")
            == "new USB disk /dev/sdx: Samsung_SSD_870_EVO_1TB, serial S6PTNX0T123456A, in JMicron USB_to_ATA_bridge\n")
        // Events run in order, one at a time: had the SATA disk matched, its run would have come first.
        #expect(daemon.received.filter { $0.isRule("started", "usb-storage-log") }.count == 2)
        #expect(!daemon.received.contains { $0.isRule("started", "usb-storage-log") && $0.string("cause_key") == SampleDisks.sataPath })
        #expect(daemon.stop() == 0)
    }

    // MARK: 20-inbox-settled.toml

    @Test("inbox-settled: files written together give one run once the folder is quiet; a later delete gives another")
    func inboxSettles() throws {
        let dir = try TemporaryDirectory()
        try ExampleRules.install("20-inbox-settled.toml", in: dir)
        // The watch is "../dev/inbox" from the rule file's folder: <dir>/dev/inbox.
        try makeDirectory(dir.file("dev"))
        try makeDirectory(dir.file("dev/inbox"))
        let inbox = dir.file("dev/inbox")
        let daemon = try ExampleRules.start(dir)
        try makeDirectory(inbox + "/sub")
        for name in ["a", "b", "sub/c"] { try writeFile(inbox + "/" + name, "12345") }
        try writeFile(inbox + "/.a.swp", "excluded")

        let first = try daemon.waitFor("the settled run", timeout: 20) { $0.isRule("succeeded", "inbox-settled") }
        #expect(first.string("stdout") == "\(inbox) settled: 4 files, 23 bytes\n")
        let funnel = daemon.received.filter { $0.isRule("succeeded", "inbox-changed") }
        // One funnel run per changed path (the new directory too), whatever the race between its creation and
        // its watch; the excluded swap file is not among them.
        #expect(Set(funnel.compactMap { $0.string("cause_key") }) == [inbox + "/sub", inbox + "/a", inbox + "/b", inbox + "/sub/c"])
        #expect(funnel.count == 4)
        #expect(funnel.allSatisfy { $0.string("stdout") == inbox })
        #expect(first.int("debounced_events") == funnel.count)
        #expect(daemon.received.filter { $0.isRule("started", "inbox-settled") }.count == 1)

        let before = daemon.received.count
        unlink(inbox + "/a")
        let second = try daemon.waitFor("the run after a delete", from: before, timeout: 20) {
            $0.isRule("succeeded", "inbox-settled")
        }
        #expect(second.string("stdout") == "\(inbox) settled: 3 files, 18 bytes\n")
        #expect(second.string("cause_key") == "inbox-changed")
        #expect(daemon.received.filter { $0.isRule("started", "inbox-settled") }.count == 2)

        // A file written slowly (a write every 400 ms for 3.2 s, longer than both debounces together) is not
        // counted until it has been quiet: one run, after the close, that sees it whole.
        let writing = daemon.received.count
        let fd = open(inbox + "/slow", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        try #require(fd >= 0)
        for _ in 0..<8 {
            _ = write(fd, "0123456789", 10)
            usleep(400_000)
        }
        let closedAt = daemon.received.count
        close(fd)
        #expect(!daemon.received[writing...].contains { $0.isRule("started", "inbox-settled") }, "ran mid-write")
        let third = try daemon.waitFor("the run after the slow write", from: closedAt, timeout: 20) {
            $0.isRule("succeeded", "inbox-settled")
        }
        #expect(third.string("stdout") == "\(inbox) settled: 4 files, 98 bytes\n")
        #expect(daemon.received.filter { $0.isRule("started", "inbox-settled") }.count == 3)
        #expect(daemon.stop() == 0)
    }

    // MARK: 30-nightly-disk-report.toml

    @Test("nightly-disk-report: its cron timer loads; fired every second instead, it reports df and warns past the limit")
    func nightlyDiskReport() throws {
        let dir = try TemporaryDirectory()
        let shipped = try ExampleRules.text("30-nightly-disk-report.toml")
        try #require(shipped.components(separatedBy: "cron = \"0 3 * * *\"").count == 2)
        try writeRuleFile(dir, "30-nightly-disk-report.toml", shipped)
        let check = try kevctl(["rules", "check", dir.file("rules/30-nightly-disk-report.toml")])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")

        let everySecond = shipped.replacingOccurrences(of: "cron = \"0 3 * * *\"", with: "every = \"1s\"")
        try writeRuleFile(dir, "30-nightly-disk-report.toml", everySecond)
        let daemon = try ExampleRules.start(dir)
        let run = try daemon.waitFor("a report", timeout: 15) { $0.isRule("succeeded", "nightly-disk-report") }
        let lines = (run.string("stdout") ?? "").split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("Filesystem") == true, "\(lines)")
        let filesystems = lines.dropFirst().filter { !$0.hasPrefix("WARNING: ") && !$0.hasPrefix("disk report: ") }
        #expect(!filesystems.isEmpty)
        #expect(lines.last == "disk report: every local filesystem is below 90% full" || lines.last?.hasPrefix("WARNING: ") == true)

        // The threshold is the script's argument: at 0 every filesystem is reported as full.
        let anyFull = everySecond.replacingOccurrences(of: "''', \"90\"]", with: "''', \"0\"]")
        try #require(anyFull != everySecond)
        let before = daemon.received.count
        try writeRuleFile(dir, "30-nightly-disk-report.toml", anyFull)
        let reloaded = try daemon.waitFor("the reload", from: before) { $0.isEvent("kevd", "reloaded", key: "rules") }
        let after = daemon.received.firstIndex { ($0.seq ?? 0) == reloaded.seq } ?? before
        let warned = try daemon.waitFor("a report with warnings", from: after, timeout: 15) {
            $0.isRule("succeeded", "nightly-disk-report") && ($0.string("stdout") ?? "").contains("WARNING: ")
        }
        let warnings = (warned.string("stdout") ?? "").split(separator: "\n").filter { $0.hasPrefix("WARNING: ") }
        #expect(warnings.count == filesystems.count, "\(warned.string("stdout") ?? "")")
        #expect(warnings.allSatisfy { $0.hasSuffix("% full") })
        #expect(daemon.stop() == 0)
    }

    // MARK: 90-dead-letter-alert.toml

    @Test("dead-letter-alert: a rule that gives up is reported with its event and error; the alert skips its own")
    func deadLetterAlert() throws {
        let dir = try TemporaryDirectory()
        try ExampleRules.install("90-dead-letter-alert.toml", in: dir)
        try writeRuleFile(dir, "10-always-fails.toml", """
            [[rule]]
            name = "always-fails"
            match = ["source=emit", "type=example.fail"]
            run = ["/bin/false"]
            retries = 1
            backoff = "100ms"
            """)
        let daemon = try ExampleRules.start(dir)
        let seq = try emit(daemon, "example.fail", key: "job-7")
        let alert = try daemon.waitFor("the alert", timeout: 15) { $0.isRule("succeeded", "dead-letter-alert") }
        let dead = try #require(daemon.received.first { $0.isRule("dead", "always-fails") })
        #expect(alert.string("cause") == dead["id"] as? String)
        #expect(alert.string("stdout") == "rule always-fails gave up on event \(seq) (key job-7) after 2 attempt(s): exit status 1\n")
        #expect(alert.string("stderr") == "" || alert.string("stderr") == "logger failed; the alert is only in kevd's journal\n")
        #expect(daemon.received.filter { $0.isRule("started", "dead-letter-alert") }.count == 1)
        #expect(daemon.stop() == 0)

        // Its own dead letters are left alone: alerting that alerting failed would fail the same way.
        let results = try ExampleRules.dryRun([dir.file("rules/90-dead-letter-alert.toml")], [
            #"{"source":"kevd","type":"rule.dead","key":"dead-letter-alert","data":{"rule":"dead-letter-alert"}}"#,
            #"{"source":"kevd","type":"rule.failed","key":"always-fails","data":{"rule":"always-fails"}}"#,
        ])
        #expect(results.map { $0["failed"] as? String } == ["data.rule!=dead-letter-alert", "type=rule.dead"])
    }
}
