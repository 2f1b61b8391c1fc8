import KevdSpec

extension TableReader {
    /// `[input]` and `[acpi]` (present = enabled; `enabled = false` turns one off without deleting it).
    func inputTables(_ root: TOMLTable, into config: inout Config) throws {
        if let value = root["input"] {
            let t = try table(value, "input")
            try rejectUnknownKeys(t, allowed: ["enabled", "devices", "keys", "grab", "inhibit"], name: "input")
            if try bool(t, "enabled", table: "input") ?? true { config.input = try inputSpec(t) }
        }
        if let value = root["acpi"] {
            let t = try table(value, "acpi")
            try rejectUnknownKeys(t, allowed: ["enabled", "receive_buffer"], name: "acpi")
            var spec = AcpiSpec()
            if let v = t["receive_buffer"] {
                let bytes = try size(v, key: "receive_buffer", table: "acpi")
                guard bytes >= 4096, bytes <= Int64(Int32.max) else {
                    throw problem("'receive_buffer' must be between 4 KiB and 2 GiB", table: "acpi", key: "receive_buffer")
                }
                spec.receiveBuffer = Int(bytes)
            }
            if try bool(t, "enabled", table: "acpi") ?? true { config.acpi = spec }
        }
    }

    private func inputSpec(_ t: TOMLTable) throws -> InputSpec {
        var spec = InputSpec()
        for item in try strings(t, "devices", table: "input") ?? [] {
            if item.hasPrefix("/") {
                spec.devices.append(.path(try path(item, key: "devices", table: "input")))
                continue
            }
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw problem("bad device '\(item)'; expected a device path (/dev/input/…) or a udev property NAME=VALUE",
                              table: "input", key: "devices")
            }
            spec.devices.append(.property(name: String(parts[0]), value: String(parts[1])))
        }
        if let keys = try strings(t, "keys", table: "input") {
            if keys.contains("*") {
                spec.keys = nil
            } else {
                for key in keys where InputNames.code(of: key) == nil {
                    throw problem("unknown key or switch '\(key)'; expected a name like power, sleep, lid, f1 or btn_left "
                                  + "(linux/input-event-codes.h in lower case, without KEY_ or SW_), or \"*\"",
                                  table: "input", key: "keys")
                }
                spec.keys = keys
            }
        }
        spec.grab = try bool(t, "grab", table: "input") ?? false
        for lock in try strings(t, "inhibit", table: "input") ?? [] {
            guard InputSpec.inhibitable.contains(lock) else {
                throw problem("unknown inhibitor '\(lock)'; expected one of: \(InputSpec.inhibitable.joined(separator: ", "))",
                              table: "input", key: "inhibit")
            }
            if !spec.inhibit.contains(lock) { spec.inhibit.append(lock) }
        }
        return spec
    }
}
