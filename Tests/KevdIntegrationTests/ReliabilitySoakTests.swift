import Foundation
import Glibc
import KevdTestSupport
import Testing

/// kevd started for the soak without `--stdout` (a test reading every event for ten minutes would measure
/// itself), optionally inside a network namespace; its stderr goes to a file.
final class SoakDaemon: @unchecked Sendable {
    let process = Process()
    let stderrPath: String

    init(configPath: String, netns: String?, stderrPath: String) throws {
        self.stderrPath = stderrPath
        var command: [String] = []
        // `ip netns exec` execs kevd after entering the namespace, so the pid we sample stays kevd's.
        if let netns { command = ["/usr/sbin/ip", "netns", "exec", netns] }
        command += [TestBinaries.kevd, "--config", configPath]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.runAlone()
        LeftoverDaemons.register(process.processIdentifier)
    }

    var pid: Int32 { process.processIdentifier }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// What /proc says about a process: resident memory, open descriptors, CPU time.
struct ProcSample {
    let rssKB: Int
    let fds: Int
    let cpuSeconds: Double

    init?(pid: Int32) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let rssLine = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let rss = Int(rssLine.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? ""),
            let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"),
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command: state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        rssKB = rss
        self.fds = fds.count
        cpuSeconds = (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// Emit-to-subscriber latencies, collected by the subscribers' reader and handed out per sampling interval.
final class LatencyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Double] = []
    private(set) var total = 0
    func add(_ v: Double) { lock.lock(); values.append(v); total += 1; lock.unlock() }
    func take() -> [Double] { lock.lock(); defer { values = []; lock.unlock() }; return values }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

/// Nanoseconds on `clock` (realtime for latencies between processes, monotonic for pacing).
func soakClock(_ clock: clockid_t) -> Int64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

func median(_ values: [Double]) -> Double { percentile(values, 0.5) }

/// The soak's clients: 50 steady subscribers read by one thread, an emitter, a file writer, veth pairs in the
/// namespace, and connections that come and go. Every thread runs until `stop`.
final class SoakLoad: @unchecked Sendable {
    let stop = StopFlag()
    let group = DispatchGroup()
    let socket: String
    let dir: TemporaryDirectory
    let netns: NetworkNamespace?
    let latencies = LatencyBox()
    private let lock = NSLock()
    private var counts: [String: Int] = [:]
    private var problems: [String] = []
    private(set) var subscribers: [RawClient] = []

    init(dir: TemporaryDirectory, netns: NetworkNamespace?) {
        self.dir = dir
        self.netns = netns
        socket = dir.file("state/kevd.sock")
    }

    func count(_ what: String, _ n: Int = 1) { lock.lock(); counts[what, default: 0] += n; lock.unlock() }
    func problem(_ what: String) { lock.lock(); if problems.count < 20 { problems.append(what) }; lock.unlock() }
    var figures: [String: Int] { lock.lock(); defer { lock.unlock() }; return counts }
    var failures: [String] { lock.lock(); defer { lock.unlock() }; return problems }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        group.enter()
        Thread { [group] in
            body()
            group.leave()
        }.start()
    }

    /// Connects the 50 subscribers (mixed filters, as real users would have) and starts every load thread.
    func start() throws {
        for i in 0..<50 {
            let filter: String
            switch i % 5 {
            case 0: filter = ""
            case 1, 2: filter = #","filter":["type=soak.lat"]"#
            case 3: filter = #","filter":["source=emit"]"#
            default: filter = #","filter":["source!=inotify"]"#
            }
            let client = try RawClient(socket)
            guard try client.request(#"{"op":"subscribe"\#(filter)}"#)["ok"] as? Bool == true else { throw POSIXError(.EPROTO) }
            subscribers.append(client)
        }
        let fds = subscribers.map(\.fd)
        spawn { [self] in self.readSubscribers(fds) }
        spawn { [self] in self.emit() }
        spawn { [self] in self.writeFiles() }
        spawn { [self] in self.churn() }
        if netns != nil { spawn { [self] in self.cycleVeths() } }
    }

    /// One thread reads all 50 subscribers; a `soak.lat` event's latency is now minus the send time in its data.
    private func readSubscribers(_ fds: [Int32]) {
        var pending = fds.map { _ in [UInt8]() }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let marker = Array(#""type":"soak.lat""#.utf8)
        let timeKey = Array(#""t":"#.utf8)
        var open = fds.count
        while !stop.value && open > 0 {
            guard poll(&polls, nfds_t(polls.count), 200) > 0 else { continue }
            for i in polls.indices where polls[i].revents != 0 && polls[i].fd >= 0 {
                let n = read(polls[i].fd, &buffer, buffer.count)
                if n <= 0 {
                    problem("subscriber \(i) was disconnected (read \(n))")
                    polls[i].fd = -1
                    open -= 1
                    continue
                }
                pending[i] += buffer[0..<n]
                guard let last = pending[i].lastIndex(of: 0x0A) else { continue }
                let now = soakClock(CLOCK_REALTIME)
                pending[i].withUnsafeBytes { raw in
                    let base = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                    var start = 0
                    var lines = 0
                    while start <= last {
                        let end = memchr(base + start, 0x0A, last + 1 - start).map { UnsafePointer($0.assumingMemoryBound(to: UInt8.self)) - base } ?? last
                        lines += 1
                        if find(marker, in: base + start, count: end - start) != nil,
                            let at = find(timeKey, in: base + start, count: end - start)
                        {
                            var t: Int64 = 0
                            var p = start + at + timeKey.count
                            while p < end, base[p] >= 0x30, base[p] <= 0x39 {
                                t = t * 10 + Int64(base[p] - 0x30)
                                p += 1
                            }
                            latencies.add(Double(now - t) / 1e9)
                        }
                        start = end + 1
                    }
                    count("delivered", lines)
                }
                pending[i].removeFirst(last + 1)
            }
        }
    }

    /// Where `needle` starts in `count` bytes at `bytes` (an offset from `bytes`' buffer start), via memchr.
    private func find(_ needle: [UInt8], in bytes: UnsafePointer<UInt8>, count: Int) -> Int? {
        var offset = 0
        while offset + needle.count <= count {
            guard let hit = memchr(bytes + offset, Int32(needle[0]), count - offset) else { return nil }
            let at = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) - bytes
            guard at + needle.count <= count else { return nil }
            if memcmp(bytes + at, needle, needle.count) == 0 { return at }
            offset = at + 1
        }
        return nil
    }

    /// 100 emits a second, each stamped with its send time; every tenth fires the rule.
    private func emit() {
        guard let client = try? RawClient(socket) else { return problem("emitter cannot connect") }
        var i = 0
        var next = soakClock(CLOCK_MONOTONIC)
        while !stop.value {
            let type = i % 10 == 0 ? "soak.rule" : "soak.lat"
            let reply = try? client.request(
                #"{"op":"emit","type":"\#(type)","key":"k\#(i % 7)","data":{"t":\#(soakClock(CLOCK_REALTIME)),"i":\#(i)}}"#)
            if reply?["ok"] as? Bool != true { problem("emit \(i): \(reply ?? [:])") } else { count("emits") }
            i += 1
            next += 10_000_000
            let now = soakClock(CLOCK_MONOTONIC)
            if next > now { usleep(UInt32((next - now) / 1000)) } else { next = now }
        }
    }

    /// About 50 file writes a second over 100 names (create, modify, close_write), and a delete now and then.
    private func writeFiles() {
        var i = 0
        while !stop.value {
            try? writeFile(dir.file("w/f\(i % 100)"), "\(i)")
            if i % 10 == 0 { unlink(dir.file("w/f\((i + 50) % 100)")) }
            count("file_writes")
            i += 1
            usleep(20_000)
        }
    }

    /// A veth pair added and deleted each second inside the private namespace: kernel uevents for kevd's udev
    /// source. The host's interfaces are never touched.
    private func cycleVeths() {
        guard let netns else { return }
        var i = 0
        while !stop.value {
            do {
                try netns.exec(["/usr/sbin/ip", "link", "add", "ksa\(i % 4)", "type", "veth", "peer", "name", "ksb\(i % 4)"])
                usleep(500_000)
                try netns.exec(["/usr/sbin/ip", "link", "del", "ksa\(i % 4)"])
                count("veth_cycles")
            } catch {
                problem("veth \(i): \(error)")
            }
            i += 1
            usleep(500_000)
        }
    }

    /// Connections that come and go, five a second: subscribers that leave mid-stream (some with unread
    /// events, the lapsed listener), named ones, and status requests. A server that kept anything of them
    /// would grow without bound here.
    private func churn() {
        var i = 0
        while !stop.value {
            do {
                let client = try RawClient(socket)
                switch i % 4 {
                case 0: _ = try client.request(#"{"op":"subscribe"}"#)  // Leaves with events unread.
                case 1: _ = try client.request(#"{"op":"subscribe","name":"churn\#(i % 3)","filter":["type=soak.lat"]}"#)
                case 2:
                    _ = try client.request(#"{"op":"subscribe","filter":["type=soak.lat"]}"#)
                    _ = try client.events(1, timeout: 10)
                default: _ = try client.request(#"{"op":"status"}"#)
                }
                count("churned")
            } catch {
                // Once the load is stopping, a subscriber waiting for an event times out by the test's own doing
                // (the emitters stopped with it); every failure during the load counts.
                if !stop.value { problem("churn \(i): \(error)") }
            }
            i += 1
            usleep(200_000)
        }
    }

    func finish() -> Bool {
        stop.set(true)
        return group.wait(timeout: .now() + 30) == .success
    }
}

@Suite("Reliability: soak", .serialized)
struct ReliabilitySoakTests {
    @Test("steady mixed load (files, veth uevents, timers, emits, 50 subscribers, rules, churn): memory and fds stay bounded, latency does not drift")
    func soak() throws {
        signal(SIGPIPE, SIG_IGN)
        if Root.required { try Root.check() }
        let seconds = Reliability.soakSeconds
        let interval = Reliability.soakInterval
        let full = Reliability.full
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        // Device events need a private network namespace (root); without root the soak runs without them.
        let netns = Root.isRoot ? try NetworkNamespace() : nil
        try writeRuleFile(dir, "10-soak.toml", """
            [[rule]]
            name = "soak-rule"
            match = ["source=emit", "type=soak.rule"]
            run = ["/bin/true"]
            concurrency = 2
            """)
        var config = rulesConfig("""

            [[watch]]
            path = "w"
            recursive = true

            [[timer]]
            name = "soak-a"
            every = "1s"

            [[timer]]
            name = "soak-b"
            every = "1s"

            """)
        if netns != nil { config += "\n[udev]\nsource = \"kernel\"\nsubsystems = [\"net\"]\n" }
        try config.write(toFile: dir.file("kevd.toml"), atomically: true, encoding: .utf8)
        let daemon = try SoakDaemon(configPath: dir.file("kevd.toml"), netns: netns?.name, stderrPath: dir.file("kevd.stderr"))
        let deadline = Date().addingTimeInterval(20)
        while try kevctl(["status", "--socket", dir.file("state/kevd.sock")]).status != 0 {
            try #require(Date() < deadline && daemon.process.isRunning, "kevd did not answer: \(daemon.stderr)")
            usleep(20_000)
        }
        let comm = (try? String(contentsOfFile: "/proc/\(daemon.pid)/comm", encoding: .utf8)) ?? ""
        try #require(comm.hasPrefix("kevd"), "the sampled pid \(daemon.pid) is \(comm), not kevd")

        let load = SoakLoad(dir: dir, netns: netns)
        try load.start()
        let csvPath = Reliability.soakCSV ?? dir.file("soak.csv")
        var csv = "t_s,rss_kb,fds,cpu_s,cpu_pct,p50_ms,p99_ms,latency_samples,emits,delivered\n"
        struct Row { let t, rss, fds, cpuPct, p99: Double }
        var rows: [Row] = []
        let start = Date()
        var previous = try #require(ProcSample(pid: daemon.pid))
        var previousTime = start
        print("RELIABILITY soak start seconds=\(Int(seconds)) interval=\(interval) udev=\(netns != nil ? "veth-in-netns" : "skipped (not root)") pid=\(daemon.pid)")
        while Date().timeIntervalSince(start) < seconds {
            let wake = start.addingTimeInterval(Double(rows.count + 1) * interval)
            let wait = wake.timeIntervalSinceNow
            if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
            guard daemon.process.isRunning, let sample = ProcSample(pid: daemon.pid) else {
                Issue.record("kevd died during the soak: \(daemon.stderr)")
                break
            }
            let now = Date()
            let lat = load.latencies.take()
            let cpuPct = (sample.cpuSeconds - previous.cpuSeconds) / now.timeIntervalSince(previousTime) * 100
            let t = now.timeIntervalSince(start)
            let figures = load.figures
            let row = Row(t: t, rss: Double(sample.rssKB), fds: Double(sample.fds), cpuPct: cpuPct, p99: percentile(lat, 0.99) * 1000)
            rows.append(row)
            csv += String(
                format: "%.1f,%d,%d,%.2f,%.1f,%.3f,%.3f,%d,%d,%d\n", t, sample.rssKB, sample.fds, sample.cpuSeconds, cpuPct,
                percentile(lat, 0.5) * 1000, row.p99, lat.count, figures["emits"] ?? 0, figures["delivered"] ?? 0)
            print(String(format: "RELIABILITY soak sample t=%.0f rss_kb=%d fds=%d cpu_pct=%.1f p99_ms=%.2f samples=%d", t, sample.rssKB, sample.fds, cpuPct, row.p99, lat.count))
            previous = sample
            previousTime = now
        }
        #expect(load.finish(), "the load threads did not stop")
        try csv.write(toFile: csvPath, atomically: true, encoding: .utf8)
        #expect(load.failures.isEmpty, "\(load.failures)")
        let figures = load.figures

        // Every client of the churn is gone and the load stopped: kevd's descriptors come back to what the 50
        // subscribers hold (a script's pipes or one last churn connection may still be closing: wait for it).
        let baseline = rows.map(\.fds).min() ?? 0
        var settled = ProcSample(pid: daemon.pid)?.fds ?? -1
        let settleDeadline = Date().addingTimeInterval(10)
        while Double(settled) > baseline + 4 && Date() < settleDeadline {
            usleep(50_000)
            settled = ProcSample(pid: daemon.pid)?.fds ?? -1
        }
        #expect(Double(settled) <= baseline + 4, "kevd holds \(settled) fds after the load, \(Int(baseline)) during it at least")
        // And when the 50 subscribers leave, their 50 sockets close.
        let subscribers = load.subscribers.count
        load.subscribers.forEach { shutdown($0.fd, Int32(SHUT_RDWR)) }
        var after = settled
        let leaveDeadline = Date().addingTimeInterval(10)
        while after > settled - subscribers && Date() < leaveDeadline {
            usleep(50_000)
            after = ProcSample(pid: daemon.pid)?.fds ?? -1
        }
        #expect(after <= settled - subscribers, "kevd holds \(after) fds after its \(subscribers) subscribers left (\(settled) before)")

        // Growth without bound: the last third's median against the first third's (the first sample is warm-up).
        let steady = Array(rows.dropFirst())
        let third = max(1, steady.count / 3)
        let early = steady.prefix(third)
        let late = steady.suffix(third)
        let rssEarly = median(early.map(\.rss))
        let rssLate = median(late.map(\.rss))
        let p99Early = median(early.map(\.p99))
        let p99Late = median(late.map(\.p99))
        #expect(steady.count >= 3, "too few samples (\(steady.count)) to judge growth")
        #expect(rssLate <= rssEarly * 1.25 + 8192, "RSS grew from \(Int(rssEarly)) KB to \(Int(rssLate)) KB")
        #expect(median(late.map(\.fds)) <= median(early.map(\.fds)) + 8, "fds grew: \(early.map(\.fds)) -> \(late.map(\.fds))")
        if full {
            // Generous: a shared machine is noisy, but latency that keeps climbing is a leak of work.
            #expect(p99Late <= p99Early * 4 + 50, "p99 latency drifted from \(p99Early) ms to \(p99Late) ms")
        }
        #expect((figures["delivered"] ?? 0) > 0 && load.latencies.total > 0, "subscribers received nothing")
        #expect(try kevctl(["status", "--socket", dir.file("state/kevd.sock")]).status == 0, "kevd stopped answering")
        kill(daemon.pid, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0, "kevd exited \(daemon.process.terminationStatus): \(daemon.stderr)")
        let verify = try kevctl(["journal", "--state-dir", dir.file("state"), "--verify"])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        let cpuMean = rows.map(\.cpuPct).reduce(0, +) / Double(max(rows.count, 1))
        print(
            String(
                format: "RELIABILITY soak seconds=%.0f samples=%d rss_kb_first=%.0f rss_kb_last=%.0f fds_baseline=%.0f fds_end=%d "
                    + "cpu_pct_mean=%.1f p99_ms_first=%.2f p99_ms_last=%.2f p99_ms_max=%.2f latency_samples=%d emits=%d "
                    + "delivered=%d file_writes=%d veth_cycles=%d churned=%d subscribers=%d",
                rows.last?.t ?? 0, rows.count, rssEarly, rssLate, baseline, settled, cpuMean, p99Early, p99Late,
                rows.map(\.p99).max() ?? 0, load.latencies.total, figures["emits"] ?? 0, figures["delivered"] ?? 0,
                figures["file_writes"] ?? 0, figures["veth_cycles"] ?? 0, figures["churned"] ?? 0, subscribers) + " csv=\(csvPath)")
    }
}

/// The soak's NATS-outage phase (issue 15, part 5): a forwarder whose server is gone tries again and again
/// (backing off to every 5 s) while events keep coming. Each attempt once kept its libnats callback context for
/// ever; now a context is freed a grace period after its attempt, so memory and the contexts alive stay flat
/// however long the outage lasts. The short variant (CI) is about 25 s; `KEVD_RELIABILITY=full` runs 5 minutes.
@Suite("Reliability: soak, NATS outage", .serialized)
struct ReliabilitySoakNatsOutageTests {
    @Test("a long NATS outage: kevd's memory, fds and libnats contexts stay flat, and forwarding resumes after it")
    func natsOutage() throws {
        signal(SIGPIPE, SIG_IGN)
        let outageSeconds = Double(ProcessInfo.processInfo.environment["KEVD_SOAK_OUTAGE_SECONDS"] ?? "")
            ?? (Reliability.full ? 300 : 20)
        let interval = Reliability.full ? 10.0 : 2.0
        let dir = try TemporaryDirectory()
        let nats = try NatsServer(name: "soak", store: dir.file("nats"))
        try nats.start()
        let config = serverConfig("\n" + natsForwardConfig(url: nats.url))
        try config.write(toFile: dir.file("kevd.toml"), atomically: true, encoding: .utf8)
        let daemon = try SoakDaemon(configPath: dir.file("kevd.toml"), netns: nil, stderrPath: dir.file("kevd.stderr"))
        func forward() -> [String: Any]? {
            guard let result = try? kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"]),
                let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            else { return nil }
            return (reply["forward"] as? [[String: Any]])?.first
        }
        _ = try waitUntil("kevd forwarding") { forward()?["state"] as? String == "forwarding" ? true : nil }
        let emitter = try RawClient(dir.file("state/kevd.sock"))
        var emitted = 0
        func emitFor(_ seconds: Double) throws {
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                let reply = try emitter.request(#"{"op":"emit","type":"soak.nats","key":"k","data":{"i":\#(emitted)}}"#)
                #expect(reply["ok"] as? Bool == true)
                emitted += 1
                usleep(10_000)
            }
        }
        try emitFor(2)
        nats.kill()
        struct Row { let rss: Int, fds: Int, contexts: Int }
        var rows: [Row] = []
        let start = Date()
        while Date().timeIntervalSince(start) < outageSeconds {
            try emitFor(interval)
            guard let sample = ProcSample(pid: daemon.pid), let status = forward() else {
                Issue.record("kevd died or stopped answering during the outage: \(daemon.stderr)")
                return
            }
            let contexts = (status["nats_contexts"] as? NSNumber)?.intValue ?? -1
            rows.append(Row(rss: sample.rssKB, fds: sample.fds, contexts: contexts))
            print("RELIABILITY nats_outage sample t=\(Int(Date().timeIntervalSince(start))) rss_kb=\(sample.rssKB) fds=\(sample.fds) nats_contexts=\(contexts) state=\(status["state"] ?? "-")")
        }
        let attempts = (forward()?["errors"] as? NSNumber)?.intValue ?? 0
        // Contexts alive: those of the attempts in the last grace period (ack wait + 5 s), not one per attempt.
        let lastContexts = rows.suffix(3).map(\.contexts)
        #expect(lastContexts.allSatisfy { $0 >= 0 && $0 <= 4 }, "libnats contexts alive: \(rows.map(\.contexts))")
        #expect(rows.count >= 3)
        let third = max(1, rows.count / 3)
        let rssEarly = median(rows.prefix(third).map { Double($0.rss) })
        let rssLate = median(rows.suffix(third).map { Double($0.rss) })
        #expect(rssLate <= rssEarly * 1.1 + 2048, "RSS grew from \(Int(rssEarly)) KB to \(Int(rssLate)) KB through the outage")
        #expect((rows.last?.fds ?? 0) <= (rows.first?.fds ?? 0) + 2, "fds grew: \(rows.map(\.fds))")

        try nats.start()
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("every emit forwarded after the outage", timeout: 60) {
            reader.messageCount() == UInt64(emitted) ? true : nil
        }
        kill(daemon.pid, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0)
        Reliability.report("nats_outage", [
            "seconds": Int(outageSeconds), "forward_errors": attempts, "rss_kb_first": Int(rssEarly),
            "rss_kb_last": Int(rssLate), "contexts_max": rows.map(\.contexts).max() ?? -1, "emitted": emitted,
        ])
    }
}
