import CKevdShim
import Glibc

/// The kernel's own uevents, read straight from the netlink socket (no libudev): what `udevadm monitor --kernel`
/// shows, and all there is where udevd does not run.
///
/// libudev builds a full `sd_device` per event (sysfs look-ups, hash tables); a raw uevent already carries
/// everything kevd reports, so this path decodes the datagram itself and receives up to 64 per `recvmmsg`.
public final class KernelUeventMonitor {
    /// Largest datagram kept: the kernel's uevent buffer is 2 KiB of environment plus the header.
    static let slotSize = 8192
    static let batch = 64

    public let fd: OwnedFD
    private let buffers: UnsafeMutablePointer<UInt8>
    private var lengths = [Int32](repeating: 0, count: batch)
    private var senders = [UInt32](repeating: 0, count: batch)
    private let filters: [UdevMonitor.Filter]
    /// Datagrams dropped because they were not from the kernel or did not decode.
    public private(set) var rejected = 0

    public init(filters: [UdevMonitor.Filter], receiveBuffer: Int) throws {
        fd = OwnedFD(try syscall("socket(NETLINK_KOBJECT_UEVENT)") { kevd_uevent_socket(Int32(clamping: receiveBuffer)) })
        buffers = .allocate(capacity: Self.slotSize * Self.batch)
        self.filters = filters
    }

    deinit { buffers.deallocate() }

    public var receiveBufferBytes: Int { Int(kevd_get_rcvbuf(fd.rawValue)) }

    /// Receives what is pending (one `recvmmsg`) and returns the devices that pass the filters; empty when none
    /// is pending. Throws `ENOBUFS` when the kernel dropped uevents because the receive buffer was full.
    public func receive(into devices: inout [UdevMonitor.Device]) throws -> Int {
        let n = try lengths.withUnsafeMutableBufferPointer { lengths in
            try senders.withUnsafeMutableBufferPointer { senders in
                try syscall("recvmmsg") {
                    kevd_uevent_receive(
                        fd.rawValue, buffers, Int32(Self.slotSize), Int32(Self.batch), lengths.baseAddress,
                        senders.baseAddress)
                }
            }
        }
        for i in 0..<Int(n) {
            // Port id 0 is the kernel; anything else is a process pretending (possible in a user namespace).
            guard senders[i] == 0, lengths[i] > 0 else {
                rejected += 1
                continue
            }
            let bytes = UnsafeBufferPointer(start: buffers + i * Self.slotSize, count: Int(lengths[i]))
            guard let device = UeventDecoder.decode(bytes) else {
                rejected += 1
                continue
            }
            if filters.isEmpty || filters.contains(where: { $0.matches(device) }) { devices.append(device) }
        }
        return Int(n)
    }
}

extension UdevMonitor.Filter {
    func matches(_ device: UdevMonitor.Device) -> Bool {
        device.subsystem == subsystem && (devtype == nil || device.devtype == devtype)
    }
}

/// Decodes one kernel uevent datagram: `ACTION@DEVPATH\0` then `KEY=VALUE\0` pairs.
///
/// Nothing in it is trusted: the header must name an action and a devpath, the properties `ACTION`, `DEVPATH`,
/// `SUBSYSTEM` and `SEQNUM` must be present and agree with the header, each property may appear once, and
/// anything else is rejected (nil).
public enum UeventDecoder {
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> UdevMonitor.Device? {
        guard let headerEnd = bytes.firstIndex(of: 0), let at = bytes[..<headerEnd].firstIndex(of: UInt8(ascii: "@")),
            at > 0, headerEnd - at > 1
        else { return nil }
        var device = UdevMonitor.Device(
            action: "", devpath: "", subsystem: nil, devtype: nil, devnode: nil, driver: nil, sysname: nil, seqnum: 0,
            properties: [])
        device.properties.reserveCapacity(8)
        var start = headerEnd + 1
        var seqnumText: String? = nil
        while start < bytes.count {
            let end = bytes[start...].firstIndex(of: 0) ?? bytes.count
            let field = UnsafeBufferPointer(rebasing: bytes[start..<end])
            start = end + 1
            guard !field.isEmpty else { continue }
            guard let equals = field.firstIndex(of: UInt8(ascii: "=")), equals > 0 else { return nil }
            let name = String(decoding: UnsafeBufferPointer(rebasing: field[..<equals]), as: UTF8.self)
            let value = String(decoding: UnsafeBufferPointer(rebasing: field[(equals + 1)...]), as: UTF8.self)
            // The kernel names each property once; a repeated name would become a repeated member of the event's
            // `data`, a journal line no reader accepts (found by fuzzing).
            guard !device.properties.contains(where: { $0.name == name }) else { return nil }
            switch name {
            case "ACTION": device.action = value
            case "DEVPATH": device.devpath = value
            case "SUBSYSTEM": device.subsystem = value
            case "DEVTYPE": device.devtype = value
            case "DRIVER": device.driver = value
            case "DEVNAME": device.devnode = value.hasPrefix("/") ? value : "/dev/" + value
            case "SEQNUM": seqnumText = value
            default: break
            }
            device.properties.append((name, value))
        }
        let headerAction = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<at]), as: UTF8.self)
        let headerPath = String(decoding: UnsafeBufferPointer(rebasing: bytes[(at + 1)..<headerEnd]), as: UTF8.self)
        guard !device.action.isEmpty, device.action == headerAction, device.devpath == headerPath,
            device.devpath.hasPrefix("/"), device.subsystem != nil, let seqnumText, let seqnum = UInt64(seqnumText)
        else { return nil }
        device.seqnum = seqnum
        device.sysname = device.devpath.split(separator: "/").last.map(String.init)
        return device
    }
}
