import KevdEvent
import Testing

@testable import KevdDaemon

@Suite("daemon: the stats figures")
struct StatsTests {
    func event(_ source: String, seq: UInt64) -> Event {
        Event(
            seq: seq, id: EventID(high: 0, low: seq), time: WallTime(nanoseconds: 0), mono: 0,
            source: EventSource(source), type: "t", key: "k", data: EventData())
    }

    @Test("the counter counts each event under its source; known sources show 0, new ones are added in first-seen order")
    func counter() {
        let counter = EventCounter()
        var seq: UInt64 = 0
        for source in ["inotify", "emit", "inotify", "input", "acpi", "input"] {
            seq += 1
            counter.consume(event(source, seq: seq), line: UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let counts = Dictionary(uniqueKeysWithValues: zip(counter.sources, counter.counts))
        #expect(counts == ["inotify": 2, "udev": 0, "timer": 0, "signal": 0, "emit": 1, "kevd": 0, "input": 2, "acpi": 1])
        #expect(Array(counter.sources.suffix(2)) == ["input", "acpi"])
    }

    @Test("a snapshot's fields: totals and rates per source, then the fixed names status and kevd/stats share")
    func fields() {
        var inputs = StatsInputs()
        inputs.inotifyOverflows = 3
        inputs.rulesRunning = 2
        let snapshot = StatsSnapshot(
            uptimeSeconds: 10, intervalSeconds: 2,
            sources: [.init(name: "inotify", total: 40, perSecond: 5), .init(name: "emit", total: 1, perSecond: 0.5)],
            inputs: inputs, journalBytes: 4096, journalSegments: 1, fsyncCount: 7, fsyncSecondsTotal: 0.07,
            fsyncIntervalCount: 2, fsyncLastSeconds: 0.01, fsyncMaxSeconds: 0.02, fsyncMeanSeconds: 0.015,
            loopTurnMaxSeconds: 0.003, logLinesDropped: 4)
        let names = snapshot.fields.map(\.0)
        #expect(Array(names.prefix(6)) == ["uptime_seconds", "interval_seconds", "events_inotify", "events_emit", "rate_inotify", "rate_emit"])
        #expect(Set(names).count == names.count, "no name twice")
        let data = snapshot.eventData
        #expect(data["events_inotify"] == .int(40))
        #expect(data["rate_emit"] == .double(0.5))
        #expect(data["overflows_inotify"] == .int(3))
        #expect(data["rules_running"] == .int(2))
        #expect(data["loop_turn_max_seconds"] == .double(0.003))
        #expect(data["log_lines_dropped"] == .int(4))
        guard case .object(let members) = snapshot.json else {
            Issue.record("status's stats member is not an object")
            return
        }
        #expect(members.map(\.0) == names, "status and kevd/stats name the same figures in the same order")
    }
}
