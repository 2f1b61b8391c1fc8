import KevdKernel

/// Reading the inotify fd: when (`ReadPacer`: a busy tree is read less often) and how much per turn.
extension InotifySource {

    /// Reads per wakeup at most. Only short reads (the queue was emptied) are repeated, to confirm it empty when
    /// a listing's names are pending; a full read always ends the turn (see `drain`).
    static let readsPerWakeup = 4
    /// `struct inotify_event` with the longest name (NAME_MAX 255, NUL, padding).
    static let largestRecord = 16 + 256 + 16

    func watchInotifyFD() throws {
        try loop.register(fd: inotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            self.readable()
        }
    }

    /// The inotify fd has events: read them now, unless the tree is busy and the last read was too recent
    /// (`ReadPacer`).
    func readable() {
        if pacer.readNow(fd: inotify.fd.rawValue, loop: loop) { drain() }
    }

    /// The pace timer: back in the wait set, and read what came meanwhile.
    func resume() {
        pacer.resume { try watchInotifyFD() }
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
            pacer.counted(count)
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
        pacer.behind = full && !emptied
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
