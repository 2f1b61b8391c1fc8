import KevdEvent
import KevdJournal
import KevdSpec
import KevdKernel

/// `subscribe` and `ack`, and live delivery to caught-up subscribers (journal catch-up: Server+CatchUp.swift).
extension Server {
    func subscribe(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "filter", "from", "name"]) { return c.replyError(bad) }
        guard c.subscription == nil else { return c.replyError("this connection already has a subscription") }
        let permissions = permissions(c.credentials)
        guard permissions.sources == nil || !(permissions.sources?.isEmpty ?? true) else {
            return c.replyError("permission denied: uid \(c.credentials.uid) may not subscribe")
        }
        if let held = subscriptionsOverLimit(c) {
            return refuse(
                c, .maxSubscriptionsPerUID, configured: settings.maxSubscriptionsPerUID, value: held,
                "too many subscriptions: uid \(c.credentials.uid) holds \(held) (limit \(settings.maxSubscriptionsPerUID), "
                    + "[server] max_subscriptions_per_uid); close one first")
        }
        var terms: [String]
        switch SubscribeRequest.terms(value) {
        case .success(let parsed): terms = parsed
        case .failure(let error): return c.replyError(error.message)
        }
        if let allowed = permissions.sources {
            // The restriction is one more term, so both delivery paths apply it the same way.
            terms.append(Permissions.sourceTerm(allowed))
        }
        let filter: EventFilter?
        do {
            filter = terms.isEmpty ? nil : try EventFilter(terms: terms)
        } catch {
            return c.replyError("\(error)")
        }
        let name: String?
        switch SubscribeRequest.name(value) {
        case .success(let parsed): name = parsed
        case .failure(let error): return c.replyError(error.message)
        }
        if let name, names[name] != nil { return c.replyError("subscription '\(name)' is in use by another client") }
        let head = context.pipeline.nextSeq
        var start: JournalReader.Start? = nil
        let from: SubscribeRequest.From?
        switch SubscribeRequest.from(value) {
        case .success(let parsed): from = parsed
        case .failure(let error): return c.replyError(error.message)
        }
        if let from {
            switch from {
            case .new: start = nil
            case .all: start = .first
            case .time(let time): start = .time(time.nanoseconds)
            case .seq(let seq): start = seq >= head ? nil : .seq(seq)
            }
        } else if let name, let stored = positions.load(name) {
            start = stored + 1 >= head ? nil : .seq(stored + 1)
        }
        let sub: Connection.Subscription
        if let start {
            let reader: JournalReader
            do {
                reader = try JournalReader(directory: context.journal.directory)
                try reader.seek(start)
            } catch {
                return c.replyError("cannot read the journal: \(error)")
            }
            var next: UInt64
            switch start {
            case .seq(let s): next = s
            case .first, .time: next = reader.firstAvailableSeq ?? head
            }
            sub = Connection.Subscription(filter: filter, terms: terms, name: name, next: next, mode: .journal)
            sub.reader = reader
            c.reply(.object([("ok", .bool(true)), ("op", .string("subscribe")), ("next", .uint(next))]))
            if let startsAt = reader.startsAt, startsAt > next {
                gap(c, sub, to: startsAt)
            }
        } else {
            sub = Connection.Subscription(filter: filter, terms: terms, name: name, next: head, mode: .live)
            c.reply(.object([("ok", .bool(true)), ("op", .string("subscribe")), ("next", .uint(head))]))
        }
        if let name { names[name] = c.id }
        c.subscription = sub
        dirty.insert(c.id)
    }

    func ack(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "seq"]) { return c.replyError(bad) }
        guard let sub = c.subscription, let name = sub.name else {
            return c.replyError("ack needs a named subscription (subscribe with \"name\")")
        }
        guard let seq = value["seq"]?.uint64Value else { return c.replyError("ack needs a \"seq\"") }
        guard seq < sub.next else { return c.replyError("cannot ack seq \(seq): not delivered yet (next is \(sub.next))") }
        let reply = JSONValue.object([("ok", .bool(true)), ("op", .string("ack")), ("seq", .uint(seq))])
        // Stored only once the event itself is durable: a position must never point past what a power cut keeps.
        c.reply(reply, waitingFor: max(seq, 1), store: (name: name, seq: seq))
        waiting.insert(c.id)
        durableAdvanced(context.journal.durableSeq)
    }

    /// Live delivery: every subscriber that is caught up gets the line, if it matches and fits.
    public func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        for c in connections.values {
            guard let sub = c.subscription, event.seq == sub.next else { continue }
            if context.journal.lastError != nil {
                // The journal cannot write (disk full, EIO): events it holds only in memory are not handed out,
                // or a crash before it writes them would give their seqs to other events that a subscriber sees
                // too. The subscriber reads them from the journal once they are written.
                if sub.mode == .live { switchToJournal(c, sub) }
                continue
            }
            if sub.mode == .journal {
                // Still reading older events from the journal: this one will come from there too.
                guard sub.drained else { continue }
                // Caught up: everything below `next` was handled, so it joins the live stream here.
                sub.mode = .live
                sub.reader = nil
            }
            if let filter = sub.filter, !filter.matches(event) {
                sub.next += 1
                continue
            }
            if c.output.count + line.count > settings.sendBuffer {
                // Behind: stop feeding it live; it will read from the journal from `next` on.
                switchToJournal(c, sub)
                continue
            }
            c.output.append(line)
            sub.next += 1
            sub.lastLive = event.seq
            dirty.insert(c.id)
        }
    }

    func switchToJournal(_ c: Connection, _ sub: Connection.Subscription) {
        sub.mode = .journal
        sub.drained = false
        do {
            let reader = try JournalReader(directory: context.journal.directory)
            try reader.seek(.seq(sub.next))
            sub.reader = reader
            context.logger.debug("subscriber behind; reading from the journal", metadata: ["subscriber.id": "\(c.id)"])
        } catch {
            c.replyError("cannot read the journal: \(error)")
            c.closing = true
        }
        dirty.insert(c.id)
    }

    func gap(_ c: Connection, _ sub: Connection.Subscription, to startsAt: UInt64) {
        reportNamedGap(sub, to: startsAt)
        var line: [UInt8] = []
        JSONValue.object([
            ("gap", .object([("from", .uint(sub.next)), ("to", .uint(startsAt - 1))])),
            ("reason", .string("deleted by journal retention before it was read")),
        ]).appendJSON(to: &line)
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { c.output.append($0) }
        sub.next = startsAt
    }
}
