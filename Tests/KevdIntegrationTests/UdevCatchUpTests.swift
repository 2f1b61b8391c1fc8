import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `[udev] catchup = true` for the `udev` (udevd) source, on the host: libudev's enumerate reads /sys and
/// udevd's database (/run/udev/data), and only devices udevd has finished with count. udevd does not run here,
/// so the test writes the database entries as udevd writes them (`n<ifindex>`: `I:` its initialization time,
/// `E:` its properties) into a /run of kevd's own (a private mount namespace, so the host's /run is untouched),
/// for real veth pairs in a private network namespace. A veth without an entry is one udevd is still
/// processing. The test bed's udev scenario does the same with a real udevd and a USB disk.
@Suite(
    "device catch-up (udev source)",
    .enabled(
        if: Root.shouldRun,
        "needs root (a network namespace, and a mount namespace for a /run of kevd's own); KEVD_REQUIRE_ROOT=1 makes this a failure"),
    .serialized)
struct UdevCatchUpTests {
    static let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[udev]\nsource = \"udev\"\nsubsystems = [\"net\"]\n"

    /// kevd in a mount namespace of its own whose /run is the test's `run` folder (with the host's /run/netns,
    /// which `ip netns exec` needs, bound into it).
    static let privateRun = [
        "/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
        "mkdir -p \"$KEVD_TEST_RUN/netns\" && mount --rbind /run/netns \"$KEVD_TEST_RUN/netns\" && mount --rbind \"$KEVD_TEST_RUN\" /run && exec \"$0\" \"$@\"",
    ]

    static func start(_ dir: TemporaryDirectory, _ netns: NetworkNamespace) throws -> DaemonProcess {
        try DaemonProcess(
            config: config, in: dir, netns: netns.name, launcher: privateRun, environment: ["KEVD_TEST_RUN": dir.file("run")])
    }

    /// Writes udevd's database entry for the network interface `name` of `netns`, as udevd does once it has
    /// processed the device.
    static func initialize(_ name: String, in netns: NetworkNamespace, _ dir: TemporaryDirectory) throws {
        let ifindex = try run(["/usr/sbin/ip", "netns", "exec", netns.name, "cat", "/sys/class/net/\(name)/ifindex"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let entry = "I:\(UInt64(ifindex)! * 1000 + 42)\nE:ID_NET_DRIVER=veth\nE:ID_KEVD_TEST=\(name)\nG:kevdtest\nQ:kevdtest\nV:1\n"
        try entry.write(toFile: dir.file("run/udev/data/n\(ifindex)"), atomically: true, encoding: .utf8)
    }

    static func caughtUp(_ dir: TemporaryDirectory) throws -> Int {
        try DeviceCatchUpTests.caughtUp(dir)
    }

    @Test("devices udevd has initialized: reported with its properties at first start, then what came and went while kevd was down")
    func initializedDevices() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("run"))
        try makeDirectory(dir.file("run/udev"))
        try makeDirectory(dir.file("run/udev/data"))
        try netns.exec(["/usr/sbin/ip", "link", "add", "kua0", "type", "veth", "peer", "name", "kua1"])
        try Self.initialize("kua0", in: netns, dir)
        try Self.initialize("kua1", in: netns, dir)

        // First start, no history: the pair udevd knows (lo has no database entry: not initialized, not reported).
        let first = try Self.start(dir, netns)
        #expect(try Self.caughtUp(dir) == 2)
        let coldplug = try DeviceCatchUpTests.caughtUpEvents(first, count: 2)
        #expect(coldplug.map { "\($0.type ?? "") \($0.key ?? "")" } == ["add /devices/virtual/net/kua0", "add /devices/virtual/net/kua1"])
        let kua0 = try #require(coldplug.first)
        // udevd's properties, beside the kernel's: what a live udevd event for the interface carries.
        #expect(kua0.data["ID_NET_DRIVER"] as? String == "veth" && kua0.data["ID_KEVD_TEST"] as? String == "kua0")
        #expect(kua0.data["USEC_INITIALIZED"] != nil && (kua0.data["TAGS"] as? String)?.contains(":kevdtest:") == true)
        #expect(kua0.data["ACTION"] as? String == "add" && kua0.data["INTERFACE"] as? String == "kua0")
        #expect(kua0.data["SEQNUM"] == nil && kua0.data["seqnum"] as? Int == 0)
        first.signal(SIGKILL)
        first.process.waitUntilExit()

        // While kevd is down: the first pair goes (udevd removes its entries), a new pair comes, of which udevd
        // has finished with one.
        try netns.exec(["/usr/sbin/ip", "link", "del", "kua0"])
        for entry in try FileManager.default.contentsOfDirectory(atPath: dir.file("run/udev/data")) {
            try FileManager.default.removeItem(atPath: dir.file("run/udev/data/" + entry))
        }
        try netns.exec(["/usr/sbin/ip", "link", "add", "kub0", "type", "veth", "peer", "name", "kub1"])
        try Self.initialize("kub0", in: netns, dir)
        let second = try Self.start(dir, netns)
        #expect(try Self.caughtUp(dir) == 3)
        let changes = try DeviceCatchUpTests.caughtUpEvents(second, count: 3)
        #expect(changes.map { "\($0.type ?? "") \($0.key ?? "")" } == [
            "remove /devices/virtual/net/kua0", "remove /devices/virtual/net/kua1", "add /devices/virtual/net/kub0",
        ])
        // A remove carries the properties the device was last known by (its udevd properties included).
        #expect(changes[0].data["ID_KEVD_TEST"] as? String == "kua0" && changes[0].data["ACTION"] as? String == "remove")
        #expect(second.stop() == 0)

        // Nothing changed (kub1 is still not initialized): nothing is caught up.
        let third = try Self.start(dir, netns)
        #expect(try Self.caughtUp(dir) == 0)
        #expect(DeviceCatchUpTests.caughtUpEvents(third).isEmpty)
        #expect(third.stop() == 0)
    }
}
