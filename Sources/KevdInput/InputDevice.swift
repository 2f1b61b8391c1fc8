import CKevdInput
import Glibc
import KevdSpec

/// One open evdev device (`/dev/input/eventN`): its identity, what it can report, and its fd.
final class InputDevice {
    let devnode: String
    let name: String
    let phys: String
    let keyBits: [UInt8]
    let switchBits: [UInt8]
    private(set) var fd: Int32
    var grabbed = false
    /// Configured keys pressed and not yet released: released by kevd (`synthetic`) if the device goes first.
    var held: Set<UInt16> = []

    static let keyBytes = (Int(KEVD_KEY_MAX) + 8) / 8
    static let switchBytes = (Int(KEVD_SW_MAX) + 8) / 8

    /// Opens `devnode` and reads its name, phys and capability bits; throws the errno of a failed open or ioctl
    /// (`ENOTTY`: not an evdev node).
    init(devnode: String) throws(InputError) {
        let fd = kevd_input_open(devnode)
        guard fd >= 0 else { throw InputError(call: "open(\(devnode))", errno: -fd) }
        self.devnode = devnode
        self.fd = fd
        var keys = [UInt8](repeating: 0, count: Self.keyBytes)
        var switches = [UInt8](repeating: 0, count: Self.switchBytes)
        var types = [UInt8](repeating: 0, count: 4)
        let r = kevd_input_bits(fd, 0, &types, Int32(types.count))
        guard r >= 0 else {
            close(fd)
            throw InputError(call: "EVIOCGBIT(\(devnode))", errno: -r)
        }
        if Self.bit(types, Int(KEVD_EV_KEY)) { _ = kevd_input_bits(fd, Int32(KEVD_EV_KEY), &keys, Int32(keys.count)) }
        if Self.bit(types, Int(KEVD_EV_SW)) { _ = kevd_input_bits(fd, Int32(KEVD_EV_SW), &switches, Int32(switches.count)) }
        keyBits = keys
        switchBits = switches
        name = Self.text(fd, kevd_input_name)
        phys = Self.text(fd, kevd_input_phys)
    }

    deinit { closeNow() }

    func closeNow() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    func hasKey(_ code: UInt16) -> Bool { Self.bit(keyBits, Int(code)) }
    func hasSwitch(_ code: UInt16) -> Bool { Self.bit(switchBits, Int(code)) }

    /// The switches' current positions (EVIOCGSW), nil when the ioctl fails.
    func switchState() -> [UInt8]? {
        var bits = [UInt8](repeating: 0, count: Self.switchBytes)
        return kevd_input_switch_state(fd, &bits, Int32(bits.count)) >= 0 ? bits : nil
    }

    static func bit(_ bits: [UInt8], _ index: Int) -> Bool {
        index / 8 < bits.count && bits[index / 8] & (1 << UInt8(index % 8)) != 0
    }

    private static func text(_ fd: Int32, _ ioctl: (Int32, UnsafeMutablePointer<CChar>?, Int32) -> Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard ioctl(fd, &buffer, Int32(buffer.count)) >= 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A failed system call of the input or ACPI source, with its errno.
public struct InputError: Error, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}
