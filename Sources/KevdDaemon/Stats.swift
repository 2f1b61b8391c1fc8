import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor

/// Counts every event the pipeline publishes, by source. A sink, so the counts are exactly what was journaled
/// and delivered, nothing a source merely saw.
final class EventCounter: EventSink {
    /// Sources in first-seen order; the known ones first, so a source that published nothing still shows 0.
    private(set) var sources = ["inotify", "udev", "timer", "signal", "emit", "kevd"]
    private(set) var counts: [UInt64] = [0, 0, 0, 0, 0, 0]

    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        // A handful of short names: a linear scan of small-string compares beats hashing each event's source.
        let name = event.source.name
        for i in sources.indices where sources[i] == name {
            counts[i] += 1
            return
        }
        sources.append(name)
        counts.append(1)
    }
}

/// What the daemon's other parts report at the moment of a snapshot.
struct StatsInputs {
    var inotifyOverflows = 0
    var udevOverflows = 0
    var subscribers = 0
    var maxSubscriberLag: UInt64 = 0
    var ruleRuns = 0
    var ruleFailures = 0
    var rulesRunning = 0
}

/// kevd's own figures at one moment: the data of a `kevd`/`stats` event and, with the same names, the `stats`
/// member of the `status` reply (docs/PROTOCOL.md). Totals count from kevd's start; rates and the `fsync_`
/// window figures cover `intervalSeconds`, the time since the previous stats event (or the start).
struct StatsSnapshot {
    struct Source {
        var name: String
        var total: UInt64
        var perSecond: Double
    }

    var uptimeSeconds: Double
    var intervalSeconds: Double
    var sources: [Source]
    var inputs: StatsInputs
    var journalBytes: Int
    var journalSegments: Int
    /// Since the journal opened.
    var fsyncCount: UInt64
    var fsyncSecondsTotal: Double
    /// Over the interval (zero when no sync ran in it).
    var fsyncIntervalCount: UInt64
    var fsyncLastSeconds: Double
    var fsyncMaxSeconds: Double
    var fsyncMeanSeconds: Double
    /// The longest loop turn over the interval: how long, at worst, kevd answered nothing.
    var loopTurnMaxSeconds: Double
    /// Since kevd started (`StderrWriter`).
    var logLinesDropped: UInt64

    /// Flat name/value pairs: event data holds only scalars, and `status` uses the same names.
    var fields: [(String, EventValue)] {
        var fields: [(String, EventValue)] = [
            ("uptime_seconds", .double(uptimeSeconds)), ("interval_seconds", .double(intervalSeconds)),
        ]
        for source in sources { fields.append(("events_" + source.name, .int(Int64(clamping: source.total)))) }
        for source in sources { fields.append(("rate_" + source.name, .double(source.perSecond))) }
        fields += [
            ("overflows_inotify", .int(Int64(inputs.inotifyOverflows))),
            ("overflows_udev", .int(Int64(inputs.udevOverflows))),
            ("journal_bytes", .int(Int64(journalBytes))),
            ("journal_segments", .int(Int64(journalSegments))),
            ("fsync_count", .int(Int64(clamping: fsyncCount))),
            ("fsync_seconds_total", .double(fsyncSecondsTotal)),
            ("fsync_interval_count", .int(Int64(clamping: fsyncIntervalCount))),
            ("fsync_last_seconds", .double(fsyncLastSeconds)),
            ("fsync_max_seconds", .double(fsyncMaxSeconds)),
            ("fsync_mean_seconds", .double(fsyncMeanSeconds)),
            ("loop_turn_max_seconds", .double(loopTurnMaxSeconds)),
            ("log_lines_dropped", .int(Int64(clamping: logLinesDropped))),
            ("subscribers", .int(Int64(inputs.subscribers))),
            ("subscriber_max_lag", .int(Int64(clamping: inputs.maxSubscriberLag))),
            ("rule_runs", .int(Int64(inputs.ruleRuns))),
            ("rule_failures", .int(Int64(inputs.ruleFailures))),
            ("rules_running", .int(Int64(inputs.rulesRunning))),
        ]
        return fields
    }

    var eventData: EventData {
        let fields = fields
        var data = EventData(capacity: fields.count)
        for (name, value) in fields { data.append(name, value) }
        return data
    }

    var json: JSONValue { .object(fields.map { name, value in (name, JSONValue(value)) }) }
}

/// Keeps what snapshots are measured against: the start, and the totals when the current interval began.
final class StatsCollector {
    let counter = EventCounter()
    private let journal: Journal
    private let loop: EventLoop
    private let started = Clock.monotonicNanoseconds()
    private var intervalStart: UInt64
    /// `counter.counts` when the interval began (sources first seen since then began at 0).
    private var intervalCounts: [UInt64] = []
    private var intervalSync = SyncFigures()

    init(journal: Journal, loop: EventLoop) {
        self.journal = journal
        self.loop = loop
        intervalStart = started
    }

    /// The figures now. `endingInterval` (the stats timer) starts the next interval; a `status` request only
    /// looks, so its rates and `fsync_` figures cover the time since the last stats event.
    func snapshot(_ inputs: StatsInputs, endingInterval: Bool) -> StatsSnapshot {
        let now = Clock.monotonicNanoseconds()
        let interval = Double(now - intervalStart) / 1e9
        let counts = counter.counts
        var sources: [StatsSnapshot.Source] = []
        for (i, name) in counter.sources.enumerated() {
            let delta = counts[i] - (i < intervalCounts.count ? intervalCounts[i] : 0)
            sources.append(.init(name: name, total: counts[i], perSecond: interval > 0 ? Double(delta) / interval : 0))
        }
        let sync = journal.syncFigures(resettingWindow: endingInterval)
        let syncs = sync.count - intervalSync.count
        // Listing the directory is a few metadata syscalls, once per interval or request, as `status` does.
        let segments = (try? JournalDirectory.segments(in: journal.directory)) ?? []
        let snapshot = StatsSnapshot(
            uptimeSeconds: Double(now - started) / 1e9, intervalSeconds: interval, sources: sources, inputs: inputs,
            journalBytes: segments.reduce(0) { $0 + $1.size }, journalSegments: segments.count,
            fsyncCount: sync.count, fsyncSecondsTotal: Double(sync.totalNanoseconds) / 1e9,
            fsyncIntervalCount: syncs, fsyncLastSeconds: Double(sync.lastNanoseconds) / 1e9,
            fsyncMaxSeconds: syncs > 0 ? Double(sync.windowMaxNanoseconds) / 1e9 : 0,
            fsyncMeanSeconds: syncs > 0 ? Double(sync.totalNanoseconds - intervalSync.totalNanoseconds) / Double(syncs) / 1e9 : 0,
            loopTurnMaxSeconds: Double(endingInterval ? loop.takeLongestTurn() : loop.longestTurnNanoseconds) / 1e9,
            logLinesDropped: StderrWriter.shared.droppedLines)
        if endingInterval {
            intervalStart = now
            intervalCounts = counts
            intervalSync = sync
        }
        return snapshot
    }
}
