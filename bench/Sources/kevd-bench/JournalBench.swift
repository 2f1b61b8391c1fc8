import ArgumentParser
import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import Logging

extension SyncPolicy: ExpressibleByArgument {
    /// `none`, `always`, `batch` (the journal's default 5 ms), `batch:1ms`, `batch:500us`.
    init?(argument: String) {
        switch argument {
        case "none": self = .none
        case "always": self = .always
        case "batch": self = .batch(milliseconds: 5)
        default:
            guard argument.hasPrefix("batch:") else { return nil }
            let text = argument.dropFirst("batch:".count)
            if text.hasSuffix("ms"), let ms = Int64(text.dropLast(2)), ms > 0 {
                self = .batch(milliseconds: ms)
            } else if text.hasSuffix("us"), let us = Int64(text.dropLast(2)), us > 0 {
                self = SyncPolicy(sync: .batch, intervalNanoseconds: us * 1_000)
            } else {
                return nil
            }
        }
    }

    /// The command-line spelling, for `--help`'s defaults.
    var defaultValueDescription: String {
        switch sync {
        case .none, .always: return sync.rawValue
        case .batch: return "batch:" + key.dropFirst("batch-".count)
        }
    }
}

/// One kind of measurement (`--measure`, repeatable).
enum Measurement: String, CaseIterable, ExpressibleByArgument {
    /// The journal as the daemon drives it: the pipeline encodes each line, `Journal.append(_:line:)` copies it.
    case journal
    /// The same with every line encoded beforehand: the journal's own cost, comparable to `ceiling`.
    case journalLine = "journal-line"
    /// Plain `write` + `fdatasync` thread of the same record bytes, lines encoded beforehand.
    case ceiling
    /// The ceiling encoding each line in its loop: comparable to `journal`.
    case ceilingJSON = "ceiling-json"
    /// `JSONLineEncoder` alone, no framing, no I/O.
    case encode
    /// `kevctl journal > /dev/null` and a `JournalReader` pass over a journal written by `journal`/`journal-line`.
    case replay

    var isAppend: Bool { self != .encode && self != .replay }
}

/// `kevd-bench journal`: append throughput per sync policy against a ceiling measured in the same run, and replay
/// speed of `kevctl journal`.
struct JournalBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Journal append throughput per sync policy, against a plain write+fdatasync ceiling; replay speed.",
        discussion: """
            Writes in a fresh directory under --dir (use the file system kevd's state_dir is on), removed at the \
            end. Each policy is run --repeat times, the order of journal and ceilings rotating from run to run; \
            tables show the median run. Prints tables and writes JSON to --results. Never asserts timings. \
            See bench/JOURNAL.md.
            """)

    @Option(help: "Events per run.")
    var count = 1_000_000

    @Option(help: "Events per writePending() (one loop turn); the ceiling writes the same batches.")
    var batch = 256

    @Option(name: .customLong("policy"), help: "A sync policy to run: none, always, batch, batch:1ms (repeatable).")
    var policies: [SyncPolicy] = [.none, .batch(milliseconds: 1), .batch(milliseconds: 5), .always]

    @Option(
        name: .customLong("measure"),
        help: "What to measure (repeatable).")
    var measurements: [Measurement] = Measurement.allCases

    @Option(name: .customLong("repeat"), help: "Runs per policy (and per replay measurement); the median is shown.")
    var repeats = 3

    @Option(help: "Parent of the temporary directory: put it on the file system of kevd's state_dir.")
    var dir = "/var/tmp"

    @Option(help: "The kevctl binary. Default: next to this executable.")
    var kevctl: String?

    @Option(help: "Where the JSON result goes (created if missing).")
    var results = "bench/results"

    @Flag(help: "Keep the temporary directory.")
    var keep = false

    func validate() throws {
        guard count > 0, batch > 0, repeats > 0 else { throw ValidationError("--count, --batch, --repeat must be > 0") }
        guard !policies.isEmpty else { throw ValidationError("no --policy") }
        if measurements.contains(.replay) && !measurements.contains(.journal) && !measurements.contains(.journalLine) {
            throw ValidationError("--measure replay needs journal or journal-line (it replays what they wrote)")
        }
    }

    func run() throws {
        KevdBench.bootstrapLogging()
        let logger = Logger(label: "kevd-bench")
        let root = try TempDirectory(parent: dir)
        defer { if keep { print("kept \(root.path)") } else { root.remove() } }
        let machine = Machine.describe(directory: root.path)
        let kevctl = self.kevctl ?? Machine.siblingExecutable("kevctl")
        let wanted = Set(measurements)

        let workload = Workload()
        let (lineBytes, recordBytes) = workload.averageSizes(count: count)
        let lines = wanted.contains(.journalLine) || wanted.contains(.ceiling)
            ? EncodedLines(workload: workload, count: count) : nil
        print("""
            kevd-bench journal: \(grouped(count)) events, ~\(String(format1: lineBytes))-byte JSON lines \
            (~\(String(format1: recordBytes))-byte records), \(batch) per write
            \(repeats) run(s) per policy (median shown), dir \(root.path) (\(machine.fileSystem)), \
            \(machine.cpus) CPUs, load \(machine.loadAverage), CRC-32C \(machine.crcHardware ? "SSE4.2" : "portable")
            """)

        var encodeRuns: [Double] = []
        for _ in 0..<(wanted.contains(.encode) ? repeats : 0) {
            encodeRuns.append(EncodeMeasurement.run(workload: workload, count: count, batch: batch))
        }

        let kinds = Measurement.allCases.filter { $0.isAppend && wanted.contains($0) }
        var runs = [[Measurement: [AppendResult]]](repeating: [:], count: policies.count)
        var replayDirectory: String? = nil
        for r in 0..<(kinds.isEmpty ? 0 : repeats) {
            for (p, policy) in policies.enumerated() {
                // The order rotates from one policy and run to the next, so that a neighbour's load or the disk's
                // state (writeback of the previous run) biases no kind of run.
                let shift = (r + p) % kinds.count
                for kind in kinds[shift...] + kinds[..<shift] {
                    let name = root.path + "/\(kind.rawValue)-\(policy.key)-\(r)"
                    let result: AppendResult
                    switch kind {
                    case .journal, .journalLine:
                        result = try JournalAppendRun.run(
                            policy: policy, workload: workload, lines: kind == .journalLine ? lines : nil,
                            count: count, batch: batch, directory: name + "/journal", logger: logger)
                        // Every run writes the same events: keep one journal to replay and drop the rest at once
                        // (a `none` run's dirty pages would otherwise be written back during the next run).
                        if replayDirectory == nil && wanted.contains(.replay) {
                            replayDirectory = name
                        } else {
                            TempDirectory.removeTree(name)
                        }
                    case .ceiling, .ceilingJSON:
                        result = try CeilingRun.run(
                            policy: policy, workload: workload, lines: kind == .ceiling ? lines : nil, count: count,
                            batch: batch, path: name + ".seg")
                        unlink(name + ".seg")
                    case .encode, .replay:
                        continue
                    }
                    runs[p][kind, default: []].append(result)
                }
            }
        }

        let replay = try replayDirectory.map { try measureReplay(stateDir: $0, kevctl: kevctl) }
        printTables(runs: runs, encodeRuns: encodeRuns, replay: replay)
        let loadAfter = Machine.loadAverageText()
        print("load at the end: \(loadAfter)")

        let document = resultDocument(
            machine: machine, loadAfter: loadAfter, lineBytes: lineBytes, recordBytes: recordBytes, runs: runs,
            encodeRuns: encodeRuns, replay: replay)
        print("wrote \(try writeResult(document))")
    }

    // MARK: Replay

    struct ReplayFigures {
        var verified: JournalVerifier.Report
        var kevctl: [Replay.ProcessResult]
        var kevctlError: String?
        var reader: [Replay.ReaderResult]
    }

    private func measureReplay(stateDir: String, kevctl: String) throws -> ReplayFigures {
        let journalDir = stateDir + "/journal"
        // The replayed journal must hold every event, intact: otherwise the replay rates mean nothing.
        let verified = try JournalVerifier.verify(directory: journalDir)
        if verified.records != count || !verified.problems.isEmpty {
            print("warning: the replayed journal has \(verified.records) records, \(verified.problems.count) problems")
        }
        var figures = ReplayFigures(verified: verified, kevctl: [], kevctlError: nil, reader: [])
        if access(kevctl, X_OK) == 0 {
            for _ in 0..<repeats {
                let result = try Replay.kevctl(kevctl, stateDir: stateDir)
                if result.exitStatus != 0 { figures.kevctlError = "\(kevctl) exited with status \(result.exitStatus)" }
                figures.kevctl.append(result)
            }
        } else {
            figures.kevctlError = "no executable kevctl at \(kevctl) (build it, or pass --kevctl)"
        }
        for _ in 0..<repeats { figures.reader.append(try Replay.reader(directory: journalDir)) }
        return figures
    }

    // MARK: Output

    private func printTables(runs: [[Measurement: [AppendResult]]], encodeRuns: [Double], replay: ReplayFigures?) {
        let wanted = Set(measurements)
        if wanted.contains(.journal) {
            print("")
            print("The journal as the daemon drives it (each line encoded, then appended), against the ceiling:")
            printDaemonTable(runs: runs)
        }
        if wanted.contains(.journalLine) {
            print("")
            print("The journal given encoded lines, against the ceiling (the same bytes, no JSON on either side):")
            printOwnTable(runs: runs)
        }

        let rates = TextTable(header: ["also measured", "rate", "unit"])
        if !encodeRuns.isEmpty {
            rates.add([
                "JSON encoding alone (JSONLineEncoder, no framing, no I/O)",
                grouped(Double(count) / median(encodeRuns)), "ev/s",
            ])
        }
        if let replay {
            let reader = replay.reader.sorted { $0.seconds < $1.seconds }[(replay.reader.count - 1) / 2]
            rates.add([
                "JournalReader in process (CRC checked, no output)", grouped(Double(reader.records) / reader.seconds),
                "records/s",
            ])
            if !replay.kevctl.isEmpty {
                let run = replay.kevctl.sorted { $0.seconds < $1.seconds }[(replay.kevctl.count - 1) / 2]
                rates.add([
                    "kevctl journal > /dev/null (\(String(format3: run.seconds)) s, "
                        + "\(String(format3: run.cpuSeconds)) s CPU)",
                    grouped(Double(count) / run.seconds), "ev/s",
                ])
            }
        }
        if rates.hasRows {
            print("")
            rates.print()
        }
        if let error = replay?.kevctlError { print("kevctl: \(error)") }
    }

    private func printDaemonTable(runs: [[Measurement: [AppendResult]]]) {
        let table = TextTable(header: [
            "policy", "journal ev/s", "MB/s", "syncs", "loop CPU", "ceiling+JSON ev/s", "% of it", "ceiling ev/s",
            "% of it",
        ])
        for (policy, runs) in zip(policies, runs) {
            let journal = median(runs[.journal])
            let withJSON = median(runs[.ceilingJSON])
            let ceiling = median(runs[.ceiling])
            table.add([
                policy.description, Cell.rate(journal), Cell.megabytes(journal), Cell.syncs(journal),
                Cell.busy(journal), Cell.rate(withJSON), Cell.percent(journal, of: withJSON), Cell.rate(ceiling),
                Cell.percent(journal, of: ceiling),
            ])
        }
        table.print()
    }

    private func printOwnTable(runs: [[Measurement: [AppendResult]]]) {
        let table = TextTable(header: [
            "policy", "journal-line ev/s", "MB/s", "syncs", "loop CPU", "ceiling ev/s", "MB/s", "syncs", "loop CPU",
            "% of ceiling",
        ])
        for (policy, runs) in zip(policies, runs) {
            let journal = median(runs[.journalLine])
            let ceiling = median(runs[.ceiling])
            table.add([
                policy.description, Cell.rate(journal), Cell.megabytes(journal), Cell.syncs(journal),
                Cell.busy(journal), Cell.rate(ceiling), Cell.megabytes(ceiling), Cell.syncs(ceiling),
                Cell.busy(ceiling), Cell.percent(journal, of: ceiling),
            ])
        }
        table.print()
    }

    /// Table cells; "-" for what was not measured.
    private enum Cell {
        static func rate(_ r: AppendResult?) -> String { r.map { grouped($0.eventsPerSecond) } ?? "-" }
        static func megabytes(_ r: AppendResult?) -> String { r.map { String(format1: $0.megabytesPerSecond) } ?? "-" }
        static func syncs(_ r: AppendResult?) -> String { r?.syncs.map(grouped) ?? "-" }
        static func busy(_ r: AppendResult?) -> String { r.map { String(format1: $0.loopBusyPercent) + " %" } ?? "-" }
        static func percent(_ part: AppendResult?, of whole: AppendResult?) -> String {
            guard let part, let whole else { return "-" }
            return String(format1: 100 * part.eventsPerSecond / whole.eventsPerSecond) + " %"
        }
    }

    private func resultDocument(
        machine: Machine, loadAfter: String, lineBytes: Double, recordBytes: Double,
        runs: [[Measurement: [AppendResult]]], encodeRuns: [Double], replay: ReplayFigures?
    ) -> JSONValue {
        func run(_ r: AppendResult) -> JSONValue {
            .object([
                ("events", .int(Int64(r.events))), ("bytes", .int(Int64(r.bytes))),
                ("write_seconds", .double(r.writeSeconds)), ("durable_seconds", .double(r.durableSeconds)),
                ("events_per_second", .double(r.eventsPerSecond)), ("mb_per_second", .double(r.megabytesPerSecond)),
                ("syncs", r.syncs.map { .int(Int64($0)) } ?? .null),
                ("loop_cpu_seconds", .double(r.loopCPUSeconds)),
            ])
        }
        func ratio(_ a: AppendResult?, _ b: AppendResult?) -> JSONValue {
            guard let a, let b else { return .null }
            return .double(100 * a.eventsPerSecond / b.eventsPerSecond)
        }
        let policyResults: [(String, JSONValue)] = zip(policies, runs).map { policy, runs in
            var members: [(String, JSONValue)] = [
                ("policy", .string(policy.description)),
                ("sync", .string(policy.sync.rawValue)),
                ("interval_ns", .int(policy.intervalNanoseconds)),
                ("journal_percent_of_ceiling_json", ratio(median(runs[.journal]), median(runs[.ceilingJSON]))),
                ("journal_percent_of_ceiling", ratio(median(runs[.journal]), median(runs[.ceiling]))),
                ("journal_line_percent_of_ceiling", ratio(median(runs[.journalLine]), median(runs[.ceiling]))),
            ]
            for kind in Measurement.allCases where kind.isAppend {
                members.append((kind.rawValue, median(runs[kind]).map(run) ?? .null))
                members.append((kind.rawValue + "_runs", .array((runs[kind] ?? []).map(run))))
            }
            return (policy.key, .object(members))
        }
        var replayValue: JSONValue = .null
        if let replay {
            replayValue = .object([
                ("verified_records", .int(Int64(replay.verified.records))),
                ("verified_problems", .int(Int64(replay.verified.problems.count))),
                ("kevctl_runs", .array(replay.kevctl.map { r in
                    .object([
                        ("seconds", .double(r.seconds)), ("cpu_seconds", .double(r.cpuSeconds)),
                        ("events_per_second", .double(Double(count) / r.seconds)),
                        ("exit_status", .int(Int64(r.exitStatus))),
                    ])
                })),
                ("kevctl_error", replay.kevctlError.map(JSONValue.string) ?? .null),
                ("reader_runs", .array(replay.reader.map { r in
                    .object([
                        ("records", .int(Int64(r.records))), ("payload_bytes", .int(Int64(r.payloadBytes))),
                        ("seconds", .double(r.seconds)),
                        ("records_per_second", .double(Double(r.records) / r.seconds)),
                    ])
                })),
            ])
        }
        return .object([
            ("benchmark", .string("journal")),
            ("started", .string(machine.started)),
            ("machine", .object([
                ("cpus", .int(Int64(machine.cpus))), ("kernel", .string(machine.kernel)),
                ("file_system", .string(machine.fileSystem)), ("crc32c_hardware", .bool(machine.crcHardware)),
                ("load_before", .string(machine.loadAverage)), ("load_after", .string(loadAfter)),
            ])),
            ("parameters", .object([
                ("count", .int(Int64(count))), ("batch", .int(Int64(batch))), ("repeat", .int(Int64(repeats))),
                ("line_bytes", .double(lineBytes)), ("record_bytes", .double(recordBytes)),
                ("measurements", .array(measurements.map { .string($0.rawValue) })),
            ])),
            ("encode_runs", .array(encodeRuns.map {
                .object([("seconds", .double($0)), ("events_per_second", .double(Double(count) / $0))])
            })),
            ("policies", .object(policyResults)),
            ("replay", replayValue),
        ])
    }

    private func writeResult(_ document: JSONValue) throws -> String {
        try writeResultDocument(document, directory: results, name: "journal")
    }

    /// The run with the median duration (the lower of the middle two for an even count); nil for no runs.
    private func median(_ runs: [AppendResult]?) -> AppendResult? {
        guard let runs, !runs.isEmpty else { return nil }
        return runs.sorted { $0.durableSeconds < $1.durableSeconds }[(runs.count - 1) / 2]
    }

    private func median(_ values: [Double]) -> Double { values.sorted()[(values.count - 1) / 2] }
}
