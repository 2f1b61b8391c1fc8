import KevdKernel

/// Read pacing: when the inotify fd is read, how much per turn, and when a busy tree is read less often.
extension InotifySource {

    /// Reads per wakeup at most. Only short reads (the queue was emptied) are repeated, to confirm it empty when
    /// a listing's names are pending; a full read always ends the turn (see `drain`).
    static let readsPerWakeup = 4
    /// `struct inotify_event` with the longest name (NAME_MAX 255, NUL, padding).
    static let largestRecord = 16 + 256 + 16

    /// At most one read per this many nanoseconds while the tree is busy: see `readable`. 4 ms rather than 1:
    /// a quarter of the turns (each a timer, two `epoll_ctl`s, the journal's and stdout's writes) for ~7 % less
    /// CPU per event in the 1M-file benchmark; 4 ms at 250,000 events/s is ~1,000 records, half a read.
    static let readIntervalNanoseconds: UInt64 = 4_000_000
    /// Busy: more than this many bytes of records in a 10 ms window (16 KiB: about 50,000 events/s with short
    /// names). Below it, every event is read at once.
    static let busyWindowNanoseconds: UInt64 = 10_000_000
    static let busyWindowBytes = 16 * 1024

    func watchInotifyFD() throws {
        try loop.register(fd: inotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.readable()
        }
    }

    /// The inotify fd has events. A tree that is busy for a while (a build, an rsync, a generator) wakes the loop
    /// for every few events, and each wakeup costs more than the events it brings: a context switch,
    /// `epoll_wait`, the read, and the journal's and stdout's `write`s at the end of the turn. So while the tree
    /// is busy, a wakeup that comes less than `readIntervalNanoseconds` after the previous read takes the fd
    /// out of the wait set until that time is up, and the next read takes everything queued meanwhile (at
    /// 250,000 events/s, ~1,000 records: far from the kernel's 16,384). Out of the set, not masked: a masked fd's
    /// new events still wake `epoll_wait` for nothing. In the inotify benchmark this took kevd's CPU per event
    /// from 3.5 to about 2.5 µs. Interactive rates (a few thousand events a second) are never held back, and
    /// neither is a backlog (`behind`): it is read turn after turn until the queue is empty.
    func readable() {
        let now = Clock.monotonicNanoseconds()
        if now &- windowStart >= Self.busyWindowNanoseconds {
            busy = windowBytes >= Self.busyWindowBytes
            windowBytes = 0
            windowStart = now
        }
        let due = lastRead &+ Self.readIntervalNanoseconds
        if busy, !behind, now < due, !paused, (try? paceTimer.arm(delay: Int64(due - now), interval: 0)) != nil {
            loop.unregister(fd: inotify.fd.rawValue)
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
            paused = (try? watchInotifyFD()) == nil
            if paused { _ = try? paceTimer.arm(delay: Int64(Self.readIntervalNanoseconds), interval: 0) }
        }
        lastRead = Clock.monotonicNanoseconds()
        drain()
    }

    /// Reads and handles what is queued. When the queue was emptied, the listing's duplicate filter is reset and
    /// unpaired moves get a short wait for their partner.
    ///
    /// At most one full buffer per turn: a turn's events are encoded into the journal's and stdout's buffers and
    /// written at its end, so the records read in one turn set the working set. When a stall (kevd not scheduled
    /// for a while) left a backlog, reading all of it at once made each turn tens of MB, the encoding ran
    /// from memory instead of cache at twice the cost per event, the backlog grew instead of shrinking, and the
    /// kernel queue overflowed (seen in the 1M-file benchmark). Turns of one read stay cache-sized.
    @discardableResult
    func drain() -> Bool {
        var emptied = false
        var full = false
        for _ in 0..<Self.readsPerWakeup {
            let count: Int?
            do {
                count = try inotify.read(into: readBuffer)
            } catch {
                reportError("inotify read failed", error: error)
                return false
            }
            guard let count, count > 0 else {
                emptied = true
                break
            }
            windowBytes += count
            var decoder = InotifyRecordDecoder(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
            while let record = decoder.next() { handle(record) }
            // The kernel returns every queued event that fits: a read with room to spare emptied the queue, and
            // another read would only say EAGAIN (epoll wakes us for anything newer). Not after a listing, though:
            // the IN_CREATEs it may duplicate were queued after this read, and must be read before the filter
            // of synthesized names is reset. A full read ends the turn whatever follows.
            full = count >= Self.readBufferSize - Self.largestRecord
            if full { break }
            if synthesized.isEmpty {
                emptied = true
                break
            }
        }
        // The last read may have taken the last records: the kernel says whether any are queued, so the queue is
        // seen empty now rather than at the next event. If records are left, the level-triggered fd brings
        // the loop back for them next turn.
        if !emptied { emptied = inotify.hasQueuedRecords == false }
        behind = full && !emptied
        guard emptied else {
            if !movePairer.isEmpty && !moveTimerArmed { armMoveTimer() }
            return false
        }
        // Every real IN_CREATE that a listing could duplicate was queued before the listing ran, so it has been
        // read by now.
        synthesized.removeAll(keepingCapacity: true)
        if !movePairer.isEmpty && !moveTimerArmed { armMoveTimer() }
        return true
    }
}
