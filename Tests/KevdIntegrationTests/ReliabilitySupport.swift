import Foundation
import Glibc
import Testing

/// The reliability suites' sizes, read from the environment here and nowhere else: the short default is what CI
/// runs with every `scripts/test`; `KEVD_RELIABILITY=full` (`scripts/reliability`) runs the issue's full sizes,
/// and single values can be overridden.
enum Reliability {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var full: Bool { environment["KEVD_RELIABILITY"] == "full" }

    static func size(short: Int, full: Int) -> Int { Self.full ? full : short }

    /// SIGKILL-and-restart rounds in a row.
    static var crashRounds: Int { Int(environment["KEVD_CRASH_ROUNDS"] ?? "") ?? size(short: 5, full: 50) }
    /// Seed of the crash test's random kill points (printed, so a failing run can be repeated).
    static var crashSeed: UInt64 { UInt64(environment["KEVD_CRASH_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max) }

    /// How long the soak runs, and how often it samples kevd.
    static var soakSeconds: Double { Double(environment["KEVD_SOAK_SECONDS"] ?? "") ?? (full ? 600 : 30) }
    static var soakInterval: Double { Double(environment["KEVD_SOAK_INTERVAL"] ?? "") ?? (full ? 10 : 3) }
    /// Where the soak writes its samples as CSV (default: the test's temporary directory).
    static var soakCSV: String? { environment["KEVD_SOAK_CSV"].flatMap { $0.isEmpty ? nil : $0 } }

    /// One line of figures for the lead to collect: `RELIABILITY <name> key=value ...`.
    static func report(_ name: String, _ fields: KeyValuePairs<String, Any>) {
        let text = fields.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        print("RELIABILITY \(name) \(text)")
    }
}

/// A well-behaved pair of clients kept busy while a test misbehaves: an emitter sends a `probe` event every
/// `interval` and a separate subscriber receives them; each event's emit→receive latency is recorded.
///
/// `finish` asserts only what a user would notice: every probe emitted was acknowledged and received, each
/// within `deadline` seconds (generous: kevd must stay responsive, not fast). The measured latencies are
/// printed, not asserted.
final class LatencyProbe: @unchecked Sendable {
    // @unchecked: the mutable state is behind `lock`; the clients are used by one thread each.
    private let lock = NSLock()
    private var sent: [Int: Date] = [:]
    private var received: [Int: Double] = [:]
    private var emitErrors: [String] = []
    private var stopping = false
    private let emitter: RawClient
    private let subscriber: RawClient
    private let name: String
    private let done = DispatchGroup()

    init(socket: String, name: String, interval: Double = 0.02) throws {
        self.name = name
        subscriber = try RawClient(socket)
        let reply = try subscriber.request(#"{"op":"subscribe","filter":["source=emit","type=probe"]}"#)
        try #require(reply["ok"] as? Bool == true, "probe subscribe: \(reply)")
        emitter = try RawClient(socket)
        done.enter()
        done.enter()
        let emitThread = Thread { [self] in
            defer { done.leave() }
            var n = 0
            while !isStopping {
                n += 1
                lock.withLock { sent[n] = Date() }
                do {
                    let reply = try emitter.request(#"{"op":"emit","type":"probe","key":"\#(name)","data":{"n":\#(n)}}"#)
                    if reply["ok"] as? Bool != true {
                        lock.withLock {
                            sent[n] = nil
                            emitErrors.append("\(reply)")
                        }
                    }
                } catch {
                    lock.withLock {
                        sent[n] = nil
                        emitErrors.append("\(error)")
                    }
                    return
                }
                usleep(UInt32(interval * 1_000_000))
            }
        }
        let readThread = Thread { [self] in
            defer { done.leave() }
            while true {
                let line: [String: Any]
                do {
                    line = try subscriber.line(timeout: 1)
                } catch {
                    // A quiet second: done if told to stop and everything sent has arrived (or never will).
                    if isStopping && lock.withLock({ sent.count <= received.count }) { return }
                    if lock.withLock({ stopDeadline.map { Date() > $0 } ?? false }) { return }
                    continue
                }
                guard let n = (line["data"] as? [String: Any])?["n"] as? Int else { continue }
                lock.withLock {
                    if let at = sent[n] { received[n] = Date().timeIntervalSince(at) }
                }
            }
        }
        emitThread.start()
        readThread.start()
    }

    private var stopDeadline: Date?
    private var isStopping: Bool { lock.withLock { stopping } }

    /// Stops emitting, waits (up to `deadline`) for the last probes, prints the figures and checks that every
    /// acknowledged probe arrived within `deadline` seconds.
    func finish(deadline: Double = 10) {
        lock.withLock {
            stopping = true
            stopDeadline = Date().addingTimeInterval(deadline + 2)
        }
        done.wait()
        let (sent, received, errors) = lock.withLock { (self.sent, self.received, self.emitErrors) }
        let latencies = received.values.sorted()
        func percentile(_ p: Double) -> String {
            guard !latencies.isEmpty else { return "-" }
            let i = min(latencies.count - 1, Int(Double(latencies.count) * p))
            return String(format: "%.2f", latencies[i] * 1000)
        }
        Reliability.report(
            name,
            ["probes": sent.count, "received": received.count, "p50_ms": percentile(0.5), "p99_ms": percentile(0.99),
             "max_ms": latencies.last.map { String(format: "%.2f", $0 * 1000) } ?? "-"])
        #expect(errors.isEmpty, "probe emits refused or failed: \(errors.prefix(3))")
        #expect(sent.count > 0, "no probe was emitted")
        let missing = Set(sent.keys).subtracting(received.keys)
        #expect(missing.isEmpty, "probes never received: \(missing.sorted().prefix(10))")
        let late = received.filter { $0.value > deadline }
        #expect(late.isEmpty, "probes later than \(deadline)s: \(late.count)")
    }
}

/// What /proc says about a process: for figures, and for bounds the issue asks for.
enum ProcessFigures {
    /// Resident set size in KiB.
    static func rssKiB(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        }
        return 0
    }

    static func openFDs(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// User plus system CPU time, in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Pids whose command line contains `marker` (a process's argv joined by spaces).
    static func processes(matching marker: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [Int32] = []
        for entry in entries {
            guard let pid = Int32(entry), let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else {
                continue
            }
            let text = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            if text.contains(marker) { out.append(pid) }
        }
        return out
    }
}

