import CNats
import Glibc
import KevdKernel
import KevdSpec

/// A NATS connection and its JetStream context, configured from a `[[forward]]` table: the only code that calls
/// libnats: the `ForwardTarget` for NATS JetStream. libnats runs its own threads (reading, delivering
/// acknowledgements); the delegate receives what they report, tagged with the publisher's `generation`.
///
/// A connection is never reconnected: libnats would send the publishes it buffered while disconnected after
/// reconnecting, so events that followed one lost with the old socket would be stored ahead of it. A lost
/// connection closes instead, and the forwarder connects anew and publishes again from its position, in order.
final class NatsPublisher: ForwardTarget {
    typealias Delegate = ForwardTargetDelegate

    /// What libnats's callbacks get as their closure. libnats gives no guarantee that no callback is still on
    /// its way once a connection is destroyed (the closed callback runs later on its own thread; an ack timeout
    /// fires up to the ack wait later), so a context is not freed with its publisher: it is retired and freed a
    /// grace period later (`ContextRetirement`). Freed at all, because one per connection attempt kept for
    /// ever grew memory without bound through a long NATS outage.
    final class Context {
        // Strong: a late callback must find its delegate; the retirement bounds how long.
        let delegate: Delegate
        let generation: UInt64
        init(delegate: Delegate, generation: UInt64) {
            self.delegate = delegate
            self.generation = generation
            ContextRetirement.created()
        }
        deinit { ContextRetirement.freed() }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let connection: OpaquePointer
    private let jetStream: OpaquePointer
    /// The retained context libnats's callbacks get; retired in deinit (or when init fails).
    private let context: UnsafeMutableRawPointer
    private let graceNanoseconds: UInt64
    private let ackTimeoutMilliseconds: Int64
    /// Reused per publish: the subject and the message id as C strings.
    private var subject: [UInt8] = []
    private var messageID: [UInt8] = []
    /// `Kevd-Machine-Id` and `Kevd-Boot-Id` with their values, as C strings (an unknown id is left out).
    private let identityHeaders: [(key: [CChar], value: [CChar])]

    /// Connects (blocking, bounded by the connect timeout: for the forwarder's thread only). `delegate` must
    /// outlive the publisher: libnats holds it unretained.
    init(spec: ForwardSpec, identity: MachineIdentity, delegate: Delegate, generation: UInt64) throws {
        // Made once per connection: C strings for the identity headers, set on every message.
        identityHeaders = [("Kevd-Machine-Id", identity.machineID), ("Kevd-Boot-Id", identity.bootID)]
            .filter { !$0.1.isEmpty }.map { (Array($0.0.utf8CString), Array($0.1.utf8CString)) }
        var options: OpaquePointer? = nil
        try Self.check(natsOptions_Create(&options), "natsOptions_Create")
        defer { natsOptions_Destroy(options) }
        ContextRetirement.freeExpired()
        let context = Unmanaged.passRetained(Context(delegate: delegate, generation: generation)).toOpaque()
        let grace = UInt64(max(0, spec.ackTimeoutNanoseconds)) + ContextRetirement.extraGraceNanoseconds
        // A failed attempt (the usual case through an outage) retires its context too.
        var connected = false
        defer { if !connected { ContextRetirement.retire(context, graceNanoseconds: grace) } }

        var urls = spec.urls.map { strdup($0) }
        defer { urls.forEach { free($0) } }
        try urls.withUnsafeMutableBufferPointer { buffer in
            try buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { servers in
                try Self.check(natsOptions_SetServers(options, servers.baseAddress, Int32(servers.count)), "url")
            }
        }
        try Self.check(natsOptions_SetName(options, "kevd forward \(spec.name)"), "name")
        try Self.check(natsOptions_SetTimeout(options, 2000), "connect timeout")
        try Self.check(natsOptions_SetAllowReconnect(options, false), "no reconnect")
        // libnats's flusher thread otherwise waits 1 ms for more before it writes, and every event would wait with
        // it; a write per publish costs some CPU but keeps the latency to a round trip (bench/FORWARD.md).
        try Self.check(natsOptions_SetSendAsap(options, true), "send asap")
        try Self.check(natsOptions_SetClosedCB(options, { _, closure in
            guard let context = NatsPublisher.context(closure) else { return }
            context.delegate.connectionLost(generation: context.generation)
        }, context), "closed callback")
        if let credentials = spec.credentials {
            try Self.check(natsOptions_SetUserCredentialsFromFiles(options, credentials, nil), "credentials \(credentials)")
        }
        if let nkey = spec.nkey, let seed = spec.nkeySeed {
            try Self.check(natsOptions_SetNKeyFromSeed(options, nkey, seed), "nkey_seed \(seed)")
        }
        if spec.tls || spec.tlsCA != nil || spec.tlsCert != nil {
            try Self.check(natsOptions_SetSecure(options, true), "tls (is libnats built with TLS?)")
        }
        if let ca = spec.tlsCA { try Self.check(natsOptions_LoadCATrustedCertificates(options, ca), "tls_ca \(ca)") }
        if let cert = spec.tlsCert, let key = spec.tlsKey {
            try Self.check(natsOptions_LoadCertificatesChain(options, cert, key), "tls_cert \(cert)")
        }

        var connection: OpaquePointer? = nil
        try Self.check(natsConnection_Connect(&connection, options), "connect to \(spec.urls.joined(separator: ", "))")
        var js = jsOptions()
        jsOptions_Init(&js)
        ackTimeoutMilliseconds = max(1, spec.ackTimeoutNanoseconds / 1_000_000)
        js.Wait = ackTimeoutMilliseconds
        // The forwarder bounds what is in flight itself; libnats's own bound is just above, so a publish never
        // stalls inside libnats.
        js.PublishAsync.MaxPending = Int64(spec.maxInFlight + 1)
        js.PublishAsync.AckHandlerClosure = context
        js.PublishAsync.AckHandler = { _, msg, ack, failure, closure in
            defer { natsMsg_Destroy(msg) }
            guard let context = NatsPublisher.context(closure), let seq = NatsPublisher.seq(of: msg) else { return }
            if let ack {
                context.delegate.published(
                    seq: seq, generation: context.generation, error: nil, duplicate: ack.pointee.Duplicate)
            } else {
                let text = failure.map { NatsPublisher.text($0.pointee) } ?? "no acknowledgement"
                context.delegate.published(seq: seq, generation: context.generation, error: text, duplicate: false)
            }
        }
        var jetStream: OpaquePointer? = nil
        let status = natsConnection_JetStream(&jetStream, connection, &js)
        guard status == NATS_OK, let connection, let jetStream else {
            natsConnection_Destroy(connection)
            throw Failure(description: "JetStream context: \(Self.lastError(status))")
        }
        self.connection = connection
        self.jetStream = jetStream
        self.context = context
        graceNanoseconds = grace
        connected = true
    }

    deinit {
        natsConnection_Close(connection)
        jsCtx_Destroy(jetStream)
        natsConnection_Destroy(connection)
        ContextRetirement.retire(context, graceNanoseconds: graceNanoseconds)
    }

    /// Callback contexts alive (in use or retired and not yet freed), process-wide: bounded by the connection
    /// attempts of the last grace period, however long an outage lasts (`status`'s `forward[].nats_contexts`).
    static var liveContexts: Int { ContextRetirement.live }

    var isConnected: Bool { natsConnection_Status(connection) == NATS_CONN_STATUS_CONNECTED }
    var isClosed: Bool { natsConnection_Status(connection) == NATS_CONN_STATUS_CLOSED }

    var connectedURL: String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard natsConnection_GetConnectedUrl(connection, &buffer, buffer.count) == NATS_OK else { return nil }
        let url = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return url.isEmpty ? nil : url
    }

    /// Checks that `spec.stream` exists, creating it when allowed: file storage, the template's subjects, the
    /// duplicate window that makes republished events collapse into one. Returns a note for the log.
    func ensureStream(_ spec: ForwardSpec) throws -> String {
        var info: UnsafeMutablePointer<jsStreamInfo>? = nil
        var code = jsErrCode(0)
        var status = js_GetStreamInfo(&info, jetStream, spec.stream, nil, &code)
        if status == NATS_OK, let info {
            defer { jsStreamInfo_Destroy(info) }
            let window = info.pointee.Config.pointee.Duplicates
            guard window > 0 else {
                throw Failure(description: "stream \(spec.stream) has no duplicate window; republished events would be stored twice")
            }
            return "stream \(spec.stream) exists (duplicate window \(window / 1_000_000_000)s)"
        }
        guard status == NATS_NOT_FOUND || code == JSStreamNotFoundErr else {
            throw Failure(description: "stream \(spec.stream): \(Self.lastError(status))")
        }
        guard spec.createStream else {
            throw Failure(description: "stream \(spec.stream) does not exist (create_stream = false)")
        }
        status = JetStreamStreams.add(
            jetStream, name: spec.stream, subject: spec.subject.streamSubject, replicas: spec.replicas,
            duplicateWindowNanoseconds: spec.duplicateWindowNanoseconds, code: &code)
        guard status == NATS_OK else {
            throw Failure(description: "cannot create stream \(spec.stream): \(Self.lastError(status))")
        }
        return "created stream \(spec.stream) for \(spec.subject.streamSubject), \(spec.replicas) replica(s)"
    }

    /// Publishes one event without waiting: the acknowledgement comes to the delegate. `subject` and `id` are the
    /// bytes of the subject and the event id (the `Nats-Msg-Id` header); `payload` the event's JSON line.
    func publish(subject subjectBytes: UnsafeRawBufferPointer, id: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer)
        -> String?
    {
        Self.terminated(subjectBytes, into: &subject)
        Self.terminated(id, into: &messageID)
        var msg: OpaquePointer? = nil
        var status = subject.withUnsafeBufferPointer { s in
            natsMsg_Create(
                &msg, UnsafeRawPointer(s.baseAddress!).assumingMemoryBound(to: CChar.self), nil,
                payload.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(payload.count))
        }
        guard status == NATS_OK else { return Self.lastError(status) }
        for header in identityHeaders {
            status = header.key.withUnsafeBufferPointer { key in
                header.value.withUnsafeBufferPointer { value in natsMsgHeader_Set(msg, key.baseAddress, value.baseAddress) }
            }
            guard status == NATS_OK else {
                natsMsg_Destroy(msg)
                return Self.lastError(status)
            }
        }
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = ackTimeoutMilliseconds
        status = messageID.withUnsafeBufferPointer { id in
            options.MsgId = UnsafeRawPointer(id.baseAddress!).assumingMemoryBound(to: CChar.self)
            return js_PublishMsgAsync(jetStream, &msg, &options)
        }
        // On success libnats owns the message and cleared `msg`; on failure it is still ours.
        natsMsg_Destroy(msg)
        return status == NATS_OK ? nil : Self.lastError(status)
    }

    /// Waits (blocking, up to `milliseconds`) for the acknowledgements of everything published; for stopping.
    func waitForAcknowledgements(milliseconds: Int64) {
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = milliseconds
        _ = js_PublishAsyncComplete(jetStream, &options)
    }

    private static func terminated(_ bytes: UnsafeRawBufferPointer, into buffer: inout [UInt8]) {
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: bytes)
        buffer.append(0)
    }

    private static func context(_ closure: UnsafeMutableRawPointer?) -> Context? {
        guard let closure else { return nil }
        return Unmanaged<Context>.fromOpaque(closure).takeUnretainedValue()
    }

    /// The journal seq at the start of the payload (`{"seq":N,…`), which is what identifies a publish.
    private static func seq(of msg: OpaquePointer?) -> UInt64? {
        guard let msg, let data = natsMsg_GetData(msg) else { return nil }
        let count = Int(natsMsg_GetDataLength(msg))
        let prefix: StaticString = #"{"seq":"#
        let n = prefix.utf8CodeUnitCount
        guard count > n, memcmp(data, prefix.utf8Start, n) == 0 else { return nil }
        var value: UInt64 = 0
        var i = n
        let bytes = UnsafeRawPointer(data).assumingMemoryBound(to: UInt8.self)
        while i < count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            value = value &* 10 &+ UInt64(bytes[i] - 0x30)
            i += 1
        }
        return i > n ? value : nil
    }

    private static func text(_ failure: jsPubAckErr) -> String {
        var parts: [String] = []
        if let text = failure.ErrText { parts.append(String(cString: text)) }
        if failure.ErrCode.rawValue != 0 { parts.append("JetStream error \(failure.ErrCode.rawValue)") }
        if parts.isEmpty { parts.append(String(cString: natsStatus_GetText(failure.Err))) }
        return parts.joined(separator: ", ")
    }

    /// libnats's description of the calling thread's last error, which is more precise than the status.
    static func lastError(_ status: natsStatus) -> String {
        var last = NATS_OK
        if let text = nats_GetLastError(&last), text.pointee != 0 { return String(cString: text) }
        return String(cString: natsStatus_GetText(status))
    }

    private static func check(_ status: natsStatus, _ what: String) throws {
        guard status == NATS_OK else { throw Failure(description: "\(what): \(lastError(status))") }
    }
}

/// JetStream streams as kevd creates them.
public enum JetStreamStreams {
    /// Creates a file-stored stream of one subject with a duplicate window (`replicas` nil: libnats's
    /// default). Also the forward benchmark's, so that its bare-libnats ceiling uses the same stream.
    public static func add(
        _ jetStream: OpaquePointer?, name: String, subject: String, replicas: Int? = nil,
        duplicateWindowNanoseconds: Int64, code: inout jsErrCode
    ) -> natsStatus {
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        let name = strdup(name)
        let subject = strdup(subject)
        defer {
            free(name)
            free(subject)
        }
        var subjects: [UnsafePointer<CChar>?] = [UnsafePointer(subject)]
        config.Name = UnsafePointer(name)
        config.Storage = js_FileStorage
        if let replicas { config.Replicas = Int64(replicas) }
        config.Duplicates = duplicateWindowNanoseconds
        return subjects.withUnsafeMutableBufferPointer { buffer in
            config.Subjects = buffer.baseAddress
            config.SubjectsLen = 1
            var created: UnsafeMutablePointer<jsStreamInfo>? = nil
            defer { if let created { jsStreamInfo_Destroy(created) } }
            return js_AddStream(&created, jetStream, &config, nil, &code)
        }
    }
}
