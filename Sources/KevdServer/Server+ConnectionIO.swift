import CKevdShim
import Glibc
import KevdKernel
import KevdReactor

/// Connection I/O on the loop thread: reading request lines (bounded per turn and by `max_request`), the turn's
/// single write per connection, interest in readable/writable, dropping a connection.
extension Server {
    func handle(_ id: UInt64, _ events: Epoll.Events) {
        guard let c = connections[id] else { return }
        if events.contains(.writable) {
            c.waitingForWritable = false
            setInterest(c)
            dirty.insert(id)
        }
        if events.contains(.hangup) || events.contains(.error) {
            // Both directions are gone: nothing more can be answered.
            drop(id)
            return
        }
        if events.contains(.readable) || events.contains(.readHangup) { readInput(c) }
    }

    /// Requests handled per connection per loop turn. A client pipelining emits must not publish so many in
    /// one turn that every subscriber's send buffer overflows before the turn's single write; the rest waits
    /// for the next turn (a few microseconds later).
    static let requestsPerTurn = 512

    func readInput(_ c: Connection) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<16 where mayRead(c) {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(c.fd.rawValue, $0.baseAddress, $0.count) }
            if n > 0 {
                c.input.append(contentsOf: chunk[0..<n])
                if c.input.count > settings.maxRequest * 2 { break }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { break }
            if n < 0 {
                drop(c.id)  // ECONNRESET and the like.
                return
            }
            // EOF: the client finished sending (`socat` after its input ended) but may still read replies.
            c.inputClosed = true
            setInterest(c)
            break
        }
        processInput(c)
    }

    /// Whether to read more from a client now. With complete requests still queued, only while they run low
    /// (the kernel buffers the rest); an incomplete line is read until it ends or passes `max_request`.
    func mayRead(_ c: Connection) -> Bool {
        if c.input.count < 256 * 1024 { return true }
        return c.input.count <= settings.maxRequest && !c.input.contains(UInt8(ascii: "\n"))
    }

    /// Handles the complete request lines (up to `requestsPerTurn`), as long as the client reads its replies.
    func processInput(_ c: Connection) {
        var start = 0
        var handled = 0
        while !c.closing, c.output.count < settings.sendBuffer {
            if handled == Self.requestsPerTurn {
                // More next turn; the inbox wakes the loop even if the socket has nothing new.
                let id = c.id
                let bound = LoopBound(server: self)
                context.loop.inbox.post {
                    guard let self = bound.server, let c = self.connections[id] else { return }
                    self.readInput(c)
                }
                break
            }
            guard let newline = c.input[start...].firstIndex(of: UInt8(ascii: "\n")) else { break }
            let line = c.input[start..<newline]
            start = newline + 1
            if line.count > settings.maxRequest {
                tooLong(c, length: line.count)
                break
            }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            handled += 1
            c.sentRequest = true
            line.withUnsafeBytes { request(c, UnsafeRawBufferPointer($0)) }
        }
        if start > 0 { c.input.removeFirst(start) }
        if !c.closing, c.input.count > settings.maxRequest, c.input.firstIndex(of: UInt8(ascii: "\n")) == nil {
            tooLong(c, length: c.input.count)
        }
        dirty.insert(c.id)
    }

    /// `length`: how much of the line has arrived (all of it, or what was read before it passed the limit).
    func tooLong(_ c: Connection, length: Int) {
        // The rest of an oversized line cannot be told from the next request: answer, then hang up.
        refuse(
            c, .maxRequest, configured: settings.maxRequest, value: length,
            "request line longer than \(settings.maxRequest) bytes ([server] max_request); closing")
        c.input.removeAll()
        c.closing = true
        dirty.insert(c.id)
    }

    func drop(_ id: UInt64) {
        guard let c = connections.removeValue(forKey: id) else { return }
        byFD.removeValue(forKey: c.fd.rawValue)
        released(c)
        context.loop.unregister(fd: c.fd.rawValue)
        c.fd.close()
        if let name = c.subscription?.name, names[name] == id { names.removeValue(forKey: name) }
        dirty.remove(id)
        if acceptPaused { resumeAccepting() }
    }

    func setInterest(_ c: Connection) {
        // After EOF, reading again would report it on every turn (epoll is level-triggered).
        var events: Epoll.Events = c.inputClosed ? [] : [.readable, .readHangup]
        if c.waitingForWritable { events.insert(.writable) }
        // Stop reading requests from a client that does not read its replies.
        if c.output.count >= settings.sendBuffer && c.subscription == nil { events.remove(.readable) }
        try? context.loop.modify(fd: c.fd.rawValue, events: events)  // Fails only for a dropped fd.
    }

    public func endOfTurn() {
        if acceptPaused && Clock.monotonicNanoseconds() &- acceptPausedAt > 1_000_000_000 { resumeAccepting() }
        // New records in the journal's file: readers that found its end (or were held back) read on.
        if context.journal.writtenSeq != lastWrittenSeq {
            lastWrittenSeq = context.journal.writtenSeq
            for c in connections.values where c.subscription?.mode == .journal && !c.waitingForWritable {
                dirty.insert(c.id)
            }
            dirty.formUnion(heldForJournal)
            heldForJournal.removeAll()
        }
        guard !dirty.isEmpty else { return }
        let ids = dirty
        dirty.removeAll(keepingCapacity: true)
        var budget = CatchUpBudget(now: Clock.monotonicNanoseconds())
        for id in catchUpOrder(ids) {
            guard let c = connections[id] else { continue }
            if let sub = c.subscription, sub.mode == .journal, !c.waitingForWritable { pump(c, sub, budget: &budget) }
            if let sub = c.subscription, sub.lastLive > context.journal.writtenSeq {
                // This turn's events went out live before the journal's write failed: they wait with it.
                heldForJournal.insert(id)
                continue
            }
            flush(c)
        }
        publishDamageReports()
        // Catch-up work left for later (a per-turn budget keeps the loop fair), or events published after the
        // journal's write this turn (a sink's own `overflow`): come back next turn. While the journal fails,
        // its retry timer brings the turns.
        if !dirty.isEmpty || (!heldForJournal.isEmpty && context.journal.lastError == nil) { context.loop.requestTurn() }
    }

    func flush(_ c: Connection) {
        guard !c.waitingForWritable else { return }
        if !c.output.isEmpty {
            let n = kevd_write_some(c.fd.rawValue, c.output.bytes.baseAddress, c.output.count)
            if n < 0 {
                drop(c.id)  // EPIPE, ECONNRESET: the client left.
                return
            }
            c.output.removeFirst(n)
        }
        if c.output.isEmpty {
            c.output.removeAll(shrinkAbove: 256 * 1024)
            let finished = c.inputClosed && c.subscription == nil && c.replyQueue.isEmpty
                && !c.input.contains(UInt8(ascii: "\n"))
            if c.closing || finished {
                drop(c.id)
                return
            }
            // Requests held back while the output was full can go on now, in the next turn: an emit must reach the
            // journal's file (first in every turn) before any socket.
            if c.input.contains(UInt8(ascii: "\n")) {
                let id = c.id
                let bound = LoopBound(server: self)
                context.loop.inbox.post {
                    guard let self = bound.server, let c = self.connections[id] else { return }
                    self.processInput(c)
                }
            }
        } else {
            c.waitingForWritable = true
        }
        setInterest(c)
    }
}
