import KevdEvent
import KevdKernel

/// A consumer of stamped events: the journal, the subscriber server, the rules engine, `--stdout`.
///
/// `consume` runs on the loop thread for every event, in seq order, and must not block; work that needs a
/// syscall should be batched and done in `endOfTurn`, which the loop calls at least once per wakeup (again in
/// the same turn when events were published after it: `EventPipeline.finishTurn`). A sink may publish from
/// `endOfTurn`: the event is written out by the same turn. `line` is the
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
/// sees every event whole and in seq order. What a sink publishes from `endOfTurn`, or a turn-end step from
/// the rules or the daemon, is written out by the same turn's `finishTurn`.
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

    /// One round of every sink's `endOfTurn` (the journal writes, subscribers are sent to). `finishTurn` is the
    /// loop's turn end; this is one step of it, for tests that drive sinks without a loop.
    public func endOfTurn() {
        endedThrough = nextSeq
        for sink in sinks { sink.endOfTurn() }
    }

    // MARK: The turn's end

    /// Work after the sinks' turn end, once per turn, in order (the daemon's journal-failure watch, the rules'
    /// dispatch): each may publish, and what it publishes goes to the journal and subscribers before the next
    /// step runs.
    private var turnEndSteps: [() -> Void] = []
    /// `nextSeq` when the sinks last began their turn end: events from here on are not yet written out.
    private var endedThrough: UInt64 = 0
    /// Rounds of the sinks' turn end `finishTurn` makes at most, for what the sinks publish from their own
    /// `endOfTurn` (an overflow report, a damage report). A sink that publishes every round cannot keep the loop
    /// from its fds: after this many, the rest waits for the next turn, which the loop takes without blocking.
    public static let maxTurnEndRounds = 8

    /// Adds a step to every turn's end, after the sinks' first round (see `finishTurn`).
    public func addTurnEndStep(_ step: @escaping () -> Void) {
        turnEndSteps.append(step)
    }

    /// The turn's end, once per loop turn: the sinks write out what the turn published; then each turn-end step
    /// runs, and what it published is written out before the next; then the sinks end the turn again while
    /// they themselves published something, up to `maxTurnEndRounds` rounds. Publishing from a sink or a step
    /// therefore never needs another wakeup. Returns true when it stopped at the bound with events not yet
    /// written out: the caller asks for another turn at once (`EventLoop.requestTurn`).
    @discardableResult
    public func finishTurn() -> Bool {
        endOfTurn()
        for step in turnEndSteps {
            step()
            if nextSeq != endedThrough { endOfTurn() }
        }
        var rounds = 1
        while nextSeq != endedThrough && rounds < Self.maxTurnEndRounds {
            endOfTurn()
            rounds += 1
        }
        return nextSeq != endedThrough
    }

    /// Makes `finishTurn` `loop`'s turn-end work, and asks the loop for another turn when it stopped at its bound.
    public func finishTurns(of loop: EventLoop) {
        loop.onTurnEnd { [unowned self, unowned loop] in
            if self.finishTurn() { loop.requestTurn() }
        }
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
