import CKevdShim
import Glibc
import KevdEvent
import KevdKernel
import Synchronization

// The three measurements of `kevd-bench subscribers`: latency (file write → subscriber line, next to
// inotifywait), fan-out throughput (emit → N subscribers), memory (idle, and with 1,000 idle subscribers).

// MARK: - Latency

/// Counts the lines of one stream and, per line that names a file `f<N>`, when it arrived.
final class ArrivalRecorder: @unchecked Sendable {
    // @unchecked: the arrays are written by the reader thread only and read after it was joined; `received` is an
    // atomic the main thread polls.
    enum Format {
        /// kevd event lines: `{"seq":…,"data":{…,"name":"f123",…}}`; other lines (replies, gaps) are counted apart.
        case kevdEvent
        /// inotifywait `--format '%f'`: `f123`.
        case bareName
    }

    let format: Format
    let count: Int
    /// Monotonic ns of the read that delivered file N's line; 0 if none did.
    let arrivals: UnsafeMutablePointer<UInt64>
    private let receivedCounter = Atomic<Int>(0)
    var duplicates = 0
    var unmatched = 0
    var otherLines = 0
    var otherSample: [String] = []

    init(format: Format, count: Int) {
        self.format = format
        self.count = count
        arrivals = .allocate(capacity: count)
        arrivals.initialize(repeating: 0, count: count)
    }

    deinit { arrivals.deallocate() }

    var received: Int { receivedCounter.load(ordering: .acquiring) }

    /// Reads `fd` (blocking) until EOF, timestamping each read; `initial` is what a handshake read already got.
    func run(fd: Int32, initial: [UInt8]) {
        readTimestampedLines(fd: fd, initial: initial) { bytes, time in self.line(bytes, time: time) }
    }

    private static let seqPrefix = Array(#"{"seq":"#.utf8)
    private static let nameKey = Array(#""name":"f"#.utf8)

    private func line(_ bytes: UnsafeBufferPointer<UInt8>, time: UInt64) {
        var digits = bytes[...]
        switch format {
        case .bareName:
            guard bytes.first == UInt8(ascii: "f") else { return other(bytes) }
            digits = bytes[1...]
        case .kevdEvent:
            guard bytes.starts(with: Self.seqPrefix) else { return other(bytes) }
            guard let at = firstIndex(of: Self.nameKey, in: bytes) else { return other(bytes) }
            let from = at + Self.nameKey.count
            guard let quote = bytes[from...].firstIndex(of: UInt8(ascii: "\"")) else { return other(bytes) }
            digits = bytes[from..<quote]
        }
        var index = 0
        for d in digits {
            guard d >= 0x30 && d <= 0x39 else { return other(bytes) }
            index = index * 10 + Int(d - 0x30)
        }
        guard !digits.isEmpty, index < count else {
            unmatched += 1
            return
        }
        if arrivals[index] != 0 {
            duplicates += 1
        } else {
            arrivals[index] = time
            receivedCounter.add(1, ordering: .releasing)
        }
    }

    private func other(_ bytes: UnsafeBufferPointer<UInt8>) {
        otherLines += 1
        if otherSample.count < 3 { otherSample.append(String(decoding: bytes.prefix(300), as: UTF8.self)) }
    }
}

/// Latency figures of one consumer, in microseconds.
struct LatencyFigures {
    var consumer: String
    var received: Int
    var lost: Int
    var duplicates: Int
    var otherLines: Int
    var measured: Int
    var p50: Double?
    var p90: Double?
    var p99: Double?
    var p999: Double?
    var max: Double?
    var mean: Double?
    /// Lines that arrived more than 1 ms / 10 ms after their write.
    var over1ms: Int
    var over10ms: Int
    var cpuSeconds: Double?

    init(consumer: String, recorder: ArrivalRecorder, writes: UnsafeMutablePointer<UInt64>, warmup: Int, cpu: Double?) {
        self.consumer = consumer
        var latencies: [Double] = []
        latencies.reserveCapacity(recorder.count)
        var received = 0
        for i in 0..<recorder.count where recorder.arrivals[i] != 0 {
            received += 1
            guard i >= warmup else { continue }
            latencies.append(Double(Int64(bitPattern: recorder.arrivals[i] &- writes[i])) / 1e3)
        }
        latencies.sort()
        self.received = received
        lost = recorder.count - received
        duplicates = recorder.duplicates + recorder.unmatched
        otherLines = recorder.otherLines
        measured = latencies.count
        p50 = percentile(latencies, 0.50)
        p90 = percentile(latencies, 0.90)
        p99 = percentile(latencies, 0.99)
        p999 = percentile(latencies, 0.999)
        max = latencies.last
        mean = latencies.isEmpty ? nil : latencies.reduce(0, +) / Double(latencies.count)
        over1ms = latencies.count - (latencies.firstIndex { $0 > 1000 } ?? latencies.count)
        over10ms = latencies.count - (latencies.firstIndex { $0 > 10000 } ?? latencies.count)
        cpuSeconds = cpu
    }

    var json: JSONValue {
        func d(_ v: Double?) -> JSONValue { v.map { .double($0) } ?? .null }
        return .object([
            ("consumer", .string(consumer)), ("received", .int(Int64(received))), ("lost", .int(Int64(lost))),
            ("duplicates_or_unmatched", .int(Int64(duplicates))), ("other_lines", .int(Int64(otherLines))),
            ("measured", .int(Int64(measured))), ("p50_us", d(p50)), ("p90_us", d(p90)), ("p99_us", d(p99)),
            ("p99_9_us", d(p999)), ("max_us", d(max)), ("mean_us", d(mean)), ("over_1ms", .int(Int64(over1ms))),
            ("over_10ms", .int(Int64(over10ms))), ("cpu_seconds", d(cpuSeconds)),
        ])
    }
}

struct LatencyResult {
    var writes: Int
    var rate: Int
    /// First write → last write.
    var writeSeconds: Double
    /// Writes that started more than 1 ms after their scheduled time (the writer itself was late).
    var lateWrites: Int
    var kevd: LatencyFigures
    var inotifywait: LatencyFigures?
    var kevdMemory: ProcFigures.Memory?
    var benchCPUSeconds: Double
    var problems: [String]

    var ratio: Double? {
        guard let k = kevd.p99, let i = inotifywait?.p99, i > 0 else { return nil }
        return k / i
    }

    var json: JSONValue {
        .object([
            ("writes", .int(Int64(writes))), ("rate", .int(Int64(rate))), ("write_seconds", .double(writeSeconds)),
            ("achieved_rate", .double(Double(writes - 1) / writeSeconds)), ("late_writes", .int(Int64(lateWrites))),
            ("kevd", kevd.json), ("inotifywait", inotifywait?.json ?? .null),
            ("p99_ratio_kevd_to_inotifywait", ratio.map { .double($0) } ?? .null),
            ("kevd_memory_at_end", kevdMemory?.json ?? .null), ("bench_cpu_seconds", .double(benchCPUSeconds)),
            ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

enum LatencyRun {
    struct Parameters {
        var kevd: String
        var inotifywait: String?
        var watchParent: String
        var stateParent: String
        var count: Int
        var rate: Int
        var warmup: Int
        var perfPrefix: String?
        var runName: String
    }

    static func run(_ p: Parameters) throws -> LatencyResult {
        var problems: [String] = []
        let watchRoot = try TempDirectory(parent: p.watchParent)
        defer { watchRoot.remove() }
        let stateRoot = try TempDirectory(parent: p.stateParent)
        defer { stateRoot.remove() }
        let watched = watchRoot.path + "/w"
        try TempDirectory.makeDirectories(watched)

        let kevd = try KevdInstance(kevd: p.kevd, stateDirectory: stateRoot.path, watch: watched, watchEvents: ["create"])
        var kevdStopped = false
        defer { if !kevdStopped { _ = kevd.stop() } }
        let subscriber = try LineClient(path: kevd.socketPath)
        defer { subscriber.close() }
        try subscriber.subscribe(filter: ["source=inotify", "type=create"])

        var inotifywait: ChildProcess? = nil
        defer { if let inotifywait { _ = inotifywait.stop() } }
        if let path = p.inotifywait {
            let child = try ChildProcess(
                [path, "-m", "-e", "create", "--format", "%f", watched], stdout: .pipe,
                stderrPath: stateRoot.path + "/inotifywait.stderr")
            inotifywait = child
            try waitForBanner(child, "Watches established.", timeout: 10)
        }

        let kevdRecorder = ArrivalRecorder(format: .kevdEvent, count: p.count)
        let initial = subscriber.leftover
        let kevdReader = startThread { [fd = subscriber.fd] in kevdRecorder.run(fd: fd, initial: initial) }
        let inotifyRecorder = ArrivalRecorder(format: .bareName, count: p.count)
        let inotifyReader = inotifywait.map { child in
            startThread { [fd = child.stdoutPipe!] in inotifyRecorder.run(fd: fd, initial: []) }
        }

        // Paths built beforehand: the write loop does nothing but wait, read the clock, open and close.
        let paths: [[CChar]] = (0..<p.count).map { Array((watched + "/f\($0)").utf8CString) }
        let writes = UnsafeMutablePointer<UInt64>.allocate(capacity: p.count)
        defer { writes.deallocate() }
        let perf = PerfRecorder(prefix: p.perfPrefix, name: p.runName, pid: kevd.pid)
        let kevdCPU0 = kevd.process.cpuSeconds
        let inotifyCPU0 = inotifywait?.cpuSeconds
        let benchCPU0 = ProcFigures.selfCPUSeconds()

        let interval = UInt64(1_000_000_000 / p.rate)
        let first = Clock.monotonicNanoseconds() + 50_000_000
        var late = 0
        for i in 0..<p.count {
            let due = first + UInt64(i) * interval
            var when = timespec(tv_sec: Int(due / 1_000_000_000), tv_nsec: Int(due % 1_000_000_000))
            while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, nil) == EINTR {}
            let now = Clock.monotonicNanoseconds()
            writes[i] = now
            if now > due + 1_000_000 { late += 1 }
            let fd = paths[i].withUnsafeBufferPointer { open($0.baseAddress!, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }
            guard fd >= 0 else { throw SyscallError(call: "open(f\(i))", errno: .init(rawValue: errno)) }
            close(fd)
        }
        let writeSeconds = Seconds.between(writes[0], writes[p.count - 1])

        // Everything should arrive within milliseconds; give stragglers 5 s.
        let deadline = Clock.monotonicNanoseconds() + 5_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            if kevdRecorder.received >= p.count && (inotifywait == nil || inotifyRecorder.received >= p.count) { break }
            Sleep.nanoseconds(10_000_000)
        }
        let kevdCPU = bothValues(kevd.process.cpuSeconds, kevdCPU0).map { $0 - $1 }
        let inotifyCPU = bothValues(inotifywait?.cpuSeconds, inotifyCPU0).map { $0 - $1 }
        let benchCPU = ProcFigures.selfCPUSeconds() - benchCPU0
        let memory = ProcFigures.memory(pid: kevd.pid)
        perf?.stop()

        // End the streams: the readers see EOF and return.
        shutdown(subscriber.fd, Int32(SHUT_RDWR))
        pthread_join(kevdReader, nil)
        if let child = inotifywait {
            let stop = child.stop()
            inotifywait = nil
            if stop.killed { problems.append("inotifywait needed SIGKILL") }
            if let inotifyReader { pthread_join(inotifyReader, nil) }
            close(child.stdoutPipe!)
        }
        let stop = kevd.stop()
        kevdStopped = true
        if stop.killed || stop.status != 0 {
            problems.append("kevd exit status \(stop.status)\(stop.killed ? " after SIGKILL (no exit within 15 s of SIGTERM)" : ""): \(kevd.process.stderrTail())")
        }

        let kevdFigures = LatencyFigures(consumer: "kevd subscriber", recorder: kevdRecorder, writes: writes, warmup: p.warmup, cpu: kevdCPU)
        if kevdFigures.lost > 0 {
            problems.append("kevd subscriber: \(kevdFigures.lost) of \(p.count) creates never arrived")
        }
        if kevdFigures.duplicates > 0 || kevdFigures.otherLines > 0 {
            problems.append("kevd subscriber: \(kevdFigures.duplicates) duplicate/unmatched lines, \(kevdFigures.otherLines) other lines \(kevdRecorder.otherSample)")
        }
        var inotifyFigures: LatencyFigures? = nil
        if p.inotifywait != nil {
            let f = LatencyFigures(consumer: "inotifywait -m", recorder: inotifyRecorder, writes: writes, warmup: p.warmup, cpu: inotifyCPU)
            if f.lost > 0 { problems.append("inotifywait: \(f.lost) of \(p.count) creates never arrived") }
            inotifyFigures = f
        }
        return LatencyResult(
            writes: p.count, rate: p.rate, writeSeconds: writeSeconds, lateWrites: late, kevd: kevdFigures,
            inotifywait: inotifyFigures, kevdMemory: memory, benchCPUSeconds: benchCPU, problems: problems)
    }

    /// Waits until the child's stderr contains `banner`.
    static func waitForBanner(_ child: ChildProcess, _ banner: String, timeout: Double) throws {
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while Clock.monotonicNanoseconds() < deadline {
            if child.stderrTail(limit: 4096).contains(banner) { return }
            if child.poll() {
                throw BenchError("\(child.argv[0]) exited (status \(child.exitStatus!)): \(child.stderrTail())")
            }
            Sleep.nanoseconds(5_000_000)
        }
        throw BenchError("\(child.argv[0]) printed no '\(banner)' within \(timeout) s")
    }
}

private func bothValues(_ a: Double?, _ b: Double?) -> (Double, Double)? {
    guard let a, let b else { return nil }
    return (a, b)
}

// MARK: - Fan-out

/// Counts lines per connection and checks each line's first bytes, without parsing anything.
struct LineCounter {
    /// The first bytes every line should start with (≤ 8), packed big-endian.
    let expected: UInt64
    let expectedLength: Int
    var lines = 0
    var unexpected = 0
    private var prefix: UInt64 = 0
    /// Bytes of the current line's prefix seen so far; `expectedLength + 1` once it was checked.
    private var seen = 0

    init(prefix: String) {
        let bytes = Array(prefix.utf8)
        precondition(bytes.count >= 1 && bytes.count <= 8)
        expected = bytes.reduce(0) { $0 << 8 | UInt64($1) }
        expectedLength = bytes.count
    }

    mutating func consume(_ base: UnsafePointer<UInt8>, _ count: Int) {
        var i = 0
        while i < count {
            if seen < expectedLength {
                let b = base[i]
                i += 1
                if b == 0x0A {
                    lines += 1
                    unexpected += 1
                    prefix = 0
                    seen = 0
                    continue
                }
                prefix = prefix << 8 | UInt64(b)
                seen += 1
                if seen == expectedLength {
                    if prefix != expected { unexpected += 1 }
                    seen += 1
                }
                continue
            }
            guard let nl = memchr(base + i, 0x0A, count - i) else { return }
            i = UnsafeRawPointer(nl) - UnsafeRawPointer(base) + 1
            lines += 1
            prefix = 0
            seen = 0
        }
    }
}

/// One thread reading every subscriber socket with poll and large reads.
final class FanoutReader: @unchecked Sendable {
    // @unchecked: `counters` is the reader thread's until it is joined; the rest are atomics.
    let fds: [Int32]
    let target: Int
    var counters: [LineCounter]
    var eofs = 0
    private let total = Atomic<Int>(0)
    private let completeAt = Atomic<UInt64>(0)
    private let stopping = Atomic<Bool>(false)

    init(fds: [Int32], target: Int) {
        self.fds = fds
        self.target = target
        counters = fds.map { _ in LineCounter(prefix: #"{"seq":"#) }
    }

    var linesSoFar: Int { total.load(ordering: .relaxed) }
    /// Monotonic ns when the last subscriber had all `target` lines; 0 until then.
    var completedAt: UInt64 { completeAt.load(ordering: .acquiring) }
    func stop() { stopping.store(true, ordering: .releasing) }

    func run() {
        let capacity = 1 << 20
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var complete = 0
        var done = [Bool](repeating: false, count: fds.count)
        while !stopping.load(ordering: .acquiring) {
            let r = poll(&polls, nfds_t(polls.count), 20)
            if r <= 0 { continue }
            var got = 0
            for i in polls.indices where polls[i].revents != 0 {
                for _ in 0..<8 {
                    let n = read(polls[i].fd, buffer, capacity)
                    if n <= 0 {
                        if n == 0 || (errno != EAGAIN && errno != EINTR) {
                            eofs += 1
                            polls[i].fd = -1
                        }
                        break
                    }
                    counters[i].consume(buffer, n)
                    got += n
                    if n < capacity { break }
                }
                if !done[i] && counters[i].lines >= target {
                    done[i] = true
                    complete += 1
                    if complete == fds.count { completeAt.store(Clock.monotonicNanoseconds(), ordering: .releasing) }
                }
            }
            if got > 0 { total.store(counters.reduce(0) { $0 + $1.lines }, ordering: .relaxed) }
        }
    }
}

/// Reads the emitter's replies on its own thread.
final class ReplyCounter: @unchecked Sendable {
    let fd: Int32
    let target: Int
    /// `{"ok":tr`: a reply that is not `{"ok":true…` counts as unexpected.
    var counter = LineCounter(prefix: #"{"ok":tr"#)
    private let lines = Atomic<Int>(0)
    private let lastAt = Atomic<UInt64>(0)

    init(fd: Int32, target: Int) {
        self.fd = fd
        self.target = target
    }

    var replies: Int { lines.load(ordering: .acquiring) }
    var completedAt: UInt64 { lastAt.load(ordering: .acquiring) }

    func run(initial: [UInt8]) {
        let capacity = 1 << 20
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        initial.withUnsafeBufferPointer { if !$0.isEmpty { counter.consume($0.baseAddress!, $0.count) } }
        while counter.lines < target {
            let n = read(fd, buffer, capacity)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            counter.consume(buffer, n)
            lines.store(counter.lines, ordering: .releasing)
        }
        lastAt.store(Clock.monotonicNanoseconds(), ordering: .releasing)
    }
}

/// Asks for `status` every 100 ms, to see whether subscribers fell behind (journal mode) during the run.
final class StatusMonitor: StatusPoller, @unchecked Sendable {
    var maxJournalMode = 0
    var maxLag: Int64 = 0
    var maxBuffered: Int64 = 0

    override func take(_ value: JSONValue, reply: String) -> String? {
        guard case .array(let subs)? = value["subscribers"] else {
            return "status without subscribers: \(reply.prefix(200))"
        }
        maxJournalMode = max(maxJournalMode, subs.filter { $0["mode"]?.stringValue == "journal" }.count)
        for s in subs {
            maxLag = max(maxLag, s["lag"]?.int64Value ?? 0)
            maxBuffered = max(maxBuffered, s["buffered"]?.int64Value ?? 0)
        }
        return nil
    }
}

struct FanoutResult {
    var subscribers: Int
    var events: Int
    /// First emit written → the last subscriber had every event.
    var seconds: Double
    /// First emit written → the last emit reply.
    var replySeconds: Double
    var emitWriteSeconds: Double
    var kevdCPUSeconds: Double?
    var benchCPUSeconds: Double
    var delivered: [Int]
    var unexpectedLines: Int
    var replies: Int
    var failedReplies: Int
    var statusSamples: Int
    var maxJournalMode: Int
    var maxLag: Int64
    var maxBuffered: Int64
    var kevdMemory: ProcFigures.Memory?
    var problems: [String]

    var eventsPerSecond: Double { Double(events) / seconds }
    var linesPerSecond: Double { Double(events * subscribers) / seconds }
    var cpuMicrosecondsPerEvent: Double? { kevdCPUSeconds.map { $0 * 1e6 / Double(events) } }

    var json: JSONValue {
        func d(_ v: Double?) -> JSONValue { v.map { .double($0) } ?? .null }
        return .object([
            ("subscribers", .int(Int64(subscribers))), ("events", .int(Int64(events))), ("seconds", .double(seconds)),
            ("events_per_second", .double(eventsPerSecond)), ("lines_per_second", .double(linesPerSecond)),
            ("reply_seconds", .double(replySeconds)), ("emit_write_seconds", .double(emitWriteSeconds)),
            ("kevd_cpu_seconds", d(kevdCPUSeconds)), ("kevd_cpu_us_per_event", d(cpuMicrosecondsPerEvent)),
            ("bench_cpu_seconds", .double(benchCPUSeconds)),
            ("delivered_min", .int(Int64(delivered.min() ?? 0))), ("delivered_max", .int(Int64(delivered.max() ?? 0))),
            ("unexpected_lines", .int(Int64(unexpectedLines))), ("replies", .int(Int64(replies))),
            ("failed_replies", .int(Int64(failedReplies))), ("status_samples", .int(Int64(statusSamples))),
            ("max_subscribers_in_journal_mode", .int(Int64(maxJournalMode))), ("max_lag", .int(maxLag)),
            ("max_buffered", .int(maxBuffered)), ("kevd_memory_at_end", kevdMemory?.json ?? .null),
            ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

enum FanoutRun {
    static let emitLine = #"{"op":"emit","type":"bench","key":"k","data":{"n":1}}"# + "\n"

    static func run(
        kevd path: String, stateParent: String, subscribers n: Int, events: Int, monitor: Bool, window: Int,
        extraConfig: String, perfPrefix: String?, runName: String
    ) throws -> FanoutResult {
        var problems: [String] = []
        let stateRoot = try TempDirectory(parent: stateParent)
        defer { stateRoot.remove() }
        let kevd = try KevdInstance(
            kevd: path, stateDirectory: stateRoot.path, watch: nil, watchEvents: [], extraConfig: extraConfig)
        var kevdStopped = false
        defer { if !kevdStopped { _ = kevd.stop() } }

        var clients: [LineClient] = []
        defer { for c in clients { c.close() } }
        for _ in 0..<n {
            let c = try LineClient(path: kevd.socketPath)
            clients.append(c)
            try c.subscribe(filter: ["type=bench"])
            guard c.leftover.isEmpty else { throw BenchError("bytes after the subscribe reply before any emit") }
            _ = fcntl(c.fd, F_SETFL, fcntl(c.fd, F_GETFL) | O_NONBLOCK)
        }
        let emitter = try LineClient(path: kevd.socketPath)
        defer { emitter.close() }
        let statusClient = monitor ? try LineClient(path: kevd.socketPath) : nil
        defer { statusClient?.close() }

        let reader = FanoutReader(fds: clients.map(\.fd), target: events)
        let readerThread = startThread { reader.run() }
        let replies = ReplyCounter(fd: emitter.fd, target: events)
        let replyThread = startThread { replies.run(initial: []) }
        let statusMonitor = statusClient.map { StatusMonitor(client: $0) }
        let statusThread = statusMonitor.map { m in startThread { m.run() } }

        // 1,024 requests per write, pipelined: kevd answers each once it is durable, on the reply thread.
        let perf = PerfRecorder(prefix: perfPrefix, name: runName, pid: kevd.pid)
        // With a window, at most `window` emits are unanswered at any time (a client that waits for replies).
        let perChunk = window > 0 ? min(1024, window) : 1024
        let chunk = Array(String(repeating: emitLine, count: perChunk).utf8)
        let lineBytes = emitLine.utf8.count
        let cpu0 = kevd.process.cpuSeconds
        let benchCPU0 = ProcFigures.selfCPUSeconds()
        let start = Clock.monotonicNanoseconds()
        var sent = 0
        try chunk.withUnsafeBytes { raw in
            while sent < events {
                let k = min(perChunk, events - sent)
                if window > 0 {
                    while sent + k - replies.replies > window { Sleep.nanoseconds(20_000) }
                }
                try writeAll(emitter.fd, UnsafeRawBufferPointer(rebasing: raw[0..<(k * lineBytes)]))
                sent += k
            }
        }
        let written = Clock.monotonicNanoseconds()

        // Wait for the last subscriber's last line; a stall of 15 s (no line anywhere) is a failure to report.
        var lastProgress = reader.linesSoFar
        var lastChange = Clock.monotonicNanoseconds()
        var stalled = false
        while reader.completedAt == 0 {
            Sleep.nanoseconds(2_000_000)
            let now = Clock.monotonicNanoseconds()
            let progress = reader.linesSoFar
            if progress != lastProgress {
                lastProgress = progress
                lastChange = now
            } else if now - lastChange > 15_000_000_000 {
                stalled = true
                break
            }
        }
        let cpu1 = kevd.process.cpuSeconds
        let benchCPU = ProcFigures.selfCPUSeconds() - benchCPU0
        let end = stalled ? lastChange : reader.completedAt
        perf?.stop()

        // Replies come once each event is durable: after delivery, by up to a sync interval.
        let replyDeadline = Clock.monotonicNanoseconds() + 15_000_000_000
        while replies.completedAt == 0 && Clock.monotonicNanoseconds() < replyDeadline { Sleep.nanoseconds(2_000_000) }
        let repliesDone = replies.completedAt
        // Anything more than `events` lines would show up now.
        Sleep.nanoseconds(200_000_000)
        let memory = ProcFigures.memory(pid: kevd.pid)
        statusMonitor?.stop()
        if let statusThread { pthread_join(statusThread, nil) }
        reader.stop()
        pthread_join(readerThread, nil)
        if repliesDone == 0 { shutdown(emitter.fd, Int32(SHUT_RDWR)) }
        pthread_join(replyThread, nil)

        let delivered = reader.counters.map(\.lines)
        if stalled {
            problems.append(
                "stall: no line for 15 s; delivered per subscriber min \(delivered.min() ?? 0) max \(delivered.max() ?? 0) of \(events); "
                    + "emit replies \(replies.replies)")
        }
        if delivered.contains(where: { $0 != events }) {
            let short = delivered.filter { $0 < events }.count
            let extra = delivered.filter { $0 > events }.count
            problems.append("\(short) subscriber(s) got fewer than \(events) lines, \(extra) more (min \(delivered.min()!), max \(delivered.max()!))")
        }
        let unexpected = reader.counters.reduce(0) { $0 + $1.unexpected }
        if unexpected > 0 { problems.append("\(unexpected) subscriber lines that are not events (gap or error lines)") }
        if reader.eofs > 0 { problems.append("kevd closed \(reader.eofs) subscriber connection(s)") }
        if replies.replies != events || replies.counter.unexpected > 0 {
            problems.append("emit replies: \(replies.replies) of \(events), \(replies.counter.unexpected) not ok")
        }
        if let error = statusMonitor?.error { problems.append("status monitor: \(error)") }
        let stop = kevd.stop()
        kevdStopped = true
        if stop.killed || stop.status != 0 {
            problems.append("kevd exit status \(stop.status)\(stop.killed ? " after SIGKILL" : ""): \(kevd.process.stderrTail())")
        }
        return FanoutResult(
            subscribers: n, events: events, seconds: Seconds.between(start, end),
            replySeconds: repliesDone == 0 ? .nan : Seconds.between(start, repliesDone),
            emitWriteSeconds: Seconds.between(start, written), kevdCPUSeconds: bothValues(cpu1, cpu0).map { $0 - $1 },
            benchCPUSeconds: benchCPU, delivered: delivered, unexpectedLines: unexpected, replies: replies.replies,
            failedReplies: replies.counter.unexpected, statusSamples: statusMonitor?.samples ?? 0,
            maxJournalMode: statusMonitor?.maxJournalMode ?? 0, maxLag: statusMonitor?.maxLag ?? 0,
            maxBuffered: statusMonitor?.maxBuffered ?? 0, kevdMemory: memory, problems: problems)
    }
}

// MARK: - Memory

struct MemoryResult {
    var subscribers: Int
    var idle: ProcFigures.Memory?
    var withSubscribers: ProcFigures.Memory?
    var afterLeaving: ProcFigures.Memory?
    var secondRound: ProcFigures.Memory?
    var afterSecondRound: ProcFigures.Memory?
    var statusSubscribers: Int
    var statusSubscribersAfter: Int
    var connectSeconds: Double
    var problems: [String]

    var json: JSONValue {
        .object([
            ("subscribers", .int(Int64(subscribers))), ("idle", idle?.json ?? .null),
            ("with_subscribers", withSubscribers?.json ?? .null), ("after_leaving", afterLeaving?.json ?? .null),
            ("second_round", secondRound?.json ?? .null), ("after_second_round", afterSecondRound?.json ?? .null),
            ("status_subscribers", .int(Int64(statusSubscribers))),
            ("status_subscribers_after", .int(Int64(statusSubscribersAfter))),
            ("connect_seconds", .double(connectSeconds)), ("problems", .array(problems.map { .string($0) })),
        ])
    }
}

enum MemoryRun {
    static func run(kevd path: String, watchParent: String, stateParent: String, subscribers n: Int, settle: Double) throws -> MemoryResult {
        var problems: [String] = []
        let watchRoot = try TempDirectory(parent: watchParent)
        defer { watchRoot.remove() }
        let stateRoot = try TempDirectory(parent: stateParent)
        defer { stateRoot.remove() }
        try TempDirectory.makeDirectories(watchRoot.path + "/w")
        // The latency run's configuration: one watched folder.
        let kevd = try KevdInstance(
            kevd: path, stateDirectory: stateRoot.path, watch: watchRoot.path + "/w", watchEvents: ["create"])
        var kevdStopped = false
        defer { if !kevdStopped { _ = kevd.stop() } }
        let settleNs = Int64(settle * 1e9)

        Sleep.nanoseconds(settleNs)
        let idle = ProcFigures.memory(pid: kevd.pid)

        let connectStart = Clock.monotonicNanoseconds()
        var clients: [LineClient] = []
        defer { for c in clients { c.close() } }
        for _ in 0..<n {
            let c = try LineClient(path: kevd.socketPath)
            clients.append(c)
            try c.subscribe(filter: ["type=never"])
        }
        let connectSeconds = Seconds.since(connectStart)
        let status = try LineClient(path: kevd.socketPath)
        defer { status.close() }
        func subscriberCount() throws -> Int {
            let reply = try status.request(#"{"op":"status"}"#, timeout: 10)
            guard case .array(let subs)? = try JSONReader.parse(reply)["subscribers"] else {
                throw BenchError("status: \(reply.prefix(300))")
            }
            return subs.count
        }
        Sleep.nanoseconds(settleNs)
        let statusCount = try subscriberCount()
        if statusCount != n { problems.append("status lists \(statusCount) subscribers, expected \(n)") }
        let withSubscribers = ProcFigures.memory(pid: kevd.pid)

        func leave() throws -> (count: Int, memory: ProcFigures.Memory?) {
            for c in clients { c.close() }
            clients.removeAll()
            var after = -1
            let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
            while Clock.monotonicNanoseconds() < deadline {
                after = try subscriberCount()
                if after == 0 { break }
                Sleep.nanoseconds(20_000_000)
            }
            if after != 0 { problems.append("\(after) subscribers still listed 10 s after every client closed") }
            Sleep.nanoseconds(settleNs)
            return (after, ProcFigures.memory(pid: kevd.pid))
        }
        let (after, afterLeaving) = try leave()

        // A second round tells a leak (RSS grows again by as much) from memory the allocator keeps for reuse.
        for _ in 0..<n {
            let c = try LineClient(path: kevd.socketPath)
            clients.append(c)
            try c.subscribe(filter: ["type=never"])
        }
        Sleep.nanoseconds(settleNs)
        let secondCount = try subscriberCount()
        if secondCount != n { problems.append("second round: status lists \(secondCount) subscribers, expected \(n)") }
        let second = ProcFigures.memory(pid: kevd.pid)
        let (_, afterSecond) = try leave()

        let stop = kevd.stop()
        kevdStopped = true
        if stop.killed || stop.status != 0 {
            problems.append("kevd exit status \(stop.status)\(stop.killed ? " after SIGKILL" : ""): \(kevd.process.stderrTail())")
        }
        return MemoryResult(
            subscribers: n, idle: idle, withSubscribers: withSubscribers, afterLeaving: afterLeaving,
            secondRound: second, afterSecondRound: afterSecond, statusSubscribers: statusCount, statusSubscribersAfter: after, connectSeconds: connectSeconds,
            problems: problems)
    }
}
