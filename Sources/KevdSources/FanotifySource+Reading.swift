import KevdKernel

/// Reading the fanotify fd: when (`ReadPacer`, as the inotify source's: while the marked file systems are busy
/// each read takes a thousand records rather than a few), and how much per turn.
extension FanotifySource {
    /// The longest record kevd asks for: metadata (24), a `FAN_RENAME`'s two directory handles with names and
    /// the object's handle (each info 20 bytes + a handle of up to 128 + a name of up to 256).
    static let largestRecord = 24 + 2 * (20 + 128 + 256) + (20 + 128)

    func watchFanotifyFD() throws {
        try loop.register(fd: fanotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.readable()
        }
    }

    func readable() {
        if pacer.readNow(fd: fanotify.fd.rawValue, loop: loop) { drain() }
    }

    /// The pace timer: back in the wait set, and read what came meanwhile.
    func resume() {
        pacer.resume { try watchFanotifyFD() }
        drain()
    }

    /// One read per turn (the fd is level-triggered: what is left brings the loop back), so a turn's events,
    /// encoded into the journal's and stdout's buffers, stay cache-sized.
    func drain() {
        let count: Int?
        do {
            count = try fanotify.read(into: readBuffer)
        } catch {
            pacer.behind = false
            reportError("fanotify read failed", error: error)
            return
        }
        guard let count, count > 0 else {
            pacer.behind = false
            settleListing(queueEmptied: true)
            return
        }
        pacer.counted(count)
        pacer.behind = count >= Self.readBufferSize - Self.largestRecord
        var decoder = FanotifyRecordDecoder(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
        while let record = decoder.next() { handle(record) }
        settleListing(queueEmptied: !pacer.behind)
        armMoveTimerIfHolding()
        if fanotify.unlimitedQueue {
            if pacer.behind { enforceQueueBound(limit: queueByteLimit) }
            armBoundTimer()
        }
    }
}
