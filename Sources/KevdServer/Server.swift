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
    let listener: OwnedFD
    let socketGroup: UInt32
    var connections: [UInt64: Connection] = [:]
    var byFD: [Int32: UInt64] = [:]
    var nextConnectionID: UInt64 = 1
    /// Connections with replies waiting for durability or a stored position.
    var waiting: Set<UInt64> = []
    var storing: [UInt64: (connection: UInt64, name: String, seq: UInt64)] = [:]
    var nextToken: UInt64 = 1
    var names: [String: UInt64] = [:]
    var idempotency = IdempotencyTable()
    var positions: PositionStore!
    var dirty: Set<UInt64> = []
    var lastWrittenSeq: UInt64 = 0
    /// Live subscribers whose output holds events the journal has not written yet (it cannot: disk full), kept
    /// back until it has.
    var heldForJournal: Set<UInt64> = []
    /// `[server] emit_rate_per_uid`: one bucket per uid that emitted lately.
    var emitBuckets: [UInt32: TokenBucket] = [:]
    var limitReports = LimitReports()
    /// An fd held in reserve for accept at EMFILE/ENFILE (see `acceptWithoutFDs`); -1 while it is spent.
    var reserveFD: Int32 = -1
    /// Set while the listening socket is out of epoll because no fd was left even to refuse a client.
    var acceptPaused = false
    var acceptPausedAt: UInt64 = 0
    var fdExhaustionReported = false
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
            [inbox = context.loop.inbox, bound = LoopBound(server: self)] token, ok in
            inbox.post { bound.server?.positionStored(token: token, ok: ok) }
        }
        try context.loop.register(fd: listener.rawValue, events: .readable, priority: .clients) { [unowned self] _ in
            self.acceptAll()
        }
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try firstRequestDeadlines.start(
            server: self, loop: context.loop, timeoutNanoseconds: context.settings.firstRequestTimeoutNanoseconds)
        Self.makeRoomForClients(context.settings.maxClients, logger: context.logger)
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
}
