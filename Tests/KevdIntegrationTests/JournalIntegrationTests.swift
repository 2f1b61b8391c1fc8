import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Runs kevctl, with `environment` added to the test's own, and returns its exit status, stdout and stderr.
func kevctl(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: TestBinaries.kevctl)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.runAlone()
    // Read both before waiting: a full pipe would block the child.
    let errData = LockedData()
    let errThread = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
    errThread.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    // kevctl has exited, so its stderr is at end of file: the reader thread is finishing, not waiting on it.
    let errBytes = try errData.wait(timeout: 30, what: "kevctl's stderr to be read to its end")
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errBytes, as: UTF8.self))
}

final class LockedData: @unchecked Sendable {
    // @unchecked: `stored` is guarded by `condition`.
    private let condition = NSCondition()
    private var stored: Data?
    func set(_ d: Data) {
        condition.lock()
        stored = d
        condition.broadcast()
        condition.unlock()
    }
    var value: Data? { condition.lock(); defer { condition.unlock() }; return stored }

    /// The data once `set`, waiting for it up to `timeout` seconds.
    func wait(timeout: Double, what: String) throws -> Data {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while stored == nil {
            guard condition.wait(until: deadline) || stored != nil else { throw WaitTimeout(what: what) }
        }
        return stored!
    }
}

func journalLines(_ stdout: String) -> [[String: Any]] {
    stdout.split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}

@Suite("journal, end to end", .serialized)
struct JournalIntegrationTests {
    @Test("SIGKILL while journaling at full speed: every event a reader printed is journaled, seqs continue, verify passes")
    func killMidStream() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let config = watchConfig("w") + "\n[journal]\nsync = \"batch\"\nsegment_size = \"256K\"\n"
        let daemon = try DaemonProcess(config: config, in: dir)
        // A writer thread floods the watched folder while kevd journals.
        let stop = StopFlag()
        let writer = Thread {
            var i = 0
            while stop.value != true {
                let fd = open(dir.file("w/f\(i % 500)"), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)
                _ = write(fd, "x", 1)
                close(fd)
                i += 1
            }
        }
        writer.start()
        _ = try daemon.waitForCount("a burst", count: 20_000, timeout: 60) { $0.source == "inotify" }
        daemon.signal(SIGKILL)
        stop.set(true)
        _ = daemon.stop()
        let printed = daemon.received.compactMap { $0.seq }
        #expect(printed.count >= 20_000)

        // Everything kevd printed before it died is in the journal, with the same ids.
        let journal = try kevctl(["journal", "--state-dir", dir.file("state")])
        #expect(journal.status == 0)
        let journaled = journalLines(journal.stdout)
        let idsBySeq = Dictionary(journaled.map { ($0.seq ?? -1, $0["id"] as? String ?? "") }, uniquingKeysWith: { a, _ in a })
        for event in daemon.received {
            guard let seq = event.seq else { continue }
            #expect(idsBySeq[seq] == event["id"] as? String, "seq \(seq) printed but not journaled")
            if idsBySeq[seq] != event["id"] as? String { break }
        }
        let lastSeq = journaled.compactMap(\.seq).max() ?? 0
        #expect(journaled.compactMap(\.seq) == Array(1...lastSeq))

        // Restart: seq continues right after the journal's end, and the journal verifies.
        let again = try DaemonProcess(config: config, in: dir)
        let started = try again.waitFor("started") { $0.isEvent("kevd", "started") }
        #expect(started.seq == lastSeq + 1 || started.seq.map { $0 > lastSeq } == true)
        try writeFile(dir.file("w/after-restart"))
        try again.waitFor("event after restart") { $0.isEvent("inotify", "create", key: dir.file("w/after-restart")) }
        #expect(again.stop() == 0)
        let verify = try kevctl(["journal", "--state-dir", dir.file("state"), "--verify"])
        #expect(verify.status == 0, "\(verify.stderr)")
        let all = journalLines(try kevctl(["journal", "--state-dir", dir.file("state")]).stdout).compactMap(\.seq)
        #expect(all == Array(1...(all.last ?? 0)), "no gap across the kill and restart")
    }

    @Test("a torn tail is cut on start and announced as kevd/recovered with the seq given again")
    func recoveredEvent() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        var daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        for i in 0..<20 { try writeFile(dir.file("w/f\(i)")) }
        try daemon.waitForCount("creates", count: 20) { $0.isEvent("inotify", "create") }
        #expect(daemon.stop() == 0)
        // Tear the last record: cut 10 bytes off the newest segment.
        let journalDir = dir.file("state/journal")
        let newest = try #require(try FileManager.default.contentsOfDirectory(atPath: journalDir).sorted().last)
        let path = journalDir + "/" + newest
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(truncate(path, off_t(size - 10)) == 0)
        let before = journalLines(try kevctl(["journal", "--state-dir", dir.file("state")]).stdout).compactMap(\.seq)

        daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        let recovered = try daemon.waitFor("recovered") { $0.isEvent("kevd", "recovered", key: "journal") }
        #expect((recovered.data["truncated_bytes"] as? Int ?? 0) > 0)
        let lastIntact = before.max() ?? 0
        #expect(recovered.data["next_seq"] as? Int == lastIntact + 1)
        #expect(recovered.seq == lastIntact + 1)
        daemon.stop()
        #expect(try kevctl(["journal", "--state-dir", dir.file("state"), "--verify"]).status == 0)
    }

    @Test("kevctl journal filters, bounds by seq, follows new events, and --verify names damage with exit 1")
    func kevctlJournal() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w"), in: dir)
        for name in ["a.txt", "b.log", "c.txt"] { try writeFile(dir.file("w/" + name)) }
        try daemon.waitFor("c.txt") { $0.isEvent("inotify", "close_write", key: dir.file("w/c.txt")) }
        let state = dir.file("state")

        let txt = journalLines(try kevctl(["journal", "--state-dir", state, "type=create", "key=*.txt"]).stdout)
        #expect(txt.compactMap(\.key) == [dir.file("w/a.txt"), dir.file("w/c.txt")])
        let bounded = journalLines(try kevctl(["journal", "--state-dir", state, "--from", "2", "--until", "3"]).stdout)
        #expect(bounded.compactMap(\.seq) == [2, 3])
        let bad = try kevctl(["journal", "--state-dir", state, "colour=red"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("colour"))

        // --follow prints an event journaled after it started.
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: TestBinaries.kevctl)
        follower.arguments = ["journal", "--state-dir", state, "--follow", "key=*late*"]
        let pipe = Pipe()
        follower.standardOutput = pipe
        try follower.runAlone()
        defer { follower.terminate() }
        try writeFile(dir.file("w/late"))
        let line = try readLine(from: pipe.fileHandleForReading.fileDescriptor, timeout: 10)
        #expect(line.contains(dir.file("w/late")))
        #expect(daemon.stop() == 0)

        // Damage a record in the middle: verify names the segment and offset, and exits 1.
        let journalDir = state + "/journal"
        let segment = try #require(try FileManager.default.contentsOfDirectory(atPath: journalDir).sorted().first)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: journalDir + "/" + segment))
        bytes[32 + 32 + 10] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: journalDir + "/" + segment))
        let verify = try kevctl(["journal", "--state-dir", state, "--verify"])
        #expect(verify.status == 1)
        #expect(verify.stderr.contains("\(segment) at offset 32: CRC mismatch"))
        // Readers skip it and keep going.
        let skipped = try kevctl(["journal", "--state-dir", state])
        #expect(skipped.status == 0)
        #expect(skipped.stderr.contains("skipped"))
        #expect(journalLines(skipped.stdout).first?.seq == 2)
    }
}

extension JournalIntegrationTests {
    @Test("vacuum deletes the oldest whole segments, never the newest, and readers are told where the journal starts")
    func vacuum() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let daemon = try DaemonProcess(config: watchConfig("w") + "\n[journal]\nsegment_size = \"4K\"\n", in: dir)
        for i in 0..<100 { try writeFile(dir.file("w/f\(i)")) }
        try daemon.waitFor("last create") { $0.isEvent("inotify", "close_write", key: dir.file("w/f99")) }
        #expect(daemon.stop() == 0)
        let state = dir.file("state")
        let journalDir = state + "/journal"
        let before = try FileManager.default.contentsOfDirectory(atPath: journalDir).sorted()
        #expect(before.count > 5)

        let vacuum = try kevctl(["journal", "--state-dir", state, "--vacuum-size", "16K"])
        #expect(vacuum.status == 0)
        let after = try FileManager.default.contentsOfDirectory(atPath: journalDir).sorted()
        #expect(after.count < before.count)
        #expect(after.last == before.last, "the newest segment is kept")
        #expect(Array(before.suffix(after.count)) == after, "only the oldest went")

        let fromOne = try kevctl(["journal", "--state-dir", state, "--from", "1"])
        let first = journalLines(fromOne.stdout).first?.seq ?? 0
        #expect(first > 1)
        #expect(fromOne.stderr.contains("the journal starts at seq \(first)"))
        #expect(try kevctl(["journal", "--state-dir", state, "--verify"]).status == 0)

        // By age: everything is younger than a day, so nothing goes.
        let young = try kevctl(["journal", "--state-dir", state, "--vacuum-time", "1d"])
        #expect(young.stdout.contains("0 segments deleted"))
    }
}

/// Reads one line from `fd` within `timeout` seconds.
func readLine(from fd: Int32, timeout: Double) throws -> String {
    var collected = Data()
    let deadline = Date().addingTimeInterval(timeout)
    var byte: UInt8 = 0
    while Date() < deadline {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, 100) == 1 else { continue }
        guard read(fd, &byte, 1) == 1 else { break }
        if byte == 0x0A { return String(decoding: collected, as: UTF8.self) }
        collected.append(byte)
    }
    throw DaemonProcess.Timeout(what: "a line", seen: 0, stderr: "")
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = false
    func set(_ value: Bool) { lock.lock(); stored = value; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return stored }
}
