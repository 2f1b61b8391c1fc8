import KevdKernel
import KevdSpec

/// What the forwarder publishes to: one connection to a broker, made for one attempt and dropped whole when it is
/// lost (never reconnected underneath the forwarder, which would reorder what it had in flight).
///
/// The forwarder owns the invariant (`AcknowledgedPrefix`: the position moves only over acknowledged events),
/// the subjects (`SubjectBuilder`) and the position file; a target only carries events and reports, for each,
/// its acknowledgement. A new kind of target is one more conforming type in a file of its own and one more case
/// in `connect(spec:delegate:generation:)`: NATS JetStream (`NatsPublisher`) is the only one today.
protocol ForwardTarget: AnyObject {
    /// Still usable for publishing.
    var isConnected: Bool { get }
    /// Closed for good (the forwarder then connects anew).
    var isClosed: Bool { get }
    /// The server it reached, for `status` and the log.
    var connectedURL: String? { get }
    /// Makes sure the destination exists and collapses republished events (a duplicate window keyed by the event
    /// id); a note for the log.
    func ensureStream(_ spec: ForwardSpec) throws -> String
    /// Publishes one event without waiting; its acknowledgement comes to the delegate. Nil when sent, else why not.
    func publish(subject: UnsafeRawBufferPointer, id: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> String?
    /// Waits (blocking, bounded) for the acknowledgements of everything published; for stopping.
    func waitForAcknowledgements(milliseconds: Int64)
}

/// What a target reports, on its own threads, tagged with the connection attempt's `generation` so that a late
/// report from a replaced connection is ignored.
protocol ForwardTargetDelegate: AnyObject {
    /// The acknowledgement (or failure) of the publish of `seq`.
    func published(seq: UInt64, generation: UInt64, error: String?, duplicate: Bool)
    /// The connection was lost.
    func connectionLost(generation: UInt64)
}

enum ForwardTargets {
    /// Connects (blocking, bounded by the target's connect timeout: for the forwarder's thread only).
    /// `identity`: the machine and boot every message names (NATS: the `Kevd-Machine-Id`, `Kevd-Boot-Id` headers).
    static func connect(spec: ForwardSpec, identity: MachineIdentity, delegate: ForwardTargetDelegate, generation: UInt64)
        throws -> ForwardTarget
    {
        try NatsPublisher(spec: spec, identity: identity, delegate: delegate, generation: generation)
    }
}
