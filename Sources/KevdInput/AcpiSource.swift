import CKevdInput
import Glibc
import KevdSpec
import KevdEvent
import KevdReactor
import Logging

/// `[acpi]`: the kernel's ACPI notifications (generic netlink family `acpi_event`, multicast group
/// `acpi_mc_group`) as source `acpi`: the power and sleep buttons, the lid, AC adapter and battery changes,
/// with the four fields acpid prints, so acpid's `event=` lines translate one to one.
public final class AcpiSource {
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    public let spec: AcpiSpec
    private let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 8192)
    public private(set) var overflowCount = 0
    /// Messages per wakeup before yielding to the loop.
    static let messagesPerWakeup = 256

    public init(spec: AcpiSpec, loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.spec = spec
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        let fd = kevd_acpi_open(Int32(spec.receiveBuffer))
        guard fd >= 0 else {
            let hint = -fd == ENOENT ? " (the kernel has no acpi_event netlink family: no ACPI)" : ""
            throw InputError(call: "acpi_event netlink socket" + hint, errno: -fd)
        }
        self.fd = fd
        do {
            try loop.register(fd: fd, events: .readable, priority: .kernelInput) { [unowned self] _ in self.drain() }
        } catch {
            close(fd)
            throw error
        }
        logger.info("ACPI event socket opened")
    }

    deinit {
        loop.unregister(fd: fd)
        close(fd)
    }

    private func drain() {
        var event = kevd_acpi_event()
        for _ in 0..<Self.messagesPerWakeup {
            let r = buffer.withUnsafeMutableBufferPointer { kevd_acpi_receive(fd, $0.baseAddress, Int32($0.count), &event) }
            switch r {
            case 0: return
            case 1: pipeline.publish(Self.draft(event))
            case 2: continue
            case -ENOBUFS: reportOverflow()
            default:
                logger.error("ACPI event receive failed", metadata: ["error": "\(String(cString: strerror(-r)))"])
                return
            }
        }
    }

    static func draft(_ event: kevd_acpi_event) -> EventDraft {
        var e = event
        let deviceClass = withUnsafeBytes(of: &e.device_class) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let busID = withUnsafeBytes(of: &e.bus_id) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return InputEvents.acpi(deviceClass: deviceClass, busID: busID, type: event.type, data: event.data)
    }

    /// Decodes one netlink datagram as the kernel sends it: nil when it is not an ACPI event, throws when it is
    /// malformed. For the tests and fuzzing; the loop decodes in place.
    public static func decode(_ message: [UInt8]) throws -> EventDraft? {
        var event = kevd_acpi_event()
        let r = message.withUnsafeBufferPointer { kevd_acpi_decode($0.baseAddress, Int32($0.count), &event) }
        if r < 0 { throw InputError(call: "acpi_event message", errno: -r) }
        return r == 1 ? draft(event) : nil
    }

    /// The datagram the kernel would send: for the decoder's tests.
    public static func encode(deviceClass: String, busID: String, type: UInt32, data: UInt32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 256)
        let n = bytes.withUnsafeMutableBufferPointer {
            kevd_acpi_encode(deviceClass, busID, type, data, $0.baseAddress, Int32($0.count))
        }
        return Array(bytes.prefix(max(0, Int(n))))
    }

    private func reportOverflow() {
        overflowCount += 1
        var data = EventData()
        data.append("source", "acpi")
        data.append("message", "ACPI events were lost: the netlink receive buffer was full")
        data.append("receive_buffer", spec.receiveBuffer)
        data.append("overflows", overflowCount)
        logger.warning("ACPI receive buffer overflowed", metadata: ["acpi.overflows": "\(overflowCount)"])
        pipeline.publishKevd("overflow", component: "acpi", data)
    }
}
