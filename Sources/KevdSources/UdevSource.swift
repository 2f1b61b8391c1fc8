import KevdDeviceEvents
import KevdEvent
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// Device events: from libudev's monitor when udevd runs (`udev`), or the kernel's raw uevents (`kernel`),
/// which kevd reads from the netlink socket itself, many per `recvmmsg`.
///
/// The receive buffer is large (16 MiB by default) because the kernel drops uevents when it fills; when it did,
/// the next receive fails with ENOBUFS and kevd reports a `kevd`/`overflow` event naming the udev source instead
/// of losing them silently.
public final class UdevSource {
    private enum Monitor {
        case udev(UdevMonitor)
        case kernel(KernelUeventMonitor)
    }

    private let monitor: Monitor
    private let fd: Int32
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    public let spec: UdevSpec
    public let sourceName: String
    public private(set) var overflowCount = 0
    private var received: [UdevMonitor.Device] = []
    /// While a catch-up (at start, or a repair after an overflow) is computed off the loop: the devices live
    /// events named meanwhile, the last event's by devpath (they are newer than its enumeration, so the catch-up
    /// leaves those devices alone). Nil otherwise.
    var liveSinceCatchUpStart: [String: UdevMonitor.Device]? = nil
    /// With `catchup`: the devices present as kevd's events have told them (the start-up catch-up's history,
    /// then every event published), which a repair after an overflow compares with an enumeration. Nil until the
    /// start-up catch-up is applied.
    public internal(set) var knownDevices: DeviceCatchUp? = nil
    /// Called on the loop after an overflow was reported (the daemon starts a repair).
    public var onOverflow: (() -> Void)? = nil

    /// Devices per wakeup before yielding to the loop, so sinks flush during a storm (epoll is level-triggered).
    static let devicesPerWakeup = 2048

    public init(spec: UdevSpec, loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.spec = spec
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        let useUdev: Bool
        switch spec.source {
        case .udev: useUdev = true
        case .kernel: useUdev = false
        case .auto: useUdev = UdevMonitor.udevdIsRunning
        }
        let filters = spec.matches.map { UdevMonitor.Filter(subsystem: $0.subsystem, devtype: $0.devtype) }
        let bufferBytes: Int
        if useUdev {
            let m = try UdevMonitor(source: .udev, filters: filters, receiveBuffer: spec.receiveBuffer)
            monitor = .udev(m)
            fd = m.fd
            bufferBytes = m.receiveBufferBytes
            sourceName = "udev"
        } else {
            let m = try KernelUeventMonitor(filters: filters, receiveBuffer: spec.receiveBuffer)
            monitor = .kernel(m)
            fd = m.fd.rawValue
            bufferBytes = m.receiveBufferBytes
            sourceName = "kernel"
        }
        received.reserveCapacity(KernelUeventMonitorBatch.size)
        logger.info("udev monitor started", metadata: ["udev.source": "\(sourceName)", "udev.rcvbuf": "\(bufferBytes)"])
        try loop.register(fd: fd, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.drain()
        }
    }

    deinit { loop.unregister(fd: fd) }

    var receiveBufferBytes: Int {
        switch monitor {
        case .udev(let m): return m.receiveBufferBytes
        case .kernel(let m): return m.receiveBufferBytes
        }
    }

    func drain() {
        var handled = 0
        while handled < Self.devicesPerWakeup {
            received.removeAll(keepingCapacity: true)
            do {
                switch monitor {
                case .udev(let m):
                    guard let device = try m.receive() else { return }
                    received.append(device)
                case .kernel(let m):
                    guard try m.receive(into: &received) > 0 else { return }
                }
            } catch let error as SyscallError where error.errno == .noBufferSpace {
                reportOverflow()
                continue
            } catch {
                logger.error("udev receive failed", metadata: ["error": "\(error)"])
                return
            }
            for device in received { publish(device) }
            handled += max(received.count, 1)
        }
    }

    private func reportOverflow() {
        overflowCount += 1
        var data = EventData()
        data.append("source", "udev")
        data.append("monitor", sourceName)
        data.append("message", "device events were lost: the netlink receive buffer was full")
        data.append("receive_buffer", receiveBufferBytes)
        data.append("overflows", overflowCount)
        logger.warning("udev receive buffer overflowed", metadata: ["udev.overflows": "\(overflowCount)"])
        pipeline.publishKevd("overflow", component: "udev", data)
        onOverflow?()
    }

    private func publish(_ device: UdevMonitor.Device) {
        liveSinceCatchUpStart?[device.devpath] = device
        knownDevices?.fold(device)
        pipeline.publish(Self.draft(device))
    }

    /// The event a device becomes (KevdDeviceEvents, where the uevent fuzz target reaches it without the loop).
    public static func draft(_ device: UdevMonitor.Device) -> EventDraft {
        UdevDeviceEvent.draft(device)
    }
}

private enum KernelUeventMonitorBatch {
    static let size = 64
}
