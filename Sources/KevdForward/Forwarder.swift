import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import KevdSpec
import Logging
import Synchronization

/// One `[[forward]]`: a thread that reads the journal from its stored position and publishes each event to NATS
/// JetStream with `Nats-Msg-Id` set to the event id, keeping up to `max_in_flight` publishes unacknowledged.
///
/// The position only moves over the contiguous prefix of acknowledged events, and is stored (a whole file,
/// synced) every `storeInterval`. After any failure (a refused publish, a lost acknowledgement, a dropped
/// connection) the forwarder waits until every outstanding publish is resolved, then reads again from the
/// position: events acknowledged after the failed one are published again, and JetStream's duplicate window
/// collapses them. A kevd restart resumes the same way from the stored position.
///
/// Only durable journal records are forwarded: a record past the journal's durable seq could be lost by an
/// operating-system crash and its seq given to a different event, and a stream must never hold an event the
/// journal does not.
final class Forwarder: ForwardTargetDelegate, @unchecked Sendable {
    // @unchecked: `state` is behind a Mutex and is all that libnats's threads and the loop touch (through
    // `published`, `connectionLost`, `durableAdvanced`, `snapshot`); `reader`, `publisher`, `held`, `subjects`,
    // `lastStore`, `lastLoggedError` and `thread` belong to the forwarder's thread alone (`thread` is set by `start`
    // and joined by `stop`, on the loop's thread, before and after the forwarder's thread runs); the rest is
    // immutable. The compiler cannot see the thread ownership, hence unchecked.
    /// What the forwarder is doing; its raw value is the `state` that `status` shows.
    enum Phase: String, Sendable {
        case starting, connecting, forwarding, retrying, disconnected, stopped
    }

    struct Snapshot: Sendable {
        var phase = Phase.starting
        var connectedURL: String? = nil
        /// The last seq such that every event up to it is acknowledged (or filtered out): `acks.position`, copied
        /// when the snapshot is taken.
        var position: UInt64 = 0
        var stored: UInt64 = 0
        var inFlight = 0
        var published: UInt64 = 0
        var acknowledged: UInt64 = 0
        var duplicates: UInt64 = 0
        var skipped: UInt64 = 0
        var failures: UInt64 = 0
        /// Events journal retention deleted before they were forwarded (each range a `kevd`/`gap`).
        var lost: UInt64 = 0
        var lastError: String? = nil
        var lastErrorTime: Int64? = nil
    }

    struct State {
        var snapshot = Snapshot()
        /// What has been read and published, and how far everything is acknowledged (AcknowledgedPrefix.swift).
        var acks = AcknowledgedPrefix(position: 0)
        /// A publish failed: publish nothing more until all in flight are resolved, then read from `position`.
        var failed = false
        /// Counts connections; reports from an older one are ignored.
        var generation: UInt64 = 0
        /// The connection closed: replace it and publish again from `position`.
        var lost = false
        var durable: UInt64 = 0
        var sleeping = false
        /// While sleeping, what is worth a wakeup besides a failure, a lost connection or a stop.
        var wakeInFlightAtMost = -1
        var wakeDurableAbove = UInt64.max
        var stopping = false
    }

    let spec: ForwardSpec
    /// The machine and boot of this kevd: `Kevd-Machine-Id` and `Kevd-Boot-Id` on every message.
    let identity: MachineIdentity
    let positionFile: String
    private let journalDirectory: String
    private let filter: EventFilter?
    let logger: Logger
    /// Where retention asks what this forwarder still needs, and where it reports what it lost.
    let consumers: JournalConsumers
    var consumerName: String { "forward:" + spec.name }
    let state = Mutex(State())
    private let wakeup: EventFD
    private var thread: WorkerThread? = nil

    private var reader: JournalReader? = nil
    private var publisher: ForwardTarget? = nil
    /// A record read past the durable seq, kept until the journal has synced it.
    private var held: (seq: UInt64, payload: [UInt8])? = nil
    private var subjects: SubjectBuilder
    var lastStore: UInt64 = 0
    private var lastLoggedError = ""

    static let storeIntervalNanoseconds: UInt64 = 50_000_000

    init(spec: ForwardSpec, stateDirectory: String, journalDirectory: String, host: String, durable: UInt64,
         consumers: JournalConsumers, identity: MachineIdentity, logger: Logger) throws
    {
        self.spec = spec
        self.identity = identity
        self.consumers = consumers
        let directory = stateDirectory + "/forward"
        if mkdir(directory, 0o750) != 0 && errno != EEXIST {
            throw SyscallError(call: "mkdir(\(directory))", errno: .init(rawValue: errno))
        }
        positionFile = directory + "/" + spec.name
        self.journalDirectory = journalDirectory
        subjects = SubjectBuilder(template: spec.subject, host: host)
        filter = spec.filter.isEmpty ? nil : try EventFilter(terms: spec.filter)
        var logger = logger
        logger[metadataKey: "forward"] = "\(spec.name)"
        self.logger = logger
        wakeup = try EventFD()
        let stored = Self.loadPosition(positionFile, reportingTo: consumers, as: "forward:" + spec.name)
        state.withLock { state in
            state.durable = durable
            state.acks = AcknowledgedPrefix(position: stored)
            state.snapshot.stored = stored
        }
    }

    /// Throws when the thread cannot start (`pthread_create` failed: a thread or process limit).
    func start() throws {
        thread = try WorkerThread(name: "kevd-fwd-" + spec.name) { [self] in run() }
    }

    /// Waits for what is in flight (a few seconds at most), stores the position and disconnects. Blocks: call it
    /// after the loop has stopped.
    func stop() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
        thread?.join()
    }

    /// From any thread: the journal is durable up to `seq`.
    func durableAdvanced(_ seq: UInt64) {
        let wake = state.withLock { state -> Bool in
            guard seq > state.durable else { return false }
            state.durable = seq
            guard state.sleeping, seq > state.wakeDurableAbove else { return false }
            state.sleeping = false
            return true
        }
        if wake { wakeup.signal() }
    }

    var snapshot: Snapshot {
        state.withLock { state in
            var snapshot = state.snapshot
            snapshot.position = state.acks.position
            return snapshot
        }
    }

    // MARK: ForwardTargetDelegate (the target's threads: libnats's)

    func published(seq: UInt64, generation: UInt64, error: String?, duplicate: Bool) {
        let wake = state.withLock { state -> Bool in
            guard generation == state.generation else { return false }
            guard state.acks.resolve(seq, failed: error != nil) else { return false }
            state.snapshot.inFlight -= 1
            if let error {
                state.failed = true
                state.snapshot.failures += 1
                state.snapshot.lastError = "publish of seq \(seq): \(error)"
                state.snapshot.lastErrorTime = Clock.realtimeNanoseconds()
            } else {
                state.snapshot.acknowledged += 1
                if duplicate { state.snapshot.duplicates += 1 }
            }
            guard state.sleeping, error != nil || state.snapshot.inFlight <= state.wakeInFlightAtMost else { return false }
            state.sleeping = false
            return true
        }
        if wake { wakeup.signal() }
    }

    func connectionLost(generation: UInt64) {
        state.withLock { state in
            guard generation == state.generation else { return }
            state.lost = true
            state.sleeping = false
            state.snapshot.failures += 1
            state.snapshot.phase = .disconnected
            state.snapshot.lastError = "connection to \(state.snapshot.connectedURL ?? "the server") lost"
            state.snapshot.lastErrorTime = Clock.realtimeNanoseconds()
        }
        wakeup.signal()
    }

    // MARK: The forwarder's thread

    private func run() {
        let initialBackoff: UInt64 = 100_000_000
        let maxBackoff: UInt64 = 5_000_000_000
        var backoff = initialBackoff
        var positionAtFailure: UInt64 = 0
        while !state.withLock({ $0.stopping }) {
            if publisher != nil && (state.withLock({ $0.lost }) || publisher?.isClosed == true) {
                let position = state.withLock { $0.acks.position }
                if position > positionAtFailure { backoff = initialBackoff }
                positionAtFailure = position
                logger.warning("connection lost; reconnecting", metadata: ["position": "\(position)"])
                disconnect()
                sleep(nanoseconds: backoff)
                backoff = min(backoff * 2, maxBackoff)
                continue
            }
            if publisher == nil {
                do {
                    try connect()
                } catch {
                    record(error: "\(error)", phase: .connecting)
                    // Once per distinct error, not once per retry: an outage would fill the log.
                    if "\(error)" != lastLoggedError {
                        lastLoggedError = "\(error)"
                        logger.warning("cannot forward; retrying", metadata: ["error": "\(error)"])
                    }
                    sleep(nanoseconds: backoff)
                    backoff = min(backoff * 2, maxBackoff)
                    continue
                }
            }
            var waitFor = WaitFor.anything
            let (failed, inFlight, position) = state.withLock { ($0.failed, $0.snapshot.inFlight, $0.acks.position) }
            if failed {
                waitFor = .allResolved
                if inFlight == 0 {
                    // Progress since the last failure: the trouble was passing, start backing off afresh.
                    if position > positionAtFailure { backoff = initialBackoff }
                    positionAtFailure = position
                    do {
                        try rewind()
                    } catch {
                        record(error: "journal: \(error)", phase: .retrying)
                    }
                    sleep(nanoseconds: backoff)
                    backoff = min(backoff * 2, maxBackoff)
                    continue
                }
            } else if publisher?.isConnected == true {
                do {
                    waitFor = try publishAvailable()
                } catch {
                    record(error: "journal: \(error)", phase: .retrying)
                    sleep(nanoseconds: maxBackoff)
                    continue
                }
            }
            storePosition(force: false)
            waitForWork(waitFor)
        }
        finish()
    }

    private func connect() throws {
        let generation = state.withLock { state -> UInt64 in
            state.snapshot.phase = .connecting
            state.lost = false
            // A new number per attempt: the closing of a failed attempt's connection must not count against this.
            state.generation += 1
            return state.generation
        }
        let publisher = try ForwardTargets.connect(spec: spec, identity: identity, delegate: self, generation: generation)
        let note = try publisher.ensureStream(spec)
        if reader == nil { reader = try JournalReader(directory: journalDirectory) }
        self.publisher = publisher
        let url = publisher.connectedURL
        let position = state.withLock { state -> UInt64 in
            state.snapshot.connectedURL = url
            state.snapshot.phase = .forwarding
            return state.acks.position
        }
        try seek(after: position)
        lastLoggedError = ""
        logger.info("forwarding", metadata: ["url": "\(url ?? "-")", "stream": "\(note)", "from_seq": "\(position + 1)"])
    }

    /// Drops the connection and forgets what was in flight on it: whatever was not acknowledged is published
    /// again on the next connection, from the position.
    private func disconnect() {
        publisher = nil
        state.withLock { state in
            state.generation += 1
            state.acks.rewind()
            state.failed = false
            state.lost = false
            state.snapshot.inFlight = 0
        }
    }

    /// After a failure, once nothing is in flight: read again from the first unacknowledged event.
    private func rewind() throws {
        let position = state.withLock { state -> UInt64 in
            state.acks.rewind()
            state.failed = false
            state.snapshot.phase = .retrying
            return state.acks.position
        }
        try seek(after: position)
    }

    private func seek(after position: UInt64) throws {
        held = nil
        guard let reader else { return }
        try reader.seek(.seq(position + 1))
        // A new forwarder starts at the oldest record kept; only a stored position can have lost events.
        if let first = reader.startsAt { skipDeleted(from: position + 1, to: first - 1, lost: position > 0) }
    }

    /// What the forwarder's thread sleeps until.
    private enum WaitFor {
        /// Room in flight: half the window acknowledged.
        case window
        /// The journal durable past this seq.
        case durable(UInt64)
        /// After a failure: every publish in flight acknowledged or failed.
        case allResolved
        /// Only a stop, a lost connection or the timeout.
        case anything
    }

    /// Publishes durable records while there is room in flight; says what to wait for next.
    private func publishAvailable() throws -> WaitFor {
        guard let reader, let publisher else { return .anything }
        var any = false
        defer { if any { state.withLock { $0.snapshot.phase = .forwarding } } }
        while true {
            let (durable, inFlight) = state.withLock { ($0.durable, $0.snapshot.inFlight) }
            guard inFlight < spec.maxInFlight else { return .window }
            if let held {
                guard held.seq <= durable else { return .durable(durable) }
                self.held = nil
                let ok = held.payload.withUnsafeBytes { forward(seq: held.seq, payload: $0, publisher) }
                any = true
                if !ok { return .allResolved }
                continue
            }
            guard let record = try reader.next() else { return .durable(durable) }
            // Retention deleted what comes next while the forwarder was behind (the hard ceiling): say so.
            let expected = state.withLock { $0.acks.readThrough } + 1
            if record.seq > expected { skipDeleted(from: expected, to: record.seq - 1, lost: true) }
            if record.seq > durable {
                // Read ahead of the sync: keep it until the journal has it on disk.
                held = (record.seq, Array(record.payload))
                return .durable(durable)
            }
            any = true
            if !forward(seq: record.seq, payload: record.payload, publisher) { return .allResolved }
        }
    }

    /// Publishes one record, or records it as filtered out; false when the publish failed.
    private func forward(seq: UInt64, payload: UnsafeRawBufferPointer, _ publisher: ForwardTarget) -> Bool {
        let header = EventLineHeader(payload)
        var decoded: Event? = nil
        if header == nil { decoded = try? Event(jsonLine: payload) }
        if let filter {
            let passes = filter.matches(line: payload) ?? {
                if decoded == nil { decoded = try? Event(jsonLine: payload) }
                return decoded.map { filter.matches($0) } ?? false
            }()
            if !passes {
                state.withLock { state in
                    state.acks.skipped(seq)
                    state.snapshot.skipped += 1
                }
                return true
            }
        }
        var id: [UInt8] = []
        if let header {
            subjects.build(
                source: UnsafeRawBufferPointer(rebasing: payload[header.sourceRange]),
                type: UnsafeRawBufferPointer(rebasing: payload[header.typeRange]))
            // `,"id":"` follows the seq's digits; the id is 36 characters.
            let idStart = header.seqRange.upperBound + 7
            id = Array(UnsafeRawBufferPointer(rebasing: payload[idStart..<(idStart + 36)]))
        } else if let decoded {
            subjects.build(source: Array(decoded.source.name.utf8), type: Array(decoded.type.utf8))
            id = Array(decoded.id.string.utf8)
        } else {
            // Not an event line (damage that still passed the CRC?): nothing to publish; do not stop on it.
            record(error: "seq \(seq) is not an event line; skipped", phase: nil)
            state.withLock { state in
                state.acks.skipped(seq)
                state.snapshot.skipped += 1
            }
            return true
        }
        state.withLock { state in
            state.acks.published(seq)
            state.snapshot.inFlight += 1
            state.snapshot.published += 1
        }
        let error = subjects.subject.withUnsafeBytes { s in id.withUnsafeBytes { publisher.publish(subject: s, id: $0, payload: payload) } }
        guard let error else { return true }
        // Never handed to libnats, so no acknowledgement will come: resolve it here.
        published(seq: seq, generation: state.withLock { $0.generation }, error: error, duplicate: false)
        return false
    }

    /// Sleeps until an acknowledgement, a durable advance, a reconnect or a stop wakes it, or the position is due
    /// to be stored.
    /// The condition is checked under the same lock the waking threads take, so no wakeup falls between the
    /// check and the sleep.
    private func waitForWork(_ waitFor: WaitFor) {
        let half = spec.maxInFlight / 2
        let timeout = state.withLock { state -> Int32? in
            if state.stopping || state.lost { return nil }
            switch waitFor {
            case .window:
                if state.failed || state.snapshot.inFlight <= half { return nil }
                state.wakeInFlightAtMost = half
            case .durable(let seq):
                if state.failed || state.durable > seq { return nil }
                state.wakeDurableAbove = seq
            case .allResolved:
                if state.snapshot.inFlight == 0 { return nil }
                state.wakeInFlightAtMost = 0
            case .anything:
                break
            }
            state.sleeping = true
            return state.acks.position == state.snapshot.stored ? 1000 : Int32(Self.storeIntervalNanoseconds / 1_000_000)
        }
        guard let timeout else { return }
        var pfd = pollfd(fd: wakeup.fd.rawValue, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, timeout)
        state.withLock { state in
            state.sleeping = false
            state.wakeInFlightAtMost = -1
            state.wakeDurableAbove = .max
        }
        _ = try? wakeup.drain()
    }

    private func sleep(nanoseconds: UInt64) {
        state.withLock { $0.sleeping = true }
        var pfd = pollfd(fd: wakeup.fd.rawValue, events: Int16(POLLIN), revents: 0)
        let deadline = Clock.monotonicNanoseconds() + nanoseconds
        while !state.withLock({ $0.stopping }) {
            let now = Clock.monotonicNanoseconds()
            guard now < deadline else { break }
            _ = poll(&pfd, 1, Int32((deadline - now) / 1_000_000) + 1)
            _ = try? wakeup.drain()
        }
        state.withLock { $0.sleeping = false }
    }

    /// Moves the read point over seqs that will never be read (deleted by retention), counting `lost` of them.
    func markRead(through seq: UInt64, lost: UInt64) {
        state.withLock { state in
            state.acks.markRead(through: seq)
            state.snapshot.lost += lost
        }
    }

    func record(error: String, phase: Phase?) {
        state.withLock { state in
            state.snapshot.lastError = error
            state.snapshot.lastErrorTime = Clock.realtimeNanoseconds()
            if let phase { state.snapshot.phase = phase }
        }
    }

    private func finish() {
        publisher?.waitForAcknowledgements(milliseconds: 2000)
        storePosition(force: true)
        publisher = nil
        state.withLock { state in
            state.snapshot.phase = .stopped
            state.snapshot.inFlight = 0
        }
        logger.info("forwarder stopped", metadata: ["position": "\(snapshot.position)"])
    }
}
