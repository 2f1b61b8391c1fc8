import KevdEvent
import KevdKernel

/// A consumer of stamped events: the journal, the subscriber server, the rules engine, `--stdout`.
///
/// `consume` runs on the loop thread for every event, in seq order, and must not block; work that needs a
/// syscall should be batched and done in `endOfTurn`, which the loop calls once per wakeup. `line` is the
/// event's JSON line (newline included), encoded once by the pipeline for every sink; it is valid only during
/// the call.
public protocol EventSink: AnyObject {
    func consume(_ event: Event, line: UnsafeRawBufferPointer)
    func endOfTurn()
}

extension EventSink {
    public func endOfTurn() {}
}

/// Stamps drafts into events (seq, id, clocks) and hands each, in order, to every sink.
///
/// Sources only publish drafts; they know nothing about who consumes. Sinks are called in registration order,
/// so the journal (registered first) has appended an event before any subscriber or rule sees it.
///
/// A sink may publish from `consume` (the rules engine reports a refusal that way). Such a nested event is
/// stamped at once, so seqs follow publishing order, but it is delivered only after the current event has
/// reached every sink: the sinks after the publishing one still read the current event's line, and every sink
/// sees every event whole and in seq order.
public final class EventPipeline {
    public private(set) var nextSeq: UInt64
    public let idBase: EventIDBase
    private var sinks: [EventSink] = []
    /// The same sinks, called without retaining them: `sinks` keeps them alive. Calling through the existential
    /// retains and releases the sink around every call (even when it is stored `unowned(unsafe)`), and retaining
    /// an object a weak reference was ever taken to, such as the server, takes the runtime's slow path.
    private var calls: [UnretainedSink] = []
    /// The current event's JSON line; reused, so encoding allocates nothing once it has grown.
    private let line = ByteBuffer(capacity: 4096)
    private var timeCache = RFC3339SecondCache()
    /// True while an event is being handed to the sinks: a publish then is nested, and waits in `nested`.
    private var delivering = false
    /// Events published from inside `consume`, stamped and waiting for delivery in seq order. Empty, and not
    /// touched, on the common path.
    private var nested: [Event] = []

    public init(firstSeq: UInt64 = 1, idBase: EventIDBase) {
        nextSeq = firstSeq
        self.idBase = idBase
    }

    public func add<Sink: EventSink>(sink: Sink) {
        sinks.append(sink)
        calls.append(UnretainedSink(sink))
    }

    @discardableResult
    public func publish(_ draft: EventDraft) -> Event {
        publish(source: draft.source, type: draft.type, key: draft.key, data: draft.data)
    }

    /// The same, for a source's hot path: the parts are consumed, so they move into the event rather than being
    /// retained once more for it.
    @discardableResult
    public func publish(
        source: consuming EventSource, type: consuming String, key: consuming String, data: consuming EventData
    ) -> Event {
        let wall = Clock.realtimeNanoseconds()
        let mono = Clock.monotonicNanoseconds()
        let seq = nextSeq
        nextSeq += 1
        let event = Event(
            seq: seq, id: EventID(unixMilliseconds: UInt64(max(wall, 0) / 1_000_000), seq: seq, base: idBase),
            time: WallTime(nanoseconds: wall), mono: mono, source: source, type: type, key: key, data: data)
        if delivering {
            nested.append(event)
            return event
        }
        delivering = true
        deliver(event)
        if !nested.isEmpty { deliverNested() }
        delivering = false
        return event
    }

    /// Encodes `event`'s line once and hands both to every sink.
    private func deliver(_ event: Event) {
        line.removeAll(shrinkAbove: 1 << 20)
        JSONLineEncoder.append(event, to: line, timeCache: &timeCache)
        let bytes = line.bytes
        for call in calls { call.consume(call.sink, event, bytes) }
    }

    /// Delivers what sinks published meanwhile, oldest first; what they publish in turn joins the end.
    private func deliverNested() {
        var next = 0
        while next < nested.count {
            deliver(nested[next])
            next += 1
        }
        nested.removeAll(keepingCapacity: true)
    }

    public func endOfTurn() {
        for sink in sinks { sink.endOfTurn() }
    }

    /// Convenience for kevd's own events (`kevd`/`started`, `error`, `overflow`…).
    @discardableResult
    public func publishKevd(_ type: String, component: String, _ data: EventData = EventData()) -> Event {
        publish(EventDraft(source: .kevd, type: type, key: component, data: data))
    }
}

/// A sink and its per-event call, made through `Unmanaged._withUnsafeGuaranteedRef` so the sink is not
/// retained: the closure captures nothing (its context is null), and the sink's concrete type is fixed when it
/// is added.
private struct UnretainedSink {
    let sink: Unmanaged<AnyObject>
    let consume: (Unmanaged<AnyObject>, Event, UnsafeRawBufferPointer) -> Void

    init<Sink: EventSink>(_ sink: Sink) {
        self.sink = Unmanaged.passUnretained(sink)
        consume = { sink, event, line in
            sink._withUnsafeGuaranteedRef { unsafeDowncast($0, to: Sink.self).consume(event, line: line) }
        }
    }
}
