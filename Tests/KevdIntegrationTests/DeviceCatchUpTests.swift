import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `[udev] catchup = true` for the `kernel` source: devices that appeared or vanished while kevd was down, on
/// real kernel devices: veth pairs in a private network namespace (where /sys, as `ip netns exec` mounts it,
/// shows that namespace's network devices), made before the first start and while kevd is stopped, deleted
/// while it is stopped.
@Suite("device catch-up (kernel source)", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct DeviceCatchUpTests {
    static let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[udev]\nsource = \"kernel\"\nsubsystems = [\"net\"]\n"

    /// `sources.udev_catchup` of the status reply, once the catch-up is done: how many events it published.
    static func caughtUp(_ dir: TemporaryDirectory) throws -> Int {
        try waitUntil("the device catch-up to be done") { () -> Int? in
            let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
            guard let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
                let sources = reply["sources"] as? [String: Any], let fold = sources["udev_catchup"] as? [String: Any],
                fold["done"] as? Bool == true
            else { return nil }
            return fold["published"] as? Int
        }
    }

    static func caughtUpEvents(_ daemon: DaemonProcess) -> [[String: Any]] {
        daemon.received.filter { $0.source == "udev" && $0.data["catchup"] as? Bool == true }
    }

    /// The `count` catch-up events `status` said were published, once kevd's stdout brought them here (status
    /// answers on the loop; the lines reach the test's reader thread when it is scheduled).
    static func caughtUpEvents(_ daemon: DaemonProcess, count: Int) throws -> [[String: Any]] {
        try daemon.waitForCount("the catch-up events", count: count) { $0.source == "udev" && $0.data["catchup"] as? Bool == true }
    }

    @Test("first start reports every present device once; then what was added and deleted while kevd was down, and nothing for what stayed")
    func vethWhileStopped() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        try netns.exec(["/usr/sbin/ip", "link", "add", "kva0", "type", "veth", "peer", "name", "kva1"])

        // First start, no history: every present net device (lo and the pair) once, as coldplug does.
        let first = try DaemonProcess(config: Self.config, in: dir, netns: netns.name)
        #expect(try Self.caughtUp(dir) == 3)
        let coldplug = try Self.caughtUpEvents(first, count: 3)
        #expect(coldplug.map { $0.type } == ["add", "add", "add"])
        #expect(Set(coldplug.compactMap { $0.key }) == ["/devices/virtual/net/lo", "/devices/virtual/net/kva0", "/devices/virtual/net/kva1"])
        // The properties a live add carries (less SEQNUM: the kernel numbers only the uevents it sends).
        let kva0 = try #require(coldplug.first { $0.key == "/devices/virtual/net/kva0" })
        #expect(kva0.data["subsystem"] as? String == "net" && kva0.data["sysname"] as? String == "kva0")
        #expect(kva0.data["ACTION"] as? String == "add" && kva0.data["DEVPATH"] as? String == "/devices/virtual/net/kva0")
        #expect(kva0.data["SUBSYSTEM"] as? String == "net" && kva0.data["INTERFACE"] as? String == "kva0")
        #expect(Int(kva0.data["IFINDEX"] as? String ?? "") ?? 0 > 0)
        first.signal(SIGKILL)
        first.process.waitUntilExit()

        // While kevd is down: a new pair appears, the first pair is deleted.
        try netns.exec(["/usr/sbin/ip", "link", "add", "kvb0", "type", "veth", "peer", "name", "kvb1"])
        try netns.exec(["/usr/sbin/ip", "link", "del", "kva0"])
        let second = try DaemonProcess(config: Self.config, in: dir, netns: netns.name)
        #expect(try Self.caughtUp(dir) == 4)
        let changes = try Self.caughtUpEvents(second, count: 4).map { "\($0.type ?? "") \($0.key ?? "")" }
        #expect(changes == [
            "remove /devices/virtual/net/kva0", "remove /devices/virtual/net/kva1",
            "add /devices/virtual/net/kvb0", "add /devices/virtual/net/kvb1",
        ])
        let removed = try #require(Self.caughtUpEvents(second).first { $0.key == "/devices/virtual/net/kva0" })
        #expect(removed.data["ACTION"] as? String == "remove" && removed.data["INTERFACE"] as? String == "kva0")
        #expect(removed.data["SEQNUM"] == nil)
        // Live events still come while and after the catch-up.
        try netns.exec(["/usr/sbin/ip", "link", "del", "kvb0"])
        try second.waitFor("a live remove") { $0.isEvent("udev", "remove", key: "/devices/virtual/net/kvb0") && $0.data["catchup"] == nil }
        #expect(second.stop() == 0)

        // Nothing changed while stopped (the live remove was journaled): nothing is caught up.
        let third = try DaemonProcess(config: Self.config, in: dir, netns: netns.name)
        #expect(try Self.caughtUp(dir) == 0)
        #expect(Self.caughtUpEvents(third).isEmpty)
        #expect(third.stop() == 0)
    }

    @Test("catchup = false: nothing is caught up")
    func off() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        try netns.exec(["/usr/sbin/ip", "link", "add", "kvc0", "type", "veth", "peer", "name", "kvc1"])
        let daemon = try DaemonProcess(config: Self.config + "catchup = false\n", in: dir, netns: netns.name)
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        let reply = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect((reply["sources"] as? [String: Any])?["udev_catchup"] is NSNull)
        try netns.exec(["/usr/sbin/ip", "link", "del", "kvc0"])
        try daemon.waitFor("a live remove") { $0.isEvent("udev", "remove", key: "/devices/virtual/net/kvc0") }
        #expect(Self.caughtUpEvents(daemon).isEmpty)
        #expect(daemon.stop() == 0)
    }
}
