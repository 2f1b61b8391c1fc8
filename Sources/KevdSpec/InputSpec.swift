/// The `[input]` table: evdev devices (`/dev/input/event*`) as source `input`.
public struct InputSpec: Sendable, Equatable {
    /// Which devices to open. Empty: those with a system key or switch (KEY_POWER, KEY_SLEEP, KEY_SUSPEND,
    /// SW_LID, SW_TABLET_MODE), as udevd's power-switch tag and logind choose them.
    public enum DeviceMatch: Sendable, Equatable {
        /// A device node (`/dev/input/event3`) or a udev link to one (`/dev/input/by-path/…`).
        case path(String)
        /// A udev property, `NAME=VALUE` (`ID_INPUT_KEYBOARD=1`); the value may end in `*`.
        case property(name: String, value: String)
    }

    public var devices: [DeviceMatch] = []
    /// Key and switch names in lower case without their prefix (`power`, `lid`; `btn_left` for buttons).
    /// nil: every key and switch (`keys = ["*"]`).
    public var keys: [String]? = InputSpec.systemKeys
    /// EVIOCGRAB each opened device: nothing else (X, logind, the console) sees its events.
    public var grab = false
    /// logind inhibitor locks kevd takes and holds while it runs (`power-key` → `handle-power-key`).
    public var inhibit: [String] = []

    public static let systemKeys = ["power", "sleep", "suspend", "lid", "tablet_mode"]
    /// The `handle-*` locks logind knows (`reboot-key` from systemd 253 on).
    public static let inhibitable = ["power-key", "suspend-key", "hibernate-key", "lid-switch", "reboot-key"]

    public init() {}
}

/// The `[acpi]` table: the kernel's `acpi_event` generic-netlink family as source `acpi`.
public struct AcpiSpec: Sendable, Equatable {
    public var receiveBuffer = 1 << 20
    public init() {}
}
