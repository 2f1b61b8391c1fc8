import Foundation
import Glibc
import Testing

/// Real kernel uevents, seen only inside a private network namespace: creating a veth pair there emits `add`
/// uevents for its two `net` devices, deleting it `remove`. The host's interfaces are never touched.
@Suite("udev source", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct UdevTests {
    @Test("a veth pair in a private namespace yields add and remove events for net devices")
    func vethAddRemove() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let daemon = try DaemonProcess(
            config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[udev]\nsource = \"kernel\"\nsubsystems = [\"net\"]\n", netns: netns.name)
        try netns.exec(["/usr/sbin/ip", "link", "add", "kvt0", "type", "veth", "peer", "name", "kvt1"])
        let add = try daemon.waitFor("add kvt0") { $0.isEvent("udev", "add") && $0.data["INTERFACE"] as? String == "kvt0" }
        #expect(add.key == "/devices/virtual/net/kvt0")
        #expect(add.data["subsystem"] as? String == "net")
        #expect(add.data["sysname"] as? String == "kvt0")
        #expect((add.data["seqnum"] as? Int ?? 0) > 0)
        #expect(add.data["ACTION"] as? String == "add")
        try daemon.waitFor("add kvt1") { $0.isEvent("udev", "add", key: "/devices/virtual/net/kvt1") }

        try netns.exec(["/usr/sbin/ip", "link", "del", "kvt0"])
        try daemon.waitFor("remove kvt0") { $0.isEvent("udev", "remove", key: "/devices/virtual/net/kvt0") }
        try daemon.waitFor("remove kvt1") { $0.isEvent("udev", "remove", key: "/devices/virtual/net/kvt1") }
        // The subsystem filter kept the veths' `queues` children out.
        #expect(!daemon.received.contains { $0.source == "udev" && $0.data["subsystem"] as? String != "net" })
        #expect(daemon.stop() == 0)
    }

    @Test("a full receive buffer becomes a kevd/overflow event naming the udev source, and kevd keeps going")
    func receiveBufferOverflow() throws {
        try Root.check()
        let netns = try NetworkNamespace()
        let daemon = try DaemonProcess(
            config: "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\n[udev]\nsource = \"kernel\"\nreceive_buffer = 4096\n", netns: netns.name)
        daemon.signal(SIGSTOP)
        // A few hundred devices' uevents cannot fit in 4 KiB while kevd is not reading.
        var batch = ""
        for i in 0..<150 { batch += "link add kvo\(i) type veth peer name kvp\(i)\n" }
        let batchFile = daemon.directory.file("links.batch")
        try batch.write(toFile: batchFile, atomically: true, encoding: .utf8)
        try netns.exec(["/usr/sbin/ip", "-batch", batchFile])
        daemon.signal(SIGCONT)
        let overflow = try daemon.waitFor("overflow", timeout: 30) { $0.isEvent("kevd", "overflow", key: "udev") }
        #expect(overflow.data["source"] as? String == "udev")
        #expect(overflow.data["monitor"] as? String == "kernel")
        // Still receiving afterwards.
        let before = daemon.received.count
        try netns.exec(["/usr/sbin/ip", "link", "add", "kvlast", "type", "veth", "peer", "name", "kvlast1"])
        try daemon.waitFor("event after overflow", from: before, timeout: 30) {
            $0.isEvent("udev", "add", key: "/devices/virtual/net/kvlast")
        }
        #expect(daemon.stop() == 0)
    }
}
