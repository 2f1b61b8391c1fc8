import ArgumentParser
import CNats
import Glibc
import KevdEvent
import KevdForward
import KevdJournal
import KevdKernel
import KevdSpec
import Logging
import Synchronization

/// `kevd-bench forward`: `[[forward]]` to a local nats-server with JetStream, acknowledgements awaited.
///
/// Throughput: a journal of N events written beforehand, a forwarder started on it, timed until its position
/// (every event acknowledged) reaches N: the forwarder's own rate (journal read, publish, acknowledgement
/// bookkeeping) against a real server. Latency: a real kevd watching a folder and forwarding; the bench creates
/// files at a steady rate and receives them from the stream through an ordered JetStream consumer, which only
/// delivers what the stream has stored: from the `open(O_CREAT)` to the message's delivery, an upper bound of
/// "file write to stored".
struct ForwardBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "Events per second forwarded to NATS JetStream, and file-write-to-stored latency.")

    @Option(help: "Events in the throughput journal.")
    var events = 200_000

    @Option(help: "Throughput runs (the median is reported).")
    var runs = 3

    @Option(help: "Files created for the latency runs.")
    var latencyEvents = 5_000

    @Option(help: "Files per second in the latency runs.")
    var rate = 1_000

    @Option(help: "Parent of the scratch directories (journal, nats-server store, watched folder).")
    var dir = "/tmp"

    @Option(help: "The nats-server binary.")
    var natsServer = "/usr/sbin/nats-server"

    @Flag(help: "Latency to a plain NATS subscriber (the server received the publish) instead of the stream's consumer.")
    var core = false

    @Flag(help: "Skip the bare libnats runs (the machine's ceiling for the same messages).")
    var noCeiling = false

    @Option(help: "The kevd binary for the latency runs (default: the one built next to kevd-bench).")
    var kevd: String? = nil

    func run() throws {
        KevdBench.bootstrapLogging()
        ChildRegistry.installSignalHandlers()
        let kevd = self.kevd ?? Machine.siblingExecutable("kevd")
        guard access(natsServer, X_OK) == 0 else { throw ValidationError("no nats-server at \(natsServer)") }
        let machine = Machine.describe(directory: dir)
        print("kevd-bench forward: \(machine.cpus) CPUs, load \(machine.loadAverage), scratch on \(machine.fileSystem)")

        // Alternating runs, so that both see the same machine: kevd's forwarder, then a bare libnats loop.
        var rates: [Double] = []
        var ceilings: [Double] = []
        for run in 1...runs {
            let result = try throughput()
            rates.append(result.eventsPerSecond)
            print("throughput run \(run): \(describe(result))")
            if !noCeiling {
                let bare = try ceiling()
                ceilings.append(bare.eventsPerSecond)
                print("ceiling run \(run), bare libnats: \(describe(bare))")
            }
        }
        rates.sort()
        print("throughput median: \(grouped(Int(rates[rates.count / 2]))) events/s")
        if !ceilings.isEmpty {
            ceilings.sort()
            let ceiling = ceilings[ceilings.count / 2]
            print("ceiling median (bare libnats, same messages): \(grouped(Int(ceiling))) events/s; "
                + "kevd reaches \(Int((rates[rates.count / 2] / ceiling * 100).rounded())) % of it")
        }

        guard access(kevd, X_OK) == 0 else {
            print("latency: skipped, no kevd at \(kevd)")
            return
        }
        for sync in ["batch", "always", "none"] {
            let l = try latency(kevd: kevd, sync: sync)
            print("latency, [journal] sync = \"\(sync)\", \(grouped(rate)) files/s: \(l.received)/\(latencyEvents) received, "
                + "p50 \(ms(l.p50)) ms, p99 \(ms(l.p99)) ms, max \(ms(l.max)) ms")
        }
    }

    private func describe(_ result: Throughput) -> String {
        "\(grouped(Int(result.eventsPerSecond))) events/s (\(grouped(events)) events in \(String(format3: result.seconds)) s; "
            + "bench CPU \(String(format3: result.benchCPU)) s, nats-server CPU \(String(format3: result.serverCPU)) s)"
    }

    private func ms(_ ns: UInt64) -> String { String(format3: Double(ns) / 1e6) }

    // MARK: Throughput

    struct Throughput {
        var seconds: Double
        var eventsPerSecond: Double
        var benchCPU: Double
        var serverCPU: Double
    }

    private func throughput() throws -> Throughput {
        let scratch = try TempDirectory(parent: dir)
        defer { scratch.remove() }
        let server = try NatsServerProcess(binary: natsServer, store: scratch.path + "/nats")
        defer { server.stop() }

        let logger = Logger(label: "kevd-bench")
        let journalDirectory = scratch.path + "/journal"
        try TempDirectory.makeDirectories(journalDirectory)
        var options = Journal.Options()
        options.sync = .none
        let journal = try Journal(directory: journalDirectory, options: options, logger: logger)
        let workload = Workload()
        let line = ByteBuffer(capacity: 4096)
        for seq in 1...UInt64(events) {
            let event = workload.event(seq: seq)
            line.removeAll()
            JSONLineEncoder.append(event, to: line)
            journal.append(event, line: line.bytes)
            if seq % 1024 == 0 { journal.writePending() }
        }
        journal.close()

        try TempDirectory.makeDirectories(scratch.path + "/state")
        let spec = ForwardSpec(name: "bench", urls: [server.url], subject: try SubjectTemplate(SubjectTemplate.defaultText))
        let startCPU = ProcFigures.selfCPUSeconds()
        let serverStartCPU = ProcFigures.cpuSeconds(pid: server.process.pid) ?? 0
        let start = Clock.monotonicNanoseconds()
        let forwarders = try Forwarders(
            specs: [spec], stateDirectory: scratch.path + "/state", journalDirectory: journalDirectory,
            durable: UInt64(events), logger: logger)
        let deadline = start + 600_000_000_000
        while Self.position(forwarders) < UInt64(events) {
            guard Clock.monotonicNanoseconds() < deadline else { throw ValidationError("forwarding did not finish in 10 minutes") }
            Sleep.nanoseconds(200_000)
        }
        let seconds = Seconds.since(start)
        let benchCPU = ProcFigures.selfCPUSeconds() - startCPU
        let serverCPU = (ProcFigures.cpuSeconds(pid: server.process.pid) ?? 0) - serverStartCPU
        forwarders.stop()
        return Throughput(seconds: seconds, eventsPerSecond: Double(events) / seconds, benchCPU: benchCPU, serverCPU: serverCPU)
    }

    /// What nats-server and libnats alone reach here: the throughput run's messages (same subject form, same
    /// `Nats-Msg-Id`s, same JSON lines, same connection settings and in-flight bound) published by a bare loop
    /// from memory, with no journal, no positions and no acknowledgement bookkeeping; timed until the stream
    /// holds all of them.
    private func ceiling() throws -> Throughput {
        let scratch = try TempDirectory(parent: dir)
        defer { scratch.remove() }
        let server = try NatsServerProcess(binary: natsServer, store: scratch.path + "/nats")
        defer { server.stop() }
        let workload = Workload()
        let line = ByteBuffer(capacity: 4096)
        var payloads: [[UInt8]] = []
        var ids: [String] = []
        payloads.reserveCapacity(events)
        ids.reserveCapacity(events)
        for seq in 1...UInt64(events) {
            let event = workload.event(seq: seq)
            line.removeAll()
            JSONLineEncoder.append(event, to: line)
            payloads.append(Array(line.bytes))
            ids.append(event.id.string)
        }

        var options: OpaquePointer? = nil
        guard natsOptions_Create(&options) == NATS_OK else { throw ValidationError("natsOptions_Create failed") }
        defer { natsOptions_Destroy(options) }
        _ = natsOptions_SetURL(options, server.url)
        _ = natsOptions_SetSendAsap(options, true)  // as kevd's forwarder (NatsPublisher)
        var connection: OpaquePointer? = nil
        guard natsConnection_Connect(&connection, options) == NATS_OK else { throw ValidationError("cannot connect to \(server.url)") }
        defer {
            natsConnection_Close(connection)
            natsConnection_Destroy(connection)
        }
        var jsOptions = jsOptions()
        jsOptions_Init(&jsOptions)
        jsOptions.PublishAsync.MaxPending = 4097  // kevd's default max_in_flight, plus one
        var jetStream: OpaquePointer? = nil
        guard natsConnection_JetStream(&jetStream, connection, &jsOptions) == NATS_OK else { throw ValidationError("JetStream context") }
        defer { jsCtx_Destroy(jetStream) }
        var code = jsErrCode(0)
        let added = JetStreamStreams.add(
            jetStream, name: "KEVD", subject: "kevd.>", duplicateWindowNanoseconds: 120_000_000_000, code: &code)
        guard added == NATS_OK else { throw ValidationError("cannot create the stream") }

        let startCPU = ProcFigures.selfCPUSeconds()
        let serverStartCPU = ProcFigures.cpuSeconds(pid: server.process.pid) ?? 0
        let start = Clock.monotonicNanoseconds()
        for i in 0..<events {
            var msg: OpaquePointer? = nil
            _ = payloads[i].withUnsafeBufferPointer { payload in
                natsMsg_Create(&msg, "kevd.bench.inotify.create", nil,
                    UnsafeRawPointer(payload.baseAddress!).assumingMemoryBound(to: CChar.self), Int32(payload.count))
            }
            var publish = jsPubOptions()
            jsPubOptions_Init(&publish)
            let status = ids[i].withCString { id in
                publish.MsgId = id
                return js_PublishMsgAsync(jetStream, &msg, &publish)
            }
            natsMsg_Destroy(msg)  // nil on success: libnats owns it
            guard status == NATS_OK else { throw ValidationError("publish \(i) failed: \(String(cString: natsStatus_GetText(status)))") }
        }
        var complete = jsPubOptions()
        jsPubOptions_Init(&complete)
        complete.MaxWait = 600_000
        guard js_PublishAsyncComplete(jetStream, &complete) == NATS_OK else { throw ValidationError("acknowledgements did not all come") }
        let seconds = Seconds.since(start)
        let benchCPU = ProcFigures.selfCPUSeconds() - startCPU
        let serverCPU = (ProcFigures.cpuSeconds(pid: server.process.pid) ?? 0) - serverStartCPU
        var info: UnsafeMutablePointer<jsStreamInfo>? = nil
        guard js_GetStreamInfo(&info, jetStream, "KEVD", nil, &code) == NATS_OK, let info else { throw ValidationError("stream info") }
        defer { jsStreamInfo_Destroy(info) }
        guard info.pointee.State.Msgs == UInt64(events) else {
            throw ValidationError("the stream holds \(info.pointee.State.Msgs) messages, not \(events)")
        }
        return Throughput(seconds: seconds, eventsPerSecond: Double(events) / seconds, benchCPU: benchCPU, serverCPU: serverCPU)
    }

    private static func position(_ forwarders: Forwarders) -> UInt64 {
        forwarders.status(head: 0)[0]?["position"]?.uint64Value ?? 0
    }

    // MARK: Latency

    struct Latency {
        var received: Int
        var p50: UInt64
        var p99: UInt64
        var max: UInt64
    }

    private func latency(kevd: String, sync: String) throws -> Latency {
        let scratch = try TempDirectory(parent: dir)
        defer { scratch.remove() }
        let server = try NatsServerProcess(binary: natsServer, store: scratch.path + "/nats")
        defer { server.stop() }
        let watched = scratch.path + "/w"
        try TempDirectory.makeDirectories(watched)
        try TempDirectory.makeDirectories(scratch.path + "/state")
        let config = """
            [daemon]
            state_dir = "\(scratch.path)/state"
            socket = "\(scratch.path)/state/kevd.sock"
            log_level = "warning"

            [[watch]]
            path = "\(watched)"
            events = ["create"]
            backend = "inotify"

            [journal]
            sync = "\(sync)"

            [[forward]]
            type = "nats"
            url = "\(server.url)"
            filter = ["source=inotify"]
            """
        let configPath = scratch.path + "/kevd.toml"
        guard FileContents.replace(configPath, with: Array(config.utf8)) else {
            throw SyscallError(call: "write(\(configPath))", errno: .init(rawValue: errno))
        }
        let daemon = try ChildProcess([kevd, "--config", configPath], stdout: .null, stderrPath: scratch.path + "/kevd.stderr")
        defer { _ = daemon.stop() }

        let timings = try ReceiveTimes(count: latencyEvents)
        let consumer = try StreamConsumer(url: server.url, subject: "kevd.*.inotify.create", times: timings, core: core)
        defer { consumer.close() }

        // A steady rate: file i is due at start + i / rate, and its time is taken just before it is created.
        let interval = UInt64(1_000_000_000 / max(1, rate))
        let start = Clock.monotonicNanoseconds()
        for i in 0..<latencyEvents {
            let due = start + UInt64(i) * interval
            let now = Clock.monotonicNanoseconds()
            if due > now { Sleep.nanoseconds(Int64(due - now)) }
            timings.sent[i] = Clock.monotonicNanoseconds()
            let fd = open(watched + "/f\(i)", O_CREAT | O_WRONLY | O_CLOEXEC, 0o644)
            if fd >= 0 { close(fd) }
        }
        let deadline = Clock.monotonicNanoseconds() + 30_000_000_000
        while timings.received.load(ordering: .acquiring) < latencyEvents && Clock.monotonicNanoseconds() < deadline {
            Sleep.nanoseconds(1_000_000)
        }
        var latencies: [UInt64] = []
        for i in 0..<latencyEvents where timings.arrived[i] > 0 {
            latencies.append(timings.arrived[i] &- timings.sent[i])
        }
        latencies.sort()
        guard !latencies.isEmpty else { return Latency(received: 0, p50: 0, p99: 0, max: 0) }
        return Latency(
            received: latencies.count, p50: latencies[latencies.count / 2],
            p99: latencies[min(latencies.count - 1, latencies.count * 99 / 100)], max: latencies.last!)
    }
}

/// Send and arrival times per file index; arrivals are written by libnats's delivery thread.
final class ReceiveTimes: @unchecked Sendable {
    // @unchecked: `sent[i]` is written before file i exists, `arrived[i]` once by the delivery thread; they are
    // only compared after `received` says the delivery is over (or the wait gave up).
    let sent: UnsafeMutablePointer<UInt64>
    let arrived: UnsafeMutablePointer<UInt64>
    let count: Int
    let received = Atomic<Int>(0)

    init(count: Int) throws {
        self.count = count
        sent = .allocate(capacity: count)
        sent.initialize(repeating: 0, count: count)
        arrived = .allocate(capacity: count)
        arrived.initialize(repeating: 0, count: count)
    }

    /// The file index in a payload's `"name":"f<i>"`.
    func arrival(_ data: UnsafeRawBufferPointer, at time: UInt64) {
        let marker = Array(#""name":"f"#.utf8)
        guard data.count > marker.count else { return }
        var i = 0
        while i + marker.count <= data.count {
            if data[i] == marker[0] && memcmp(data.baseAddress! + i, marker, marker.count) == 0 { break }
            i += 1
        }
        i += marker.count
        var index = 0
        var digits = 0
        while i < data.count, data[i] >= 0x30, data[i] <= 0x39 {
            index = index * 10 + Int(data[i] - 0x30)
            i += 1
            digits += 1
        }
        guard digits > 0, index < count, arrived[index] == 0 else { return }
        arrived[index] = time
        received.add(1, ordering: .releasing)
    }

    deinit {
        sent.deallocate()
        arrived.deallocate()
    }
}

/// An ordered JetStream push consumer: it delivers only what the stream has stored, in stream order.
final class StreamConsumer {
    private let connection: OpaquePointer
    private let jetStream: OpaquePointer
    private var subscription: OpaquePointer? = nil
    private let times: Unmanaged<ReceiveTimes>

    init(url: String, subject: String, times: ReceiveTimes, core: Bool) throws {
        var connection: OpaquePointer? = nil
        var jetStream: OpaquePointer? = nil
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while natsConnection_ConnectTo(&connection, url) != NATS_OK {
            guard Clock.monotonicNanoseconds() < deadline else { throw ValidationError("cannot connect to \(url)") }
            Sleep.nanoseconds(20_000_000)
        }
        guard natsConnection_JetStream(&jetStream, connection, nil) == NATS_OK, let connection, let jetStream else {
            throw ValidationError("no JetStream context")
        }
        self.connection = connection
        self.jetStream = jetStream
        self.times = Unmanaged.passRetained(times)
        // kevd creates the stream when it connects: wait for it.
        var subOptions = jsSubOptions()
        jsSubOptions_Init(&subOptions)
        subOptions.Ordered = true
        subOptions.Config.DeliverPolicy = js_DeliverAll
        let handler: natsMsgHandler = { _, _, msg, closure in
            let now = Clock.monotonicNanoseconds()
            defer { natsMsg_Destroy(msg) }
            guard let closure, let data = natsMsg_GetData(msg) else { return }
            let times = Unmanaged<ReceiveTimes>.fromOpaque(closure).takeUnretainedValue()
            times.arrival(UnsafeRawBufferPointer(start: data, count: Int(natsMsg_GetDataLength(msg))), at: now)
        }
        while true {
            var code = jsErrCode(0)
            let status = core
                ? natsConnection_Subscribe(&subscription, connection, subject, handler, self.times.toOpaque())
                : js_Subscribe(&subscription, jetStream, subject, handler, self.times.toOpaque(), nil, &subOptions, &code)
            if status == NATS_OK { break }
            guard Clock.monotonicNanoseconds() < deadline else { throw ValidationError("no stream to consume: \(code)") }
            Sleep.nanoseconds(20_000_000)
        }
    }

    func close() {
        natsSubscription_Destroy(subscription)
        subscription = nil
        natsConnection_Close(connection)
        jsCtx_Destroy(jetStream)
        natsConnection_Destroy(connection)
    }
}

/// nats-server with JetStream on a free loopback port, storing in `store`.
final class NatsServerProcess {
    let process: ChildProcess
    let port: Int

    init(binary: String, store: String, port: Int = 0) throws {
        try TempDirectory.makeDirectories(store)
        let chosen = port > 0 ? port : Self.freePort()
        self.port = chosen
        process = try ChildProcess(
            [binary, "-a", "127.0.0.1", "-p", "\(chosen)", "-js", "-sd", store], stdout: .null,
            stderrPath: store + "/../nats-server.stderr")
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while !Self.accepts(chosen) {
            guard Clock.monotonicNanoseconds() < deadline, !process.poll() else {
                throw ValidationError("nats-server did not start: \(process.stderrTail())")
            }
            Sleep.nanoseconds(10_000_000)
        }
    }

    var url: String { "nats://127.0.0.1:\(port)" }

    func stop() { _ = process.stop() }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
