import KevdDeviceEvents
import KevdKernel

/// `[udev] catchup = true`: the devices that appeared or vanished while kevd was down, journaled at start as
/// `add`/`remove` with `data.catchup = true` (the difference is computed off the loop by the daemon).
extension UdevSource {
    /// Whether this source reads the kernel's uevents: its catch-up enumerates /sys, as the kernel names devices;
    /// the `udev` source's enumerates with libudev, whose devices carry udevd's properties as its events do.
    public var isKernel: Bool { sourceName == "kernel" }

    /// The catch-up is being computed: remember which devices live events name until it is applied.
    public func catchUpStarted() { liveSinceCatchUpStart = [] }

    /// On the loop: publishes the difference, less the devices a live event named since the catch-up started
    /// (the live event is newer than the enumeration). Returns how many events were published.
    @discardableResult
    public func catchUp(_ devices: [UdevMonitor.Device]) -> Int {
        // The kernel makes a device's /sys entry a moment before it sends its uevent, and udevd writes its database
        // entry a moment before it sends its event: one the enumeration saw may still be in the socket. Reading the socket first lets the live event win, rather than follow a catch-up
        // add for the same device (a remaining window of microseconds, named in README).
        drain()
        let live = liveSinceCatchUpStart ?? []
        liveSinceCatchUpStart = nil
        var published = 0
        for device in devices where !live.contains(device.devpath) {
            pipeline.publish(DeviceCatchUp.draft(device))
            published += 1
        }
        logger.info("devices caught up", metadata: ["udev.catchup": "\(published)"])
        return published
    }
}
