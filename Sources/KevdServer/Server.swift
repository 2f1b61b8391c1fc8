import CKevdShim
import Glibc
import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor
import KevdSpec
import Logging

/// The client socket (docs/PROTOCOL.md): requests in, replies and events out, on the loop thread.
///
/// It is an `EventSink` registered after the journal, so every event a client receives is already in the
/// journal's file. Each connection has a bounded output buffer; a subscriber whose buffer fills is switched to
/// reading from the journal at its own pace and rejoins the live stream when it has caught up, so a slow reader
/// costs nobody else anything and loses nothing. Output is written once per loop turn per connection.
public final class Server: EventSink {
    public struct Context {
        public var loop: EventLoop
        public var pipeline: EventPipeline
        public var journal: Journal
        public var settings: ServerSettings
        public var socketPath: String
        public var stateDirectory: String
        public var logger: Logger
        /// Extra fields for `status` (sources, config), built by the daemon.
        public var statusFields: () -> [(String, JSONValue)]
        /// `[rules] cascade_limit`: an emit that says it comes from deeper in a chain of rule runs than this
        /// is refused, so rules that trigger each other (or themselves) through `kevctl emit` stop.
        public var cascadeLimit: Int
        /// An already-listening socket to serve instead of binding `socketPath` (systemd socket activation).
        /// Its file belongs to whoever bound it: the server neither chmods, chowns nor unlinks it.
        public var listenFD: Int32?

        public init(
            loop: EventLoop, pipeline: EventPipeline, journal: Journal, settings: ServerSettings, socketPath: String,
            stateDirectory: String, logger: Logger, statusFields: @escaping () -> [(String, JSONValue)],
            cascadeLimit: Int = RulesSettings().cascadeLimit, listenFD: Int32? = nil
        ) {
            self.loop = loop
            self.pipeline = pipeline
            self.journal = journal
            self.settings = settings
            self.socketPath = socketPath
            self.stateDirectory = stateDirectory
            self.logger = logger
            self.statusFields = statusFields
            self.cascadeLimit = cascadeLimit
            self.listenFD = listenFD
        }
    }

    let context: Context
    var settings: ServerSettings { context.settings }
    private let listener: OwnedFD
    private let socketGroup: UInt32
    var connections: [UInt64: Connection] = [:]
    private var byFD: [Int32: UInt64] = [:]
    private var nextConnectionID: UInt64 = 1
    /// Connections with replies waiting for durability or a stored position.
    private var waiting: Set<UInt64> = []
    private var storing: [UInt64: (connection: UInt64, name: String, seq: UInt64)] = [:]
    private var nextToken: UInt64 = 1
    private var names: [String: UInt64] = [:]
    private var idempotency: [String: (seq: UInt64, id: String, expires: UInt64)] = [:]
    private var positions: PositionStore!
    var dirty: Set<UInt64> = []
    private var lastWrittenSeq: UInt64 = 0
    /// Live subscribers whose output holds events the journal has not written yet (it cannot: disk full), kept
    /// back until it has.
    private var heldForJournal: Set<UInt64> = []
    /// `[server] emit_rate_per_uid`: one bucket per uid that emitted lately.
    private var emitBuckets: [UInt32: TokenBucket] = [:]
    private var limitReports = LimitReports()
    /// An fd held in reserve for accept at EMFILE/ENFILE (see `acceptWithoutFDs`); -1 while it is spent.
    private var reserveFD: Int32 = -1
    /// Set while the listening socket is out of epoll because no fd was left even to refuse a client.
    private var acceptPaused = false
    private var acceptPausedAt: UInt64 = 0
    private var fdExhaustionReported = false
    /// Connections per peer uid, for `[server] max_clients_per_uid` (Server+Admission.swift).
    var clientsByUID: [UInt32: Int] = [:]
    /// `[server] first_request_timeout` (Server+Deadlines.swift).
    var firstRequestDeadlines = FirstRequestDeadlines()
    /// Journal catch-up (Server+CatchUp.swift): turns that fed a subscriber, for fairness; damage reported.
    var catchUpTurns: UInt64 = 0
    var reportedDamage: Set<String> = []
    var pendingDamageReports: [JournalDamageReport] = []

    public init(_ context: Context) throws {
        self.context = context
        socketGroup = context.settings.group ?? Self.fileGroup(context.listenFD == nil ? nil : context.socketPath) ?? getegid()
        if let fd = context.listenFD {
            listener = OwnedFD(fd)
            // acceptAll drains the backlog until EAGAIN; an inherited socket may be blocking.
            try syscall("fcntl(O_NONBLOCK)") { kevd_set_nonblocking(fd, 1) }
        } else {
            listener = OwnedFD(try Self.listen(at: context.socketPath, logger: context.logger))
            try syscall("chmod(\(context.socketPath))") { chmod(context.socketPath, mode_t(context.settings.mode)) }
            if let group = context.settings.group {
                try syscall("chown(\(context.socketPath))") { chown(context.socketPath, uid_t.max, group) }
            }
        }
        positions = try PositionStore(directory: context.stateDirectory + "/subscriptions") {
            [inbox = context.loop.inbox] token, ok in
            inbox.post { [weak self] in self?.positionStored(token: token, ok: ok) }
        }
        try context.loop.register(fd: listener.rawValue, events: .readable, priority: .clients) { [unowned self] _ in
            self.acceptAll()
        }
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try firstRequestDeadlines.start(
            server: self, loop: context.loop, timeoutNanoseconds: context.settings.firstRequestTimeoutNanoseconds)
        Self.makeRoomForClients(context.settings.maxClients, logger: context.logger)
    }

    /// fds kevd keeps for itself beyond its clients: journal segments and readers, rule runs' pipes, sources.
    static let ownFDs = 256

    /// `max_clients` connections must leave kevd the fds it needs for itself. The usual soft RLIMIT_NOFILE (1024,
    /// also under systemd) is below the default max_clients plus that, so the soft limit is raised as far as
    /// needed, within the hard limit; if that is not enough, kevd says so at start rather than at EMFILE.
    private static func makeRoomForClients(_ maxClients: Int, logger: Logger) {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        let wanted = rlim_t(maxClients + ownFDs)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur < wanted else { return }
        var raised = limit
        raised.rlim_cur = min(wanted, limit.rlim_max)
        if setrlimit(resource, &raised) == 0 { limit = raised }
        if limit.rlim_cur < wanted {
            logger.warning(
                "[server] max_clients leaves kevd too few file descriptors: raise LimitNOFILE or lower max_clients",
                metadata: ["max_clients": "\(maxClients)", "RLIMIT_NOFILE": "\(limit.rlim_cur)", "needed": "\(wanted)"])
        }
    }

    /// Stops listening and removes the socket file (unless it was passed in: then its owner keeps it).
    public func close() {
        context.loop.unregister(fd: listener.rawValue)
        listener.close()
        if context.listenFD == nil { unlink(context.socketPath) }
        for id in Array(connections.keys) { drop(id) }
        firstRequestDeadlines.stop(loop: context.loop)
        positions.stop()
        if reserveFD >= 0 { Glibc.close(reserveFD) }
        reserveFD = -1
    }

    /// The group of a socket file someone else bound (systemd's `SocketGroup=`): "the socket's group" in the
    /// default access rule.
    private static func fileGroup(_ path: String?) -> UInt32? {
        guard let path else { return nil }
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_gid : nil
    }

    /// Binds the socket, replacing a stale file left by a kevd that died, but never stealing a live one.
    static func listen(at path: String, logger: Logger) throws -> Int32 {
        let parent = PathText.directory(of: path)
        if FileKind.of(parent) == .missing { try Directories.make(parent, mode: 0o755) }
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SyscallError(call: "bind(\(path)): exists and is not a socket", errno: .fileExists)
            }
            let probe = kevd_unix_connect(path)
            if probe >= 0 {
                Glibc.close(probe)
                throw SyscallError(call: "bind(\(path)): another kevd is listening there", errno: .addressInUse)
            }
            unlink(path)
        }
        return try syscall("listen(\(path))") { kevd_unix_listen(path, 128) }
    }

    /// Connections with a subscription, for the daemon's one-line status.
    public var subscriberCount: Int { connections.values.reduce(0) { $0 + ($1.subscription == nil ? 0 : 1) } }

    /// How many events the slowest subscriber is behind the head (its `lag` in `status`); 0 without any.
    public var maxSubscriberLag: UInt64 {
        let next = context.pipeline.nextSeq
        return connections.values.reduce(0) { max($0, $1.subscription?.lag(nextSeq: next) ?? 0) }
    }

    // MARK: Connections

    private func acceptAll() {
        for _ in 0..<64 {
            let fd = kevd_accept(listener.rawValue)
            guard fd >= 0 else {
                if errno == EMFILE || errno == ENFILE { acceptWithoutFDs() }
                return  // EAGAIN, or a client that left before we got to it.
            }
            fdExhaustionReported = false
            let id = nextConnectionID
            nextConnectionID += 1
            let connection = Connection(id: id, fd: fd, credentials: Connection.credentials(of: fd))
            if let refusal = admissionRefusal(connection) {
                refuse(connection, refusal.limit, configured: refusal.configured, value: refusal.value, refusal.message)
                _ = kevd_write_some(fd, connection.output.bytes.baseAddress, connection.output.count)
                continue  // `connection` goes out of scope: its fd is closed.
            }
            do {
                try context.loop.register(fd: fd, events: [.readable, .readHangup], priority: .clients) {
                    [unowned self] events in self.handle(id, events)
                }
            } catch {
                continue
            }
            connections[id] = connection
            byFD[fd] = id
            admitted(connection)
        }
    }

    /// Out of fds (EMFILE/ENFILE) with clients waiting: the listening socket stays readable, and epoll being
    /// level-triggered, the loop would spin on it at full CPU (the classic accept bug). The reserve fd is given
    /// up for a moment to accept the waiting clients one by one, tell each why, and close them; if even that
    /// fails, accepting pauses until a connection closes.
    private func acceptWithoutFDs() {
        if !fdExhaustionReported {
            fdExhaustionReported = true
            context.logger.error(
                "out of file descriptors: refusing clients until some close (raise LimitNOFILE or lower [server] max_clients)",
                metadata: ["clients": "\(connections.count)"])
        }
        let message = Array(#"{"ok":false,"error":"kevd is out of file descriptors; try again later"}"#.utf8) + [0x0A]
        var stuck = false
        for _ in 0..<64 {
            if reserveFD >= 0 {
                Glibc.close(reserveFD)
                reserveFD = -1
            }
            let fd = kevd_accept(listener.rawValue)
            let code = errno
            if fd >= 0 {
                _ = message.withUnsafeBytes { kevd_write_some(fd, $0.baseAddress, $0.count) }
                Glibc.close(fd)
            }
            reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 && code != EMFILE && code != ENFILE { return }  // EAGAIN: nobody else is waiting.
            if fd < 0 || reserveFD < 0 {
                stuck = true
                break
            }
        }
        guard stuck else { return }
        acceptPaused = true
        acceptPausedAt = Clock.monotonicNanoseconds()
        try? context.loop.modify(fd: listener.rawValue, events: [])
    }

    /// An fd may be free again (a client left, or a second passed and something else closed one): waiting
    /// clients can at least be told. If not, `acceptWithoutFDs` pauses again after one try: no spin.
    private func resumeAccepting() {
        acceptPaused = false
        try? context.loop.modify(fd: listener.rawValue, events: .readable)
    }

    private func handle(_ id: UInt64, _ events: Epoll.Events) {
        guard let c = connections[id] else { return }
        if events.contains(.writable) {
            c.waitingForWritable = false
            setInterest(c)
            dirty.insert(id)
        }
        if events.contains(.hangup) || events.contains(.error) {
            // Both directions are gone: nothing more can be answered.
            drop(id)
            return
        }
        if events.contains(.readable) || events.contains(.readHangup) { readInput(c) }
    }

    /// Requests handled per connection per loop turn. A client pipelining emits must not publish so many in
    /// one turn that every subscriber's send buffer overflows before the turn's single write; the rest waits
    /// for the next turn (a few microseconds later).
    static let requestsPerTurn = 512

    private func readInput(_ c: Connection) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<16 where mayRead(c) {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(c.fd.rawValue, $0.baseAddress, $0.count) }
            if n > 0 {
                c.input.append(contentsOf: chunk[0..<n])
                if c.input.count > settings.maxRequest * 2 { break }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { break }
            if n < 0 {
                drop(c.id)  // ECONNRESET and the like.
                return
            }
            // EOF: the client finished sending (`socat` after its input ended) but may still read replies.
            c.inputClosed = true
            setInterest(c)
            break
        }
        processInput(c)
    }

    /// Whether to read more from a client now. With complete requests still queued, only while they run low
    /// (the kernel buffers the rest); an incomplete line is read until it ends or passes `max_request`.
    private func mayRead(_ c: Connection) -> Bool {
        if c.input.count < 256 * 1024 { return true }
        return c.input.count <= settings.maxRequest && !c.input.contains(UInt8(ascii: "\n"))
    }

    /// Handles the complete request lines (up to `requestsPerTurn`), as long as the client reads its replies.
    private func processInput(_ c: Connection) {
        var start = 0
        var handled = 0
        while !c.closing, c.output.count < settings.sendBuffer {
            if handled == Self.requestsPerTurn {
                // More next turn; the inbox wakes the loop even if the socket has nothing new.
                let id = c.id
                context.loop.inbox.post { [weak self] in
                    guard let self, let c = self.connections[id] else { return }
                    self.readInput(c)
                }
                break
            }
            guard let newline = c.input[start...].firstIndex(of: UInt8(ascii: "\n")) else { break }
            let line = c.input[start..<newline]
            start = newline + 1
            if line.count > settings.maxRequest {
                tooLong(c, length: line.count)
                break
            }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            handled += 1
            c.sentRequest = true
            line.withUnsafeBytes { request(c, UnsafeRawBufferPointer($0)) }
        }
        if start > 0 { c.input.removeFirst(start) }
        if !c.closing, c.input.count > settings.maxRequest, c.input.firstIndex(of: UInt8(ascii: "\n")) == nil {
            tooLong(c, length: c.input.count)
        }
        dirty.insert(c.id)
    }

    /// `length`: how much of the line has arrived (all of it, or what was read before it passed the limit).
    private func tooLong(_ c: Connection, length: Int) {
        // The rest of an oversized line cannot be told from the next request: answer, then hang up.
        refuse(
            c, .maxRequest, configured: settings.maxRequest, value: length,
            "request line longer than \(settings.maxRequest) bytes ([server] max_request); closing")
        c.input.removeAll()
        c.closing = true
        dirty.insert(c.id)
    }

    /// Answers a request refused by one of the `[server]` limits, naming it, and reports it as a `kevd`/`limit`
    /// event (at most one per uid and limit every few seconds: a flood of refusals is counted, not repeated).
    func refuse(_ c: Connection, _ limit: Limit, configured: Int, value: Int, _ message: String) {
        c.reply(.object([("ok", .bool(false)), ("error", .string(message)), ("limit", .string(limit.rawValue))]))
        limitReports.refused(
            limit, uid: c.credentials.uid, pid: c.credentials.pid, configured: configured, value: value,
            message: message, pipeline: context.pipeline, logger: context.logger)
        dirty.insert(c.id)
    }

    /// Root and kevd's own user are not held to the per-uid limits: they may stop or replace the daemon
    /// anyway, so a limit would protect nothing from them, and the rule scripts and tools they run (which emit
    /// as they do) must not be throttled like an untrusted local user.
    func isExemptFromPerUIDLimits(_ uid: UInt32) -> Bool { uid == 0 || uid == geteuid() }

    /// `[server] emit_rate_per_uid`: takes a token from the uid's bucket; false when it has none left.
    private func mayEmitNow(_ c: Connection) -> Bool {
        let uid = c.credentials.uid
        guard settings.emitRatePerUID > 0, !isExemptFromPerUIDLimits(uid) else { return true }
        let now = Clock.monotonicNanoseconds()
        if emitBuckets.count > 1024 {
            // Bounded memory: a full bucket is the same as no bucket.
            emitBuckets = emitBuckets.filter { var bucket = $0.value; return !bucket.isFull(now: now) }
        }
        var bucket = emitBuckets[uid] ?? TokenBucket(rate: settings.emitRatePerUID, burst: settings.emitBurstPerUID, now: now)
        let allowed = bucket.take(now: now)
        emitBuckets[uid] = bucket
        return allowed
    }

    /// `[server] max_subscriptions_per_uid`: how many connections of this uid hold a subscription, if it is
    /// limited and at the limit.
    private func subscriptionsOverLimit(_ c: Connection) -> Int? {
        let uid = c.credentials.uid
        guard settings.maxSubscriptionsPerUID > 0, !isExemptFromPerUIDLimits(uid) else { return nil }
        let held = connections.values.reduce(0) { $0 + ($1.subscription != nil && $1.credentials.uid == uid ? 1 : 0) }
        return held >= settings.maxSubscriptionsPerUID ? held : nil
    }

    func drop(_ id: UInt64) {
        guard let c = connections.removeValue(forKey: id) else { return }
        byFD.removeValue(forKey: c.fd.rawValue)
        released(c)
        context.loop.unregister(fd: c.fd.rawValue)
        c.fd.close()
        if let name = c.subscription?.name, names[name] == id { names.removeValue(forKey: name) }
        dirty.remove(id)
        if acceptPaused { resumeAccepting() }
    }

    private func setInterest(_ c: Connection) {
        // After EOF, reading again would report it on every turn (epoll is level-triggered).
        var events: Epoll.Events = c.inputClosed ? [] : [.readable, .readHangup]
        if c.waitingForWritable { events.insert(.writable) }
        // Stop reading requests from a client that does not read its replies.
        if c.output.count >= settings.sendBuffer && c.subscription == nil { events.remove(.readable) }
        try? context.loop.modify(fd: c.fd.rawValue, events: events)  // Fails only for a dropped fd.
    }

    // MARK: Requests

    private func request(_ c: Connection, _ bytes: UnsafeRawBufferPointer) {
        let value: JSONValue
        do {
            value = try JSONReader.parse(bytes)
        } catch {
            return c.replyError("malformed JSON: \(error)")
        }
        guard let object = value.objectValue else { return c.replyError("a request must be a JSON object") }
        guard let op = value["op"]?.stringValue else { return c.replyError("missing \"op\" (subscribe, ack, emit, status)") }
        switch op {
        case "status": status(c, object)
        case "emit": emit(c, value, object)
        case "subscribe": subscribe(c, value, object)
        case "ack": ack(c, value, object)
        default: c.replyError("unknown op '\(op)' (expected subscribe, ack, emit or status)")
        }
    }

    private func unknownFields(_ object: [(String, JSONValue)], allowed: [String]) -> String? {
        object.first { !allowed.contains($0.0) }.map { "unknown field '\($0.0)'" }
    }

    private struct Permissions {
        var emit: Bool
        /// nil: every source.
        var sources: Set<String>?
        var any: Bool { emit || sources == nil || !(sources?.isEmpty ?? true) }
    }

    private func permissions(_ creds: Connection.Credentials) -> Permissions {
        if creds.uid == 0 || creds.uid == geteuid() { return Permissions(emit: true, sources: nil) }
        let groups = [creds.gid] + creds.groups
        if settings.access.isEmpty {
            let member = groups.contains(socketGroup)
            return Permissions(emit: member, sources: member ? nil : [])
        }
        var result = Permissions(emit: false, sources: [])
        for rule in settings.access where rule.uids.contains(creds.uid) || rule.gids.contains(where: groups.contains) {
            result.emit = result.emit || rule.emit
            if let sources = rule.sources {
                result.sources = result.sources.map { $0.union(sources) }
            } else {
                result.sources = nil
            }
        }
        return result
    }

    private func status(_ c: Connection, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op"]) { return c.replyError(bad) }
        let journal = context.journal
        let segments = (try? JournalDirectory.segments(in: journal.directory)) ?? []
        let head = context.pipeline.nextSeq - 1
        var subscribers: [JSONValue] = []
        for connection in connections.values.sorted(by: { $0.id < $1.id }) {
            guard let sub = connection.subscription else { continue }
            subscribers.append(
                .object([
                    ("id", .uint(connection.id)), ("uid", .uint(UInt64(connection.credentials.uid))),
                    ("pid", .int(Int64(connection.credentials.pid))), ("name", sub.name.map { .string($0) } ?? .null),
                    ("filter", .array(sub.terms.map { .string($0) })), ("next", .uint(sub.next)),
                    ("lag", .uint(sub.lag(nextSeq: head + 1))), ("mode", .string(sub.mode.rawValue)),
                    ("buffered", .int(Int64(connection.output.count))),
                ]))
        }
        var fields: [(String, JSONValue)] = [
            ("ok", .bool(true)), ("op", .string("status")), ("pid", .int(Int64(getpid()))), ("head", .uint(head)),
            ("durable", .uint(journal.durableSeq)),
            (
                "journal",
                .object([
                    ("directory", .string(journal.directory)), ("segments", .int(Int64(segments.count))),
                    ("bytes", .int(Int64(segments.reduce(0) { $0 + $1.size }))),
                    ("first", segments.first.map { .uint($0.firstSeq) } ?? .null),
                    ("sync", .string(journal.options.sync.rawValue)),
                    ("error", journal.lastError.map { .string($0) } ?? .null),
                ])
            ),
            ("clients", .int(Int64(connections.count))),
        ]
        fields += context.statusFields()
        fields.append(("subscribers", .array(subscribers)))
        c.reply(.object(fields))
    }

    private func emit(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "type", "key", "data", "idempotency_key", "cause", "depth"]) {
            return c.replyError(bad)
        }
        guard permissions(c.credentials).emit else {
            return c.replyError("permission denied: uid \(c.credentials.uid) may not emit")
        }
        guard let type = value["type"]?.stringValue, !type.isEmpty else {
            return c.replyError("emit needs a non-empty string \"type\"")
        }
        let key: String
        if let k = value["key"] {
            guard let text = k.stringValue else { return c.replyError("\"key\" must be a string") }
            key = text
        } else {
            key = ""
        }
        var data = EventData()
        if let d = value["data"] {
            guard let fields = d.objectValue else { return c.replyError("\"data\" must be an object") }
            for (name, v) in fields {
                guard !name.isEmpty, !name.hasPrefix("_") else {
                    return c.replyError("data field '\(name)': names starting with '_' are reserved for kevd")
                }
                switch v {
                case .string(let s): data.append(name, .string(s))
                case .bool(let b): data.append(name, .bool(b))
                case .int(let n): data.append(name, .int(n))
                case .uint(let n):
                    guard n <= UInt64(Int64.max) else { return c.replyError("data field '\(name)': number too large") }
                    data.append(name, .int(Int64(n)))
                case .double(let d): data.append(name, .double(d))
                default: return c.replyError("data field '\(name)': values must be strings, numbers or booleans")
                }
            }
        }
        var idempotencyKey: String? = nil
        if let k = value["idempotency_key"] {
            guard let text = k.stringValue, !text.isEmpty else {
                return c.replyError("\"idempotency_key\" must be a non-empty string")
            }
            idempotencyKey = "\(c.credentials.uid):\(text)"
        }
        // Where the emit comes from in a chain of rule runs, as the client says (kevctl reads it from the
        // KEVD_EVENT_ID and KEVD_DEPTH a rule's script runs with). Unlike _uid it is not verified: it is there to
        // trace events and to stop runaway cascades, not to decide who may do what.
        var cause: String? = nil
        if let v = value["cause"] {
            guard let text = v.stringValue, !text.isEmpty, text.utf8.count <= 64 else {
                return c.replyError("\"cause\" must be a non-empty string of at most 64 bytes (an event id)")
            }
            cause = text
        }
        var depth: Int64? = nil
        if let v = value["depth"] {
            guard let n = v.int64Value, n >= 0 else {
                return c.replyError("\"depth\" must be an integer of at least 0")
            }
            guard cause != nil else {
                return c.replyError("\"depth\" needs a \"cause\": the event whose rule run is emitting")
            }
            depth = n
        }
        // Before the cascade check, so that a flood of refused deep emits (each reported) is held to the rate too.
        guard mayEmitNow(c) else {
            return refuse(
                c, .emitRatePerUID, configured: settings.emitRatePerUID, value: settings.emitBurstPerUID,
                "emit rate limit: uid \(c.credentials.uid) may emit \(settings.emitRatePerUID) events a second "
                    + "(burst \(settings.emitBurstPerUID), [server] emit_rate_per_uid); refused, try again later")
        }
        if let cause {
            // A cause without a depth comes from a rule run whose depth the client did not know: one deep.
            let depth = depth ?? 1
            guard depth <= Int64(context.cascadeLimit) else {
                return refuseCascade(c, cause: cause, depth: depth)
            }
        }
        let now = Clock.monotonicNanoseconds()
        if let idempotencyKey {
            expireIdempotency(now: now)
            if let first = idempotency[idempotencyKey] {
                let reply = JSONValue.object([
                    ("ok", .bool(true)), ("op", .string("emit")), ("seq", .uint(first.seq)), ("id", .string(first.id)),
                    ("duplicate", .bool(true)),
                ])
                return replyWhenDurable(c, seq: first.seq, reply: reply)
            }
        }
        if let failure = context.journal.lastError {
            // Disk full (or EIO): an emit accepted now could not be acknowledged until space returns, and would
            // pile up in memory. Refused instead, with the reason; the connection stays usable, and emits accepted
            // before the failure get their `ok` once they are written.
            return c.replyError("the journal cannot be written (\(failure)); emit not accepted, try again later")
        }
        data.append("_uid", .int(Int64(c.credentials.uid)))
        data.append("_gid", .int(Int64(c.credentials.gid)))
        data.append("_pid", .int(Int64(c.credentials.pid)))
        if let cause {
            data.append("_cause", .string(cause))
            data.append("_depth", .int(depth ?? 1))
        }
        let event = context.pipeline.publish(EventDraft(source: EventSource("emit"), type: type, key: key, data: data))
        let id = event.id.string
        if let idempotencyKey {
            idempotency[idempotencyKey] = (event.seq, id, now + UInt64(settings.idempotencyWindowNanoseconds))
        }
        let reply = JSONValue.object([("ok", .bool(true)), ("op", .string("emit")), ("seq", .uint(event.seq)), ("id", .string(id))])
        replyWhenDurable(c, seq: event.seq, reply: reply)
    }

    /// Refuses an emit from too deep in a chain of rule runs, and says so in the journal as well as to the
    /// client: the client is usually a rule's script, whose stderr nobody may be reading.
    private func refuseCascade(_ c: Connection, cause: String, depth: Int64) {
        let message =
            "cascade limit: this emit is \(depth) rule runs deep (limit \(context.cascadeLimit), [rules] cascade_limit); refused"
        var data = EventData()
        data.append("message", message)
        data.append("reason", "cascade_limit")
        data.append("cause", cause)
        data.append("depth", .int(depth))
        data.append("uid", .int(Int64(c.credentials.uid)))
        data.append("pid", .int(Int64(c.credentials.pid)))
        context.logger.warning(
            "emit refused: cascade limit",
            metadata: ["cause": "\(cause)", "depth": "\(depth)", "pid": "\(c.credentials.pid)"])
        context.pipeline.publishKevd("error", component: "rules", data)
        c.replyError(message)
    }

    private func expireIdempotency(now: UInt64) {
        // Bounded memory: expired keys go; if a flood of distinct keys fills the table, the oldest go first.
        guard idempotency.count > 1024 else { return }
        idempotency = idempotency.filter { $0.value.expires > now }
        if idempotency.count > 100_000 {
            let keep = idempotency.sorted { $0.value.expires > $1.value.expires }.prefix(50_000)
            idempotency = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }

    /// Replies are sent in request order: a reply that waits holds back later ones on the same connection.
    private func replyWhenDurable(_ c: Connection, seq: UInt64, reply: JSONValue) {
        if c.replyQueue.isEmpty && seq <= context.journal.durableSeq { return c.reply(reply) }
        c.reply(reply, waitingFor: max(seq, 1))
        waiting.insert(c.id)
    }

    /// The journal made everything up to `seq` durable: release the replies that waited for it.
    public func durableAdvanced(_ seq: UInt64) {
        for id in waiting {
            guard let c = connections[id] else {
                waiting.remove(id)
                continue
            }
            if let store = c.releaseReplies(durable: seq) {
                let token = nextToken
                nextToken += 1
                storing[token] = (id, store.name, store.seq)
                positions.store(store.name, seq: store.seq, token: token)
            }
            if c.replyQueue.isEmpty { waiting.remove(id) }
            dirty.insert(id)
        }
    }

    private func positionStored(token: UInt64, ok: Bool) {
        guard let job = storing.removeValue(forKey: token), let c = connections[job.connection] else { return }
        c.stored(failure: ok ? nil : .object([("ok", .bool(false)), ("error", .string("could not store the position of '\(job.name)'"))]))
        dirty.insert(c.id)
        durableAdvanced(context.journal.durableSeq)  // Release replies queued behind this one.
    }

    private func subscribe(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "filter", "from", "name"]) { return c.replyError(bad) }
        guard c.subscription == nil else { return c.replyError("this connection already has a subscription") }
        let permissions = permissions(c.credentials)
        guard permissions.sources == nil || !(permissions.sources?.isEmpty ?? true) else {
            return c.replyError("permission denied: uid \(c.credentials.uid) may not subscribe")
        }
        if let held = subscriptionsOverLimit(c) {
            return refuse(
                c, .maxSubscriptionsPerUID, configured: settings.maxSubscriptionsPerUID, value: held,
                "too many subscriptions: uid \(c.credentials.uid) holds \(held) (limit \(settings.maxSubscriptionsPerUID), "
                    + "[server] max_subscriptions_per_uid); close one first")
        }
        var terms: [String] = []
        if let f = value["filter"] {
            guard let array = f.arrayValue else { return c.replyError("\"filter\" must be a list of terms") }
            for term in array {
                guard let text = term.stringValue else { return c.replyError("filter terms must be strings") }
                terms.append(text)
            }
        }
        if let allowed = permissions.sources {
            // The restriction is one more term, so both delivery paths apply it the same way.
            terms.append("source~^(" + allowed.sorted().map { Self.regexEscaped($0) }.joined(separator: "|") + ")$")
        }
        let filter: EventFilter?
        do {
            filter = terms.isEmpty ? nil : try EventFilter(terms: terms)
        } catch {
            return c.replyError("\(error)")
        }
        var name: String? = nil
        if let n = value["name"] {
            guard let text = n.stringValue, PositionName.isValid(text) else {
                return c.replyError("\"name\" must be 1-64 letters, digits, '.', '_' or '-'")
            }
            guard names[text] == nil else { return c.replyError("subscription '\(text)' is in use by another client") }
            name = text
        }
        let head = context.pipeline.nextSeq
        var start: JournalReader.Start? = nil
        if let from = value["from"] {
            if let text = from.stringValue {
                switch text {
                case "new": start = nil
                case "all": start = .first
                default:
                    guard let time = WallTime(rfc3339: text) else {
                        return c.replyError("\"from\" must be \"new\", \"all\", a seq or an RFC 3339 time")
                    }
                    start = .time(time.nanoseconds)
                }
            } else if let seq = from.uint64Value {
                start = seq >= head ? nil : .seq(seq)
            } else {
                return c.replyError("\"from\" must be \"new\", \"all\", a seq or an RFC 3339 time")
            }
        } else if let name, let stored = positions.load(name) {
            start = stored + 1 >= head ? nil : .seq(stored + 1)
        }
        let sub: Connection.Subscription
        if let start {
            let reader: JournalReader
            do {
                reader = try JournalReader(directory: context.journal.directory)
                try reader.seek(start)
            } catch {
                return c.replyError("cannot read the journal: \(error)")
            }
            var next: UInt64
            switch start {
            case .seq(let s): next = s
            case .first, .time: next = reader.firstAvailableSeq ?? head
            }
            sub = Connection.Subscription(filter: filter, terms: terms, name: name, next: next, mode: .journal)
            sub.reader = reader
            c.reply(.object([("ok", .bool(true)), ("op", .string("subscribe")), ("next", .uint(next))]))
            if let startsAt = reader.startsAt, startsAt > next {
                gap(c, sub, to: startsAt)
            }
        } else {
            sub = Connection.Subscription(filter: filter, terms: terms, name: name, next: head, mode: .live)
            c.reply(.object([("ok", .bool(true)), ("op", .string("subscribe")), ("next", .uint(head))]))
        }
        if let name { names[name] = c.id }
        c.subscription = sub
        dirty.insert(c.id)
    }

    private static func regexEscaped(_ text: String) -> String {
        var out = ""
        for ch in text {
            if "\\^$.|?*+()[]{}".contains(ch) { out.append("\\") }
            out.append(ch)
        }
        return out
    }

    private func ack(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "seq"]) { return c.replyError(bad) }
        guard let sub = c.subscription, let name = sub.name else {
            return c.replyError("ack needs a named subscription (subscribe with \"name\")")
        }
        guard let seq = value["seq"]?.uint64Value else { return c.replyError("ack needs a \"seq\"") }
        guard seq < sub.next else { return c.replyError("cannot ack seq \(seq): not delivered yet (next is \(sub.next))") }
        let reply = JSONValue.object([("ok", .bool(true)), ("op", .string("ack")), ("seq", .uint(seq))])
        // Stored only once the event itself is durable: a position must never point past what a power cut keeps.
        c.reply(reply, waitingFor: max(seq, 1), store: (name: name, seq: seq))
        waiting.insert(c.id)
        durableAdvanced(context.journal.durableSeq)
    }

    // MARK: Events

    /// Live delivery: every subscriber that is caught up gets the line, if it matches and fits.
    public func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        for c in connections.values {
            guard let sub = c.subscription, event.seq == sub.next else { continue }
            if context.journal.lastError != nil {
                // The journal cannot write (disk full, EIO): events it holds only in memory are not handed out,
                // or a crash before it writes them would give their seqs to other events that a subscriber sees
                // too. The subscriber reads them from the journal once they are written.
                if sub.mode == .live { switchToJournal(c, sub) }
                continue
            }
            if sub.mode == .journal {
                // Still reading older events from the journal: this one will come from there too.
                guard sub.drained else { continue }
                // Caught up: everything below `next` was handled, so it joins the live stream here.
                sub.mode = .live
                sub.reader = nil
            }
            if let filter = sub.filter, !filter.matches(event) {
                sub.next += 1
                continue
            }
            if c.output.count + line.count > settings.sendBuffer {
                // Behind: stop feeding it live; it will read from the journal from `next` on.
                switchToJournal(c, sub)
                continue
            }
            c.output.append(line)
            sub.next += 1
            sub.lastLive = event.seq
            dirty.insert(c.id)
        }
    }

    private func switchToJournal(_ c: Connection, _ sub: Connection.Subscription) {
        sub.mode = .journal
        sub.drained = false
        do {
            let reader = try JournalReader(directory: context.journal.directory)
            try reader.seek(.seq(sub.next))
            sub.reader = reader
            context.logger.debug("subscriber behind; reading from the journal", metadata: ["subscriber.id": "\(c.id)"])
        } catch {
            c.replyError("cannot read the journal: \(error)")
            c.closing = true
        }
        dirty.insert(c.id)
    }

    func gap(_ c: Connection, _ sub: Connection.Subscription, to startsAt: UInt64) {
        reportNamedGap(sub, to: startsAt)
        var line: [UInt8] = []
        JSONValue.object([
            ("gap", .object([("from", .uint(sub.next)), ("to", .uint(startsAt - 1))])),
            ("reason", .string("deleted by journal retention before it was read")),
        ]).appendJSON(to: &line)
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { c.output.append($0) }
        sub.next = startsAt
    }

    public func endOfTurn() {
        if acceptPaused && Clock.monotonicNanoseconds() &- acceptPausedAt > 1_000_000_000 { resumeAccepting() }
        // New records in the journal's file: readers that found its end (or were held back) read on.
        if context.journal.writtenSeq != lastWrittenSeq {
            lastWrittenSeq = context.journal.writtenSeq
            for c in connections.values where c.subscription?.mode == .journal && !c.waitingForWritable {
                dirty.insert(c.id)
            }
            dirty.formUnion(heldForJournal)
            heldForJournal.removeAll()
        }
        guard !dirty.isEmpty else { return }
        let ids = dirty
        dirty.removeAll(keepingCapacity: true)
        var budget = CatchUpBudget(now: Clock.monotonicNanoseconds())
        for id in catchUpOrder(ids) {
            guard let c = connections[id] else { continue }
            if let sub = c.subscription, sub.mode == .journal, !c.waitingForWritable { pump(c, sub, budget: &budget) }
            if let sub = c.subscription, sub.lastLive > context.journal.writtenSeq {
                // This turn's events went out live before the journal's write failed: they wait with it.
                heldForJournal.insert(id)
                continue
            }
            flush(c)
        }
        publishDamageReports()
        // Catch-up work left for later (a per-turn budget keeps the loop fair), or events published after the
        // journal's write this turn (a sink's own `overflow`): come back next turn. While the journal fails,
        // its retry timer brings the turns.
        if !dirty.isEmpty || (!heldForJournal.isEmpty && context.journal.lastError == nil) { context.loop.inbox.post {} }
    }

    private func flush(_ c: Connection) {
        guard !c.waitingForWritable else { return }
        if !c.output.isEmpty {
            let n = kevd_write_some(c.fd.rawValue, c.output.bytes.baseAddress, c.output.count)
            if n < 0 {
                drop(c.id)  // EPIPE, ECONNRESET: the client left.
                return
            }
            c.output.removeFirst(n)
        }
        if c.output.isEmpty {
            c.output.removeAll(shrinkAbove: 256 * 1024)
            let finished = c.inputClosed && c.subscription == nil && c.replyQueue.isEmpty
                && !c.input.contains(UInt8(ascii: "\n"))
            if c.closing || finished {
                drop(c.id)
                return
            }
            // Requests held back while the output was full can go on now, in the next turn: an emit must reach the
            // journal's file (first in every turn) before any socket.
            if c.input.contains(UInt8(ascii: "\n")) {
                let id = c.id
                context.loop.inbox.post { [weak self] in
                    guard let self, let c = self.connections[id] else { return }
                    self.processInput(c)
                }
            }
        } else {
            c.waitingForWritable = true
        }
        setInterest(c)
    }
}
