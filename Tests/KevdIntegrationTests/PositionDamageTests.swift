import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Stored positions that cannot be read (issue 15, part 5): a damaged file, and a read that fails (EISDIR: a
/// directory where the file was, which no permission trick is needed for, even as root). Each is reported as a
/// `kevd`/`error` naming the consumer, and resolved from the previous copy kept at every save: neither the rule
/// nor the forwarder skips what it had not handled, and neither starts over from the beginning.
@Suite("damaged stored positions", .serialized)
struct PositionDamageTests {
    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        case garbage, directory
        var testDescription: String { rawValue }

        func apply(to path: String) throws {
            switch self {
            case .garbage:
                try Data([0x00, 0xFF, 0x13] + Array("this is not a position\n".utf8)).write(to: URL(fileURLWithPath: path))
            case .directory:
                unlink(path)
                try makeDirectory(path)
            }
        }
    }

    @Test("a rule whose stored position is unreadable is told so and runs what it had not run", arguments: Damage.allCases)
    func rulePosition(_ damage: Damage) throws {
        let dir = try TemporaryDirectory()
        try writeBlockingRule(dir, type: "pos")
        var daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        // The rule's first position is stored at once; its script then holds it below these five events.
        var seqs: [Int] = []
        for i in 0..<5 { seqs.append(try emit(daemon, "pos", key: "k\(i)")) }
        try daemon.waitFor("the first run", timeout: 10) { $0.isRule("started", "block") }
        #expect(daemon.stop() == 0)
        try damage.apply(to: dir.file("state/rules/positions"))

        daemon = try DaemonProcess(config: rulesConfig(), in: dir)
        defer { daemon.stop() }
        let error = try daemon.waitFor("the position error", timeout: 10) { $0.isEvent("kevd", "error", key: "rules") }
        #expect((error.string("message") ?? "").contains("previous copy"), "\(error)")
        #expect(FileManager.default.createFile(atPath: dir.file("go"), contents: nil))
        let ended = try daemon.waitForCount("the five runs", count: 5, timeout: 30) { $0.isRule("succeeded", "block") }
        #expect(ended.compactMap { $0.int("cause_seq") }.sorted() == seqs)
    }

    @Test("a forwarder whose stored position is unreadable is told so and neither skips nor republishes everything", arguments: Damage.allCases)
    func forwarderPosition(_ damage: Damage) throws {
        let dir = try TemporaryDirectory()
        let nats = try NatsServer(name: "pos", store: dir.file("nats"))
        try nats.start()
        let config = serverConfig("\n" + natsForwardConfig(url: nats.url))
        var daemon = try DaemonProcess(config: config, in: dir)
        let reader = try StreamReader(urls: [nats.url])
        let emitter = try RawClient(dir.file("state/kevd.sock"))
        func emit(_ i: Int) throws -> Int {
            let reply = try emitter.request(#"{"op":"emit","type":"pos","key":"k\#(i)"}"#)
            return try #require((reply["seq"] as? NSNumber)?.intValue, "\(reply)")
        }
        var seqs: [Int] = []
        for i in 0..<40 { seqs.append(try emit(i)) }
        _ = try waitUntil("40 forwarded") { reader.messageCount() == 40 ? true : nil }
        // Two more, one at a time, each stored: the file then holds the last and its previous copy the one before.
        for i in 40..<42 {
            let seq = try emit(i)
            seqs.append(seq)
            _ = try waitUntil("seq \(seq) forwarded and stored") { () -> Bool? in
                let forward = try forwardStatus(dir)
                return (forward?["stored"] as? NSNumber)?.intValue ?? 0 >= seq ? true : nil
            }
        }
        nats.kill()
        for i in 42..<60 { seqs.append(try emit(i)) }
        #expect(daemon.stop() == 0)
        try damage.apply(to: dir.file("state/forward/nats"))

        try nats.start()
        daemon = try DaemonProcess(config: config, in: dir)
        defer { daemon.stop() }
        let error = try daemon.waitFor("the position error", timeout: 10) { $0.isEvent("kevd", "error", key: "forward:nats") }
        #expect((error.string("message") ?? "").contains("previous copy"), "\(error)")
        let after = try StreamReader(urls: [nats.url])
        _ = try waitUntil("all 60 in the stream", timeout: 30) { after.messageCount() == 60 ? true : nil }
        let forward = try waitUntil("the forwarder caught up") { () -> [String: Any]? in
            let forward = try forwardStatus(dir)
            return (forward?["lag"] as? NSNumber)?.intValue == 0 ? forward : nil
        }
        // From the previous copy: the one event stored last is published again (and collapsed), no more.
        #expect((forward["duplicates"] as? NSNumber)?.intValue ?? -1 <= 1, "\(forward)")
        #expect((forward["published"] as? NSNumber)?.intValue ?? 0 <= 19, "\(forward)")
        var streamSeqs: [Int] = []
        for n in 1...60 {
            guard let message = after.message(seq: UInt64(n)),
                let event = try? JSONSerialization.jsonObject(with: Data(message.data.utf8)) as? [String: Any]
            else { continue }
            if let seq = event.seq { streamSeqs.append(seq) }
        }
        #expect(streamSeqs == seqs)
    }

    func forwardStatus(_ dir: TemporaryDirectory) throws -> [String: Any]? {
        let result = try kevctl(["status", "--socket", dir.file("state/kevd.sock"), "--json"])
        let reply = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return (reply?["forward"] as? [[String: Any]])?.first
    }
}
