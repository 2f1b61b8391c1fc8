import KevdConfig
import KevdEvent
import KevdKernel
import KevdSpec

/// What the daemon says about itself: systemd's STATUS= line, the `status` reply's fields, `kevd`/`stats`.
extension Daemon {
    /// One line for systemd's `STATUS=`: what is armed, who listens, where the stream is.
    func statusSummary() -> String {
        let watches = config.watches.count + ruleSet.watches.count
        let timerCount = timers?.names.count ?? 0
        let subscribers = server?.subscriberCount ?? 0
        let head = pipeline.nextSeq > 0 ? pipeline.nextSeq - 1 : 0
        return "\(watches) watches, \(timerCount) timers, \(ruleSet.rules.count) rules, \(subscribers) subscribers; seq \(head)"
    }

    func statusFields() -> [(String, JSONValue)] {
        [
            ("config", .string(config.file)),
            ("machine_id", .string(identity.machineID)),
            ("boot_id", .string(identity.bootID)),
            ("forward", forwarders?.status(head: pipeline.nextSeq > 0 ? pipeline.nextSeq - 1 : 0) ?? .array([])),
            ("stats", statsSnapshot(endingInterval: false).json),
            ("retention", retentionStatus()),
            (
                "rules",
                .object([
                    ("active", .array(rules?.statusRules() ?? [])),
                    ("files", .array(ruleSet.files.map { .string($0.path) })),
                    ("masked", .array(ruleSet.masked.map { .string($0.path) })),
                    ("directories", .array(config.rules.directories.map { .string($0) })),
                    ("error", ruleProblems.isEmpty ? .null : .string(ruleProblems.map(\.description).joined(separator: "\n"))),
                ])
            ),
            (
                "sources",
                .object([
                    ("inotify", inotifyStatus()),
                    ("fanotify", fanotifyStatus()),
                    ("timers", .array((timers?.names ?? []).map { .string($0) })),
                    ("timer_catchup", timerCatchUpStatus()),
                    ("udev_catchup", deviceCatchUpStatus()),
                    ("file_catchup", fileCatchUpStatus()),
                    ("udev", udev.map { .object([("monitor", .string($0.sourceName)), ("overflows", .int(Int64($0.overflowCount)))]) } ?? .null),
                    // The evdev nodes read now (only those with a configured key or switch), and ACPI's overflows.
                    ("input", input.map { .object([("devices", .array($0.openDevices.map { .string($0) }))]) } ?? .null),
                    ("acpi", acpi.map { .object([("overflows", .int(Int64($0.overflowCount)))]) } ?? .null),
                ])
            ),
        ]
    }

    /// The inotify source in `status`: its roots, watches and overflows, and the crawl (start-up, new roots, a
    /// rescan) in progress or last done.
    func inotifyStatus() -> JSONValue {
        let crawl = inotify?.crawlProgress
        return .object([
            ("roots", .int(Int64(config.watches.count))), ("watches", .int(Int64(inotify?.watchCount ?? 0))),
            ("overflows", .int(Int64(inotify?.overflowCount ?? 0))),
            (
                "crawl",
                .object([
                    ("running", .bool(crawl?.running ?? false)), ("rescan", .bool(crawl?.rescan ?? false)),
                    ("listed", .int(Int64(crawl?.listed ?? 0))), ("queued", .int(Int64(crawl?.queued ?? 0))),
                    ("seconds", .double(crawl?.seconds ?? 0)), ("completed", .int(Int64(crawl?.completed ?? 0))),
                    ("longest_slice_seconds", .double(crawl?.longestSliceSeconds ?? 0)),
                ])
            ),
        ])
    }

    /// Arms the stats timer for `interval` (0 disarms it). An unchanged interval keeps its phase across reloads.
    func configureStats(interval: Int64) throws {
        guard interval != statsInterval else { return }
        if statsTimer == nil {
            let timer = try TimerFD(clock: .monotonic)
            try loop.register(fd: timer.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
                // A reload in this same turn may have disarmed it: only a real expiry publishes.
                guard case .expired = (try? timer.read()) ?? .none else { return }
                self.pipeline.publishKevd("stats", component: "stats", self.statsSnapshot(endingInterval: true).eventData)
            }
            statsTimer = timer
        }
        if interval > 0 {
            try statsTimer?.arm(delay: interval, interval: interval)
        } else {
            try statsTimer?.disarm()
        }
        statsInterval = interval
    }

    func statsSnapshot(endingInterval: Bool) -> StatsSnapshot {
        let ruleTotals = rules?.totals ?? (runs: 0, failed: 0, running: 0)
        let inputs = StatsInputs(
            inotifyOverflows: (inotify?.overflowCount ?? 0) + (fanotify?.overflowCount ?? 0), udevOverflows: udev?.overflowCount ?? 0,
            subscribers: server?.subscriberCount ?? 0, maxSubscriberLag: server?.maxSubscriberLag ?? 0,
            ruleRuns: ruleTotals.runs, ruleFailures: ruleTotals.failed, rulesRunning: ruleTotals.running)
        return stats.snapshot(inputs, endingInterval: endingInterval)
    }
}
