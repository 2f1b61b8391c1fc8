import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Journal retention against consumers that fall behind (issue 15, part 2): a forwarder whose NATS server is
/// down and a rule whose script blocks. By default retention spares what they have not read, past `max_bytes`
/// (nothing lost); only `max_bytes_hard` deletes it, and then the consumer gets a journaled `kevd`/`gap` naming
/// it and the lost seqs exactly, counted in `status` and `kevctl metrics`.
@Suite("retention and consumers", .serialized)
struct RetentionTests {
    /// Small segments, so that retention runs at every few events; padded events, so that they fill them.
    static let pad = String(repeating: "p", count: 600)

    func journalConfig(hard: String) -> String {
        """

        [journal]
        sync = "batch"
        segment_size = "16K"
        max_bytes = "64K"
        max_bytes_hard = "\(hard)"
        retention_interval = "1s"

        [server]
        emit_rate_per_uid = 0

        """
    }

    /// Emits `count` padded events of `type`, 100 requests per write (each reply waits for the group commit);
    /// returns their seqs.
    func emitPadded(_ socket: String, type: String, count: Int, from first: Int = 0) throws -> [Int] {
        let client = try RawClient(socket)
        var seqs: [Int] = []
        var i = first
        while i < first + count {
            let batch = min(100, first + count - i)
            var text = ""
            for j in i..<(i + batch) {
                text += #"{"op":"emit","type":"\#(type)","key":"k\#(j % 5)","data":{"i":\#(j),"pad":"\#(Self.pad)"}}"# + "\n"
            }
            client.send(text)
            for j in i..<(i + batch) {
                let reply = try client.line()
                guard reply["ok"] as? Bool == true, let seq = (reply["seq"] as? NSNumber)?.intValue else {
                    Issue.record("emit \(j) refused: \(reply)")
                    return seqs
                }
                seqs.append(seq)
            }
            i += batch
        }
        return seqs
    }

    func status(_ dir: TemporaryDirectory, socket: String? = nil) throws -> [String: Any] {
        let result = try kevctl(["status", "--socket", socket ?? dir.file("state/kevd.sock"), "--json"])
        return (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    func journalBytes(_ dir: TemporaryDirectory) -> Int { journalBytes(at: dir.file("state/journal")) }

    func journalBytes(at journal: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: journal)) ?? []
        return names.filter { $0.hasSuffix(".seg") }.reduce(0) { total, name in
            var st = stat()
            return stat(journal + "/" + name, &st) == 0 ? total + Int(st.st_size) : total
        }
    }

    func lostInStatus(_ dir: TemporaryDirectory, _ consumer: String) throws -> Int? {
        let retention = try status(dir)["retention"] as? [String: Any]
        return ((retention?["lost"] as? [String: Any])?[consumer] as? NSNumber)?.intValue
    }

    func metricsLine(_ dir: TemporaryDirectory, _ consumer: String) throws -> String? {
        let result = try kevctl(["metrics", "--socket", dir.file("state/kevd.sock")])
        #expect(result.status == 0, "kevctl metrics: \(result.stderr)")
        return result.stdout.split(separator: "\n").first {
            $0.hasPrefix("kevd_retention_lost_events_total{consumer=\"\(consumer)\"}")
        }.map(String.init)
    }

    // MARK: Forwarder

    /// Seqs of the `emit`/`ret` events the stream holds, each once, or a recorded issue.
    func streamSeqs(_ reader: StreamReader) -> [Int] {
        var seqs: [Int] = []
        let count = reader.messageCount() ?? 0
        guard count > 0 else { return [] }
        for n in 1...count {
            guard let message = reader.message(seq: n),
                let event = try? JSONSerialization.jsonObject(with: Data(message.data.utf8)) as? [String: Any]
            else {
                Issue.record("stream message \(n) unreadable")
                continue
            }
            if event.source == "emit", event.type == "ret", let seq = event.seq { seqs.append(seq) }
        }
        return seqs
    }

    /// Forwards 40 events, stops nats-server, emits `outage` more (several times `max_bytes`), checks what the
    /// journal kept meanwhile, starts nats-server again and waits until the forwarder has caught up.
    func forwardThroughOutage(hard: String, outage: Int)
        throws -> (
            dir: TemporaryDirectory, nats: NatsServer, daemon: DaemonProcess, reader: StreamReader, emitted: [Int],
            keptDuringOutage: Int
        )
    {
        let dir = try TemporaryDirectory()
        let nats = try NatsServer(name: "ret", store: dir.file("nats"))
        try nats.start()
        let config = serverConfig(journalConfig(hard: hard) + natsForwardConfig(url: nats.url))
        let daemon = try DaemonProcess(config: config, in: dir)
        let socket = dir.file("state/kevd.sock")
        var emitted = try emitPadded(socket, type: "ret", count: 40)
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("the first 40 events forwarded") { reader.messageCount() == 40 ? true : nil }
        // And acknowledged to kevd: stored in the stream is not yet kevd's position, which a gap starts after.
        _ = try waitUntil("the first 40 events acknowledged") { () -> Bool? in
            let forward = (try status(dir)["forward"] as? [[String: Any]])?.first
            return (forward?["position"] as? NSNumber).map { $0.intValue >= emitted[39] ? true : nil } ?? nil
        }
        nats.kill()
        _ = try waitUntil("kevd to notice the outage") { () -> Bool? in
            let forward = (try status(dir)["forward"] as? [[String: Any]])?.first
            return (forward?["state"] as? String).map { $0 != "forwarding" ? true : nil } ?? nil
        }
        emitted += try emitPadded(socket, type: "ret", count: outage, from: 40)
        // Retention runs at each new segment, before the record that starts it is written: once the last emit
        // is acknowledged, every pass its events caused has run.
        let kept = journalBytes(dir)
        try nats.start()
        let after = try StreamReader(urls: [nats.url])
        _ = try waitUntil("the forwarder caught up", timeout: 60) { () -> Bool? in
            let forward = (try status(dir)["forward"] as? [[String: Any]])?.first
            return forward?["state"] as? String == "forwarding" && (forward?["lag"] as? NSNumber)?.intValue == 0
                ? true : nil
        }
        return (dir, nats, daemon, after, emitted, kept)
    }

    @Test("a forwarder's unsent segments are spared past max_bytes while NATS is down: every event arrives")
    func forwarderSpared() throws {
        let run = try forwardThroughOutage(hard: "100M", outage: 400)
        defer { run.daemon.stop() }
        #expect(run.keptDuringOutage > 3 * 64 * 1024, "the journal was cut to \(run.keptDuringOutage) bytes while the forwarder needed it")
        let seqs = streamSeqs(run.reader)
        #expect(seqs == run.emitted, "the stream holds \(seqs.count) of \(run.emitted.count) events")
        let gaps = try run.daemon.waitForCount("gaps", count: 0) { $0.isEvent("kevd", "gap") }
        #expect(gaps.isEmpty, "\(gaps)")
        #expect(try lostInStatus(run.dir, "forward:nats") == nil)
        // Once sent, the spared segments go at the next pass.
        _ = try waitUntil("retention back under max_bytes", timeout: 10) {
            journalBytes(run.dir) <= 64 * 1024 + 16 * 1024 ? true : nil
        }
    }

    @Test("past max_bytes_hard a forwarder loses events, and a kevd/gap names it and the seqs, counted in status and metrics")
    func forwarderHardCeiling() throws {
        let run = try forwardThroughOutage(hard: "128K", outage: 600)
        defer { run.daemon.stop() }
        #expect(run.keptDuringOutage <= 128 * 1024 + 16 * 1024, "kept \(run.keptDuringOutage) bytes past the hard ceiling")
        let gap = try run.daemon.waitFor("the forwarder's gap", timeout: 10) { $0.isEvent("kevd", "gap", key: "forward:nats") }
        let from = try #require(gap.int("from"))
        let to = try #require(gap.int("to"))
        let seqs = streamSeqs(run.reader)
        // The stream holds exactly the emitted events outside the gap, once each, in order.
        #expect(seqs == run.emitted.filter { $0 < from || $0 > to })
        #expect(from == (run.emitted.filter { seqs.contains($0) && $0 < to }.max() ?? 0) + 1)
        #expect(from > run.emitted[39] && to < run.emitted.last!, "gap \(from)...\(to)")
        let lost = to - from + 1
        #expect(gap.int("events") == lost)
        let forward = (try status(run.dir)["forward"] as? [[String: Any]])?.first
        #expect((forward?["lost"] as? NSNumber)?.intValue == lost)
        #expect(try lostInStatus(run.dir, "forward:nats") == lost)
        #expect(try metricsLine(run.dir, "forward:nats")?.hasSuffix(" \(lost)") == true)
        let table = try kevctl(["status", "--socket", run.dir.file("state/kevd.sock")]).stdout
        #expect(table.contains("lost to retention") && table.contains("forward:nats \(lost)"), "\(table)")
    }

    @Test("a forwarder whose reader finds a hole mid-stream (no reconnect, no seek) reports it as a kevd/gap")
    func forwarderGapMidStream() throws {
        let dir = try TemporaryDirectory()
        let nats = try NatsServer(name: "mid", store: dir.file("nats"))
        try nats.start()
        let daemon = try DaemonProcess(config: serverConfig(
                journalConfig(hard: "128K") + natsForwardConfig(url: nats.url, ackTimeout: "60s", extra: "max_in_flight = 8")),
            in: dir)
        defer { daemon.stop() }
        let socket = dir.file("state/kevd.sock")
        var emitted = try emitPadded(socket, type: "ret", count: 40)
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("the first 40 events forwarded") { reader.messageCount() == 40 ? true : nil }
        // nats-server stopped, not gone: the connection stays up, the forwarder fills its window and waits for
        // acknowledgements with its reader in the middle of the journal.
        let server = ProcessFigures.processes(matching: "-sd \(dir.file("nats"))")
        try #require(server.count == 1)
        kill(server[0], SIGSTOP)
        emitted += try emitPadded(socket, type: "ret", count: 600, from: 40)
        kill(server[0], SIGCONT)
        let gap = try daemon.waitFor("the forwarder's gap", timeout: 30) { $0.isEvent("kevd", "gap", key: "forward:nats") }
        let from = try #require(gap.int("from"))
        let to = try #require(gap.int("to"))
        _ = try waitUntil("the forwarder caught up", timeout: 60) { () -> Bool? in
            let forward = (try status(dir)["forward"] as? [[String: Any]])?.first
            return (forward?["lag"] as? NSNumber)?.intValue == 0 ? true : nil
        }
        let forward = try #require((try status(dir)["forward"] as? [[String: Any]])?.first)
        // Found by the reader, not by a seek after a failure: no publish failed, no connection was lost.
        #expect((forward["errors"] as? NSNumber)?.intValue == 0, "\(forward)")
        #expect((forward["lost"] as? NSNumber)?.intValue == to - from + 1)
        #expect(streamSeqs(reader) == emitted.filter { $0 < from || $0 > to })
        #expect(from > emitted[40] && to < emitted.last!, "gap \(from)...\(to)")
    }

    @Test("on a nearly full file system the free-space floor deletes unsent segments, with the forwarder's gap",
          .enabled(if: Root.shouldRun, Root.reason))
    func forwarderFreeSpaceFloor() throws {
        try Root.check()
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("state"))
        let nats = try NatsServer(name: "floor", store: dir.file("nats"))
        try nats.start()
        // max_bytes_hard = 0: no byte ceiling, only the floor. The state directory is a 4 MiB tmpfs in a private
        // mount namespace (as in the disk-full tests); the socket stays outside it.
        let config = """
            [daemon]
            state_dir = "state"
            socket = "kevd.sock"
            log_level = "warning"

            [journal]
            segment_size = "64K"
            max_bytes = "128K"
            max_bytes_hard = 0
            min_free = "3M"

            [server]
            emit_rate_per_uid = 0

            """ + natsForwardConfig(url: nats.url)
        let launcher = tmpfsLauncher(mountingOn: dir.file("state"), bytes: 4_194_304)
        let daemon = try DaemonProcess(config: config, in: dir, launcher: launcher)
        defer { daemon.stop() }
        let socket = dir.file("kevd.sock")
        let journal = "/proc/\(daemon.pid)/root" + dir.file("state/journal")
        var emitted = try emitPadded(socket, type: "ret", count: 40)
        let reader = try StreamReader(urls: [nats.url])
        _ = try waitUntil("the first 40 events forwarded") { reader.messageCount() == 40 ? true : nil }
        // And acknowledged to kevd: stored in the stream is not yet kevd's position, which a gap starts after.
        _ = try waitUntil("the first 40 events acknowledged") { () -> Bool? in
            let forward = (try status(dir, socket: socket)["forward"] as? [[String: Any]])?.first
            return (forward?["position"] as? NSNumber).map { $0.intValue >= emitted[39] ? true : nil } ?? nil
        }
        nats.kill()
        _ = try waitUntil("kevd to notice the outage") { () -> Bool? in
            let forward = (try status(dir, socket: socket)["forward"] as? [[String: Any]])?.first
            return (forward?["state"] as? String).map { $0 != "forwarding" ? true : nil } ?? nil
        }
        // About 2.2 MiB of events: past the floor (4 MiB - 3 MiB free), far past max_bytes.
        emitted += try emitPadded(socket, type: "ret", count: 3000, from: 40)
        var fs = statvfs()
        #expect(statvfs(journal, &fs) == 0)
        let free = Int(fs.f_bavail) * Int(fs.f_frsize)
        let kept = journalBytes(at: journal)
        #expect(free >= 3 * 1024 * 1024 - 64 * 1024, "\(free) bytes free: the floor was not kept")
        #expect(kept > 512 * 1024, "only \(kept) bytes kept: unsent segments were not spared down to the floor")
        try nats.start()
        let gap = try daemon.waitFor("the forwarder's gap", timeout: 30) { $0.isEvent("kevd", "gap", key: "forward:nats") }
        let from = try #require(gap.int("from"))
        let to = try #require(gap.int("to"))
        let after = try StreamReader(urls: [nats.url])
        _ = try waitUntil("the forwarder caught up", timeout: 60) { () -> Bool? in
            let forward = (try status(dir, socket: socket)["forward"] as? [[String: Any]])?.first
            return forward?["state"] as? String == "forwarding" && (forward?["lag"] as? NSNumber)?.intValue == 0
                ? true : nil
        }
        #expect(from == emitted[39] + 1 && to < emitted.last!, "gap \(from)...\(to)")
        #expect(streamSeqs(after) == emitted.filter { $0 < from || $0 > to })
    }

    // MARK: Rules

    /// A rule whose script blocks until `go` exists: more than its in-memory backlog (4,096 jobs) piles up, so
    /// it reads the rest from the journal once the script is released.
    func ruleThroughBlock(hard: String, count: Int)
        throws -> (dir: TemporaryDirectory, daemon: DaemonProcess, emitted: [Int], keptWhileBlocked: Int)
    {
        let dir = try TemporaryDirectory()
        try writeBlockingRule(dir, type: "ret")
        let daemon = try DaemonProcess(config: rulesConfig(journalConfig(hard: hard)), in: dir)
        let emitted = try emitPadded(dir.file("state/kevd.sock"), type: "ret", count: count)
        try daemon.waitFor("the first run", timeout: 10) { $0.isRule("started", "block") }
        let kept = journalBytes(dir)
        #expect(FileManager.default.createFile(atPath: dir.file("go"), contents: nil))
        return (dir, daemon, emitted, kept)
    }

    /// The seqs the rule ran, once all of `expected` runs ended.
    func ranSeqs(_ daemon: DaemonProcess, expected: Int) throws -> [Int] {
        let ended = try daemon.waitForCount("runs ended", count: expected, timeout: 120) { $0.isRule("succeeded", "block") }
        return ended.compactMap { $0.int("cause_seq") }.sorted()
    }

    @Test("a blocked rule's unread segments are spared past max_bytes: every event runs")
    func ruleSpared() throws {
        let run = try ruleThroughBlock(hard: "100M", count: 4600)
        defer { run.daemon.stop() }
        #expect(run.keptWhileBlocked > 1024 * 1024, "the journal was cut to \(run.keptWhileBlocked) bytes while the rule needed it")
        let ran = try ranSeqs(run.daemon, expected: run.emitted.count)
        #expect(ran == run.emitted)
        let gaps = try run.daemon.waitForCount("gaps", count: 0) { $0.isEvent("kevd", "gap") }
        #expect(gaps.isEmpty, "\(gaps)")
        #expect(try lostInStatus(run.dir, "rule:block") == nil)
    }

    @Test("past max_bytes_hard a blocked rule loses events, and a kevd/gap names it and the seqs, counted in status and metrics")
    func ruleHardCeiling() throws {
        let run = try ruleThroughBlock(hard: "512K", count: 5000)
        defer { run.daemon.stop() }
        #expect(run.keptWhileBlocked <= 512 * 1024 + 16 * 1024)
        try run.daemon.waitFor("the rule's gap", timeout: 120) { $0.isEvent("kevd", "gap", key: "rule:block") }
        // Runs produce events too, so the journal keeps growing past the ceiling while the rule catches up: there
        // may be more than one hole. Wait until the rule has read everything and run what it found.
        _ = try waitUntil("the rule caught up and idle", timeout: 120) { () -> Bool? in
            let rules = (try status(run.dir)["rules"] as? [String: Any])?["active"] as? [[String: Any]]
            guard let rule = rules?.first else { return nil }
            let idle = rule["catching_up"] as? Bool == false && (rule["pending"] as? NSNumber)?.intValue == 0
                && (rule["running"] as? NSNumber)?.intValue == 0
            return idle ? true : nil
        }
        let gaps = try run.daemon.waitForCount("gaps", count: 1) { $0.isEvent("kevd", "gap", key: "rule:block") }
        let ranges = gaps.compactMap { gap -> ClosedRange<Int>? in
            guard let from = gap.int("from"), let to = gap.int("to"), from <= to else { return nil }
            return from...to
        }
        #expect(ranges.count == gaps.count, "\(gaps)")
        let outside = run.emitted.filter { seq in !ranges.contains { $0.contains(seq) } }
        let ran = try ranSeqs(run.daemon, expected: outside.count)
        // Every event ran once except exactly those named lost, and the holes hold nothing that ran.
        #expect(ran == outside, "ran \(ran.count), expected \(outside.count) outside the gaps \(ranges)")
        #expect(ranges.allSatisfy { $0.lowerBound > run.emitted.first! })
        let lost = ranges.reduce(0) { $0 + $1.count }
        #expect(try lostInStatus(run.dir, "rule:block") == lost)
        let rules = (try status(run.dir)["rules"] as? [String: Any])?["active"] as? [[String: Any]]
        #expect((rules?.first?["lost"] as? NSNumber)?.intValue == lost)
        #expect(try metricsLine(run.dir, "rule:block")?.hasSuffix(" \(lost)") == true)
    }

    // MARK: Named subscriptions

    @Test("a named subscription that lost events to retention gets its gap line and a kevd/gap subscription:NAME")
    func namedSubscription() throws {
        let dir = try TemporaryDirectory()
        let daemon = try DaemonProcess(config: serverConfig(journalConfig(hard: "128K")), in: dir)
        defer { daemon.stop() }
        let socket = dir.file("state/kevd.sock")
        let first = try emitPadded(socket, type: "ret", count: 5)
        do {
            let named = try RawClient(socket)
            #expect(try named.request(#"{"op":"subscribe","name":"late","from":"all","filter":["type=ret"]}"#)["ok"] as? Bool == true)
            let seen = try named.events(5)
            #expect(seen.compactMap(\.seq) == first)
            #expect(try named.request(#"{"op":"ack","seq":\#(first.last!)}"#)["ok"] as? Bool == true)
        }
        // Named subscriptions do not hold segments (a client may never come back): these go past max_bytes.
        let more = try emitPadded(socket, type: "ret", count: 400, from: 5)
        let named = try RawClient(socket)
        // Until the server has seen the first connection close, the name is still in use.
        _ = try waitUntil("the name free again") { () -> Bool? in
            try named.request(#"{"op":"subscribe","name":"late","filter":["type=ret"]}"#)["ok"] as? Bool == true ? true : nil
        }
        let line = try named.line()
        let gapLine = try #require(line["gap"] as? [String: Any], "\(line)")
        let from = try #require((gapLine["from"] as? NSNumber)?.intValue)
        let to = try #require((gapLine["to"] as? NSNumber)?.intValue)
        #expect(from == first.last! + 1 && to > from && to < more.last!)
        let event = try daemon.waitFor("the subscription's gap event") { $0.isEvent("kevd", "gap", key: "subscription:late") }
        #expect(event.int("from") == from && event.int("to") == to)
        let rest = more.filter { $0 > to }
        #expect(try named.events(rest.count).compactMap(\.seq) == rest)
        #expect(try lostInStatus(dir, "subscription:late") == to - from + 1)
    }

    // MARK: Retention that cannot list its directory

    @Test("retention that cannot list the journal's directory says so once, and again when it works")
    func unlistable() throws {
        let dir = try TemporaryDirectory()
        let daemon = try DaemonProcess(config: serverConfig("""

            [journal]
            max_bytes = "1M"
            retention_interval = "1s"
            """), in: dir)
        defer { daemon.stop() }
        // A file where the directory was (an unmounted or replaced directory): opendir fails with ENOTDIR while
        // the open segment is still written through its descriptor.
        let journal = dir.file("state/journal")
        #expect(rename(journal, journal + ".moved") == 0)
        #expect(FileManager.default.createFile(atPath: journal, contents: Data("not a directory".utf8)))
        let error = try daemon.waitFor("retention's error", timeout: 10) { $0.isEvent("kevd", "error", key: "retention") }
        #expect((error.string("message") ?? "").contains("cannot list"), "\(error)")
        usleep(2_500_000)  // Two more passes fail the same way: no more events for them.
        unlink(journal)
        #expect(rename(journal + ".moved", journal) == 0)
        try daemon.waitFor("retention resumed", timeout: 10) { $0.isEvent("kevd", "resumed", key: "retention") }
        let errors = try daemon.waitForCount("retention errors", count: 1) { $0.isEvent("kevd", "error", key: "retention") }
        #expect(errors.count == 1)
    }
}
