import Synchronization

/// The journal's readers that keep a stored position (forwarders, rules, named subscriptions), as retention
/// sees them: what they still need, so that retention spares it while the disk allows, and what they lost when
/// it could not, so that no loss goes unnamed.
///
/// Thread-safe: forwarders report from their own threads. A loss is counted at once and handed to `onLoss`,
/// which the daemon points at the loop's inbox: the `kevd`/`gap` event is published on the loop thread, in a
/// turn of its own, never from inside a sink that is still consuming another event.
public final class JournalConsumers: @unchecked Sendable {
    // @unchecked: everything mutable is behind `state`, except `needs`, which only the journal's owner thread (the
    // loop) touches: consumers register there (forwarders at start-up, rules on the loop) and retention and
    // status read them there. Their closures reach loop-confined objects (the rules engine), so they are not
    // Sendable and must not move to a lock that other threads take.
    public struct Loss: Sendable, Equatable {
        /// `forward:NAME`, `rule:NAME` or `subscription:NAME`: the `kevd`/`gap` event's key.
        public let consumer: String
        /// The first and last seq lost, inclusive.
        public let from: UInt64
        public let to: UInt64
        public var count: UInt64 { to >= from ? to - from + 1 : 0 }
    }

    public enum Report: Sendable, Equatable {
        /// Events deleted by retention before the consumer read them (a `kevd`/`gap` event).
        case loss(Loss)
        /// The consumer's stored position could not be read as it was (a `kevd`/`error` event): what was wrong
        /// and what it did instead.
        case position(consumer: String, message: String)
    }

    private var needs: [(id: Int, need: () -> UInt64?)] = []
    private var nextID = 0

    private struct State {
        var lost: [String: UInt64] = [:]
        var onReport: (@Sendable (Report) -> Void)? = nil
        /// Reports made before `onReport` was set (forwarders start first): handed over then.
        var early: [Report] = []
    }

    private let state = Mutex(State())
    static let earlyLimit = 1024

    public init() {}

    /// Adds a consumer's need (loop thread only): the lowest seq it still has to read (nil: nothing, or not
    /// known yet). Called by retention on the loop thread; it must be cheap and must not call back into this
    /// object. Returns a token for `remove`.
    @discardableResult
    public func register(_ need: @escaping () -> UInt64?) -> Int {
        nextID += 1
        needs.append((nextID, need))
        return nextID
    }

    /// Loop thread only, like `register`.
    public func remove(_ token: Int) {
        needs.removeAll { $0.id == token }
    }

    /// The lowest seq any consumer still needs, or nil when none needs anything.
    public func lowestNeeded() -> UInt64? {
        needs.compactMap { $0.need() }.min()
    }

    /// Where reports go (the daemon posts them to its loop as events). Reports made before this was set are
    /// handed to it now.
    public func onReport(_ report: @escaping @Sendable (Report) -> Void) {
        let early = state.withLock { state -> [Report] in
            state.onReport = report
            defer { state.early = [] }
            return state.early
        }
        early.forEach(report)
    }

    /// From any thread: `consumer` will never see seqs `from...to`; retention deleted them before it read them.
    public func lost(_ consumer: String, from: UInt64, to: UInt64) {
        guard to >= from else { return }
        let loss = Loss(consumer: consumer, from: from, to: to)
        send(.loss(loss)) { $0.lost[consumer, default: 0] += loss.count }
    }

    /// From any thread: `consumer`'s stored position was unreadable or damaged; `message` says what it did.
    public func positionProblem(_ consumer: String, _ message: String) {
        send(.position(consumer: consumer, message: message)) { _ in }
    }

    private func send(_ report: Report, _ update: (inout State) -> Void) {
        let onReport = state.withLock { state -> (@Sendable (Report) -> Void)? in
            update(&state)
            // Bounded: a journal nobody listens to (a benchmark's) must not collect reports for ever; the counts
            // above are kept regardless.
            if state.onReport == nil && state.early.count < Self.earlyLimit { state.early.append(report) }
            return state.onReport
        }
        onReport?(report)
    }

    /// Events lost per consumer since kevd started, by consumer name.
    public var lostCounts: [(consumer: String, events: UInt64)] {
        state.withLock { $0.lost.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    public func lostCount(_ consumer: String) -> UInt64 { state.withLock { $0.lost[consumer] ?? 0 } }
}
