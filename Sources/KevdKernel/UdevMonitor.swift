import CKevdShim
import CUdev
import Glibc

/// A libudev netlink monitor (`udev_monitor_new_from_netlink`), non-blocking.
///
/// `udev` receives events after udevd processed them (with its properties); `kernel` receives the raw kernel
/// uevents, which is all there is where udevd does not run (containers, initramfs, the tests' namespaces).
public final class UdevMonitor {
    public enum Source: String, Sendable {
        case udev
        case kernel
    }

    /// One device event, copied out of libudev so it outlives the `udev_device`.
    public struct Device: Sendable {
        public var action: String
        public var devpath: String
        public var subsystem: String?
        public var devtype: String?
        public var devnode: String?
        public var driver: String?
        public var sysname: String?
        public var seqnum: UInt64
        /// Every udev property in libudev's order (ACTION, DEVPATH, SUBSYSTEM, … as the kernel or udevd set them).
        public var properties: [(name: String, value: String)]
    }

    public struct Filter: Sendable, Equatable {
        public let subsystem: String
        public let devtype: String?
        public init(subsystem: String, devtype: String?) {
            self.subsystem = subsystem
            self.devtype = devtype
        }
    }

    private let udev: OpaquePointer
    private let monitor: OpaquePointer
    public let source: Source
    public let fd: Int32

    /// True when udevd runs on this machine (its control socket exists): where `auto` picks `udev`.
    public static var udevdIsRunning: Bool { access("/run/udev/control", F_OK) == 0 }

    /// Creates and starts the monitor. The receive buffer is set with `SO_RCVBUFFORCE` when permitted (root), else
    /// `SO_RCVBUF` (capped by net.core.rmem_max); `receiveBufferBytes` reports what the kernel granted.
    public init(source: Source, filters: [Filter], receiveBuffer: Int) throws {
        guard let udev = udev_new() else { throw SyscallError(call: "udev_new", errno: .init(rawValue: errno)) }
        guard let monitor = udev_monitor_new_from_netlink(udev, source.rawValue) else {
            let code = errno
            udev_unref(udev)
            throw SyscallError(call: "udev_monitor_new_from_netlink", errno: .init(rawValue: code == 0 ? EPROTO : code))
        }
        self.udev = udev
        self.monitor = monitor
        self.source = source
        do {
            for filter in filters {
                let r = udev_monitor_filter_add_match_subsystem_devtype(monitor, filter.subsystem, filter.devtype)
                if r < 0 { throw SyscallError(call: "udev_monitor_filter_add_match_subsystem_devtype", errno: .init(rawValue: -r)) }
            }
            let fd = udev_monitor_get_fd(monitor)
            // libudev's own setter only tries SO_RCVBUFFORCE; fall back to SO_RCVBUF so non-root gets what it may.
            if kevd_set_rcvbuf(fd, Int32(clamping: receiveBuffer), 1) != 0 {
                _ = kevd_set_rcvbuf(fd, Int32(clamping: receiveBuffer), 0)
            }
            let r = udev_monitor_enable_receiving(monitor)
            if r < 0 { throw SyscallError(call: "udev_monitor_enable_receiving", errno: .init(rawValue: -r)) }
            try syscall("fcntl(O_NONBLOCK)") { kevd_set_nonblocking(fd, 1) }
            self.fd = fd
        } catch {
            udev_monitor_unref(monitor)
            udev_unref(udev)
            throw error
        }
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
    }

    /// The receive buffer the kernel granted (it reports twice the requested size, for bookkeeping).
    public var receiveBufferBytes: Int { Int(kevd_get_rcvbuf(fd)) }

    /// The next device, nil when none is pending. Throws `ENOBUFS` when the kernel dropped messages because the
    /// receive buffer was full.
    public func receive() throws -> Device? {
        errno = 0
        guard let device = udev_monitor_receive_device(monitor) else {
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK || code == 0 || code == EINTR { return nil }
            throw SyscallError(call: "udev_monitor_receive_device", errno: .init(rawValue: code))
        }
        defer { udev_device_unref(device) }
        return Device(copying: device, action: "change")
    }
}
