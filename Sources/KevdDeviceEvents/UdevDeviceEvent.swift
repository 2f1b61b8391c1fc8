import KevdEvent
import KevdKernel

/// The event a device becomes: the udev source publishes it, and the uevent fuzz target checks that it survives
/// the journal. Pure, and apart from the loop and the sources, so the fuzz library links only the decoders.
public enum UdevDeviceEvent {
    /// Fields kevd sets itself; a property of the same name (lower case) must not shadow them.
    static let ownFields: Set<String> = ["subsystem", "devtype", "devnode", "driver", "sysname", "seqnum"]

    public static func draft(_ device: UdevMonitor.Device) -> EventDraft {
        var data = EventData(capacity: 6 + device.properties.count)
        data.append("subsystem", device.subsystem ?? "")
        data.append("devtype", device.devtype ?? "")
        data.append("devnode", device.devnode ?? "")
        data.append("driver", device.driver ?? "")
        data.append("sysname", device.sysname ?? "")
        data.append("seqnum", .int(Int64(clamping: device.seqnum)))
        // Property names are upper case (ACTION, DEVNAME…); a lower-case one must not shadow the fields above.
        for property in device.properties {
            if let first = property.name.utf8.first, first >= UInt8(ascii: "a"), Self.ownFields.contains(property.name) {
                continue
            }
            data.append(property.name, property.value)
        }
        return EventDraft(source: .udev, type: device.action, key: device.devpath, data: data)
    }
}
