import KevdDeviceEvents
import KevdEvent
import KevdKernel
import KevdSources

/// `[udev] catchup = true` at start (both sources): fold, enumerate and diff off the loop, then publish; after a
/// receive buffer overflow, enumerate and diff against the devices known so far (the repair).
extension Daemon {
    func startDeviceCatchUp() throws {
        guard let udev, udev.spec.catchup else { return }
        let filters = udev.spec.matches.map { UdevMonitor.Filter(subsystem: $0.subsystem, devtype: $0.devtype) }
        udev.catchUpStarted()
        // Weak and unchecked: the closures run on the loop thread (through the inbox), where the daemon lives.
        nonisolated(unsafe) weak let daemon = self
        udev.onOverflow = { daemon?.startDeviceRepair() }
        deviceCatchUp = try DeviceCatchUpFold(
            journalDirectory: journal.directory, stateDirectory: config.daemon.stateDir,
            source: udev.isKernel ? .kernel : .udev, filters: filters, beforeSeq: journal.recovery.nextSeq,
            inbox: loop.inbox
        ) { result in
            guard let daemon, let fold = daemon.deviceCatchUp else { return }
            switch result {
            case .success(let found):
                daemon.foldFinished(.udev, outcome: found.outcome)
                fold.published = daemon.udev?.catchUp(found.changes, history: found.history) ?? 0
            case .failure(let error):
                daemon.foldFinished(.udev, outcome: nil)
                daemon.reportError(
                    "cannot read the journal's devices or enumerate the present ones; no device is caught up",
                    error: error.description, component: "udev")
                fold.published = 0
            }
            // An overflow while the start-up catch-up was computed: repair now that the known devices are set.
            if fold.repairAgain { daemon.startDeviceRepair() }
        }
    }

    /// After a reload made a new udev source: it follows the devices the old one knew and repairs its overflows
    /// (when the start-up catch-up was applied; until then, its result is applied to the new source).
    func followDevices(_ known: KevdDeviceEvents.DeviceCatchUp?) {
        guard let udev, udev.spec.catchup, deviceCatchUp != nil else { return }
        udev.continueFollowing(known)
        nonisolated(unsafe) weak let daemon = self
        udev.onOverflow = { daemon?.startDeviceRepair() }
    }

    /// On the loop, after an overflow: the events the kernel dropped cannot be read again, but the devices they
    /// named can be enumerated. One repair at a time; an overflow during one (or during the start-up catch-up)
    /// starts another once it is applied.
    func startDeviceRepair() {
        guard let udev, let fold = deviceCatchUp else { return }
        guard let known = udev.knownDevices, !fold.repairing else {
            fold.repairAgain = true
            return
        }
        fold.repairAgain = false
        udev.catchUpStarted()
        nonisolated(unsafe) weak let daemon = self
        do {
            try fold.repair(known: known, inbox: loop.inbox) { result in
                guard let daemon, let fold = daemon.deviceCatchUp else { return }
                fold.repairing = false
                switch result {
                case .success(let found):
                    fold.repaired += daemon.udev?.catchUp(found.changes) ?? 0
                case .failure(let error):
                    _ = daemon.udev?.catchUp([])
                    daemon.reportError(
                        "cannot enumerate the devices after an overflow; what it lost is not repaired",
                        error: error.description, component: "udev")
                }
                fold.repairs += 1
                if fold.repairAgain { daemon.startDeviceRepair() }
            }
        } catch {
            fold.repairing = false
            _ = udev.catchUp([])
            reportError("cannot start the device repair after an overflow", error: "\(error)", component: "udev")
        }
    }

    /// `sources.udev_catchup` in `status`: null when off; else whether the start-up catch-up is done, how many
    /// events it published, and the repairs after overflows (applied, and the events they published).
    func deviceCatchUpStatus() -> JSONValue {
        guard let deviceCatchUp else { return .null }
        return .object([
            ("done", .bool(deviceCatchUp.published != nil)), ("published", .int(Int64(deviceCatchUp.published ?? 0))),
            ("repairs", .int(Int64(deviceCatchUp.repairs))), ("repaired", .int(Int64(deviceCatchUp.repaired))),
            ("checkpoint", checkpointStatus),
        ])
    }
}
