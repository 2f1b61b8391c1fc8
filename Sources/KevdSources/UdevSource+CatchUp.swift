import KevdDeviceEvents
import KevdKernel

/// `[udev] catchup = true`: the devices that appeared or vanished while kevd was down, journaled at start as
/// `add`/`remove` with `data.catchup = true`, and the same after a receive buffer overflow (the repair); the
/// difference is computed off the loop by the daemon.
extension UdevSource {
    /// Whether this source reads the kernel's uevents: its catch-up enumerates /sys, as the kernel names devices;
    /// the `udev` source's enumerates with libudev, whose devices carry udevd's properties as its events do.
    public var isKernel: Bool { sourceName == "kernel" }

    /// After a reload replaced the monitor: the devices the previous one's events told go on being followed
    /// here, so that a later overflow is still repaired.
    public func continueFollowing(_ known: DeviceCatchUp?) { knownDevices = known }

    /// A catch-up is being computed: remember which devices live events name until it is applied.
    public func catchUpStarted() { liveSinceCatchUpStart = [:] }

    /// On the loop: publishes the difference, less the devices a live event named since the catch-up started
    /// (the live event is newer than the enumeration). `history` is what the start-up fold found in the journal
    /// (nil for a repair, which started from `knownDevices`): from here on, `knownDevices` follows every event.
    /// Returns how many events were published.
    @discardableResult
    public func catchUp(_ devices: [UdevMonitor.Device], history: DeviceCatchUp? = nil) -> Int {
        // The kernel makes a device's /sys entry a moment before it sends its uevent, and udevd writes its database
        // entry a moment before it sends its event: one the enumeration saw may still be in the socket. Reading the
        // socket first lets the live event win, rather than follow a catch-up add for the same device (a remaining
        // window of microseconds, named in README).
        drain()
        let live = liveSinceCatchUpStart ?? [:]
        liveSinceCatchUpStart = nil
        var known = history ?? knownDevices ?? DeviceCatchUp()
        var published = 0
        for device in devices where live[device.devpath] == nil {
            pipeline.publish(DeviceCatchUp.draft(device))
            known.fold(device)
            published += 1
        }
        // The live events since the start-up catch-up began were published before `knownDevices` existed.
        if history != nil { for device in live.values { known.fold(device) } }
        knownDevices = known
        logger.info("devices caught up", metadata: ["udev.catchup": "\(published)", "udev.repair": "\(history == nil)"])
        return published
    }
}
