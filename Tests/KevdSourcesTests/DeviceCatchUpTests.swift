import KevdDeviceEvents
import KevdEvent
import KevdKernel
import Testing

/// The device catch-up's fold and difference, on events as the kernel source journals them.
@Suite("device catch-up: fold and difference")
struct DeviceCatchUpFoldTests {
    /// The journaled event of a live kernel uevent for a net device.
    static func event(_ action: String, _ name: String, seq: UInt64, extra: [(String, String)] = []) -> Event {
        let devpath = "/devices/virtual/net/" + name
        var properties = [("ACTION", action), ("DEVPATH", devpath), ("SUBSYSTEM", "net")] + extra
        properties += [("INTERFACE", name), ("IFINDEX", "7"), ("SEQNUM", "\(seq)")]
        let draft = UdevDeviceEvent.draft(UdevMonitor.Device(action: action, devpath: devpath, properties: properties))
        return Event(
            seq: seq, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: draft.source,
            type: draft.type, key: draft.key, data: draft.data)
    }

    static func present(_ names: [String], subsystem: String = "net") -> [UdevMonitor.Device] {
        names.map { name in
            let devpath = "/devices/virtual/\(subsystem)/" + name
            return UdevMonitor.Device(
                action: "add", devpath: devpath,
                properties: [("ACTION", "add"), ("DEVPATH", devpath), ("SUBSYSTEM", subsystem), ("INTERFACE", name)])
        }
    }

    @Test("what the journal last knew against what is present: removes (with the live properties), then adds; nothing for what stayed")
    func difference() {
        var history = DeviceCatchUp()
        for event in [
            Self.event("add", "a0", seq: 1), Self.event("add", "b0", seq: 2), Self.event("change", "b0", seq: 3),
            Self.event("add", "c0", seq: 4), Self.event("remove", "c0", seq: 5),
            Self.event("add", "old0", seq: 6),
            Self.event("move", "new0", seq: 7, extra: [("DEVPATH_OLD", "/devices/virtual/net/old0")]),
        ] { history.fold(event) }
        #expect(Set(history.known.keys) == ["/devices/virtual/net/a0", "/devices/virtual/net/b0", "/devices/virtual/net/new0"])

        let changes = history.difference(present: Self.present(["b0", "new0", "d0"]), filters: [])
        #expect(changes.map { "\($0.action) \($0.devpath)" } == ["remove /devices/virtual/net/a0", "add /devices/virtual/net/d0"])
        let removed = changes[0]
        #expect(removed.subsystem == "net" && removed.seqnum == 0)
        #expect(removed.properties.map(\.name) == ["ACTION", "DEVPATH", "SUBSYSTEM", "INTERFACE", "IFINDEX"])
        #expect(removed.properties.first?.value == "remove")
        let draft = DeviceCatchUp.draft(removed)
        #expect(draft.type == "remove" && draft.key == "/devices/virtual/net/a0" && draft.data["catchup"] == .bool(true))
        #expect(draft.data["INTERFACE"] == .string("a0"))
    }

    @Test("no history: every present device is an add; the subsystem filter keeps the others out of removes")
    func firstStartAndFilters() {
        let empty = DeviceCatchUp()
        #expect(empty.difference(present: Self.present(["x0", "x1"]), filters: []).map(\.action) == ["add", "add"])
        var history = DeviceCatchUp()
        history.fold(Self.event("add", "a0", seq: 1))
        // A `block`-only configuration does not remove a net device it never watched.
        #expect(history.difference(present: [], filters: [.init(subsystem: "block", devtype: nil)]).isEmpty)
        #expect(history.difference(present: [], filters: [.init(subsystem: "net", devtype: nil)]).count == 1)
    }
}
