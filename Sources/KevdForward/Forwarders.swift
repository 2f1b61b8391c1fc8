import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import KevdSpec
import Logging

/// The daemon's `[[forward]]` forwarders. The loop only tells them when the journal's durable seq advances and
/// reads their status; each does its reading, publishing and position storing on its own thread.
public final class Forwarders: Sendable {
    // Checked: `forwarders` is set once in init, and each Forwarder is Sendable (its own claim is explained there).
    private let forwarders: [Forwarder]

    /// Starts one forwarder per spec. `durable` is the journal's durable seq now.
    /// `consumers`: the journal's, so that retention spares what a forwarder has not sent and hears of what
    /// it lost.
    public init(specs: [ForwardSpec], stateDirectory: String, journalDirectory: String, durable: UInt64,
                consumers: JournalConsumers = JournalConsumers(),
                identity: MachineIdentity = MachineIdentity(machineID: "", bootID: ""), logger: Logger) throws
    {
        let host = Self.hostName()
        forwarders = try specs.map {
            try Forwarder(spec: $0, stateDirectory: stateDirectory, journalDirectory: journalDirectory, host: host,
                          durable: durable, consumers: consumers, identity: identity, logger: logger)
        }
        for (started, forwarder) in forwarders.enumerated() {
            do {
                try forwarder.start()
            } catch {
                // Start-up fails as a whole: the ones already running are stopped, not left behind.
                forwarders[..<started].forEach { $0.stop() }
                throw error
            }
        }
        consumers.register { [forwarders] in forwarders.map(\.lowestNeeded).min() }
    }

    public var isEmpty: Bool { forwarders.isEmpty }
    public var specs: [ForwardSpec] { forwarders.map(\.spec) }

    /// From any thread (the flusher's, the loop's): the journal is durable up to `seq`. Cheap: a lock and, for a
    /// forwarder that is waiting for it, an eventfd write.
    public func durableAdvanced(_ seq: UInt64) {
        for forwarder in forwarders { forwarder.durableAdvanced(seq) }
    }

    /// The `forward` member of the status reply: per forwarder its position, lag behind `head`, what is in
    /// flight, counts and the last error.
    public func status(head: UInt64) -> JSONValue {
        .array(forwarders.map { forwarder in
            let s = forwarder.snapshot
            return .object([
                ("name", .string(forwarder.spec.name)),
                ("type", .string("nats")),
                ("url", s.connectedURL.map { .string($0) } ?? .string(forwarder.spec.urls.joined(separator: ","))),
                ("stream", .string(forwarder.spec.stream)),
                ("state", .string(s.phase.rawValue)),
                ("position", .uint(s.position)),
                ("stored", .uint(s.stored)),
                ("lag", .uint(head > s.position ? head - s.position : 0)),
                ("in_flight", .int(Int64(s.inFlight))),
                ("published", .uint(s.published)),
                ("acked", .uint(s.acknowledged)),
                ("duplicates", .uint(s.duplicates)),
                ("skipped", .uint(s.skipped)),
                ("errors", .uint(s.failures)),
                ("lost", .uint(s.lost)),
                ("nats_contexts", .int(Int64(NatsPublisher.liveContexts))),
                ("last_error", s.lastError.map { .string($0) } ?? .null),
                ("last_error_time", s.lastErrorTime.map { .string(Self.rfc3339($0)) } ?? .null),
            ])
        })
    }

    /// Lets each forwarder finish what is in flight (bounded) and store its position. Blocks: after the loop.
    public func stop() {
        for forwarder in forwarders { forwarder.stop() }
    }

    static func rfc3339(_ nanoseconds: Int64) -> String {
        var out: [UInt8] = []
        WallTime(nanoseconds: nanoseconds).appendRFC3339(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// `{host}`: the node name, as far as it goes before the first dot (a subject token cannot hold a dot).
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let short = name.split(separator: ".").first.map(String.init) ?? ""
        return short.isEmpty ? "localhost" : short
    }
}
