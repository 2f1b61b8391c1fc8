import Foundation
import Glibc
import KevdTestSupport
import Testing

/// What kevd told its clients during the crash test: every acknowledged emit and every event a subscriber
/// printed. The journal is checked against it after each SIGKILL.
final class CrashLedger: @unchecked Sendable {
    // @unchecked: everything is behind `lock`.
    struct Ack { let seq: Int; let id: String; let payload: String }
    struct Printed { let who: String; let seq: Int; let id: String }
    private let lock = NSLock()
    private var acks: [Ack] = []
    private var printed: [Printed] = []
    private var failures: [String] = []

    func acked(_ ack: Ack) { lock.lock(); acks.append(ack); lock.unlock() }
    func printed(_ p: Printed) { lock.lock(); printed.append(p); lock.unlock() }
    func failed(_ what: String) { lock.lock(); failures.append(what); lock.unlock() }

    /// Hands out (and forgets) what the round collected.
    func take() -> (acks: [Ack], printed: [Printed], failures: [String]) {
        lock.lock()
        defer { acks = []; printed = []; failures = []; lock.unlock() }
        return (acks, printed, failures)
    }

    var ackCount: Int { lock.lock(); defer { lock.unlock() }; return acks.count }
}

/// The load of one round: threads that run until kevd dies (or `stop` is set), then leave `group`.
final class CrashLoad: @unchecked Sendable {
    let stop = StopFlag()
    let group = DispatchGroup()
    let ledger: CrashLedger
    let dir: TemporaryDirectory
    let round: Int
    var socket: String { dir.file("state/kevd.sock") }
    /// The named `kevctl subscribe` of this round, killed if it outlives kevd by much.
    private(set) var named: Process? = nil

    init(dir: TemporaryDirectory, round: Int, ledger: CrashLedger) {
        self.dir = dir
        self.round = round
        self.ledger = ledger
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        group.enter()
        Thread { [group] in
            body()
            group.leave()
        }.start()
    }

    func start() throws {
        // Subscribers first, so that they see the emits.
        for (n, filter) in [("all", #"{"op":"subscribe"}"#), ("emits", #"{"op":"subscribe","filter":["source=emit"]}"#)] {
            let client = try RawClient(socket)
            guard try client.request(filter)["ok"] as? Bool == true else { throw POSIXError(.EPROTO) }
            spawn { [self] in self.readSubscriber(client, who: "raw-\(n)") }
        }
        try startNamed()
        spawn { [self] in self.writeFiles() }
        for k in 0..<2 {
            let client = try RawClient(socket)
            spawn { [self] in self.emitWindows(client, emitter: k) }
        }
        let ruleClient = try RawClient(socket)
        spawn { [self] in self.emitRuleEvents(ruleClient) }
    }

    /// A `kevctl subscribe --name crash source=emit`, as a user would run it, printing to a pipe we read.
    private func startNamed() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestBinaries.kevctl)
        // It resumes after its last acknowledged event. Until a first ack is stored (a kill within 100 ms of the
        // first round's start prevents one) the name has no position and would start at the live end, missing
        // what came before: then it asks for everything.
        let hasPosition = access(dir.file("state/subscriptions/crash"), F_OK) == 0
        process.arguments = ["subscribe", "--socket", socket, "--name", "crash"] + (hasPosition ? [] : ["--from", "all"]) + ["source=emit"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.runAlone()
        named = process
        let fd = out.fileHandleForReading.fileDescriptor
        spawn { [self] in
            var lines = PendingLines()
            while true {
                guard let line = try? lines.nextLine(from: fd, timeout: 60, what: "kevctl subscribe output") else { break }
                record(line, who: "kevctl-named")
            }
            _ = out  // The pipe stays open until the reader is done.
        }
    }

    private func record(_ line: [String: Any], who: String) {
        guard let seq = line.seq else {
            if line["gap"] != nil { ledger.failed("\(who) got a gap line: \(line)") }
            return
        }
        ledger.printed(.init(who: who, seq: seq, id: line["id"] as? String ?? ""))
    }

    private func readSubscriber(_ client: RawClient, who: String) {
        // kevd's death closes the socket: line() throws, and the subscriber is done.
        while let line = try? client.line(timeout: 60) { record(line, who: who) }
    }

    private func writeFiles() {
        try? makeDirectory(dir.file("w/r\(round)"))
        var i = 0
        while !stop.value {
            try? writeFile(dir.file("w/r\(round)/f\(i % 200)"), "\(i)")
            if i % 50 == 0 { unlink(dir.file("w/r\(round)/f\((i + 100) % 200)")) }
            i += 1
            usleep(500)
        }
    }

    /// Emits in windows of 8 requests (replies come in request order); every acknowledged one is recorded with
    /// the unique payload that finds it in the journal.
    private func emitWindows(_ client: RawClient, emitter: Int) {
        var i = 0
        while !stop.value {
            var payloads: [String] = []
            var text = ""
            for _ in 0..<8 {
                let payload = "r\(round)-e\(emitter)-\(i)"
                i += 1
                payloads.append(payload)
                text += #"{"op":"emit","type":"crash.emit","key":"e\#(emitter)","data":{"p":"\#(payload)"}}"# + "\n"
            }
            client.send(text)
            for payload in payloads {
                guard let reply = try? client.line(timeout: 30) else { return }
                acknowledge(reply, payload: payload)
            }
        }
    }

    /// The rule's trigger: one at a time, about 20 a second over 16 keys, which 8 runs at once of 0.3 s keep up
    /// with (about 6 in flight).
    private func emitRuleEvents(_ client: RawClient) {
        var i = 0
        while !stop.value {
            let payload = "r\(round)-rule-\(i)"
            i += 1
            client.send(#"{"op":"emit","type":"crash.rule","key":"k\#(i % 16)","data":{"p":"\#(payload)"}}"# + "\n")
            guard let reply = try? client.line(timeout: 30) else { return }
            acknowledge(reply, payload: payload)
            usleep(50_000)
        }
    }

    private func acknowledge(_ reply: [String: Any], payload: String) {
        guard reply["ok"] as? Bool == true, let seq = reply.seq, let id = reply["id"] as? String else {
            ledger.failed("emit \(payload) refused: \(reply)")
            return
        }
        ledger.acked(.init(seq: seq, id: id, payload: payload))
    }

    /// After kevd died: stops the file writer and waits for every client to notice.
    func finish() -> Bool {
        stop.set(true)
        if group.wait(timeout: .now() + 30) == .success { return true }
        // A client that did not notice kevd's death within 30 s is a failure of its own; unblock the rest.
        if let named, named.isRunning { kill(named.processIdentifier, SIGKILL) }
        return group.wait(timeout: .now() + 10) == .success
    }
}

/// The journal's records from `seq` on, read with `kevctl journal` as a user would (kevd may be dead or alive).
func journalRecords(_ dir: TemporaryDirectory, from seq: Int, _ filter: [String] = []) throws -> [[String: Any]] {
    let result = try kevctl(["journal", "--state-dir", dir.file("state"), "--from", "\(seq)"] + filter)
    try #require(result.status == 0, "kevctl journal: \(result.stderr)")
    return journalLines(result.stdout)
}

func verifyJournal(_ dir: TemporaryDirectory, _ when: String) throws {
    let result = try kevctl(["journal", "--state-dir", dir.file("state"), "--verify"])
    #expect(result.status == 0, "kevctl journal --verify \(when): \(result.stdout) \(result.stderr)")
}

/// Waits until kevd answers on its socket (it may announce itself before it listens).
func waitForSocket(_ daemon: DaemonProcess, timeout: Double = 20) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        let status = try kevctl(["status", "--socket", daemon.directory.file("state/kevd.sock"), "--json"])
        if status.status == 0 { return }
        guard Date() < deadline else {
            throw DaemonProcess.Timeout(what: "kevd's socket (\(status.stderr))", seen: 0, stderr: daemon.stderr)
        }
        usleep(20_000)
    }
}

@Suite("Reliability: SIGKILL under load", .serialized)
struct ReliabilityCrashTests {
    @Test("SIGKILL at random points under load, restarted on the same state: nothing acknowledged or printed is lost, seqs continue, interrupted rule runs run again")
    func killRestartRounds() throws {
        signal(SIGPIPE, SIG_IGN)  // A client writing to a killed kevd must get EPIPE, not kill the test.
        let rounds = Reliability.crashRounds
        let seed = Reliability.crashSeed
        var random = SplitMix64(seed: seed)
        print("RELIABILITY crash start rounds=\(rounds) seed=\(seed)")
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let ruleOutput = dir.file("rule-ran")
        // Each run takes a while, so that a kill finds several runs in flight: they must run again.
        let script = try writeScript(dir, "record.sh", "sleep 0.3\nprintf '%s\\n' \"$KEVD_EVENT_ID\" >> '\(ruleOutput)'\n")
        try writeRuleFile(dir, "10-crash.toml", """
            [[rule]]
            name = "crash-record"
            match = ["source=emit", "type=crash.rule"]
            run = ["\(script)"]
            concurrency = 8
            """)
        // The user's durability setting: an emit's reply means fdatasync'd (batch); subscribers may see events
        // before that, which a SIGKILL (page cache kept) must not lose either.
        let config = rulesConfig("""

            [[watch]]
            path = "w"
            recursive = true

            [journal]
            sync = "batch"
            segment_size = "1M"
            """)
        let ledger = CrashLedger()
        var lastSeq = 0  // The last record in the journal when kevd died (0: none yet).
        var acknowledged = 0
        var printedTotal = 0
        var namedPrinted = Set<Int>()
        var killedAt: [Double] = []
        var lostTotal = 0
        var daemon: DaemonProcess? = nil

        for round in 0...rounds {
            let current = try DaemonProcess(config: config, in: dir)
            daemon = current
            // Sequence numbers continue: the new kevd's first event follows the last record the dead one left.
            let firstSeq = try #require(current.received.compactMap(\.seq).first)
            if round > 0 {
                #expect(firstSeq == lastSeq + 1, "round \(round): first seq after restart \(firstSeq), journal ended at \(lastSeq)")
            }
            try waitForSocket(current)
            if round > 0 { try verifyJournal(dir, "after restart \(round)") }
            if round == rounds { break }  // The last start only recovers and catches up (below).

            let load = CrashLoad(dir: dir, round: round, ledger: ledger)
            try load.start()
            // Heavy load is under way once emits are being acknowledged; then kill at a random point.
            let loadDeadline = Date().addingTimeInterval(20)
            while ledger.ackCount < 20 && Date() < loadDeadline { usleep(5_000) }
            try #require(ledger.ackCount >= 20, "round \(round): no emits acknowledged within 20 s; stderr: \(current.stderr)")
            let delay = Double.random(in: 0.02...2.0, using: &random)
            killedAt.append(delay)
            usleep(UInt32(delay * 1_000_000))
            current.signal(SIGKILL)
            current.process.waitUntilExit()
            #expect(load.finish(), "round \(round): clients did not notice kevd's death")
            let (acks, subscribed, failures) = ledger.take()
            // kevd's own `--stdout` is one more reader: what it printed before dying must be journaled too.
            let printed = subscribed + current.received.compactMap { e in
                e.seq.map { CrashLedger.Printed(who: "stdout", seq: $0, id: e["id"] as? String ?? "") }
            }
            #expect(failures.isEmpty, "round \(round): \(failures.prefix(5))")

            try verifyJournal(dir, "after SIGKILL \(round)")
            // A resumed named subscription prints again what it had not acknowledged before the last kill: those
            // events are older than this round.
            let from = min(firstSeq, printed.map(\.seq).min() ?? firstSeq)
            let records = try journalRecords(dir, from: from)
            let seqs = records.compactMap(\.seq)
            #expect(seqs == Array(from..<(from + seqs.count)), "round \(round): journal not gap-free from \(from)")
            lastSeq = seqs.last ?? lastSeq
            var bySeq: [Int: [String: Any]] = [:]
            var payloadCount: [String: Int] = [:]
            for r in records {
                if let s = r.seq { bySeq[s] = r }
                if let p = r.data["p"] as? String { payloadCount[p, default: 0] += 1 }
            }
            // Every acknowledged emit is there exactly once, under the seq and id its reply named.
            let lost = acks.filter { bySeq[$0.seq]?["id"] as? String != $0.id || bySeq[$0.seq]?.data["p"] as? String != $0.payload }
            #expect(lost.isEmpty, "round \(round): \(lost.count) acknowledged emits missing or different, e.g. \(lost.prefix(3))")
            let doubled = payloadCount.filter { $0.value > 1 }
            #expect(doubled.isEmpty, "round \(round): emits journaled more than once: \(doubled.prefix(3))")
            // Every event a subscriber printed is there, same seq, same id.
            let unknown = printed.filter { bySeq[$0.seq]?["id"] as? String != $0.id }
            #expect(unknown.isEmpty, "round \(round): \(unknown.count) printed events not in the journal, e.g. \(unknown.prefix(3))")
            for p in printed where p.who == "kevctl-named" { namedPrinted.insert(p.seq) }
            acknowledged += acks.count
            lostTotal += lost.count
            printedTotal += printed.count
            print("RELIABILITY crash round=\(round) killed_after_s=\(String(format: "%.3f", delay)) seq=\(firstSeq)-\(lastSeq) acked=\(acks.count) printed=\(printed.count)")
            if !lost.isEmpty || !unknown.isEmpty || !doubled.isEmpty { break }
        }

        // The last kevd runs on without load: interrupted and queued rule runs run again, and the named
        // subscription resumes where its acknowledgements left it.
        let ruleEvents = try journalRecords(dir, from: 1, ["source=emit", "type=crash.rule"])
        let wanted = Set(ruleEvents.compactMap { $0["id"] as? String })
        var ran: [String] = []
        let deadline = Date().addingTimeInterval(120)
        while true {
            ran = ((try? String(contentsOfFile: ruleOutput, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            if wanted.isSubset(of: Set(ran)) || Date() > deadline { break }
            usleep(100_000)
        }
        let missing = wanted.subtracting(ran)
        #expect(missing.isEmpty, "\(missing.count) of \(wanted.count) journaled rule triggers never ran, e.g. \(missing.prefix(3))")
        let reruns = ran.count - Set(ran).count
        // Runs a kill cut short: started, never finished (kevd journals the end of every run it sees end).
        let runEvents = try journalRecords(dir, from: 1, ["source=kevd", "key=crash-record"])
        let interrupted = runEvents.filter { $0.type == "rule.started" }.count
            - runEvents.filter { $0.type == "rule.succeeded" || $0.type == "rule.failed" }.count

        let emits = try journalRecords(dir, from: 1, ["source=emit"]).compactMap(\.seq)
        if let lastEmit = emits.last {
            let resumed = try KevctlProcess(["subscribe", "--socket", dir.file("state/kevd.sock"), "--name", "crash", "source=emit"])
            var lines = PendingLines()
            let fd = resumed.process.standardOutput.flatMap { ($0 as? Pipe)?.fileHandleForReading.fileDescriptor } ?? -1
            while let line = try lines.nextLine(from: fd, timeout: 60, what: "the named subscription up to seq \(lastEmit)"),
                let seq = line.seq
            {
                namedPrinted.insert(seq)
                if seq >= lastEmit { break }
            }
            resumed.process.terminate()
        }
        let unseen = Set(emits).subtracting(namedPrinted)
        #expect(unseen.isEmpty, "the named subscription skipped \(unseen.count) journaled emits across restarts, e.g. \(unseen.sorted().prefix(5))")

        let final = try journalRecords(dir, from: max(lastSeq - 5, 1))
        print(
            "RELIABILITY crash rounds=\(rounds) seed=\(seed) events=\(final.last?.seq ?? lastSeq) acknowledged=\(acknowledged) "
                + "lost_acknowledged=\(lostTotal) printed=\(printedTotal) rule_triggers=\(wanted.count) rule_runs=\(ran.count) "
                + "rule_interrupted=\(interrupted) rule_reruns=\(reruns) rule_missing=\(missing.count) named_unseen=\(unseen.count) "
                + "kill_delay_s=\(String(format: "%.2f", killedAt.min() ?? 0))-\(String(format: "%.2f", killedAt.max() ?? 0))")
        #expect(daemon?.stop() == 0)
        try verifyJournal(dir, "after the last stop")
    }
}
