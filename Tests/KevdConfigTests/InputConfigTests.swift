import KevdSpec
import Testing

@testable import KevdConfig

@Suite("configuration: [input] and [acpi]")
struct InputConfigTests: ConfigText {
    @Test("absent tables leave both sources off; present ones turn them on with the system keys")
    func defaults() throws {
        let none = try parse("")
        #expect(none.input == nil && none.acpi == nil)
        let on = try parse("[input]\n[acpi]\n")
        #expect(on.input == InputSpec())
        #expect(on.input?.keys == ["power", "sleep", "suspend", "lid", "tablet_mode"])
        #expect(on.input?.grab == false && on.input?.inhibit == [])
        #expect(on.acpi == AcpiSpec())
        let off = try parse("[input]\nenabled = false\n[acpi]\nenabled = false\n")
        #expect(off.input == nil && off.acpi == nil)
    }

    @Test("devices, keys, grab, inhibit and receive_buffer are read")
    func fullTables() throws {
        let config = try parse(
            """
            [input]
            devices = ["/dev/input/event3", "ID_INPUT_KEYBOARD=1", "ID_PATH=platform-*"]
            keys = ["power", "lid", "f1", "btn_left"]
            grab = true
            inhibit = ["power-key", "lid-switch", "power-key"]
            [acpi]
            receive_buffer = "2M"
            """)
        let input = try #require(config.input)
        #expect(input.devices == [
            .path("/dev/input/event3"), .property(name: "ID_INPUT_KEYBOARD", value: "1"),
            .property(name: "ID_PATH", value: "platform-*"),
        ])
        #expect(input.keys == ["power", "lid", "f1", "btn_left"])
        #expect(input.grab)
        #expect(input.inhibit == ["power-key", "lid-switch"])
        #expect(config.acpi?.receiveBuffer == 2 << 20)
        #expect(try parse("[input]\nkeys = [\"*\", \"power\"]\n").input?.keys == nil)
    }

    @Test("bad values are errors at their line and column")
    func errors() throws {
        let key = try #require(error("[input]\nkeys = [\"power\", \"powr\"]\n"))
        #expect(key.line == 2 && key.column > 0)
        #expect(key.message.contains("unknown key or switch 'powr'"))
        let lock = try #require(error("[input]\ninhibit = [\"power-button\"]\n"))
        #expect(lock.line == 2 && lock.message.contains("unknown inhibitor 'power-button'"))
        let device = try #require(error("[input]\ndevices = [\"event3\"]\n"))
        #expect(device.line == 2 && device.message.contains("bad device 'event3'"))
        let unknown = try #require(error("[input]\ngrabb = true\n"))
        #expect(unknown.line == 2 && unknown.message.contains("unknown key 'grabb'"))
        let buffer = try #require(error("[acpi]\nreceive_buffer = 10\n"))
        #expect(buffer.line == 2 && buffer.message.contains("receive_buffer"))
    }

    @Test("key names: the kernel's names in lower case, without KEY_ or SW_; buttons keep BTN_")
    func names() throws {
        #expect(InputNames.code(of: "power")! == (.key, 116))
        #expect(InputNames.code(of: "lid")! == (.switch, 0))
        #expect(InputNames.code(of: "tablet_mode")! == (.switch, 1))
        #expect(InputNames.code(of: "btn_left")! == (.key, 0x110))
        #expect(InputNames.code(of: "left")! == (.key, 105))
        #expect(InputNames.code(of: "POWER") == nil && InputNames.code(of: "key_power") == nil)
        #expect(InputNames.keyName(116) == "KEY_POWER")
        #expect(InputNames.keyName(0x98) == "KEY_COFFEE")  // KEY_SCREENLOCK is its alias
        #expect(InputNames.switchName(0) == "SW_LID")
        #expect(InputNames.keyName(0x2fe) == nil)
        #expect(InputNames.shortName("KEY_SLEEP") == "sleep" && InputNames.shortName("SW_LID") == "lid")
    }
}
