import Glibc

/// Which machine and which boot kevd runs on: `/etc/machine-id` (systemd's, stable across boots) and the
/// kernel's random boot id (`/proc/sys/kernel/random/boot_id`, new at every boot). Both go into
/// `kevd`/`started` and `status`, and into every forwarded message's NATS headers, so that a fleet tells hosts
/// apart when their host names collide, and a journal tells its boots apart (`kevctl journal --boot`).
public struct MachineIdentity: Sendable, Equatable {
    /// 32 lower-case hex digits, or "" when the file is missing or unreadable (a minimal container).
    public let machineID: String
    /// The kernel's form, 36 characters with dashes, or "" when /proc is not mounted.
    public let bootID: String

    public init(machineID: String, bootID: String) {
        self.machineID = machineID
        self.bootID = bootID
    }

    public static let machineIDPath = "/etc/machine-id"
    public static let bootIDPath = "/proc/sys/kernel/random/boot_id"

    /// Reads both files (two small reads, once at start-up). A missing file gives "", never an error: kevd runs
    /// without a machine id, and the headers and fields are then empty rather than invented.
    public static func read(machineIDPath: String = machineIDPath, bootIDPath: String = bootIDPath) -> MachineIdentity {
        MachineIdentity(machineID: firstLine(machineIDPath), bootID: firstLine(bootIDPath))
    }

    /// A boot id in a comparable form: lower case, dashes removed (journalctl prints them without dashes, the
    /// kernel with them; `kevctl journal --boot` accepts both).
    public static func normalizedBootID(_ text: String) -> String {
        String(text.lowercased().filter { $0 != "-" })
    }

    private static func firstLine(_ path: String) -> String {
        guard let bytes = try? FileContents.read(path) else { return "" }
        let line = bytes.prefix { $0 != UInt8(ascii: "\n") }
        let text = String(decoding: line, as: UTF8.self)
        // Only hex digits and dashes: a damaged file must not put arbitrary bytes into headers.
        guard !text.isEmpty, text.count <= 64, text.utf8.allSatisfy({ isHexOrDash($0) }) else { return "" }
        return text
    }

    private static func isHexOrDash(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) || c == 0x2D
    }
}
