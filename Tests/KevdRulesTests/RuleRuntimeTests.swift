import KevdEvent
import KevdSpec
import Testing

@testable import KevdRules

private func event(_ seq: UInt64, key: String, _ data: EventData = EventData()) -> Event {
    Event(
        seq: seq, id: EventID(unixMilliseconds: 1, seq: seq, base: EventIDBase(randA: 1, randB: 2)),
        time: WallTime(nanoseconds: 1_700_000_000_000_000_000), mono: seq, source: EventSource("emit"), type: "t",
        key: key, data: data)
}

private func spec(concurrency: Int = 1, run: [RunArgument] = [RunArgument(parts: [.literal("/bin/true")])]) -> RuleSpec {
    var spec = RuleSpec(name: "r", file: "/r.toml", line: 1, match: [], run: run, program: "/bin/true")
    spec.concurrency = concurrency
    return spec
}

@Suite("rule queues and positions")
struct RuleRuntimeTests {
    @Test("jobs for one key start one at a time in seq order; other keys fill the free slots")
    func perKeyOrder() throws {
        let rule = RuleRuntime(spec: spec(concurrency: 2), filter: try EventFilter(terms: []), seen: 0)
        for (seq, key) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] as [(UInt64, String)] {
            rule.hold(seq)
            rule.enqueue(Job(event: event(seq, key: key), line: [], heldSeq: seq))
        }
        let first = try #require(rule.nextStartable())
        rule.running += 1
        let second = try #require(rule.nextStartable())
        rule.running += 1
        #expect([first.event.seq, second.event.seq] == [1, 3])
        #expect(rule.nextStartable() == nil)  // Both slots busy.
        rule.running -= 1
        #expect(rule.nextStartable() == nil)  // A slot is free, but only key a has work and a still runs.
        rule.release(1)
        rule.keyFreed("a")
        #expect(rule.nextStartable()?.event.seq == 2)
    }

    @Test("the position stays below the oldest unfinished job, whatever order jobs finish in")
    func position() throws {
        let rule = RuleRuntime(spec: spec(), filter: try EventFilter(terms: []), seen: 0)
        for seq: UInt64 in [3, 5, 8] { rule.hold(seq) }
        rule.seen = 9
        #expect(rule.position == 2)
        rule.release(5)
        #expect(rule.position == 2)
        rule.release(3)
        #expect(rule.position == 7)
        rule.release(8)
        #expect(rule.position == 9)
    }
}

@Suite("run command")
struct RunCommandTests {
    @Test("placeholders fill exactly their own argument, whatever the value holds")
    func arguments() throws {
        var data = EventData()
        data.append("path", "/srv/a b/$(x)\n-rf")
        data.append("n", 42)
        let run = [
            RunArgument(parts: [.literal("/bin/echo")]),
            RunArgument(parts: [.field(.data("path"))]),
            RunArgument(parts: [.literal("--n="), .field(.data("n")), .literal("{}")]),
            RunArgument(parts: [.field(.rule), .literal(":"), .field(.seq), .literal(":"), .field(.key)]),
        ]
        let args = try RunCommand.arguments(spec(run: run), for: event(7, key: "k", data))
        #expect(args == ["/bin/echo", "/srv/a b/$(x)\n-rf", "--n=42{}", "r:7:k"])
    }

    @Test("a placeholder the event cannot fill is an error naming it")
    func missingField() {
        let run = [RunArgument(parts: [.literal("/bin/echo")]), RunArgument(parts: [.field(.data("DEVNAME"))])]
        #expect(throws: RunCommand.Unfillable.self) { try RunCommand.arguments(spec(run: run), for: event(1, key: "k")) }
        do {
            _ = try RunCommand.arguments(spec(run: run), for: event(1, key: "k"))
        } catch {
            #expect(error.description == "run[1] needs {data.DEVNAME}, which this event does not have")
        }
    }

    @Test("data names become environment names: upper case, anything but letters and digits an underscore")
    func sanitizedNames() {
        #expect(RunCommand.sanitized("ID_FS.TYPE") == "ID_FS_TYPE")
        #expect(RunCommand.sanitized("dev-name") == "DEV_NAME")
        #expect(RunCommand.sanitized("é") == "__")
        var data = EventData()
        data.append("a.b", "first")
        data.append("a-b", "second")
        data.append("nul", "x\u{0}y")
        let triggering = event(3, key: "k", data)
        let env = RunCommand.environment(
            .init(spec(), socket: "/s"), for: triggering, eventID: triggering.id.string, depth: 2, attempt: 1)
        #expect(env.contains("KEVD_DATA_A_B=first"))
        #expect(!env.contains("KEVD_DATA_A_B=second"))
        #expect(!env.contains { $0.hasPrefix("KEVD_DATA_NUL") })
        #expect(env.contains("KEVD_DEPTH=2"))
    }

    @Test("a run's whole environment: the fixed PATH, the KEVD_ variables in their order, then the data; a value with a NUL byte is left out")
    func wholeEnvironment() {
        var data = EventData()
        data.append("dir", "/tmp")
        data.append("n", 7)
        let triggering = event(42, key: "k", data)
        let fixed = RunCommand.FixedEnvironment(spec(), socket: "/run/kevd.sock")
        let env = RunCommand.environment(fixed, for: triggering, eventID: triggering.id.string, depth: 1, attempt: 3)
        #expect(env == [
            "PATH=" + RuleSpec.fixedPATH, "KEVD_EVENT_ID=" + triggering.id.string, "KEVD_SEQ=42",
            "KEVD_TIME=" + triggering.time.rfc3339, "KEVD_SOURCE=emit", "KEVD_TYPE=t", "KEVD_KEY=k", "KEVD_RULE=r",
            "KEVD_SOCKET=/run/kevd.sock", "KEVD_DEPTH=1", "KEVD_ATTEMPT=3", "KEVD_DATA_DIR=/tmp", "KEVD_DATA_N=7",
        ])
        let nulKey = event(43, key: "a\u{0}b")
        let withoutKey = RunCommand.environment(fixed, for: nulKey, eventID: nulKey.id.string, depth: 1, attempt: 1)
        #expect(!withoutKey.contains { $0.hasPrefix("KEVD_KEY=") })
        #expect(withoutKey.count == 10)
    }

    @Test("an output tail keeps the last bytes")
    func outputTail() {
        var tail = OutputTail(limit: 8)
        for chunk in ["hello ", "world, ", "and more"] {
            Array(chunk.utf8).withUnsafeBytes { tail.append($0) }
        }
        #expect(tail.text == "and more")
        #expect(tail.truncated)
        #expect(tail.total == 21)
    }
}
