import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Issue 15, parts 4 and 5: subscribers replaying the journal. A large replay must not hold the loop (it goes
/// in bounded slices, other clients answered in between), and a record the server cannot use (damaged, or whole
/// but undecodable) is named to the subscriber and reported, never skipped silently.
@Suite("journal catch-up: bounded turns, damaged records reported", .serialized)
struct CatchUpTests {
    /// Pipelines `count` emits with a `pad` of `padding` bytes; returns their seqs.
    static func emit(_ socket: String, count: Int, padding: Int, type: String = "bulk") throws -> [Int] {
        let client = try RawClient(socket)
        var seqs: [Int] = []
        let pad = String(repeating: "p", count: padding)
        while seqs.count < count {
            let batch = min(500, count - seqs.count)
            var text = ""
            for i in 0..<batch {
                text += #"{"op":"emit","type":"\#(type)","key":"k","data":{"n":\#(seqs.count + i),"pad":"\#(pad)"}}"# + "\n"
            }
            client.send(text)
            for _ in 0..<batch {
                let reply = try client.line(timeout: 60)
                try #require(reply["ok"] as? Bool == true, "emit: \(reply)")
                seqs.append(reply.seq ?? 0)
            }
        }
        return seqs
    }

    /// Drops the journal's pages from the page cache, so the replay reads from the disk.
    static func dropCache(_ journal: String) throws {
        for name in try FileManager.default.contentsOfDirectory(atPath: journal) where name.hasSuffix(".seg") {
            let fd = open(journal + "/" + name, O_RDONLY)
            guard fd >= 0 else { continue }
            fdatasync(fd)
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            close(fd)
        }
    }

    @Test("a subscriber replaying a large cold journal: status is answered all along, the replay advancing in between")
    func replayLeavesTheLoopToOthers() throws {
        let count = 30_000
        // A large send_buffer: the replay must be sliced by the turn's budget, not only by the subscriber's buffer.
        let daemon = try DaemonProcess(
            config: serverConfig("[server]\nsend_buffer = \"64MiB\"\n[journal]\nsegment_size = \"8MiB\"\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        let seqs = try Self.emit(socket, count: count, padding: 1000)
        let last = try #require(seqs.last)
        try Self.dropCache(daemon.directory.file("state/journal"))

        let subscriber = try RawClient(socket)
        let subscribed = try subscriber.request(#"{"op":"subscribe","filter":["type=bulk"],"from":"all"}"#)
        try #require(subscribed["ok"] as? Bool == true)
        let received = LockedValue<[Int]>([])
        let replayStarted = Date()
        let replaySeconds = LockedValue<Double>(0)
        let reader = Thread {
            var latencies: [Double] = []
            let got = (try? subscriber.seqs(count, sampleEvery: count, latencies: &latencies, timeout: 120)) ?? []
            replaySeconds.set(Date().timeIntervalSince(replayStarted))
            received.set(got)
        }
        reader.start()

        // Status over and over on another connection while the replay runs: each answer shows how far it got.
        let status = try RawClient(socket)
        var progress: [Int] = []
        var answers = 0
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let reply = try status.request(#"{"op":"status"}"#)
            answers += 1
            let subscribers = reply["subscribers"] as? [[String: Any]] ?? []
            guard let sub = subscribers.first(where: { $0["filter"] as? [String] == ["type=bulk"] }),
                let next = (sub["next"] as? NSNumber)?.intValue
            else { continue }
            if sub["mode"] as? String == "live" || next > last { break }
            if progress.last != next { progress.append(next) }
        }
        reader.join(timeout: 120)
        let got = received.value
        #expect(got == seqs, "the replay delivered \(got.count) of \(seqs.count) events, in order: \(got == seqs)")
        // 30 MB of journal in slices of at most 256 KiB a turn: the status answers, one turn or more apart, see the
        // replay at many points on its way (137 on an idle machine). Fed up to half its 64 MiB buffer a turn (8192
        // records), as before the per-turn budget, it showed 14.
        #expect(progress.count >= 40, "status saw the replay at \(progress.count) points in \(answers) answers")
        #expect(progress == progress.sorted())
        Reliability.report(
            "catch_up_status",
            ["events": count, "status_answers": answers, "progress_points": progress.count,
             "replay_s": String(format: "%.2f", replaySeconds.value)])
        #expect(daemon.stop() == 0)
    }

    @Test("several subscribers replaying at once share the turns: none waits for the others to finish")
    func replaysShareTheTurns() throws {
        let count = 6000
        let subscribers = 6
        // Six subscribers want 256 KiB a turn each, more than a turn's 1 MiB: each turn serves some of them, those
        // served least recently first.
        let daemon = try DaemonProcess(config: serverConfig("[server]\nsend_buffer = \"64MiB\"\n"))
        let socket = daemon.directory.file("state/kevd.sock")
        let seqs = try Self.emit(socket, count: count, padding: 1000)
        let first = try #require(seqs.first)
        let last = try #require(seqs.last)
        try Self.dropCache(daemon.directory.file("state/journal"))

        var readers: [Thread] = []
        var results: [LockedValue<[Int]>] = []
        for _ in 0..<subscribers {
            let client = try RawClient(socket)
            try #require(try client.request(#"{"op":"subscribe","filter":["type=bulk"],"from":"all"}"#)["ok"] as? Bool == true)
            let result = LockedValue<[Int]>([])
            let reader = Thread {
                var latencies: [Double] = []
                result.set((try? client.seqs(count, sampleEvery: count, latencies: &latencies, timeout: 120)) ?? [])
            }
            reader.start()
            readers.append(reader)
            results.append(result)
        }
        // The first status answer in which one subscriber is past half way: every other one has started too.
        let status = try RawClient(socket)
        var snapshot: [Int] = []
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let subs = try status.request(#"{"op":"status"}"#)["subscribers"] as? [[String: Any]] ?? []
            let nexts = subs.compactMap { ($0["next"] as? NSNumber)?.intValue }
            guard nexts.count == subscribers else { continue }
            if let furthest = nexts.max(), furthest >= first + count / 2 {
                snapshot = nexts
                break
            }
        }
        for reader in readers { reader.join(timeout: 120) }
        for result in results { #expect(result.value == seqs) }
        try #require(snapshot.count == subscribers, "status never saw a subscriber past half way")
        #expect(snapshot.allSatisfy { $0 > first + count / 10 }, "when one subscriber was half way, the others were at \(snapshot)")
        #expect(snapshot.allSatisfy { $0 <= last + 1 })
        Reliability.report("catch_up_shared", ["subscribers": subscribers, "events": count, "at_half_way": "\(snapshot)"])
        #expect(daemon.stop() == 0)
    }

    @Test("records that cannot be decoded or fail their CRC: a gap line, a kevd/error with the seqs, the rest delivered")
    func undecodableRecords() throws {
        let dir = try TemporaryDirectory()
        let config = serverConfig("[journal]\nsegment_size = \"4KiB\"\n")
        var daemon = try DaemonProcess(config: config, in: dir)
        let seqs = try Self.emit(daemon.directory.file("state/kevd.sock"), count: 60, padding: 100)
        #expect(daemon.stop() == 0)

        // Two records of the oldest segment: one whose payload is no event line but whose CRC was made to match
        // (so the reader accepts it and only the server can tell), one whose payload no longer matches its CRC.
        let journal = dir.file("state/journal")
        let first = try #require(try FileManager.default.contentsOfDirectory(atPath: journal).filter { $0.hasSuffix(".seg") }.sorted().first)
        var segment = try JournalFile(path: journal + "/" + first)
        let undecodable = seqs[2]
        let damaged = seqs[5]
        try #require(segment.records.contains { $0.seq == damaged }, "both records in the first segment")
        segment.rewritePayload(of: undecodable, fixCRC: true) { $0[$0.startIndex] = UInt8(ascii: "X") }
        segment.rewritePayload(of: damaged, fixCRC: false) { $0[$0.startIndex + $0.count / 2] ^= 0x01 }
        try segment.write()

        daemon = try DaemonProcess(config: config, in: dir)
        let socket = daemon.directory.file("state/kevd.sock")
        let subscriber = try RawClient(socket)
        #expect(try subscriber.request(#"{"op":"subscribe","filter":["type=bulk"],"from":"all"}"#)["ok"] as? Bool == true)
        // A filter on data needs the whole line decoded: the other path through the server.
        let decoding = try RawClient(socket)
        #expect(try decoding.request(#"{"op":"subscribe","filter":["data.n~^[0-9]+$"],"from":"all"}"#)["ok"] as? Bool == true)
        let expected = seqs.filter { $0 != undecodable && $0 != damaged }
        for client in [subscriber, decoding] {
            var events: [Int] = []
            var gaps: [(from: Int, to: Int, reason: String)] = []
            while events.count < expected.count {
                let line = try client.line()
                if let gap = line["gap"] as? [String: Any] {
                    gaps.append((gap["from"] as? Int ?? 0, gap["to"] as? Int ?? 0, line["reason"] as? String ?? ""))
                } else if let seq = line.seq {
                    events.append(seq)
                }
            }
            #expect(events == expected)
            #expect(gaps.count == 2, "\(gaps)")
            #expect(gaps.first?.from == undecodable && gaps.first?.to == undecodable)
            #expect(gaps.first?.reason.contains("not an event line") == true, "\(gaps)")
            #expect(gaps.last?.from == damaged && gaps.last?.to == damaged)
            #expect(gaps.last?.reason.contains("damaged in the journal") == true, "\(gaps)")
        }

        // The connection goes on: a new event arrives live.
        #expect(try RawClient(socket).request(#"{"op":"emit","type":"bulk","data":{"n":1}}"#)["ok"] as? Bool == true)
        #expect(try subscriber.events(1).first?["type"] as? String == "bulk")

        // Reported once each, though two subscribers met them.
        try LimitsTests.barrier(daemon, try RawClient(socket), "after.replay")
        let errors = daemon.received.filter { $0.isEvent("kevd", "error", key: "journal") }
        #expect(errors.count == 2, "\(errors)")
        #expect(errors.contains { $0.data["from"] as? Int == undecodable && $0.data["reason"] as? String == "undecodable" })
        #expect(errors.contains { $0.data["from"] as? Int == damaged && $0.data["reason"] as? String == "damaged" })
        #expect(daemon.stop() == 0)
        #expect(daemon.finalStderr().contains("journal records skipped while a subscriber caught up"))
    }
}

/// A value shared with a reader thread.
final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T { lock.withLock { stored } }
    func set(_ value: T) { lock.withLock { stored = value } }
}

extension Thread {
    /// Waits for a thread started with a closure to finish (Foundation's Thread has no join).
    func join(timeout: Double) {
        let deadline = Date().addingTimeInterval(timeout)
        while !isFinished && Date() < deadline { usleep(10_000) }
    }
}

/// A journal segment read whole, for damaging records the way a disk or a bug would (docs/JOURNAL.md describes
/// the layout: a 32-byte header, then records of a 32-byte header — magic, length, CRC-32C, flags, seq, time —
/// and the payload, padded to 8 bytes).
struct JournalFile {
    struct Record {
        let offset: Int
        let length: Int
        let seq: Int
    }

    let path: String
    var bytes: [UInt8]
    var records: [Record] = []

    init(path: String) throws {
        self.path = path
        bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        var offset = 32
        while offset + 32 <= bytes.count {
            let length = Int(Self.load32(bytes, offset + 4))
            guard length > 0, offset + 32 + length <= bytes.count else { break }
            records.append(Record(offset: offset, length: length, seq: Int(Self.load64(bytes, offset + 16))))
            offset = (offset + 32 + length + 7) & ~7
        }
    }

    mutating func rewritePayload(of seq: Int, fixCRC: Bool, _ change: (inout ArraySlice<UInt8>) -> Void) {
        guard let record = records.first(where: { $0.seq == seq }) else { return }
        let start = record.offset + 32
        var payload = bytes[start..<(start + record.length)]
        change(&payload)
        bytes.replaceSubrange(start..<(start + record.length), with: payload)
        guard fixCRC else { return }
        // The CRC covers flags, seq, time and payload: everything after itself.
        let crc = Self.crc32c(bytes[(record.offset + 12)..<(start + record.length)])
        for i in 0..<4 { bytes[record.offset + 8 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
    }

    func write() throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    static func load32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) } }
    static func load64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) } }

    /// CRC-32C (Castagnoli), bit by bit: slow and obviously right, for a few records.
    static func crc32c(_ data: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0x82F6_3B78 & (0 &- (crc & 1))) }
        }
        return ~crc
    }
}
