import Glibc

/// The devices present now, read from /sys as the kernel would announce them: the `kernel` udev source's
/// catch-up compares them with what its journal last knew.
///
/// A device is a directory under /sys/devices with a `uevent` file; its `subsystem` link names its subsystem,
/// and its `uevent` file holds the variables the kernel's uevent carries (DEVTYPE, DEVNAME, DRIVER, INTERFACE,
/// IFINDEX, MAJOR, MINOR…). The devices are found through /sys/class/* and /sys/bus/*/devices (every device
/// with a class or a bus), or only the configured subsystems' folders. In a network namespace, /sys mounted
/// there (as `ip netns exec` does) shows that namespace's network devices.
///
/// Blocking reads of a RAM file system, a few thousand on a big machine: for a helper thread.
public enum SysfsDevices {
    /// Every present device of `filters` (all devices when empty), as an `add` without a seqnum (the kernel
    /// numbers only the uevents it sends): ACTION, DEVPATH and SUBSYSTEM, then the `uevent` file's variables in
    /// its order, as a live uevent lists them. Sorted by devpath.
    public static func enumerate(filters: [UdevMonitor.Filter], sysRoot: String = "/sys") -> [UdevMonitor.Device] {
        var folders: [String] = []
        let subsystems = filters.isEmpty ? nil : Set(filters.map(\.subsystem))
        for kind in ["class", "bus"] {
            for name in entries(of: sysRoot + "/" + kind) where subsystems?.contains(name) ?? true {
                folders.append(sysRoot + "/" + kind + "/" + name + (kind == "bus" ? "/devices" : ""))
            }
        }
        var seen = Set<String>()
        var devices: [UdevMonitor.Device] = []
        for folder in folders {
            for entry in entries(of: folder) {
                guard let real = realPath(folder + "/" + entry), real.hasPrefix(sysRoot + "/devices/") else { continue }
                let devpath = String(real.dropFirst(sysRoot.count))
                guard !seen.contains(devpath), let device = device(at: real, devpath: devpath) else { continue }
                guard filters.isEmpty || filters.contains(where: { $0.matches(device) }) else { continue }
                seen.insert(devpath)
                devices.append(device)
            }
        }
        return devices.sorted { $0.devpath < $1.devpath }
    }

    /// One device directory as an `add`; nil when it has no readable `uevent` or no subsystem.
    static func device(at path: String, devpath: String) -> UdevMonitor.Device? {
        guard let subsystemLink = realPath(path + "/subsystem"), let subsystem = subsystemLink.split(separator: "/").last,
            let text = try? FileContents.read(path + "/uevent")
        else { return nil }
        var properties: [(name: String, value: String)] = [("ACTION", "add"), ("DEVPATH", devpath), ("SUBSYSTEM", String(subsystem))]
        for line in text.split(separator: UInt8(ascii: "\n")) {
            guard let equals = line.firstIndex(of: UInt8(ascii: "=")), equals > line.startIndex else { continue }
            let name = String(decoding: line[..<equals], as: UTF8.self)
            guard !properties.contains(where: { $0.name == name }) else { continue }
            properties.append((name, String(decoding: line[(equals + 1)...], as: UTF8.self)))
        }
        let device = UdevMonitor.Device(action: "add", devpath: devpath, properties: properties)
        return device
    }

    /// The names in a folder, without . and ..; empty when it cannot be read.
    static func entries(of folder: String) -> [String] {
        guard let dir = opendir(folder) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

extension UdevMonitor.Device {
    /// A device from its uevent properties: SUBSYSTEM, DEVTYPE, DEVNAME, DRIVER and SEQNUM (0 when absent) give the
    /// named fields, the devpath's last part the sysname. For catch-up, which rebuilds devices from /sys and from
    /// journaled events.
    public init(action: String, devpath: String, properties: [(name: String, value: String)]) {
        func value(_ name: String) -> String? { properties.first { $0.name == name }?.value }
        let devname = value("DEVNAME")
        self.init(
            action: action, devpath: devpath, subsystem: value("SUBSYSTEM"), devtype: value("DEVTYPE"),
            devnode: devname.map { $0.hasPrefix("/") ? $0 : "/dev/" + $0 }, driver: value("DRIVER"),
            sysname: devpath.split(separator: "/").last.map(String.init), seqnum: value("SEQNUM").flatMap { UInt64($0) } ?? 0,
            properties: properties)
    }
}
