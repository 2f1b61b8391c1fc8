import KevdEvent
import KevdKernel
import Testing

@testable import KevdReactor

/// A sink that publishes while it consumes, as the rules engine does when it refuses a run: for every event of
/// type `trigger` it publishes `answers` follow-ups, each with a payload big enough to make the pipeline's line
/// buffer grow (a reallocation would leave a sink after this one reading freed memory), and one of them a
/// trigger again, one level deep.
final class PublishingSink: EventSink {
    unowned let pipeline: EventPipeline
    var seen: [UInt64] = []
    init(pipeline: EventPipeline) { self.pipeline = pipeline }

    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        seen.append(event.seq)
        guard event.type == "trigger" || event.type == "trigger.again" else { return }
        for answer in 0..<3 {
            var data = EventData()
            data.append("cause", .int(Int64(event.seq)))
            data.append("padding", String(repeating: "x", count: 6000 + answer))
            let again = event.type == "trigger" && answer == 1
            pipeline.publish(EventDraft(source: EventSource("test"), type: again ? "trigger.again" : "answer", key: "k", data: data))
        }
    }
}

@Suite("event pipeline")
struct EventPipelineTests {
    @Test("a sink that publishes while it consumes: every later sink sees every event's exact line, in seq order, gap-free")
    func nestedPublishesAreQueued() throws {
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let publisher = PublishingSink(pipeline: pipeline)
        let recorder = RecordingSink()
        pipeline.add(sink: publisher)
        pipeline.add(sink: recorder)

        var returned: [UInt64] = []
        for i in 0..<10 {
            var data = EventData()
            data.append("i", i)
            returned.append(pipeline.publish(EventDraft(source: EventSource("test"), type: i % 2 == 0 ? "trigger" : "plain", key: "k", data: data)).seq)
        }

        // 10 events; 5 triggers publish 3 answers each, one of which is a trigger again publishing 3 more.
        let expectedCount = 10 + 5 * 3 + 5 * 3
        #expect(recorder.events.count == expectedCount)
        #expect(recorder.events.map(\.seq) == Array(1...UInt64(expectedCount)))
        #expect(publisher.seen == recorder.events.map(\.seq))
        #expect(pipeline.nextSeq == UInt64(expectedCount) + 1)
        // Each publish returned its own seq, and the 6 events nested in a trigger took the seqs right after it.
        #expect(returned == [1, 8, 9, 16, 17, 24, 25, 32, 33, 40])
        for (event, line) in zip(recorder.events, recorder.lines) {
            let expected = ByteBuffer(capacity: 64)
            JSONLineEncoder.append(event, to: expected)
            // Compared as one flag: the lines are kilobytes long, and the start says which event it was.
            let same = line == Array(expected.bytes)
            #expect(same, "seq \(event.seq) was handed \(String(decoding: line.prefix(60), as: UTF8.self))…")
        }
        // A follow-up comes after its cause.
        for event in recorder.events where event.type != "trigger" && event.type != "plain" {
            guard case .int(let cause)? = event.data["cause"] else {
                Issue.record("seq \(event.seq) has no cause")
                continue
            }
            #expect(UInt64(cause) < event.seq)
        }
    }

    @Test("publishing from endOfTurn (outside consume) still delivers at once")
    func publishOutsideConsume() throws {
        let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
        let recorder = RecordingSink()
        pipeline.add(sink: recorder)
        pipeline.publishKevd("one", component: "test")
        #expect(recorder.events.map(\.seq) == [1])
        pipeline.publishKevd("two", component: "test")
        #expect(recorder.events.map(\.seq) == [1, 2])
    }
}
