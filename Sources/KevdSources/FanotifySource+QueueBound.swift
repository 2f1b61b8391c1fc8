import KevdKernel

/// The bound on the unlimited queue. As root kevd asks for `FAN_UNLIMITED_QUEUE`, so a burst or a stall never
/// costs events; but an unlimited queue grows with every change on the marked file systems for as long as kevd
/// does not read. So kevd bounds it itself: past the bound (FIONREAD: the bytes of records queued), it reads and
/// discards what is queued and reports `inotify`/`overflow` for every root, exactly as a kernel overflow.
///
/// Two bounds. While kevd reads (it is merely behind: a burst, a starved CPU) `queueByteLimit`, 64 MiB of records,
/// about half a million, and as much again of kernel memory. While kevd withholds kernel input because its journal
/// cannot write (Daemon+JournalFailure.swift: a full disk, which may last hours), `withheldQueueByteLimit`, 1 MiB,
/// about as many records as the kernel's default queue (16,384): what kevd cannot journal it must not hoard, and
/// the loss is reported as with a bounded queue. Checked after a read that left records behind (at most every
/// `boundCheckNanoseconds`: FIONREAD walks the whole queue), and, while input is withheld, by a timer at timers'
/// priority every second.
extension FanotifySource {
    static let defaultQueueByteLimit = 64 << 20
    static let withheldQueueByteLimit = 1 << 20
    static let boundCheckNanoseconds: UInt64 = 250_000_000

    func enforceQueueBound(limit: Int) {
        let now = Clock.monotonicNanoseconds()
        guard now &- lastBoundCheck >= Self.boundCheckNanoseconds else { return }
        lastBoundCheck = now
        guard let queued = fanotify.fd.queuedBytes, queued > limit else { return }
        shed(queued, limit: limit)
    }

    /// Reads and discards `bytes` of queued records (no more: a writer still busy cannot keep kevd here), then
    /// reports the loss.
    private func shed(_ bytes: Int, limit: Int) {
        flushPendingMove()
        var left = bytes
        while left > 0, let count = try? fanotify.read(into: readBuffer), count > 0 { left -= count }
        logger.warning("fanotify queue over its bound; queued events discarded",
            metadata: ["bytes": "\(bytes - max(left, 0))", "limit": "\(limit)"])
        handleOverflow()
    }

    /// Armed by reads (when not armed already): fires a second later, and acts only while kernel input is withheld
    /// (no reads, so nothing else looks at the queue), re-arming itself until it is not.
    func armBoundTimer() {
        guard !boundTimerArmed else { return }
        boundTimerArmed = (try? boundTimer.arm(delay: 1_000_000_000, interval: 0)) != nil
    }

    func boundTimerFired() {
        boundTimerArmed = false
        guard loop.isWithheld(.kernelInput) else { return }
        enforceQueueBound(limit: min(queueByteLimit, Self.withheldQueueByteLimit))
        armBoundTimer()
    }
}
