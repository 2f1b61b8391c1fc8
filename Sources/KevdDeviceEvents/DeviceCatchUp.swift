import KevdEvent
import KevdKernel

/// Device catch-up (`[udev] catchup = true`): the devices the journal last knew, folded from its `udev` events,
/// against the devices present now; the difference becomes `add` and `remove` events with `data.catchup = true`.
///
/// Pure: the daemon feeds it the journal's events and the enumeration on a helper thread.
public struct DeviceCatchUp: Sendable {
    /// The devices present at the end of the folded history, by devpath: the last event's device (its
    /// properties, to give a `remove` the ones a live remove would carry).
    public private(set) var known: [String: UdevMonitor.Device] = [:]

    public init() {}

    /// Folds one journaled `udev` event: `remove` forgets the device, `move` forgets its old path
    /// (`DEVPATH_OLD`), any other action (add, change, bind, unbind, move) says it is present.
    public mutating func fold(_ event: Event) {
        guard event.source == .udev else { return }
        let devpath = event.key
        if event.type == "remove" {
            known.removeValue(forKey: devpath)
            return
        }
        // The properties are the upper-case members (kevd's own fields are lower case).
        var properties: [(name: String, value: String)] = []
        for field in event.data {
            guard let first = field.name.utf8.first, first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z"),
                case .string(let value) = field.value
            else { continue }
            properties.append((field.name, value))
        }
        // A journaled `udev`-monitor event may lack SUBSYSTEM among its properties: kevd's own field has it.
        if !properties.contains(where: { $0.name == "SUBSYSTEM" }), case .string(let subsystem)? = event.data["subsystem"] {
            properties.append(("SUBSYSTEM", subsystem))
        }
        fold(UdevMonitor.Device(action: event.type, devpath: devpath, properties: properties))
    }

    /// Folds one device event as published (a live one, or a catch-up's): the same rules as a journaled event's.
    public mutating func fold(_ device: UdevMonitor.Device) {
        if device.action == "remove" {
            known.removeValue(forKey: device.devpath)
            return
        }
        if device.action == "move", let old = device.properties.first(where: { $0.name == "DEVPATH_OLD" })?.value {
            known.removeValue(forKey: old)
        }
        known[device.devpath] = device
    }

    /// What changed while kevd was down: `add` for each present device the history does not know, `remove` for
    /// each known one (of `filters`, all when empty) no longer present. Removes first, then adds, each by devpath.
    /// Devices that stayed produce nothing.
    public func difference(present: [UdevMonitor.Device], filters: [UdevMonitor.Filter]) -> [UdevMonitor.Device] {
        let presentPaths = Set(present.map(\.devpath))
        var changes: [UdevMonitor.Device] = []
        for (devpath, device) in known.sorted(by: { $0.key < $1.key }) where !presentPaths.contains(devpath) {
            guard filters.isEmpty || filters.contains(where: { $0.subsystem == device.subsystem && ($0.devtype == nil || $0.devtype == device.devtype) })
            else { continue }
            // A live remove's properties, less the SEQNUM of the event they came from (this one has none).
            let properties = device.properties.filter { $0.name != "SEQNUM" }.map { $0.name == "ACTION" ? ("ACTION", "remove") : $0 }
            changes.append(UdevMonitor.Device(action: "remove", devpath: devpath, properties: properties))
        }
        for device in present where known[device.devpath] == nil { changes.append(device) }
        return changes
    }

    /// The event a caught-up device becomes: a live event's fields and properties, and `catchup = true`.
    public static func draft(_ device: UdevMonitor.Device) -> EventDraft {
        var draft = UdevDeviceEvent.draft(device)
        draft.data.append("catchup", true)
        return draft
    }

}
