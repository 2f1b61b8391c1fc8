import KevdKernel

/// Read pacing: when the fanotify fd is read, and how much per turn. The same scheme as the inotify source's
/// (InotifySource+Reading.swift, which explains the costs it saves): while the marked file systems are busy, a
/// wakeup that comes sooner than `readIntervalNanoseconds` after the previous read takes the fd out of the wait set
/// until that time is up, so each read (and each turn's journal and stdout writes) takes a thousand records
/// rather than a few. Interactive rates are never held back, and neither is a backlog (`behind`).
extension FanotifySource {
    static let readIntervalNanoseconds: UInt64 = 4_000_000
    static let busyWindowNanoseconds: UInt64 = 10_000_000
    /// Busy: more than this many bytes of records in a 10 ms window (about 160 records of ~100 bytes).
    static let busyWindowBytes = 16 * 1024
    /// The longest record kevd asks for: metadata (24), a `FAN_RENAME`'s two directory handles with names and
    /// the object's handle (each info 20 bytes + a handle of up to 128 + a name of up to 256).
    static let largestRecord = 24 + 2 * (20 + 128 + 256) + (20 + 128)

    func watchFanotifyFD() throws {
        try loop.register(fd: fanotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.readable()
        }
    }

    func readable() {
        let now = Clock.monotonicNanoseconds()
        if now &- windowStart >= Self.busyWindowNanoseconds {
            busy = windowBytes >= Self.busyWindowBytes
            windowBytes = 0
            windowStart = now
        }
        let due = lastRead &+ Self.readIntervalNanoseconds
        if busy, !behind, now < due, !paused, (try? paceTimer.arm(delay: Int64(due - now), interval: 0)) != nil {
            loop.unregister(fd: fanotify.fd.rawValue)
            paused = true
            return
        }
        lastRead = now
        drain()
    }

    /// The pace timer: back in the wait set, and read what came meanwhile.
    func resume() {
        if paused {
            // Should re-registering fail (epoll out of memory), the timer tries again: the source is never lost.
            paused = (try? watchFanotifyFD()) == nil
            if paused { _ = try? paceTimer.arm(delay: Int64(Self.readIntervalNanoseconds), interval: 0) }
        }
        lastRead = Clock.monotonicNanoseconds()
        drain()
    }

    /// One read per turn (the fd is level-triggered: what is left brings the loop back), so a turn's events,
    /// encoded into the journal's and stdout's buffers, stay cache-sized.
    func drain() {
        let count: Int?
        do {
            count = try fanotify.read(into: readBuffer)
        } catch {
            behind = false
            reportError("fanotify read failed", error: error)
            return
        }
        guard let count, count > 0 else {
            behind = false
            settleListing(queueEmptied: true)
            return
        }
        windowBytes += count
        behind = count >= Self.readBufferSize - Self.largestRecord
        var decoder = FanotifyRecordDecoder(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
        while let record = decoder.next() { handle(record) }
        settleListing(queueEmptied: !behind)
        armMoveTimerIfHolding()
        if fanotify.unlimitedQueue {
            if behind { enforceQueueBound(limit: queueByteLimit) }
            armBoundTimer()
        }
    }
}
