import KevdSpec
import KevdEvent

extension EventSource {
    public static let input = EventSource("input")
    public static let acpi = EventSource("acpi")
}

/// How evdev and ACPI notifications become events: pure functions, so their shape is tested without devices.
public enum InputEvents {
    /// Where an event came from, the same for every event of one device.
    public struct DeviceIdentity: Sendable, Equatable {
        public var name: String
        public var devnode: String
        public var phys: String
        public init(name: String, devnode: String, phys: String) {
            self.name = name
            self.devnode = devnode
            self.phys = phys
        }
    }

    /// An EV_KEY event: value 1 `press`, 0 `release`, 2 `repeat`. nil for a code without a kernel name.
    public static func key(code: UInt16, value: Int32, device: DeviceIdentity) -> EventDraft? {
        guard let name = InputNames.keyName(code) else { return nil }
        let type: String
        switch value {
        case 0: type = "release"
        case 1: type = "press"
        default: type = "repeat"
        }
        var data = EventData(capacity: 6)
        data.append("code", Int(code))
        data.append("name", name)
        data.append("value", Int(value))
        append(device, to: &data)
        return EventDraft(source: .input, type: type, key: InputNames.shortName(name), data: data)
    }

    /// An EV_SW event, or a switch's position read at start or when its device appeared (`catchup`).
    public static func `switch`(code: UInt16, on: Bool, device: DeviceIdentity, catchup: Bool) -> EventDraft? {
        guard let name = InputNames.switchName(code) else { return nil }
        var data = EventData(capacity: 8)
        data.append("code", Int(code))
        data.append("name", name)
        data.append("value", on ? 1 : 0)
        data.append("state", on)
        append(device, to: &data)
        if catchup { data.append("catchup", true) }
        return EventDraft(source: .input, type: "switch", key: InputNames.shortName(name), data: data)
    }

    /// A device kevd started (`opened`) or stopped (`closed`) reading; key: its device node.
    public static func device(_ type: String, _ device: DeviceIdentity, reason: String) -> EventDraft {
        var data = EventData(capacity: 4)
        append(device, to: &data)
        data.append("reason", reason)
        return EventDraft(source: .input, type: type, key: device.devnode, data: data)
    }

    /// An ACPI notification, with the fields as acpid prints them (`button/power PBTN 00000080 00000001`).
    public static func acpi(deviceClass: String, busID: String, type: UInt32, data value: UInt32) -> EventDraft {
        var data = EventData(capacity: 4)
        data.append("device_class", deviceClass)
        data.append("bus_id", busID)
        data.append("type", hex8(type))
        data.append("data", hex8(value))
        return EventDraft(source: .acpi, type: deviceClass, key: busID, data: data)
    }

    /// `%08x`, as acpid writes the type and data.
    public static func hex8(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 8 - digits.utf8.count)) + digits
    }

    private static func append(_ device: DeviceIdentity, to data: inout EventData) {
        data.append("device", device.name)
        data.append("devnode", device.devnode)
        data.append("phys", device.phys)
    }
}
