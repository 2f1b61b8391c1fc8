import KevdEvent
import KevdJournal
import KevdKernel

extension Daemon {
    /// kevd's own periodic work (journal retention), on a timerfd of its own.
    func startHousekeeping() throws {
        watchRetention()
        journal.enforceRetention()
        let timer = try TimerFD(clock: .monotonic)
        let interval = config.journal.retentionIntervalNanoseconds
        try timer.arm(delay: interval, interval: interval)
        try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            _ = try? timer.read()  // Only EAGAIN is possible on a monotonic timer; the work below is what matters.
            // Before retention: a saved checkpoint lets it delete what the next start no longer has to fold.
            self.checkpointer?.saveIfDue()
            let deleted = self.journal.enforceRetention().deleted
            if !deleted.isEmpty {
                self.logger.info("journal retention", metadata: ["journal.deleted": "\(deleted.joined(separator: " "))"])
            }
        }
        housekeeping = timer
    }

    /// Retention's reports become events, each published from the loop's inbox (a turn of its own): a consumer
    /// that lost events to retention gets a journaled `kevd`/`gap` (key `forward:NAME`, `rule:NAME` or
    /// `subscription:NAME`, `data.from`/`data.to` the lost seqs), and a retention pass that cannot list the
    /// journal's directory gives one `kevd`/`error` per episode and a `kevd`/`resumed` when it works again.
    func watchRetention() {
        // Reports come from any thread (a forwarder's); the events are published by inbox work, on the loop.
        let inbox = loop.inbox
        let pipeline = LoopConfined(value: self.pipeline)
        journal.consumers.onReport { [inbox, pipeline, logger] report in
            inbox.post {
                var data = EventData()
                switch report {
                case .loss(let loss):
                    data.append("from", .int(Int64(clamping: loss.from)))
                    data.append("to", .int(Int64(clamping: loss.to)))
                    data.append("events", .int(Int64(clamping: loss.count)))
                    data.append("reason", "retention")
                    data.append("message", "events \(loss.from)...\(loss.to) were deleted by journal retention before \(loss.consumer) read them")
                    logger.error("events lost to journal retention", metadata: [
                        "consumer": "\(loss.consumer)", "from": "\(loss.from)", "to": "\(loss.to)",
                    ])
                    pipeline.value.publishKevd("gap", component: loss.consumer, data)
                case .position(let consumer, let message):
                    data.append("message", message)
                    data.append("reason", "position")
                    logger.error("stored position unreadable", metadata: ["consumer": "\(consumer)", "error": "\(message)"])
                    pipeline.value.publishKevd("error", component: consumer, data)
                }
            }
        }
        // On the loop thread, but maybe inside the journal's write (a rotation runs retention): a turn of its own.
        journal.onRetentionProblem = { [inbox, pipeline] problem in
            inbox.post {
                var data = EventData()
                if let problem {
                    data.append("message", problem)
                    data.append("reason", "retention")
                    pipeline.value.publishKevd("error", component: "retention", data)
                } else {
                    data.append("message", "journal retention works again")
                    pipeline.value.publishKevd("resumed", component: "retention", data)
                }
            }
        }
    }

    /// The `retention` member of the status reply: the limits in force, and events lost per consumer.
    func retentionStatus() -> JSONValue {
        .object([
            ("max_bytes", .int(journal.options.maxBytes)),
            ("max_bytes_hard", .int(journal.options.maxBytesHard)),
            ("min_free", .int(journal.options.minFreeBytes)),
            ("lowest_needed", journal.consumers.lowestNeeded().map { .uint($0) } ?? .null),
            ("lost", .object(journal.consumers.lostCounts.map { ($0.consumer, .uint($0.events)) })),
        ])
    }
}
