import CUdev
import Glibc

/// The devices present now as udevd knows them (libudev's enumerate: /sys and udevd's database under
/// /run/udev/data): the `udev` source's catch-up compares them with what its journal last knew. Each device
/// carries the properties udevd's own events carry (ID_BUS, ID_FS_LABEL, DEVLINKS, TAGS, USEC_INITIALIZED…),
/// which /sys alone does not have.
///
/// Only devices udevd has finished with are listed (`udev_enumerate_add_match_is_initialized`; libudev counts a
/// device without a device node or network interface as initialized, as udevd keeps no database entry for
/// some of those): one udevd is still processing gets its live `add` from udevd a moment later, with its
/// properties, and the monitor is already listening then.
///
/// Blocking reads of /sys and /run, a few thousand on a big machine: for a helper thread. It makes its own
/// libudev context (a context is not safe to share between threads; the monitor's belongs to the loop).
public enum UdevDatabase {
    /// Every initialized device of `filters` (all when empty) as an `add` without a seqnum (udevd numbers only
    /// the events it sends), sorted by devpath.
    public static func enumerate(filters: [UdevMonitor.Filter]) throws -> [UdevMonitor.Device] {
        guard let udev = udev_new() else { throw SyscallError(call: "udev_new", errno: .init(rawValue: errno)) }
        defer { udev_unref(udev) }
        guard let enumerate = udev_enumerate_new(udev) else {
            throw SyscallError(call: "udev_enumerate_new", errno: .init(rawValue: errno))
        }
        defer { udev_enumerate_unref(enumerate) }
        // Subsystem matches are OR'ed by libudev; a devtype is checked per device below (enumerate has no match
        // for it).
        for subsystem in Set(filters.map(\.subsystem)).sorted() {
            let r = udev_enumerate_add_match_subsystem(enumerate, subsystem)
            if r < 0 { throw SyscallError(call: "udev_enumerate_add_match_subsystem", errno: .init(rawValue: -r)) }
        }
        var r = udev_enumerate_add_match_is_initialized(enumerate)
        if r < 0 { throw SyscallError(call: "udev_enumerate_add_match_is_initialized", errno: .init(rawValue: -r)) }
        r = udev_enumerate_scan_devices(enumerate)
        if r < 0 { throw SyscallError(call: "udev_enumerate_scan_devices", errno: .init(rawValue: -r)) }

        var devices: [UdevMonitor.Device] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let current = entry {
            entry = udev_list_entry_get_next(current)
            // A device that vanished between the scan and this read is simply not present.
            guard let syspath = udev_list_entry_get_name(current), let device = udev_device_new_from_syspath(udev, syspath)
            else { continue }
            defer { udev_device_unref(device) }
            let copied = UdevMonitor.Device(copying: device, action: "add")
            guard filters.isEmpty || filters.contains(where: { $0.matches(copied) }) else { continue }
            devices.append(copied.asCatchUpAdd())
        }
        return devices.sorted { $0.devpath < $1.devpath }
    }
}

extension UdevMonitor.Device {
    /// Copies a libudev device out: its fields and every property in libudev's order. `action` stands in when
    /// the device has none (an enumerated device; a received one always has its event's).
    init(copying device: OpaquePointer, action: String) {
        var properties: [(name: String, value: String)] = []
        var entry = udev_device_get_properties_list_entry(device)
        while let current = entry {
            if let name = udev_list_entry_get_name(current) {
                let value = udev_list_entry_get_value(current).map { String(cString: $0) } ?? ""
                properties.append((String(cString: name), value))
            }
            entry = udev_list_entry_get_next(current)
        }
        func text(_ p: UnsafePointer<CChar>?) -> String? { p.map { String(cString: $0) } }
        self.init(
            action: text(udev_device_get_action(device)) ?? action,
            devpath: text(udev_device_get_devpath(device)) ?? "",
            subsystem: text(udev_device_get_subsystem(device)),
            devtype: text(udev_device_get_devtype(device)),
            devnode: text(udev_device_get_devnode(device)),
            driver: text(udev_device_get_driver(device)),
            sysname: text(udev_device_get_sysname(device)),
            seqnum: udev_device_get_seqnum(device),
            properties: properties)
    }

    /// An enumerated device as the `add` a live event would have been: ACTION=add first (udevd's events start
    /// with it; an enumerated device has none), no SEQNUM, the rest in libudev's order.
    func asCatchUpAdd() -> UdevMonitor.Device {
        var device = self
        device.action = "add"
        device.seqnum = 0
        device.properties = [("ACTION", "add")] + properties.filter { $0.name != "ACTION" && $0.name != "SEQNUM" }
        return device
    }
}
