import KevdConfig
import KevdEvent
import KevdKernel
import Logging

/// Device events from a libudev netlink monitor.
///
/// The receive buffer is large (16 MiB by default) because the kernel drops uevents when it fills; when it did,
/// the next receive fails with ENOBUFS and kevd reports a `kevd`/`overflow` event naming the udev source instead
/// of losing them silently.
public final class UdevSource {
    let monitor: UdevMonitor
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    public let spec: UdevSpec
    public private(set) var overflowCount = 0

    public init(spec: UdevSpec, loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.spec = spec
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        let source: UdevMonitor.Source
        switch spec.source {
        case .udev: source = .udev
        case .kernel: source = .kernel
        case .auto: source = UdevMonitor.udevdIsRunning ? .udev : .kernel
        }
        monitor = try UdevMonitor(
            source: source, filters: spec.matches.map { .init(subsystem: $0.subsystem, devtype: $0.devtype) },
            receiveBuffer: spec.receiveBuffer)
        logger.info(
            "udev monitor started",
            metadata: ["udev.source": "\(source.rawValue)", "udev.rcvbuf": "\(monitor.receiveBufferBytes)"])
        try loop.register(fd: monitor.fd, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.drain()
        }
    }

    deinit { loop.unregister(fd: monitor.fd) }

    public var sourceName: String { monitor.source.rawValue }

    /// Devices per wakeup before yielding to the loop, so sinks flush during a storm (epoll is level-triggered).
    static let devicesPerWakeup = 2048

    func drain() {
        for _ in 0..<Self.devicesPerWakeup {
            let device: UdevMonitor.Device?
            do {
                device = try monitor.receive()
            } catch let error as SyscallError where error.errno == .noBufferSpace {
                overflowCount += 1
                var data = EventData()
                data.append("source", "udev")
                data.append("monitor", monitor.source.rawValue)
                data.append("message", "device events were lost: the netlink receive buffer was full")
                data.append("receive_buffer", monitor.receiveBufferBytes)
                data.append("overflows", overflowCount)
                logger.warning("udev receive buffer overflowed", metadata: ["udev.overflows": "\(overflowCount)"])
                pipeline.publishKevd("overflow", component: "udev", data)
                continue
            } catch {
                logger.error("udev receive failed", metadata: ["error": "\(error)"])
                return
            }
            guard let device else { return }
            publish(device)
        }
    }

    private func publish(_ device: UdevMonitor.Device) {
        var data = EventData()
        data.append("subsystem", device.subsystem ?? "")
        data.append("devtype", device.devtype ?? "")
        data.append("devnode", device.devnode ?? "")
        data.append("driver", device.driver ?? "")
        data.append("sysname", device.sysname ?? "")
        data.append("seqnum", .int(Int64(clamping: device.seqnum)))
        for property in device.properties where data[property.name] == nil {
            data.append(property.name, property.value)
        }
        pipeline.publish(EventDraft(source: .udev, type: device.action, key: device.devpath, data: data))
    }
}
