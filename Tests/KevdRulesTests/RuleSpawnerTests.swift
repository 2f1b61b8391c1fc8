import Foundation
import Glibc
import KevdEvent
import KevdKernel
import KevdSpec
import Testing

@testable import KevdRules

private func job(_ seq: UInt64, key: String) -> Job {
    let event = Event(
        seq: seq, id: EventID(unixMilliseconds: 1, seq: seq, base: EventIDBase(randA: 1, randB: 2)),
        time: WallTime(nanoseconds: 1_700_000_000_000_000_000), mono: seq, source: EventSource("emit"), type: "t",
        key: key, data: EventData())
    return Job(event: event, line: [], heldSeq: seq)
}

/// Reads a non-blocking fd to its end of file, waiting with poll (10 s at most).
private func readToEnd(_ fd: Int32) -> [UInt8]? {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, 100)
        let n = read(fd, &buffer, buffer.count)
        if n == 0 { return out }
        if n > 0 { out += buffer[0..<n] }
    }
    return nil
}

@Suite("rules: starting runs off the loop")
struct RuleSpawnerTests {
    @Test("a rule starts no job whose event the journal has not written, and starts it in order once written")
    func waitsForTheJournal() {
        var spec = RuleSpec(name: "r", file: "/r.toml", line: 1, match: [], run: [RunArgument(parts: [.literal("/bin/true")])], program: "/bin/true")
        spec.concurrency = 4
        let rule = RuleRuntime(spec: spec, filter: try! EventFilter(terms: []), seen: 0)
        for (seq, key) in [(5, "a"), (6, "b"), (7, "a")] {
            rule.hold(UInt64(seq))
            rule.enqueue(job(UInt64(seq), key: key))
        }
        #expect(rule.hasStartable)
        #expect(!rule.hasStartable(writtenThrough: 4))
        #expect(rule.nextStartable(writtenThrough: 4) == nil)
        #expect(rule.queued == 3, "a held job stays queued")
        #expect(rule.nextStartable(writtenThrough: 5)?.event.seq == 5)
        #expect(rule.nextStartable(writtenThrough: 5) == nil, "seq 6 is not written yet")
        #expect(rule.nextStartable(writtenThrough: 7)?.event.seq == 6)
        #expect(rule.nextStartable(writtenThrough: 7) == nil, "key a is busy with seq 5")
        rule.keyFreed("a")
        #expect(rule.nextStartable(writtenThrough: 7)?.event.seq == 7)
    }

    @Test("the spawner thread starts the process with the event on stdin, reports its pid, and closes the child's pipe ends")
    func startsAndReports() throws {
        let reported = DispatchSemaphore(value: 0)
        let spawner = try RuleSpawner(notify: { reported.signal() })
        defer { spawner.stop() }
        let output = try Pipes.make()
        let errors = try Pipes.make()
        let request = SpawnRequest(path: "/bin/sh", arguments: ["sh", "-c", "cat; echo err >&2"], environment: [])
        spawner.submit(SpawnOrder(token: 1, request: request, stdin: Array("{\"seq\":1}\n".utf8), stdoutWrite: output.write, stderrWrite: errors.write))
        #expect(reported.wait(timeout: .now() + 10) == .success)
        let outcomes = spawner.takeOutcomes()
        try #require(outcomes.count == 1)
        #expect(outcomes.first?.token == 1)
        guard case .started(let pid)? = outcomes.first?.result else {
            Issue.record("not started: \(String(describing: outcomes.first?.result))")
            return
        }
        // End of file on both pipes: the spawner closed its copies of the write ends, only the child had them.
        #expect(readToEnd(output.read.rawValue) == Array("{\"seq\":1}\n".utf8))
        #expect(readToEnd(errors.read.rawValue) == Array("err\n".utf8))
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(status == 0)
    }

    @Test("a start that fails is reported as failed, in submission order, with the failed step")
    func reportsFailures() throws {
        let reported = DispatchSemaphore(value: 0)
        let spawner = try RuleSpawner(notify: { reported.signal() })
        defer { spawner.stop() }
        var pipes: [(read: OwnedFD, write: OwnedFD)] = []
        for (token, path) in [(UInt64(1), "/no/such/program"), (2, "/bin/true")] {
            let output = try Pipes.make()
            let errors = try Pipes.make()
            pipes += [output, errors]
            spawner.submit(SpawnOrder(
                token: token, request: SpawnRequest(path: path, arguments: [path], environment: []), stdin: [],
                stdoutWrite: output.write, stderrWrite: errors.write))
        }
        var outcomes: [SpawnOutcome] = []
        let deadline = Date().addingTimeInterval(10)
        while outcomes.count < 2 && Date() < deadline {
            _ = reported.wait(timeout: .now() + 1)
            outcomes += spawner.takeOutcomes()
        }
        #expect(outcomes.map(\.token) == [1, 2])
        guard outcomes.count == 2 else { return }
        if case .failed(let error) = outcomes[0].result {
            #expect(error.contains("execve(/no/such/program)") && error.contains("No such file"), "\(error)")
        } else {
            Issue.record("a missing program started: \(outcomes[0].result)")
        }
        if case .started(let pid) = outcomes[1].result { _ = waitpid(pid, nil, 0) } else { Issue.record("\(outcomes[1].result)") }
        // The failed start's pipes reach end of file too: nothing holds their write ends.
        #expect(readToEnd(pipes[0].read.rawValue) == [])
    }
}
