import CKevdInput
import Glibc
import KevdSpec
import KevdEvent
import KevdKernel
import KevdReactor
import Logging

/// `[input]`: evdev devices as source `input`.
///
/// Devices present at start are found in /dev/input; later ones are opened when udev's `add` for them arrives
/// (a monitor of its own, for subsystem `input` only) and closed on `remove`, or as soon as a read fails with
/// ENODEV (an unplugged device's fd stays readable: it is closed, never read again, so the loop cannot spin on
/// it). Only the configured keys and switches become events: every other code is dropped as it is read, never
/// logged or recorded, so kevd on a keyboard is not a keylogger.
public final class InputSource {
    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    public let spec: InputSpec
    private let wantedKeys: Set<UInt16>?
    private let wantedSwitches: Set<UInt16>?
    private var devices: [String: InputDevice] = [:]
    private let monitor: UdevMonitor
    private var readBuffer = [kevd_input_event](repeating: kevd_input_event(), count: 64)
    var inhibitor: LogindInhibitor?

    /// The keys and switches that choose a device when `[input] devices` is not given: udevd's power-switch
    /// tag (70-power-switch.rules) and logind pick devices by the same bits.
    static let systemKeyCodes: [UInt16] = [0x74, 0x8e, 0xcd]  // KEY_POWER, KEY_SLEEP, KEY_SUSPEND
    static let systemSwitchCodes: [UInt16] = [0x00, 0x01]  // SW_LID, SW_TABLET_MODE
    /// Reads per wakeup and device before yielding to the loop (64 events each).
    static let readsPerWakeup = 16

    public init(spec: InputSpec, loop: EventLoop, pipeline: EventPipeline, logger: Logger) throws {
        self.spec = spec
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
        if let keys = spec.keys {
            var k = Set<UInt16>(), s = Set<UInt16>()
            for name in keys {
                switch InputNames.code(of: name) {
                case (.key, let code)?: k.insert(code)
                case (.switch, let code)?: s.insert(code)
                case nil: break  // Checked when the configuration was read.
                }
            }
            wantedKeys = k
            wantedSwitches = s
        } else {
            wantedKeys = nil
            wantedSwitches = nil
        }
        monitor = try UdevMonitor(
            source: UdevMonitor.udevdIsRunning ? .udev : .kernel, filters: [.init(subsystem: "input", devtype: nil)],
            receiveBuffer: 1 << 20)
        try loop.register(fd: monitor.fd, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.drainMonitor()
        }
        scan()
        if !spec.inhibit.isEmpty { inhibitor = LogindInhibitor(locks: spec.inhibit, loop: loop, pipeline: pipeline, logger: logger) }
    }

    deinit {
        inhibitor?.stop()
        loop.unregister(fd: monitor.fd)
        for device in devices.values { loop.unregister(fd: device.fd) }
    }

    /// The device nodes read now, sorted.
    public var openDevices: [String] { devices.keys.sorted() }

    // MARK: devices

    private func scan() {
        guard let dir = opendir("/dev/input") else { return }
        defer { closedir(dir) }
        var nodes: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix("event") { nodes.append("/dev/input/" + name) }
        }
        for node in nodes.sorted() { open(node, properties: nil, reason: "present") }
    }

    private func drainMonitor() {
        for _ in 0..<256 {
            let device: UdevMonitor.Device?
            do {
                device = try monitor.receive()
            } catch {
                logger.warning("input device monitor receive failed", metadata: ["error": "\(error)"])
                return
            }
            guard let device else { return }
            guard let node = device.devnode, node.hasPrefix("/dev/input/event") else { continue }
            switch device.action {
            case "add": open(node, properties: device.properties, reason: "added")
            case "remove":
                // What the device reported before it went (the kernel releases held keys) is read first.
                if let device = devices[node] { drain(device, closingOnError: false) }
                close(node, reason: "removed")
            default: break
            }
        }
    }

    private func open(_ devnode: String, properties: [(name: String, value: String)]?, reason: String) {
        guard devices[devnode] == nil else { return }
        let device: InputDevice
        do {
            device = try InputDevice(devnode: devnode)
        } catch {
            // Gone again before we looked (ENOENT, ENODEV) is the ordinary race of a short-lived device.
            if error.errno != ENOENT && error.errno != ENODEV {
                logger.warning("cannot open input device", metadata: ["devnode": "\(devnode)", "error": "\(error)"])
            }
            return
        }
        guard selected(device, properties: properties) else { return }
        if spec.grab {
            let r = kevd_input_grab(device.fd, 1)
            if r < 0 {
                logger.warning("cannot grab input device", metadata: ["devnode": "\(devnode)", "errno": "\(-r)"])
            } else {
                device.grabbed = true
            }
        }
        do {
            try loop.register(fd: device.fd, events: .readable, priority: .kernelInput) { [unowned self, unowned device] _ in
                self.drain(device)
            }
        } catch {
            logger.error("cannot watch input device", metadata: ["devnode": "\(devnode)", "error": "\(error)"])
            return
        }
        devices[devnode] = device
        logger.info("input device opened", metadata: ["devnode": "\(devnode)", "device": "\(device.name)"])
        pipeline.publish(InputEvents.device("opened", identity(device), reason: reason))
        publishSwitchState(device)
    }

    private func close(_ devnode: String, reason: String) {
        guard let device = devices.removeValue(forKey: devnode) else { return }
        loop.unregister(fd: device.fd)
        device.closeNow()
        // The kernel releases held keys as a device goes, but a reader that comes after the device is marked dead
        // only gets ENODEV: a key still down is released here, so no rule waits for a release that never comes.
        for code in device.held.sorted() {
            guard var draft = InputEvents.key(code: code, value: 0, device: identity(device)) else { continue }
            draft.data.append("synthetic", true)
            pipeline.publish(draft)
        }
        device.held.removeAll()
        logger.info("input device closed", metadata: ["devnode": "\(devnode)", "reason": "\(reason)"])
        pipeline.publish(InputEvents.device("closed", identity(device), reason: reason))
    }

    /// The `[input] devices` choice, or by default a device with a system key or switch.
    private func selected(_ device: InputDevice, properties: [(name: String, value: String)]?) -> Bool {
        if spec.devices.isEmpty {
            return Self.systemKeyCodes.contains(where: device.hasKey) || Self.systemSwitchCodes.contains(where: device.hasSwitch)
        }
        var known = properties
        for match in spec.devices {
            switch match {
            case .path(let path):
                if path == device.devnode || Self.resolved(path) == device.devnode { return true }
            case .property(let name, let pattern):
                if known == nil { known = Self.udevProperties(device.devnode) }
                if let value = known?.first(where: { $0.name == name })?.value, Self.matches(value, pattern) { return true }
            }
        }
        return false
    }

    static func matches(_ value: String, _ pattern: String) -> Bool {
        if pattern.hasSuffix("*") { return value.hasPrefix(pattern.dropLast()) }
        return value == pattern
    }

    private static func resolved(_ path: String) -> String? {
        guard let real = realpath(path, nil) else { return nil }
        defer { free(real) }
        return String(cString: real)
    }

    /// udevd's properties of a device present at start, from its database (/run/udev/data/c13:MINOR, `E:` lines).
    static func udevProperties(_ devnode: String) -> [(name: String, value: String)] {
        var st = stat()
        guard stat(devnode, &st) == 0 else { return [] }
        let dev = UInt64(st.st_rdev)
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        guard let bytes = try? FileContents.read("/run/udev/data/c\(major):\(minor)") else { return [] }
        var properties: [(name: String, value: String)] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("E:") {
            let pair = line.dropFirst(2).split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if pair.count == 2 { properties.append((String(pair[0]), String(pair[1]))) }
        }
        return properties
    }

    // MARK: events

    private func drain(_ device: InputDevice, closingOnError: Bool = true) {
        for _ in 0..<Self.readsPerWakeup {
            let n = readBuffer.withUnsafeMutableBufferPointer { kevd_input_read(device.fd, $0.baseAddress, Int32($0.count)) }
            if n == 0 { return }
            if n < 0 {
                guard closingOnError else { return }
                let reason = -n == ENODEV ? "unplugged" : "read failed: \(String(cString: strerror(-n)))"
                close(device.devnode, reason: reason)
                return
            }
            for i in 0..<Int(n) { handle(readBuffer[i], device) }
        }
    }

    private func handle(_ raw: kevd_input_event, _ device: InputDevice) {
        switch Int(raw.type) {
        case Int(KEVD_EV_KEY):
            // The filter comes first: an unconfigured key is dropped before anything is made of it.
            guard wantedKeys?.contains(raw.code) ?? true else { return }
            if raw.value == 0 { device.held.remove(raw.code) } else { device.held.insert(raw.code) }
            if let draft = InputEvents.key(code: raw.code, value: raw.value, device: identity(device)) {
                pipeline.publish(draft)
            }
        case Int(KEVD_EV_SW):
            guard wantedSwitches?.contains(raw.code) ?? true else { return }
            if let draft = InputEvents.switch(code: raw.code, on: raw.value != 0, device: identity(device), catchup: false) {
                pipeline.publish(draft)
            }
        case Int(KEVD_EV_SYN) where raw.code == UInt16(KEVD_SYN_DROPPED):
            // The device's kernel buffer overflowed: events were lost. Say so, and read the switches again.
            var data = EventData()
            data.append("source", "input")
            data.append("devnode", device.devnode)
            data.append("message", "input events were lost: the device's kernel buffer was full (SYN_DROPPED)")
            pipeline.publishKevd("overflow", component: "input", data)
            publishSwitchState(device)
        default:
            return
        }
    }

    private func publishSwitchState(_ device: InputDevice) {
        guard let state = device.switchState() else { return }
        for code in Self.switchCodes where device.hasSwitch(code) && (wantedSwitches?.contains(code) ?? true) {
            let on = InputDevice.bit(state, Int(code))
            if let draft = InputEvents.switch(code: code, on: on, device: identity(device), catchup: true) {
                pipeline.publish(draft)
            }
        }
    }

    private static let switchCodes: [UInt16] = Array(0...UInt16(KEVD_SW_MAX))

    private func identity(_ device: InputDevice) -> InputEvents.DeviceIdentity {
        InputEvents.DeviceIdentity(name: device.name, devnode: device.devnode, phys: device.phys)
    }
}
