import Foundation
import KevdEvent
import KevdJournal
import KevdTestSupport
import Logging
import Testing

@testable import KevdDaemon

/// The catch-up checkpoints (`CatchUpCheckpoint`) against a real journal in a temporary directory: a fold that
/// starts from one still knows what retention deleted, and one the journal disagrees with is not used.
@Suite("catch-up checkpoints")
struct CatchUpCheckpointTests {
    let base = EventIDBase(randA: 3, randB: 5)

    func event(seq: UInt64, source: EventSource, type: String, key: String, data: EventData, base: EventIDBase? = nil) -> Event {
        let wall = 1_790_000_000_000_000_000 + Int64(seq) * 1_000_000
        return Event(
            seq: seq, id: EventID(unixMilliseconds: UInt64(wall / 1_000_000), seq: seq, base: base ?? self.base),
            time: WallTime(nanoseconds: wall), mono: seq, source: source, type: type, key: key, data: data)
    }

    func fired(seq: UInt64, _ name: String, scheduled: Int64) -> Event {
        var data = EventData()
        data.append("scheduled", WallTime(nanoseconds: scheduled * 1_000_000_000).rfc3339)
        data.append("overruns", 0)
        data.append("cron", "0 3 1 * *")
        return event(seq: seq, source: .timer, type: "fired", key: name, data: data)
    }

    func filler(seq: UInt64) -> Event {
        var data = EventData()
        data.append("pad", String(repeating: "p", count: 500))
        return event(seq: seq, source: .inotify, type: "create", key: "/srv/f\(seq)", data: data)
    }

    func line(_ event: Event) -> [UInt8] {
        var line: [UInt8] = []
        JSONLineEncoder.append(event, to: &line)
        return line
    }

    func fold(_ journal: String, state: String?) -> TimerCatchUpFold.Found? {
        let result = TimerCatchUpFold.fold(
            journalDirectory: journal, stateDirectory: state, names: ["monthly"], beforeSeq: 302,
            stopping: JournalFold.StopFlag())
        return try? result.get()
    }

    @Test("a monthly timer's last fire that retention deleted is known from the checkpoint; a checkpoint whose record the journal gave another id is not used")
    func timerFireOutlivesRetention() throws {
        let state = try makeTemporaryDirectory(prefix: "kevd-checkpoint")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let directory = state + "/journal"
        var options = Journal.Options()
        options.segmentBytes = 16 * 1024
        options.maxBytes = 32 * 1024
        let journal = try Journal(directory: directory, options: options, logger: Logger(label: "test"))
        let fire = fired(seq: 1, "monthly", scheduled: 1_790_000_000)
        journal.append(fire)
        var last = fire
        for seq in UInt64(2)...301 {
            last = filler(seq: seq)
            journal.append(last)
            if seq % 10 == 0 { journal.writePending() }
        }
        journal.writePending()
        var history = CompactedHistory(source: .timer)
        line(fire).withUnsafeBytes { history.apply(fire, line: $0) }
        #expect(CatchUpCheckpoint(seq: 301, id: last.id.string, history: history).save(stateDirectory: state))
        #expect(!journal.enforceRetention().deleted.isEmpty)
        #expect(try JournalReader(directory: directory).firstAvailableSeq ?? 0 > 1, "retention kept the fire")
        #expect(journal.close())

        let withCheckpoint = try #require(fold(directory, state: state))
        #expect(withCheckpoint.lastFired == ["monthly": 1_790_000_000])
        #expect(withCheckpoint.outcome.checkpointSeq == 301 && withCheckpoint.outcome.lost == nil)
        // The journal alone no longer knows it: a persistent timer would never catch up again.
        #expect(try #require(fold(directory, state: nil)).lastFired.isEmpty)

        // A checkpoint older than what retention kept: used, and the records deleted after it are named (the
        // daemon publishes them as a `kevd`/`gap` with key `catchup:timer`).
        let first = try #require(try JournalReader(directory: directory).firstAvailableSeq)
        #expect(CatchUpCheckpoint(seq: 1, id: fire.id.string, history: history).save(stateDirectory: state))
        let older = try #require(fold(directory, state: state))
        #expect(older.outcome.checkpointSeq == 1 && older.outcome.lost == 2...(first - 1))
        #expect(older.lastFired == ["monthly": 1_790_000_000])

        // Seq 301 given to another event (another run's id, as after a power cut lost the tail): neither copy
        // agrees, so the whole journal is read, and the checkpoint's fire does not count.
        let other = event(seq: 301, source: .inotify, type: "create", key: "/x", data: EventData(), base: EventIDBase(randA: 9, randB: 9))
        for _ in 0..<2 { #expect(CatchUpCheckpoint(seq: 301, id: other.id.string, history: history).save(stateDirectory: state)) }
        let disagreeing = try #require(fold(directory, state: state))
        #expect(disagreeing.outcome.checkpointSeq == nil && disagreeing.lastFired.isEmpty)
    }

    @Test("the compaction keeps each device's last event and each timer's last fire; a remove or a move forgets the old path")
    func compaction() throws {
        var udev = CompactedHistory(source: .udev)
        func apply(_ type: String, _ key: String, _ extra: [(String, String)] = []) {
            var data = EventData()
            for (name, value) in extra { data.append(name, value) }
            let e = event(seq: 1, source: .udev, type: type, key: key, data: data)
            line(e).withUnsafeBytes { udev.apply(e, line: $0) }
        }
        apply("add", "/d/a")
        apply("add", "/d/b")
        apply("change", "/d/a")
        apply("remove", "/d/b")
        apply("move", "/d/c", [("DEVPATH_OLD", "/d/a")])
        let kept = udev.lines.compactMap { try? Event(jsonLine: $0) }
        #expect(kept.map { "\($0.type) \($0.key)" } == ["move /d/c"])

        // This run's removal forgets a device the earlier history knew; its add of another is kept.
        var earlier = CompactedHistory(source: .udev)
        let known = event(seq: 1, source: .udev, type: "add", key: "/d/b", data: EventData())
        line(known).withUnsafeBytes { earlier.apply(known, line: $0) }
        let merged = udev.merged(over: earlier).lines.compactMap { try? Event(jsonLine: $0) }
        #expect(merged.map(\.key) == ["/d/c"])
    }
}
