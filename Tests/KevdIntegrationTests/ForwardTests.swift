import CNats
import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `[[forward]]` against real nats-server processes on loopback: the stream must end up holding exactly the
/// journal, in order, whatever is killed on the way.
@Suite("forward to NATS JetStream", .serialized)
struct ForwardTests {
    @Test("events arrive in the stream in journal order, with their subjects and Nats-Msg-Id headers")
    func inOrder() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let nats = try NatsServer(name: "solo", store: dir.file("nats"))
        try nats.start()
        let daemon = try DaemonProcess(config: forwardConfig(urls: [nats.url]), in: dir)
        defer { daemon.stop() }
        try touchFiles(in: dir.file("w"), count: 200)
        let reader = try StreamReader(urls: [nats.url])
        try expectStreamMatchesJournal(dir, reader)
        let status = try forwardStatus(dir)
        #expect(status?["state"] as? String == "forwarding")
        #expect((status?["acked"] as? NSNumber)?.intValue ?? 0 >= 400)
        #expect(status?["last_error"] is NSNull)
        let table = try kevctl(["status", "--socket", dir.file("state/kevd.sock")])
        #expect(table.stdout.contains("forward\n") && table.stdout.contains("  nats "), "\(table.stdout)")
        // Every stored message names this machine and this boot, as the kernel and systemd name them (a machine
        // without /etc/machine-id, a minimal container, gets no Kevd-Machine-Id header).
        let machineID = try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let bootID = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect((machineID == nil || machineID?.count == 32) && bootID.count == 36)
        var unnamed = 0
        for seq in 1...(reader.messageCount() ?? 0) {
            let message = try #require(reader.message(seq: seq))
            if message.machineID != machineID || message.bootID != bootID { unnamed += 1 }
        }
        #expect(unnamed == 0, "messages without this machine's Kevd-Machine-Id and Kevd-Boot-Id headers")
        // A clean stop stores the position: at least everything compared above.
        #expect(daemon.stop() == 0)
        let stored = try String(contentsOfFile: dir.file("state/forward/nats"), encoding: .utf8)
        #expect(Int(stored.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 400)
    }

    @Test("a filter forwards only what passes, and the position still moves over what it skips")
    func filtered() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let nats = try NatsServer(name: "solo", store: dir.file("nats"))
        try nats.start()
        let daemon = try DaemonProcess(
            config: forwardConfig(urls: [nats.url], extra: "filter = [\"source=inotify\", \"type=create\"]\n"), in: dir)
        defer { daemon.stop() }
        try touchFiles(in: dir.file("w"), count: 50)
        let reader = try StreamReader(urls: [nats.url])
        let expected = try waitUntil("50 create events in the stream") { reader.messageCount() == 50 ? true : nil }
        #expect(expected)
        for seq in 1...50 {
            let message = try #require(reader.message(seq: UInt64(seq)))
            #expect(message.subject.hasSuffix(".inotify.create"))
        }
        _ = try waitUntil("the position past every journal record") { () -> Bool? in
            guard let status = try forwardStatus(dir), let lag = status["lag"] as? NSNumber else { return nil }
            return lag.intValue == 0 ? true : nil
        }
    }

    @Test("killing nats-server mid-stream and restarting it loses and duplicates nothing")
    func natsServerRestart() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let nats = try NatsServer(name: "solo", store: dir.file("nats"))
        try nats.start()
        let daemon = try DaemonProcess(config: forwardConfig(urls: [nats.url], extra: "ack_timeout = \"500ms\"\n"), in: dir)
        defer { daemon.stop() }
        let writer = FileWriter(directory: dir.file("w"))
        writer.start()
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("forwarding under way") { reader.messageCount() ?? 0 > 500 ? true : nil }
        nats.kill()
        _ = try waitUntil("kevd to notice the outage") { () -> Bool? in
            (try forwardStatus(dir)?["state"] as? String).map { $0 != "forwarding" ? true : nil } ?? nil
        }
        try nats.start()
        let afterRestart = try StreamReader(urls: [nats.url])
        let countAtRestart = afterRestart.messageCount() ?? 0
        _ = try waitUntil("forwarding again after the restart") {
            afterRestart.messageCount() ?? 0 > countAtRestart + 300 ? true : nil
        }
        writer.stop()
        try expectStreamMatchesJournal(dir, afterRestart)
        let status = try forwardStatus(dir)
        #expect((status?["errors"] as? NSNumber)?.intValue ?? 0 > 0 || status?["last_error"] is String)
    }

    @Test("killing kevd mid-stream and starting it again loses and duplicates nothing")
    func kevdRestart() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let nats = try NatsServer(name: "solo", store: dir.file("nats"))
        try nats.start()
        let config = forwardConfig(urls: [nats.url])
        var daemon = try DaemonProcess(config: config, in: dir)
        let writer = FileWriter(directory: dir.file("w"))
        writer.start()
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("forwarding under way") { reader.messageCount() ?? 0 > 500 ? true : nil }
        daemon.signal(SIGKILL)
        daemon.process.waitUntilExit()
        let forwardedBeforeKill = reader.messageCount() ?? 0
        daemon = try DaemonProcess(config: config, in: dir)
        defer { daemon.stop() }
        _ = try waitUntil("forwarding after the restart") { reader.messageCount() ?? 0 > forwardedBeforeKill + 100 ? true : nil }
        writer.stop()
        try expectStreamMatchesJournal(dir, reader)
    }

    @Test("a three-node cluster with an R3 stream survives the loss of a node while kevd keeps forwarding")
    func cluster() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let clusterPorts = [freePort(), freePort(), freePort()]
        let nodes = try (0..<3).map { i in
            try NatsServer(
                name: "n\(i)", store: dir.file("nats\(i)"),
                cluster: (port: clusterPorts[i], routes: clusterPorts.enumerated().filter { $0.offset != i }.map(\.element)))
        }
        for node in nodes { try node.start() }
        let urls = nodes.map(\.url)
        let daemon = try DaemonProcess(
            config: forwardConfig(urls: urls, extra: "replicas = 3\nack_timeout = \"1s\"\n"), in: dir)
        defer { daemon.stop() }
        let writer = FileWriter(directory: dir.file("w"))
        writer.start()
        let reader = try StreamReader(urls: urls)
        _ = try waitUntil("forwarding to the cluster", timeout: 60) { reader.messageCount() ?? 0 > 300 ? true : nil }
        // The node kevd is connected to, so that the loss is felt.
        let connected = try forwardStatus(dir)?["url"] as? String ?? ""
        let victim = nodes.first { connected.hasSuffix(":\($0.port)") } ?? nodes[0]
        victim.kill()
        let countAtKill = reader.messageCount() ?? 0
        let survivors = StreamReaderBox(try StreamReader(urls: nodes.filter { $0 !== victim }.map(\.url)))
        _ = try waitUntil("forwarding on with two nodes", timeout: 60) {
            survivors.reader.messageCount() ?? 0 > countAtKill + 300 ? true : nil
        }
        writer.stop()
        try expectStreamMatchesJournal(dir, survivors.reader, timeout: 90)
    }

    // MARK: Helpers

    func forwardConfig(urls: [String], extra: String = "") -> String {
        """
        [daemon]
        state_dir = "state"
        socket = "state/kevd.sock"
        log_level = "warning"
        stats_interval = "0"

        [[watch]]
        path = "w"
        events = ["create", "close_write"]

        [journal]
        sync = "batch"

        [[forward]]
        type = "nats"
        url = [\(urls.map { "\"\($0)\"" }.joined(separator: ", "))]
        stream = "KEVD"
        \(extra)
        """
    }

    func touchFiles(in directory: String, count: Int) throws {
        for i in 0..<count {
            let fd = open(directory + "/f\(i)", O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            close(fd)
        }
    }

    func forwardStatus(_ dir: TemporaryDirectory) throws -> [String: Any]? {
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        guard result.status == 0,
            let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            let forward = reply["forward"] as? [[String: Any]]
        else { return nil }
        return forward.first
    }

    /// Waits until the stream holds as many messages as the journal has records (nothing more is being written),
    /// then compares them one by one: same bytes, same order, the subject from the template, the id header.
    func expectStreamMatchesJournal(_ dir: TemporaryDirectory, _ reader: StreamReader, timeout: Double = 60) throws {
        var lines: [Substring] = []
        _ = try waitUntil("the stream to hold the whole journal", timeout: timeout) { () -> Bool? in
            // The stream is counted before the journal is read: the journal only grows, so the stream can never
            // rightly hold more than what is read after it (read the other way round, kevd journaling and
            // forwarding between the two made the check fail on a loaded machine).
            guard let count = reader.messageCount() else { return nil }
            let journal = try kevctl(["journal", "--state-dir", dir.file("state")])
            lines = journal.stdout.split(separator: "\n")
            #expect(count <= UInt64(lines.count), "the stream holds more than the journal")
            return count == UInt64(lines.count) ? true : nil
        }
        let host = shortHostName()
        var mismatches = 0
        for (i, line) in lines.enumerated() {
            guard let message = reader.message(seq: UInt64(i + 1)) else {
                Issue.record("stream message \(i + 1) missing")
                return
            }
            let event = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let expectedSubject = "kevd.\(host).\(token(event.source ?? "")).\(token(event.type ?? ""))"
            if message.data != String(line) + "\n" || message.id != event["id"] as? String
                || message.subject != expectedSubject
            {
                mismatches += 1
                if mismatches <= 3 {
                    Issue.record("stream message \(i + 1): \(message.subject) \(message.id ?? "-") \(message.data) ≠ journal \(expectedSubject) \(line)")
                }
            }
        }
        #expect(mismatches == 0)
    }

    func token(_ text: String) -> String {
        String(decoding: text.utf8.map { c in c > 0x20 && c < 0x7F && c != 0x2E && c != 0x2A && c != 0x3E ? c : 0x5F }, as: UTF8.self)
    }

    func shortHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, 255)
        let name = String(cString: buffer)
        return token(String(name.split(separator: ".").first ?? "localhost"))
    }
}

/// Creates files in `directory` from a thread until stopped, a little at a time so that kills land mid-stream.
final class FileWriter: @unchecked Sendable {
    let directory: String
    private let stopFlag = StopFlag()
    private let lock = NSLock()
    private var count = 0
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    init(directory: String) { self.directory = directory }

    var written: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }

    func start() {
        let thread = Thread { [self] in
            var i = 0
            while !stopFlag.value {
                let fd = open(directory + "/f\(i % 1000)", O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
                if fd >= 0 { close(fd) }
                i += 1
                lock.lock()
                count = i
                lock.unlock()
                // About 5,000 files a second: enough to be mid-stream at any moment, not so many that the
                // comparison at the end takes long.
                if i % 50 == 0 { usleep(10_000) }
            }
            finished.signal()
        }
        self.thread = thread
        thread.start()
    }

    func stop() {
        guard thread != nil else { return }
        stopFlag.set(true)
        finished.wait()
        thread = nil
    }

    deinit { stop() }
}

final class StreamReaderBox: @unchecked Sendable {
    let reader: StreamReader
    init(_ reader: StreamReader) { self.reader = reader }
}

/// Reads the KEVD stream back through libnats: message count and messages by stream seq.
final class StreamReader: @unchecked Sendable {
    struct Message {
        let subject: String
        let id: String?
        let data: String
        /// The `Kevd-Machine-Id` and `Kevd-Boot-Id` headers.
        var machineID: String? = nil
        var bootID: String? = nil
    }

    private let connection: OpaquePointer
    private let jetStream: OpaquePointer
    let stream: String

    init(urls: [String], stream: String = "KEVD") throws {
        self.stream = stream
        var options: OpaquePointer? = nil
        natsOptions_Create(&options)
        defer { natsOptions_Destroy(options) }
        var servers = urls.map { strdup($0) }
        defer { servers.forEach { free($0) } }
        servers.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) {
                _ = natsOptions_SetServers(options, $0.baseAddress, Int32($0.count))
            }
        }
        natsOptions_SetMaxReconnect(options, -1)
        natsOptions_SetReconnectWait(options, 100)
        let connection = try waitUntil("a test connection to \(urls)", timeout: 20) { () -> OpaquePointer? in
            var connection: OpaquePointer? = nil
            return natsConnection_Connect(&connection, options) == NATS_OK ? connection : nil
        }
        var js: OpaquePointer? = nil
        var jsOpts = jsOptions()
        jsOptions_Init(&jsOpts)
        jsOpts.Wait = 2000
        guard natsConnection_JetStream(&js, connection, &jsOpts) == NATS_OK, let js else {
            throw WaitTimeout(what: "a JetStream context")
        }
        self.connection = connection
        jetStream = js
    }

    deinit {
        jsCtx_Destroy(jetStream)
        natsConnection_Destroy(connection)
    }

    /// The stream's message count, or nil while it does not exist or the cluster cannot answer.
    func messageCount() -> UInt64? {
        var info: UnsafeMutablePointer<jsStreamInfo>? = nil
        var code = jsErrCode(0)
        guard js_GetStreamInfo(&info, jetStream, stream, nil, &code) == NATS_OK, let info else { return nil }
        defer { jsStreamInfo_Destroy(info) }
        return info.pointee.State.Msgs
    }

    func message(seq: UInt64) -> Message? {
        for _ in 0..<50 {
            var msg: OpaquePointer? = nil
            var code = jsErrCode(0)
            if js_GetMsg(&msg, jetStream, stream, seq, nil, &code) == NATS_OK, let msg {
                defer { natsMsg_Destroy(msg) }
                var id: UnsafePointer<CChar>? = nil
                _ = natsMsgHeader_Get(msg, "Nats-Msg-Id", &id)
                let data = natsMsg_GetData(msg).map {
                    String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(natsMsg_GetDataLength(msg))), as: UTF8.self)
                } ?? ""
                var machineID: UnsafePointer<CChar>? = nil
                var bootID: UnsafePointer<CChar>? = nil
                _ = natsMsgHeader_Get(msg, "Kevd-Machine-Id", &machineID)
                _ = natsMsgHeader_Get(msg, "Kevd-Boot-Id", &bootID)
                return Message(
                    subject: String(cString: natsMsg_GetSubject(msg)), id: id.map { String(cString: $0) }, data: data,
                    machineID: machineID.map { String(cString: $0) }, bootID: bootID.map { String(cString: $0) })
            }
            // A cluster electing a new leader answers nothing for a moment.
            usleep(100_000)
        }
        return nil
    }
}
