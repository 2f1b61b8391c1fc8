import Glibc
import KevdEvent
import KevdKernel
import Logging
import Testing

@testable import KevdReactor

/// A sink that publishes from its own `endOfTurn`, `times` times in all (an overflow report, say).
final class LatePublishingSink: EventSink {
    unowned let pipeline: EventPipeline
    var remaining: Int
    init(pipeline: EventPipeline, times: Int) {
        self.pipeline = pipeline
        remaining = times
    }
    func consume(_ event: Event, line: UnsafeRawBufferPointer) {}
    func endOfTurn() {
        guard remaining > 0 else { return }
        remaining -= 1
        pipeline.publishKevd("late", component: "test")
    }
}

/// One turn end for the whole pipeline (`EventPipeline.finishTurn`): what a sink or a turn-end step publishes is
/// written out in the same turn, and a sink that publishes every round cannot hold the loop.
@Suite("turn end")
struct TurnEndTests {
    /// A pipeline whose first sink records the seqs each `endOfTurn` round found unwritten, as the journal writes them.
    final class WritingSink: EventSink {
        var unwritten: [UInt64] = []
        var rounds: [[UInt64]] = []
        func consume(_ event: Event, line: UnsafeRawBufferPointer) { unwritten.append(event.seq) }
        func endOfTurn() {
            rounds.append(unwritten)
            unwritten.removeAll()
        }
    }

    @Test("what a sink publishes from endOfTurn is written out by the same turn end, without another wakeup")
    func latePublishWrittenSameTurn() throws {
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let writer = WritingSink()
        pipeline.add(sink: writer)
        pipeline.add(sink: LatePublishingSink(pipeline: pipeline, times: 1))
        pipeline.publishKevd("one", component: "test")
        #expect(pipeline.finishTurn() == false)
        // Round one wrote seq 1; the late sink then published seq 2, and round two wrote it.
        #expect(writer.rounds == [[1], [2]])
        #expect(writer.unwritten.isEmpty)
    }

    @Test("a turn-end step's events are written before the next step runs")
    func stepsInOrder() throws {
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let writer = WritingSink()
        pipeline.add(sink: writer)
        var seenBySecondStep: [[UInt64]] = []
        pipeline.addTurnEndStep { pipeline.publishKevd("from-step-one", component: "test") }
        pipeline.addTurnEndStep { seenBySecondStep = writer.rounds }
        pipeline.publishKevd("one", component: "test")
        #expect(pipeline.finishTurn() == false)
        #expect(seenBySecondStep == [[1], [2]])
        #expect(writer.rounds == [[1], [2]])
    }

    @Test("a sink that publishes every round is bounded: the turn end stops after maxTurnEndRounds and asks for a turn")
    func boundedRounds() throws {
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let writer = WritingSink()
        pipeline.add(sink: writer)
        let late = LatePublishingSink(pipeline: pipeline, times: 1000)
        pipeline.add(sink: late)
        #expect(pipeline.finishTurn() == true, "stopped at its bound with an event not yet written")
        #expect(writer.rounds.count == EventPipeline.maxTurnEndRounds)
        #expect(late.remaining == 1000 - EventPipeline.maxTurnEndRounds)
        // Nothing is lost: the event left over is written by the next turn's first round.
        #expect(writer.unwritten.count == 1)
    }

    @Test("past the bound the loop takes another turn at once, and ready fds are still served in it")
    func requestTurnDoesNotBlock() throws {
        let loop = try EventLoop(logger: Logger(label: "test"))
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let writer = WritingSink()
        pipeline.add(sink: writer)
        let late = LatePublishingSink(pipeline: pipeline, times: 2 * EventPipeline.maxTurnEndRounds)
        pipeline.add(sink: late)
        pipeline.finishTurns(of: loop)
        let ready = try EventFD()
        var served = 0
        try loop.register(fd: ready.fd.rawValue, events: .readable, priority: .kernelInput) { _ in
            _ = try? ready.drain()
            served += 1
        }
        ready.signal()
        // First turn: the fd, then the turn end stops at its bound.
        #expect(try loop.runOnce(timeoutMilliseconds: 2000) == 1)
        #expect(served == 1)
        // A second turn: the fd signalled again is served first, then the turn end goes on.
        ready.signal()
        #expect(try loop.runOnce(timeoutMilliseconds: 2000) == 1)
        #expect(served == 2)
        #expect(late.remaining == 0)
        // One more turn for the last event, without waiting for the 2 s: the turn was asked for.
        let asked = Clock.monotonicNanoseconds()
        #expect(try loop.runOnce(timeoutMilliseconds: 2000) == 0)
        #expect(Clock.monotonicNanoseconds() - asked < 1_000_000_000, "the requested turn waited")
        #expect(writer.unwritten.isEmpty)
        // Nothing left: the loop waits again (here 50 ms, nothing ready).
        let start = Clock.monotonicNanoseconds()
        #expect(try loop.runOnce(timeoutMilliseconds: 50) == 0)
        #expect(Clock.monotonicNanoseconds() - start >= 40_000_000)
    }
}
