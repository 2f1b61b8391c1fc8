import ArgumentParser
import CoreMetrics
import Glibc
import KevdClient
import KevdEvent
import Prometheus

/// `kevctl metrics`: kevd's stats (the `stats` member of its status reply) in the Prometheus text format.
struct MetricsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics",
        abstract: "Print kevd's figures in the Prometheus text exposition format.",
        discussion: """
            Asks kevd for its status and prints its stats as Prometheus metrics:
            kevd_events_total{source=...}, kevd_overflows_total{source=...},
            kevd_journal_size_bytes, kevd_journal_segments,
            kevd_journal_fsyncs_total, kevd_journal_fsync_seconds_total,
            kevd_journal_fsync_last_seconds, kevd_journal_fsync_max_seconds (the
            longest over the current stats interval), kevd_subscribers,
            kevd_subscriber_max_lag_events, kevd_rule_runs_total,
            kevd_rule_failures_total, kevd_rule_scripts_running,
            kevd_loop_turn_max_seconds (the longest loop turn over the current
            stats interval), kevd_log_lines_dropped_total, kevd_uptime_seconds
            and kevd_retention_lost_events_total{consumer=...} (events journal
            retention deleted before a forwarder, rule or named subscription
            read them). Rates and means are left to PromQL (rate(),
            a _seconds_total over its count).

            With --output FILE the text goes to FILE, atomically (written
            beside it under a hidden temporary name, then renamed), for
            node_exporter's textfile collector: run it from a timer with
            --output /var/lib/node_exporter/textfile_collector/kevd.prom.

            Exit codes: 0 success; 1 an error (no daemon, a kevd without stats,
            the file cannot be written); 64 a bad command line.
            """)

    @OptionGroup var client: ClientOptions

    @Option(help: ArgumentHelp(
        "Write the metrics to this file, atomically (temporary file and rename), instead of stdout.",
        valueName: "file"))
    var output: String?

    func run() throws {
        try reportingFailures {
            let reply = try client.connect().status()
            guard let stats = reply.value["stats"], stats.objectValue != nil else {
                throw Failure("kevd's status reply has no stats: it is older than this kevctl")
            }
            let text = try PrometheusMetrics.render(stats) + PrometheusMetrics.renderRetention(reply.value["retention"])
            if let output {
                try PrometheusMetrics.writeAtomically(text, to: output)
            } else {
                signal(SIGPIPE, SIG_IGN)
                _ = writeStdout(text)
            }
        }
    }
}

/// The stats object (flat names, docs/PROTOCOL.md) as Prometheus metric families.
enum PrometheusMetrics {
    /// Counters and gauges by stats field. Only totals and instant values: a rate or a mean over kevd's own
    /// interval would fight Prometheus's, which computes both from the totals over any window.
    private static let gauges: [(field: String, name: String, help: String)] = [
        ("uptime_seconds", "kevd_uptime_seconds", "Seconds since kevd started."),
        ("journal_bytes", "kevd_journal_size_bytes", "Bytes of the journal's segment files."),
        ("journal_segments", "kevd_journal_segments", "Segment files in the journal."),
        ("fsync_last_seconds", "kevd_journal_fsync_last_seconds", "Duration of the journal's latest fdatasync."),
        ("fsync_max_seconds", "kevd_journal_fsync_max_seconds",
         "Longest journal fdatasync in the current stats interval (0 when none ran)."),
        ("subscribers", "kevd_subscribers", "Clients with a subscription."),
        ("subscriber_max_lag", "kevd_subscriber_max_lag_events", "Events the slowest subscriber is behind the head."),
        ("rules_running", "kevd_rule_scripts_running", "Rule scripts running now."),
    ]
    private static let counters: [(field: String, name: String, help: String)] = [
        ("fsync_count", "kevd_journal_fsyncs_total", "Journal fdatasync calls since kevd started."),
        ("fsync_seconds_total", "kevd_journal_fsync_seconds_total", "Time spent in journal fdatasync calls."),
        ("rule_runs", "kevd_rule_runs_total", "Rule runs started, summed over the active rules."),
        ("rule_failures", "kevd_rule_failures_total", "Failed rule run attempts, summed over the active rules."),
    ]

    /// Figures a kevd older than this kevctl does not report: left out when absent, not an error.
    private static let laterGauges: [(field: String, name: String, help: String)] = [
        ("loop_turn_max_seconds", "kevd_loop_turn_max_seconds",
         "Longest loop turn (handlers and turn-end work) in the current stats interval: the worst wait for an answer."),
    ]
    private static let laterCounters: [(field: String, name: String, help: String)] = [
        ("log_lines_dropped", "kevd_log_lines_dropped_total",
         "Log lines dropped because stderr (the journal) was not keeping up."),
    ]

    static func render(_ stats: JSONValue) throws -> [UInt8] {
        func number(_ field: String) throws -> Double {
            guard let value = stats[field]?.doubleValue, value >= 0 else {
                throw Failure("kevd's stats have no number '\(field)'")
            }
            return value
        }
        var text: [UInt8] = []
        text += try family { registry in
            for (field, value) in stats.objectValue ?? [] where field.hasPrefix("events_") {
                guard let total = value.int64Value, total >= 0 else { throw Failure("kevd's stats: '\(field)' is no count") }
                let counter: any CounterHandler = registry.makeCounter(
                    name: "kevd_events_total", labels: [("source", String(field.dropFirst("events_".count)))],
                    help: "Events published since kevd started, by source.")
                counter.increment(by: total)
            }
        }
        text += try family { registry in
            for source in ["inotify", "udev"] {
                let counter: any CounterHandler = registry.makeCounter(
                    name: "kevd_overflows_total", labels: [("source", source)],
                    help: "Kernel queue overflows (events lost before kevd read them), by source.")
                counter.increment(by: Int64(try number("overflows_" + source)))
            }
        }
        for (field, name, help) in counters {
            text += try family { registry in
                let counter: any FloatingPointCounterHandler = registry.makeCounter(name: name, help: help)
                counter.increment(by: try number(field))
            }
        }
        for (field, name, help) in gauges {
            text += try family { registry in
                let gauge: any RecorderHandler = registry.makeGauge(name: name, help: help)
                gauge.record(try number(field))
            }
        }
        for (field, name, help) in laterCounters where stats[field] != nil {
            text += try family { registry in
                let counter: any FloatingPointCounterHandler = registry.makeCounter(name: name, help: help)
                counter.increment(by: try number(field))
            }
        }
        for (field, name, help) in laterGauges where stats[field] != nil {
            text += try family { registry in
                let gauge: any RecorderHandler = registry.makeGauge(name: name, help: help)
                gauge.record(try number(field))
            }
        }
        return text
    }

    /// `kevd_retention_lost_events_total{consumer="forward:NAME"|"rule:NAME"|"subscription:NAME"}` from the
    /// status reply's `retention.lost` (nothing from a kevd older than that member).
    static func renderRetention(_ retention: JSONValue?) throws -> [UInt8] {
        guard let lost = retention?["lost"]?.objectValue, !lost.isEmpty else { return [] }
        return try family { registry in
            for (consumer, value) in lost {
                guard let events = value.int64Value, events >= 0 else {
                    throw Failure("kevd's status: retention.lost '\(consumer)' is no count")
                }
                let counter: any CounterHandler = registry.makeCounter(
                    name: "kevd_retention_lost_events_total", labels: [("consumer", consumer)],
                    help: "Events journal retention deleted before this consumer read them.")
                counter.increment(by: events)
            }
        }
    }

    /// One metric family's text. A registry writes its families and label sets in hash order: one registry per
    /// family and sorted samples make the same figures print the same text (a textfile diffs cleanly).
    private static func family(_ build: (PrometheusCollectorRegistry) throws -> Void) throws -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        try build(registry)
        let lines = registry.emitToString().split(separator: "\n")
        let ordered = lines.filter { $0.hasPrefix("#") } + lines.filter { !$0.hasPrefix("#") }.sorted()
        return Array(ordered.map { $0 + "\n" }.joined().utf8)
    }

    /// Writes `bytes` to a hidden temporary file beside `path` and renames it over `path`, so a reader (the
    /// textfile collector) sees the old file or the new one, never half of one.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty else { throw Failure("--output: '\(path)' names a directory, not a file") }
        // Hidden and not ending in .prom: the collector skips it while it is being written.
        let temporary = directory + "." + name + ".\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure("--output: cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let message = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw Failure("--output: cannot write \(temporary): \(message)")
            }
            offset += n
        }
        // The umask may have narrowed 0644; the collector often runs as another user.
        fchmod(fd, 0o644)
        close(fd)
        guard rename(temporary, path) == 0 else {
            let message = String(cString: strerror(errno))
            unlink(temporary)
            throw Failure("--output: cannot rename \(temporary) to \(path): \(message)")
        }
    }
}
