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

    /// `sources.udev_catchup` once `count` repairs were applied.
    static func repairs(_ dir: TemporaryDirectory, atLeast count: Int) throws -> [String: Any] {
        try waitUntil("\(count) device repairs to be applied", timeout: 60) { () -> [String: Any]? in
            let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
            guard let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
                let sources = reply["sources"] as? [String: Any], let fold = sources["udev_catchup"] as? [String: Any],
                (fold["repairs"] as? Int ?? 0) >= count
            else { return nil }
            return fold
        }
    }

    @Test("a receive buffer overflow is repaired: every device whose event the kernel dropped gets a catch-up add, then a catch-up remove")
    func overflowRepaired() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        let daemon = try DaemonProcess(config: Self.config + "receive_buffer = 4096\n", in: dir, netns: netns.name)
        #expect(try Self.caughtUp(dir) == 1)  // lo
        // 150 pairs made while kevd is stopped: their uevents cannot all fit in 4 KiB.
        daemon.signal(SIGSTOP)
        var batch = ""
        for i in 0..<150 { batch += "link add kvr\(i) type veth peer name kvs\(i)\n" }
        try batch.write(toFile: dir.file("add.batch"), atomically: true, encoding: .utf8)
        try netns.exec(["/usr/sbin/ip", "-batch", dir.file("add.batch")])
        daemon.signal(SIGCONT)
        try daemon.waitFor("an overflow", timeout: 30) { $0.isEvent("kevd", "overflow", key: "udev") }
        let afterAdds = try Self.repairs(dir, atLeast: 1)
        let names = (0..<150).flatMap { ["kvr\($0)", "kvs\($0)"] }
        // Every device has exactly one add: the live one the buffer kept, or the repair's for one it dropped.
        func events(_ type: String) -> [String: [[String: Any]]] {
            Dictionary(grouping: daemon.received.filter { $0.isEvent("udev", type) && names.contains(($0.key as NSString?)?.lastPathComponent ?? "") }) {
                ($0.key! as NSString).lastPathComponent
            }
        }
        let adds = try waitUntil("an add for each of the 300 devices") { () -> [String: [[String: Any]]]? in
            let adds = events("add")
            return adds.count == names.count ? adds : nil
        }
        #expect(adds.values.allSatisfy { $0.count == 1 }, "a device with two adds")
        let repairedAdds = adds.values.filter { $0[0].data["catchup"] as? Bool == true }.count
        #expect(repairedAdds > 0, "the overflow lost no add, so the repair was not tested")
        #expect(afterAdds["repaired"] as? Int ?? 0 >= repairedAdds)

        // A reload that changes [udev] makes a new monitor: it still follows the devices and repairs its overflows.
        try (Self.config + "receive_buffer = 4097\n").write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("the reload") { $0.isEvent("kevd", "reloaded") }

        // The same for removes: the pairs deleted while kevd is stopped.
        let repairsBefore = afterAdds["repairs"] as? Int ?? 0
        daemon.signal(SIGSTOP)
        batch = ""
        for i in 0..<150 { batch += "link del kvr\(i)\n" }
        try batch.write(toFile: dir.file("del.batch"), atomically: true, encoding: .utf8)
        try netns.exec(["/usr/sbin/ip", "-batch", dir.file("del.batch")])
        daemon.signal(SIGCONT)
        _ = try Self.repairs(dir, atLeast: repairsBefore + 1)
        let removes = try waitUntil("a remove for each of the 300 devices") { () -> [String: [[String: Any]]]? in
            let removes = events("remove")
            return removes.count == names.count ? removes : nil
        }
        #expect(removes.values.allSatisfy { $0.count == 1 }, "a device with two removes")
        #expect(removes.values.contains { $0[0].data["catchup"] as? Bool == true }, "the overflow lost no remove")
        // A repaired remove carries what the device was known by.
        if let repaired = removes.values.first(where: { $0[0].data["catchup"] as? Bool == true })?[0] {
            #expect(repaired.data["INTERFACE"] as? String == (repaired.key! as NSString).lastPathComponent)
        }
        #expect(daemon.stop() == 0)
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

/// The catch-up checkpoint (`state_dir/catchup/udev`): what retention deletes from the journal is not forgotten.
@Suite("device catch-up checkpoint", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct DeviceCatchUpCheckpointTests {
    static func udevCatchUp(_ dir: TemporaryDirectory) throws -> [String: Any]? {
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return (reply?["sources"] as? [String: Any])?["udev_catchup"] as? [String: Any]
    }

    @Test("retention deleted a device's add, then the device was deleted while kevd was down: the remove is still caught up, and nothing is added again")
    func outlivesRetention() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let dir = try TemporaryDirectory()
        try netns.exec(["/usr/sbin/ip", "link", "add", "kvk0", "type", "veth", "peer", "name", "kvk1"])
        // Small segments and `max_bytes_hard = "0"`: retention deletes only what no consumer needs, so the
        // add's segment goes only once a checkpoint past it was saved.
        let retention = RetentionTests()
        let config = DeviceCatchUpTests.config + retention.journalConfig(hard: "0")
        let first = try DaemonProcess(config: config, in: dir, netns: netns.name)
        #expect(try DeviceCatchUpTests.caughtUp(dir) == 3)
        let adds = try DeviceCatchUpTests.caughtUpEvents(first, count: 3)
        let lastAdd = try #require(adds.compactMap { $0.seq }.max())
        _ = try retention.emitPadded(dir.file("state/kevd.sock"), type: "filler", count: 400)
        try waitUntil("retention to delete the devices' adds, and a checkpoint past them", timeout: 60) { () -> Bool? in
            let addKept = try journalRecords(dir, from: 1).contains { $0.key == "/devices/virtual/net/kvk0" }
            let checkpoint = (try Self.udevCatchUp(dir)?["checkpoint"] as? NSNumber)?.intValue ?? 0
            return !addKept && checkpoint > lastAdd ? true : nil
        }
        first.signal(SIGKILL)
        first.process.waitUntilExit()

        // While kevd is down: the pair is deleted.
        try netns.exec(["/usr/sbin/ip", "link", "del", "kvk0"])
        let second = try DaemonProcess(config: config, in: dir, netns: netns.name)
        #expect(try DeviceCatchUpTests.caughtUp(dir) == 2)
        let removes = try DeviceCatchUpTests.caughtUpEvents(second, count: 2)
        #expect(removes.map { "\($0.type ?? "") \($0.data["INTERFACE"] as? String ?? "")" } == ["remove kvk0", "remove kvk1"])
        // Retention waited for the checkpoint: nothing the catch-up needed was lost.
        #expect(!second.received.contains { $0.isEvent("kevd", "gap", key: "catchup:udev") })
        let removed = try #require(removes.compactMap { $0.seq }.max())
        try waitUntil("a checkpoint that has the removes") { () -> Bool? in
            ((try Self.udevCatchUp(dir)?["checkpoint"] as? NSNumber)?.intValue ?? 0) >= removed ? true : nil
        }
        #expect(second.stop() == 0)

        // A damaged checkpoint is reported, and its previous copy (one save older) with the journal after it
        // still knows that nothing changed.
        try "not a checkpoint\n".write(toFile: dir.file("state/catchup/udev"), atomically: false, encoding: .utf8)
        let third = try DaemonProcess(config: config, in: dir, netns: netns.name)
        let damaged = try third.waitFor("the damaged checkpoint reported") { $0.isEvent("kevd", "error", key: "catchup:udev") }
        #expect((damaged.data["message"] as? String ?? "").contains("damaged"))
        #expect(try DeviceCatchUpTests.caughtUp(dir) == 0)
        #expect(third.stop() == 0)
    }
}
