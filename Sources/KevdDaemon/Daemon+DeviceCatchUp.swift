import KevdEvent
import KevdKernel
import KevdSources

/// `[udev] catchup = true` at start (both sources): fold, enumerate and diff off the loop, then publish.
extension Daemon {
    func startDeviceCatchUp() throws {
        guard let udev, udev.spec.catchup else { return }
        let filters = udev.spec.matches.map { UdevMonitor.Filter(subsystem: $0.subsystem, devtype: $0.devtype) }
        udev.catchUpStarted()
        // Weak and unchecked: the closure runs on the loop thread (through the inbox), where the daemon lives.
        nonisolated(unsafe) weak let daemon = self
        deviceCatchUp = try DeviceCatchUpFold(
            journalDirectory: journal.directory, source: udev.isKernel ? .kernel : .udev, filters: filters,
            beforeSeq: journal.recovery.nextSeq, inbox: loop.inbox
        ) { result in
            guard let daemon else { return }
            switch result {
            case .success(let devices):
                daemon.deviceCatchUp?.published = daemon.udev?.catchUp(devices) ?? 0
            case .failure(let error):
                daemon.reportError(
                    "cannot read the journal's devices or enumerate the present ones; no device is caught up",
                    error: error.description, component: "udev")
                daemon.deviceCatchUp?.published = 0
            }
        }
    }

    /// `sources.udev_catchup` in `status`: null when off; else whether it is done and how many events it published.
    func deviceCatchUpStatus() -> JSONValue {
        guard let deviceCatchUp else { return .null }
        return .object([
            ("done", .bool(deviceCatchUp.published != nil)), ("published", .int(Int64(deviceCatchUp.published ?? 0))),
        ])
    }
}
