import ArgumentParser
import Glibc
import KevdConfig
import KevdEvent
import KevdJournal
import KevdKernel
import KevdSchedule
import KevdSpec

/// `kevctl journal`: print, follow, verify and vacuum the journal. Works without the daemon running.
struct JournalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Print the journal as JSON lines (the live stream's schema), follow it, verify it, or vacuum it.",
        discussion: """
            Exit codes: 0 success; 1 an error, or --verify found problems.
            TIME is RFC 3339 (2026-11-23T07:00:00Z) or a duration ago (10m, 2h, 1d).
            """)

    @Option(help: "The state directory (its journal/ folder is read). Default: the config's state_dir.")
    var stateDir: String?

    @Option(help: "The kevd configuration that names state_dir.")
    var config: String = "/etc/kevd/kevd.toml"

    @Option(help: "Start at this seq.")
    var from: UInt64?

    @Option(help: "Start at this time.")
    var since: String?

    @Option(help: "Stop after this seq, or after this time.")
    var until: String?

    @Option(
        name: [.customLong("boot"), .customShort("b")],
        help: ArgumentHelp(
            "Only this boot's events, as journalctl -b: alone or 0 the newest boot in the journal, -1 the one before, N the Nth from the oldest, or a boot id.",
            valueName: "N|ID"))
    var boot: String?

    @Flag(name: .shortAndLong, help: "Keep printing new events as they are journaled.")
    var follow = false

    @Flag(help: "Check every record's CRC and sequence continuity; report problems with segment and offset.")
    var verify = false

    @Option(help: "Delete the oldest segments until the journal is at most this big (e.g. 500M).")
    var vacuumSize: String?

    @Option(help: "Delete segments whose events are all older than this age (e.g. 30d).")
    var vacuumTime: String?

    @Argument(help: "Filter terms; all must match.")
    var filters: [String] = []

    func validate() throws {
        if from != nil && since != nil { throw ValidationError("use --from or --since, not both") }
        if boot != nil && follow { throw ValidationError("--boot reads the journal as it is; it does not --follow") }
        if verify && (follow || vacuumSize != nil || vacuumTime != nil || boot != nil) {
            throw ValidationError("--verify runs alone")
        }
    }

    func run() throws {
        let directory = try journalDirectory()
        guard FileKind.of(directory) == .directory else {
            Output.error("kevctl: no journal at \(directory) (check --state-dir or the config's state_dir)")
            throw ExitCode(1)
        }
        if verify { return try runVerify(directory) }
        if vacuumSize != nil || vacuumTime != nil { return try runVacuum(directory) }
        try runPrint(directory)
    }

    private func journalDirectory() throws -> String {
        if let stateDir { return PathText.absolute(stateDir) + "/journal" }
        if access(config, R_OK) == 0 {
            do {
                return try ConfigLoader.load(file: config).journalDirectory
            } catch {
                throw ValidationError("\(error)")
            }
        }
        return DaemonSettings.defaultStateDir + "/journal"
    }

    private func runVerify(_ directory: String) throws {
        let report = try JournalVerifier.verify(directory: directory)
        for problem in report.problems { Output.error("journal: \(problem)") }
        let range = report.firstSeq.map { "seq \($0)–\(report.lastSeq ?? $0)" } ?? "no records"
        // A segment whose tail a later one took over (after a failed sync) is said, not counted as a problem.
        let superseded = report.superseded > 0 ? ", \(report.superseded) superseded tails" : ""
        print("\(directory): \(report.segments) segments, \(report.records) records, \(range), \(report.problems.count) problems\(superseded)")
        if !report.problems.isEmpty { throw ExitCode(1) }
    }

    private func runVacuum(_ directory: String) throws {
        let segments = try JournalDirectory.segments(in: directory)
        guard let newest = segments.last else { return }
        var maxBytes: Int64 = 0
        var maxAge: Int64 = 0
        if let vacuumSize {
            do { maxBytes = try ByteSizeText.parseBytes(vacuumSize) } catch { throw ValidationError("--vacuum-size: \(error)") }
        }
        if let vacuumTime {
            do { maxAge = try DurationText.parseNanoseconds(vacuumTime) } catch { throw ValidationError("--vacuum-time: \(error)") }
        }
        // The newest segment may be the daemon's active one: it is never deleted.
        let deleted = JournalDirectory.vacuum(
            directory: directory, keepingFrom: newest.firstSeq, maxBytes: maxBytes, maxAgeNanoseconds: maxAge,
            now: Clock.realtimeNanoseconds())
        for name in deleted { print("deleted \(name)") }
        print("\(deleted.count) segments deleted")
    }

    private func runPrint(_ directory: String) throws {
        let filter: EventFilter?
        do {
            filter = filters.isEmpty ? nil : try EventFilter(terms: filters)
        } catch {
            throw ValidationError("\(error)")
        }
        let until = try untilBound()
        var bootSelected: (boots: JournalBoots, id: String)? = nil
        if let boot {
            let boots = try JournalBoots(directory: directory)
            guard let id = boots.boot(boot) else {
                Output.error("kevctl: no boot '\(boot)' in the journal (\(boots.boots.count) boots: \(boots.boots.joined(separator: " ")))")
                throw ExitCode(1)
            }
            bootSelected = (boots, id)
        }
        let reader = try JournalReader(directory: directory)
        reader.onProblem = { Output.error("journal: \($0) (skipped)") }
        if let from {
            try reader.seek(.seq(from))
        } else if let since {
            try reader.seek(.time(try Self.parseTime(since, "--since")))
        }
        if let startsAt = reader.startsAt {
            Output.error("kevctl: the journal starts at seq \(startsAt); earlier events were removed by retention")
        }
        signal(SIGPIPE, SIG_IGN)
        let out = Output()
        while true {
            while let record = try reader.next() {
                if case .seq(let last) = until, record.seq > last { out.finish(); return }
                if case .time(let last) = until, record.time > last { out.finish(); return }
                if let filter {
                    guard let event = try? Event(jsonLine: record.payload), filter.matches(event) else { continue }
                }
                if let bootSelected {
                    guard let event = try? Event(jsonLine: record.payload), bootSelected.boots.record(event, isOf: bootSelected.id)
                    else { continue }
                }
                guard out.write(record.payload) else { return }
            }
            guard out.finish(), follow else { return }
            usleep(50_000)  // Poll for new records; a reader never blocks the daemon.
        }
    }

    private enum Until { case none, seq(UInt64), time(Int64) }

    private func untilBound() throws -> Until {
        guard let until else { return .none }
        if let seq = UInt64(until) { return .seq(seq) }
        return .time(try Self.parseTime(until, "--until"))
    }

    static func parseTime(_ text: String, _ option: String) throws -> Int64 {
        if let time = WallTime(rfc3339: text) { return time.nanoseconds }
        if let ago = try? DurationText.parseNanoseconds(text) { return Clock.realtimeNanoseconds() - ago }
        throw ValidationError("\(option): '\(text)' is neither an RFC 3339 time nor a duration ago (10m, 2h)")
    }
}

/// Buffered stdout for JSON lines: one `write` per megabyte, stops quietly when the reader went away.
final class Output {
    private let buffer = ByteBuffer(capacity: 1 << 20)
    private var closed = false

    /// False once stdout is closed (EPIPE): the caller stops.
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        buffer.append(bytes)
        return buffer.count < (1 << 20) || finish()
    }

    @discardableResult
    func finish() -> Bool {
        guard !closed else { return false }
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(STDOUT_FILENO, buffer.bytes.baseAddress! + offset, buffer.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                closed = true
                return false
            }
            offset += n
        }
        buffer.removeAll()
        return true
    }

    static func error(_ text: String) {
        var line = Array((text + "\n").utf8)
        _ = line.withUnsafeMutableBytes { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
