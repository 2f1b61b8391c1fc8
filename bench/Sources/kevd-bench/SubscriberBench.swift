import ArgumentParser
import Glibc
import KevdEvent
import KevdKernel

/// `kevd-bench subscribers`: the subscriber socket end to end, against a running kevd (release build) it starts
/// itself: latency next to inotifywait, fan-out throughput, memory. See bench/SUBSCRIBERS.md.
struct SubscriberBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribers",
        abstract: "Subscriber socket: file-write → line latency next to inotifywait, fan-out throughput, memory.",
        discussion: """
            Starts its own kevd for each run (config in a fresh temp dir: state and socket under --state-dir, the \
            watched folder under --dir, log_level warning, [journal] sync = "batch"). Prints tables and writes \
            JSON to --results. Never asserts timings: targets are reported as met or missed, the exit code is 0 \
            unless the bench itself could not run. See bench/SUBSCRIBERS.md.
            """)

    enum Part: String, CaseIterable, ExpressibleByArgument {
        case latency, fanout, memory
    }

    @Option(name: .customLong("part"), help: "What to measure (repeatable): latency, fanout, memory.")
    var parts: [Part] = Part.allCases

    @Option(help: "The kevd binary. Default: next to this executable.")
    var kevd: String?

    @Option(help: "inotifywait, run next to kevd in the latency part ('none' to skip it).")
    var inotifywait = "inotifywait"

    @Option(help: "Parent of the watched folders (tmpfs keeps the writer's own cost low).")
    var dir = "/dev/shm"

    @Option(name: .customLong("state-dir"), help: "Parent of kevd's state dir (journal, socket).")
    var stateParent = "/var/tmp"

    @Option(help: "Latency: file creates per second.")
    var rate = 1000

    @Option(help: "Latency: seconds of writing.")
    var seconds = 10.0

    @Option(help: "Latency: first creates left out of the percentiles (still checked for loss).")
    var warmup = 100

    @Option(name: .customLong("subscribers"), help: "Fan-out: subscriber counts (repeatable).")
    var fanouts: [Int] = [1, 10, 100]

    @Option(help: "Fan-out: events emitted per run.")
    var events = 200_000

    @Option(help: "Fan-out: at most this many emits unanswered (0: pipeline them all, as fast as possible).")
    var window = 0

    @Option(
        name: .customLong("send-buffer"),
        help: "Fan-out: set kevd's [server] send_buffer (e.g. 16M) instead of its default (a diagnostic).")
    var sendBuffer: String?

    @Flag(inversion: .prefixedNo, help: "Fan-out: poll status every 100 ms to see subscribers fall behind.")
    var monitor = true

    @Option(help: "Memory: idle subscribers.")
    var idle = 1000

    @Option(help: "Memory: seconds to wait before each RSS reading.")
    var settle = 1.0

    @Option(name: .customLong("repeat"), help: "Runs of the latency and each fan-out size (the median is used).")
    var repeats = 1

    @Option(help: ArgumentHelp(
        "Profile kevd during each latency and fan-out run: perf record -e cpu-clock -g, to PREFIX-<run>.data.",
        valueName: "PREFIX"))
    var perf: String?

    @Option(help: "Where the JSON result goes (created if missing).")
    var results = "bench/results"

    func validate() throws {
        guard rate > 0, rate <= 1_000_000, seconds > 0, events > 0, repeats > 0, idle >= 0, warmup >= 0 else {
            throw ValidationError("--rate, --seconds, --events, --repeat must be > 0")
        }
        guard !fanouts.isEmpty, fanouts.allSatisfy({ $0 > 0 }) else { throw ValidationError("--subscribers must be > 0") }
    }

    func run() throws {
        KevdBench.bootstrapLogging()
        ChildRegistry.installSignalHandlers()
        let kevd = self.kevd ?? Machine.siblingExecutable("kevd")
        guard access(kevd, X_OK) == 0 else {
            throw ValidationError("no executable kevd at \(kevd): build it (swift build -c release --product kevd) or pass --kevd")
        }
        let wanted = Set(parts)
        let machine = Machine.describe(directory: stateParent)
        let watchFS = Machine.fileSystemName(dir)
        print("""
            kevd-bench subscribers: kevd \(kevd)
            watched folders under \(dir) (\(watchFS)), kevd state under \(stateParent) (\(machine.fileSystem)), \
            [journal] sync = "batch"; \(machine.cpus) CPUs, load \(machine.loadAverage)
            """)
        var problems: [String] = []
        var document: [(String, JSONValue)] = [
            ("benchmark", .string("subscribers")), ("started", .string(machine.started)), ("kevd", .string(kevd)),
        ]

        // Latency.
        var latencyRuns: [LatencyResult] = []
        if wanted.contains(.latency) {
            let count = Int((seconds * Double(rate)).rounded())
            let useInotifywait = inotifywait != "none"
            print("")
            print("Latency: \(grouped(count)) creates at \(grouped(rate))/s, file write → line read, "
                + "warm-up \(warmup) left out; kevd subscriber\(useInotifywait ? " and inotifywait -m on the same folder, same run" : "")")
            for r in 0..<repeats {
                let result = try LatencyRun.run(.init(
                    kevd: kevd, inotifywait: useInotifywait ? inotifywait : nil, watchParent: dir,
                    stateParent: stateParent, count: count, rate: rate, warmup: warmup, perfPrefix: perf,
                    runName: "latency-\(r + 1)"))
                latencyRuns.append(result)
                problems += result.problems.map { "latency run \(r + 1): \($0)" }
            }
            printLatency(latencyRuns)
            document.append(("latency", .object([
                ("runs", .array(latencyRuns.map(\.json))),
                ("median_kevd_p99_us", medianValue(latencyRuns.compactMap(\.kevd.p99)).map { .double($0) } ?? .null),
                ("median_p99_ratio", medianValue(latencyRuns.compactMap(\.ratio)).map { .double($0) } ?? .null),
            ])))
        }

        // Fan-out.
        var fanoutRuns: [Int: [FanoutResult]] = [:]
        if wanted.contains(.fanout) {
            print("")
            print("Fan-out: \(grouped(events)) emits pipelined on one connection"
                + (window > 0 ? " (at most \(grouped(window)) unanswered)" : "")
                + ", to N subscribers of type=bench (one poll reader thread in the bench)"
                + (sendBuffer.map { "; [server] send_buffer = \($0)" } ?? ""))
            for r in 0..<repeats {
                for n in fanouts {
                    let result = try FanoutRun.run(kevd: kevd, stateParent: stateParent, subscribers: n, events: events, monitor: monitor,
                        window: window, extraConfig: sendBuffer.map { "\n[server]\nsend_buffer = \(KevdInstance.tomlString($0))\n" } ?? "",
                        perfPrefix: perf, runName: "fanout-\(n)-\(r + 1)")
                    fanoutRuns[n, default: []].append(result)
                    problems += result.problems.map { "fanout \(n) run \(r + 1): \($0)" }
                }
            }
            printFanout(fanoutRuns)
            document.append(("fanout", .object(fanouts.map { n in
                ("\(n)", .array((fanoutRuns[n] ?? []).map(\.json)))
            })))
        }

        // Memory.
        var memory: MemoryResult? = nil
        if wanted.contains(.memory) {
            print("")
            print("Memory: kevd's RSS idle (one watched folder), with \(grouped(idle)) idle subscribers (type=never), "
                + "after they left")
            let result = try MemoryRun.run(kevd: kevd, watchParent: dir, stateParent: stateParent, subscribers: idle, settle: settle)
            memory = result
            problems += result.problems.map { "memory: \($0)" }
            printMemory(result)
            document.append(("memory", result.json))
        }

        print("")
        printVerdicts(latency: latencyRuns, fanout: fanoutRuns, memory: memory)
        if !problems.isEmpty {
            print("")
            print("PROBLEMS (kevd misbehaved or the run is not valid):")
            for p in problems { print("  - \(p)") }
        }
        let loadAfter = Machine.loadAverageText()
        print("load at the end: \(loadAfter)")
        document.append(("machine", .object([
            ("cpus", .int(Int64(machine.cpus))), ("kernel", .string(machine.kernel)),
            ("state_file_system", .string(machine.fileSystem)), ("watch_file_system", .string(watchFS)),
            ("load_before", .string(machine.loadAverage)), ("load_after", .string(loadAfter)),
        ])))
        document.append(("parameters", .object([
            ("rate", .int(Int64(rate))), ("seconds", .double(seconds)), ("warmup", .int(Int64(warmup))),
            ("subscribers", .array(fanouts.map { .int(Int64($0)) })), ("events", .int(Int64(events))),
            ("idle", .int(Int64(idle))), ("window", .int(Int64(window))),
            ("send_buffer", sendBuffer.map { .string($0) } ?? .null), ("repeat", .int(Int64(repeats))), ("dir", .string(dir)),
            ("state_dir", .string(stateParent)),
        ])))
        document.append(("problems", .array(problems.map { .string($0) })))
        print("wrote \(try writeResultDocument(.object(document), directory: results, name: "subscribers"))")
    }

    // MARK: Tables

    private static func us(_ v: Double?) -> String { v.map { grouped($0) } ?? "-" }
    private static func cpu(_ v: Double?) -> String { v.map { String(format3: $0) } ?? "-" }

    private func printLatency(_ runs: [LatencyResult]) {
        let table = TextTable(header: [
            "run", "consumer", "received", "lost", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", ">1 ms",
            "CPU s",
        ])
        for (r, run) in runs.enumerated() {
            for f in [run.inotifywait, run.kevd].compactMap({ $0 }) {
                table.add([
                    "\(r + 1)", f.consumer, grouped(f.received), grouped(f.lost), Self.us(f.p50), Self.us(f.p90),
                    Self.us(f.p99), Self.us(f.p999), Self.us(f.max), grouped(f.over1ms), Self.cpu(f.cpuSeconds),
                ])
            }
            if let ratio = run.ratio {
                table.add(["\(r + 1)", "kevd p99 / inotifywait p99", "", "", "", "", String(format1: ratio) + "×", "", "", "", ""])
            }
        }
        table.print()
        for (r, run) in runs.enumerated() {
            print("run \(r + 1): writer \(String(format1: Double(run.writes - 1) / run.writeSeconds)) creates/s, "
                + "\(run.lateWrites) late by > 1 ms; bench CPU \(String(format3: run.benchCPUSeconds)) s; "
                + "kevd RSS at end \(run.kevdMemory.map { String(format1: $0.rssMiB) } ?? "-") MiB")
        }
    }

    private func printFanout(_ runs: [Int: [FanoutResult]]) {
        let table = TextTable(header: [
            "subscribers", "run", "delivered", "wall s", "events/s", "lines/s", "kevd CPU s", "CPU µs/event",
            "bench CPU s", "journal-mode", "max lag", "replies s", "kevd RSS MiB",
        ])
        for n in fanouts {
            for (r, f) in (runs[n] ?? []).enumerated() {
                table.add([
                    "\(n)", "\(r + 1)", grouped(f.delivered.min() ?? 0), String(format3: f.seconds),
                    grouped(f.eventsPerSecond), grouped(f.linesPerSecond), Self.cpu(f.kevdCPUSeconds),
                    f.cpuMicrosecondsPerEvent.map { String(format3: $0) } ?? "-", Self.cpu(f.benchCPUSeconds),
                    "\(f.maxJournalMode)", grouped(Int(f.maxLag)), String(format3: f.replySeconds),
                    f.kevdMemory.map { String(format1: $0.rssMiB) } ?? "-",
                ])
            }
        }
        table.print()
        print("delivered: events every subscriber got (min over subscribers); wall s: first emit written → last "
            + "subscriber had all; journal-mode: most subscribers seen reading from the journal (fell behind) in a "
            + "status sample; replies s: first emit → last emit reply (durable)")
        if let one = medianRun(runs[fanouts.min()!]), let many = medianRun(runs[fanouts.max()!]), fanouts.count > 1 {
            let nOne = fanouts.min()!, nMany = fanouts.max()!
            var line = "\(nMany) vs \(nOne) subscriber(s): wall time \(String(format1: many.seconds / one.seconds))×"
            if let a = many.kevdCPUSeconds, let b = one.kevdCPUSeconds, b > 0 {
                line += ", kevd CPU per emitted event \(String(format1: a / b))×"
            }
            print(line)
        }
    }

    private func printMemory(_ m: MemoryResult) {
        let table = TextTable(header: [
            "state", "subscribers", "VmRSS MiB", "RssAnon MiB", "RssFile MiB", "VmHWM MiB", "threads",
        ])
        func row(_ name: String, _ n: Int, _ mem: ProcFigures.Memory?) {
            table.add([
                name, grouped(n), mem.map { String(format1: $0.rssMiB) } ?? "-",
                mem.map { String(format1: $0.anonMiB) } ?? "-", mem.map { String(format1: $0.fileMiB) } ?? "-",
                mem.map { String(format1: $0.hwmMiB) } ?? "-",
                mem.map { "\($0.threads)" } ?? "-",
            ])
        }
        row("idle", 0, m.idle)
        row("subscribed", m.statusSubscribers, m.withSubscribers)
        row("after they left", m.statusSubscribersAfter, m.afterLeaving)
        row("second round", m.subscribers, m.secondRound)
        row("after they left again", 0, m.afterSecondRound)
        table.print()
        print("\(grouped(m.subscribers)) subscribes took \(String(format3: m.connectSeconds)) s")
    }

    private func medianRun(_ runs: [FanoutResult]?) -> FanoutResult? {
        guard let runs, !runs.isEmpty else { return nil }
        return runs.sorted { $0.seconds < $1.seconds }[(runs.count - 1) / 2]
    }

    private func printVerdicts(latency: [LatencyResult], fanout: [Int: [FanoutResult]], memory: MemoryResult?) {
        let table = TextTable(header: ["target", "measured", "verdict"])
        func verdict(_ ok: Bool?) -> String { ok.map { $0 ? "met" : "MISSED" } ?? "-" }
        if !latency.isEmpty {
            let p99 = medianValue(latency.compactMap(\.kevd.p99))
            table.add(["latency: kevd p99 < 500 µs", p99.map { grouped($0) + " µs" } ?? "-", verdict(p99.map { $0 < 500 })])
            let ratio = medianValue(latency.compactMap(\.ratio))
            table.add([
                "latency: kevd p99 ≤ 2× inotifywait p99", ratio.map { String(format1: $0) + "×" } ?? "-",
                verdict(ratio.map { $0 <= 2 }),
            ])
        }
        if let one = medianRun(fanout[1]) {
            table.add([
                "fan-out: ≥ 200,000 events/s to 1 subscriber", grouped(one.eventsPerSecond) + " ev/s",
                verdict(one.eventsPerSecond >= 200_000),
            ])
            if let hundred = medianRun(fanout[100]) {
                table.add([
                    "fan-out: 100 subscribers < 10× one (wall time)", String(format1: hundred.seconds / one.seconds) + "×",
                    verdict(hundred.seconds / one.seconds < 10),
                ])
                if let a = hundred.kevdCPUSeconds, let b = one.kevdCPUSeconds, b > 0 {
                    table.add([
                        "fan-out: 100 subscribers < 10× one (kevd CPU)", String(format1: a / b) + "×", verdict(a / b < 10),
                    ])
                }
            }
        }
        if let memory {
            let idle = memory.idle?.rssMiB
            table.add(["memory: idle RSS < 20 MiB", idle.map { String(format1: $0) + " MiB" } ?? "-", verdict(idle.map { $0 < 20 })])
            let busy = memory.withSubscribers?.rssMiB
            table.add([
                "memory: RSS with \(grouped(memory.subscribers)) subscribers < 64 MiB",
                busy.map { String(format1: $0) + " MiB" } ?? "-", verdict(busy.map { $0 < 64 }),
            ])
        }
        if table.hasRows {
            print("Targets (issue text; informational, never asserted):")
            table.print()
        }
    }
}
