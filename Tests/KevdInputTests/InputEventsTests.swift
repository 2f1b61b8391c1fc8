import KevdSpec
import KevdEvent
import Testing

@testable import KevdInput

@Suite("input and acpi events")
struct InputEventsTests {
    let device = InputEvents.DeviceIdentity(name: "Power Button", devnode: "/dev/input/event0", phys: "LNXPWRBN/button/input0")

    @Test("EV_KEY: value 1 is press, 0 release, 2 repeat; key is the short name, data the kernel's")
    func keys() throws {
        let press = try #require(InputEvents.key(code: 116, value: 1, device: device))
        #expect(press.source == .input && press.type == "press" && press.key == "power")
        #expect(Array(press.data.map(\.name)) == ["code", "name", "value", "device", "devnode", "phys"])
        #expect(press.data["code"] == .int(116) && press.data["name"] == .string("KEY_POWER"))
        #expect(press.data["value"] == .int(1))
        #expect(press.data["device"] == .string("Power Button"))
        #expect(press.data["devnode"] == .string("/dev/input/event0"))
        #expect(press.data["phys"] == .string("LNXPWRBN/button/input0"))
        #expect(InputEvents.key(code: 116, value: 0, device: device)?.type == "release")
        #expect(InputEvents.key(code: 116, value: 2, device: device)?.type == "repeat")
        #expect(InputEvents.key(code: 0x110, value: 1, device: device)?.key == "btn_left")
        #expect(InputEvents.key(code: 0x2fe, value: 1, device: device) == nil)
    }

    @Test("EV_SW: a switch event with state, and catchup only for a position read rather than a change")
    func switches() throws {
        let closed = try #require(InputEvents.switch(code: 0, on: true, device: device, catchup: false))
        #expect(closed.type == "switch" && closed.key == "lid")
        #expect(closed.data["state"] == .bool(true) && closed.data["value"] == .int(1))
        #expect(closed.data["name"] == .string("SW_LID") && closed.data["catchup"] == nil)
        let initial = try #require(InputEvents.switch(code: 1, on: false, device: device, catchup: true))
        #expect(initial.key == "tablet_mode" && initial.data["state"] == .bool(false))
        #expect(initial.data["catchup"] == .bool(true))
    }

    @Test("the acpi_genl_event decoder reads the kernel's datagram into acpid's four fields")
    func acpiDecoder() throws {
        let message = AcpiSource.encode(deviceClass: "button/power", busID: "LNXPWRBN:00", type: 0x80, data: 1)
        #expect(message.count == 68)  // nlmsghdr 16 + genlmsghdr 4 + nlattr 4 + acpi_genl_event 44
        let draft = try #require(try AcpiSource.decode(message))
        #expect(draft.source == .acpi && draft.type == "button/power" && draft.key == "LNXPWRBN:00")
        #expect(Array(draft.data.map(\.name)) == ["device_class", "bus_id", "type", "data"])
        #expect(draft.data["type"] == .string("00000080") && draft.data["data"] == .string("00000001"))
        // Fields filling their arrays (no NUL in the struct) stay within them.
        let full = AcpiSource.encode(deviceClass: "abcdefghijklmnopqrst", busID: "ACPI0003:000000", type: 0xdeadbeef, data: 0)
        let long = try #require(try AcpiSource.decode(full))
        #expect(long.type == "abcdefghijklmnopqrst" && long.key == "ACPI0003:000000")
        #expect(long.data["type"] == .string("deadbeef") && long.data["data"] == .string("00000000"))
        // Truncated and lying lengths are errors, not reads past the end.
        #expect(throws: InputError.self) { try AcpiSource.decode(Array(message.prefix(40))) }
        var lying = message
        lying[0] = 200
        #expect(throws: InputError.self) { try AcpiSource.decode(lying) }
        // Another command of the family is skipped.
        var other = message
        other[16] = 2
        #expect(try AcpiSource.decode(other) == nil)
    }

    @Test("acpid's hex: eight lower-case digits")
    func hex() {
        #expect(InputEvents.hex8(0) == "00000000" && InputEvents.hex8(0x80) == "00000080")
        #expect(InputEvents.hex8(UInt32.max) == "ffffffff")
    }
}
