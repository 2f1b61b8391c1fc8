// The client side of the socket protocol; see docs/PROTOCOL.md.
import Glibc
import KevdEvent
import KevdKernel
import SystemPackage

/// One connection to kevd's Unix socket: newline-delimited JSON requests out, replies, events and gaps in.
///
/// Blocking I/O on one thread. Reads are large (64 KiB) and split on `\n`; a deadline, when given, is kept
/// with poll(2). Replies come back in request order, so requests may be pipelined (`send`) and their replies
/// collected later from `next`; `request` sends one and waits for its own reply, keeping any event, gap or
/// earlier reply that arrives first for the following `next` calls.
public final class KevdConnection {
    /// The socket path as given (for messages).
    public let path: String
    private let fd: OwnedFD
    private let reader = LineReader()
    /// Messages read while `request` waited for its reply, delivered by `next` first.
    private var pending: [ServerMessage] = []
    private var pendingStart = 0
    private var requestsSent = 0
    private var repliesRead = 0

    /// A non-blocking descriptor that becomes readable when waiting should stop: typically the read end of a
    /// self-pipe a signal handler writes to. Every wait polls it with the socket; when it is readable, the wait
    /// drains it and throws `.interrupted`. Unlike a flag checked after `EINTR`, a signal that arrives just
    /// before the wait blocks is not missed. A later wait (for a last reply, say) blocks normally again.
    public var wakeFD: Int32?

    /// Connects to the Unix stream socket at `path`.
    ///
    /// A path longer than `sockaddr_un` holds (108 bytes with its NUL) is reached through its directory,
    /// opened with `O_PATH`, as `/proc/self/fd/N/NAME`.
    public init(path: String) throws {
        self.path = path
        let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw KevdClientError.io(SyscallError(call: "socket", errno: Errno(rawValue: errno))) }
        fd = OwnedFD(raw)

        var directory: OwnedFD? = nil
        var target = path
        if path.utf8.count >= Self.maximumPathLength {
            guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else {
                throw KevdClientError.pathTooLong(path)
            }
            let dirPath = slash == path.utf8.startIndex ? "/" : String(path[..<slash])
            let opened = open(dirPath, Self.openPath | O_DIRECTORY | O_CLOEXEC)
            guard opened >= 0 else { throw KevdClientError.connect(path: path, errno: Errno(rawValue: errno)) }
            directory = OwnedFD(opened)
            target = "/proc/self/fd/\(opened)/" + String(path[path.utf8.index(after: slash)...])
            guard target.utf8.count < Self.maximumPathLength else { throw KevdClientError.pathTooLong(path) }
        }
        defer { directory?.close() }

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(target.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            sunPath.copyBytes(from: bytes)
            sunPath[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        while true {
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(raw, $0, length) }
            }
            if result == 0 { break }
            if errno == EINTR { continue }
            throw KevdClientError.connect(path: path, errno: Errno(rawValue: errno))
        }
    }

    /// `O_PATH` (only search permission needed), which Swift's Glibc leaves out as a `_GNU_SOURCE` flag; this is
    /// its value on every architecture but alpha, parisc and sparc.
    static let openPath: Int32 = 0o10_000_000

    /// `sun_path`'s size, NUL included.
    static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path)

    /// The socket's file descriptor, for callers that poll it together with their own.
    public var fileDescriptor: Int32 { fd.rawValue }

    /// Closes the connection; the server sees end of file. Idempotent; also done on release.
    public func close() { fd.close() }

    /// How many requests were sent whose replies `next` has not returned yet (nor `request`).
    public var outstandingReplies: Int { requestsSent - repliesRead }

    /// Whether `next` can return a message without reading the socket: kevctl flushes its output only when
    /// this is false, so a burst is written in large pieces and nothing waits in its buffer while it blocks.
    public var hasBufferedMessage: Bool { pendingStart < pending.count || reader.hasLine }

    // MARK: - Sending

    /// Sends one request line without waiting for its reply (pipelining): `next` returns the reply later.
    public func send(_ request: JSONValue) throws {
        var line: [UInt8] = []
        request.appendJSON(to: &line)
        line.append(UInt8(ascii: "\n"))
        try write(line)
        requestsSent += 1
    }

    /// Sends `request` and waits for its reply. Events, gaps and replies to earlier pipelined requests that
    /// arrive first are kept for `next`.
    ///
    /// - Throws: `.server` for `{"ok":false}`, `.closed` on end of file, `.timedOut` after `deadline`
    ///   (`CLOCK_MONOTONIC` nanoseconds), or an I/O or protocol error.
    @discardableResult
    public func request(_ request: JSONValue, deadline: UInt64? = nil) throws -> KevdReply {
        try send(request)
        let mine = requestsSent
        // Replies already kept count towards the order: ours is the (mine - repliesRead - kept)th to come.
        var repliesSeen = repliesRead + pending[pendingStart...].reduce(0) { $0 + (Self.isReply($1) ? 1 : 0) }
        while true {
            guard let message = try readMessage(deadline: deadline) else { throw KevdClientError.closed }
            if case .reply(let reply) = message {
                repliesSeen += 1
                if repliesSeen == mine {
                    repliesRead += 1
                    guard reply.ok else {
                        throw KevdClientError.server(reply.error ?? "request failed: \(reply.value.jsonText)")
                    }
                    return reply
                }
            }
            pending.append(message)
        }
    }

    private static func isReply(_ message: ServerMessage) -> Bool {
        if case .reply = message { return true }
        return false
    }

    // MARK: - Receiving

    /// The next message, nil at end of file (the server closed the connection).
    ///
    /// - Parameter deadline: `CLOCK_MONOTONIC` nanoseconds; past it, throws `.timedOut`. Nil waits forever.
    public func next(deadline: UInt64? = nil) throws -> ServerMessage? {
        if pendingStart < pending.count {
            let message = pending[pendingStart]
            pendingStart += 1
            if pendingStart == pending.count {
                pending.removeAll(keepingCapacity: true)
                pendingStart = 0
            }
            if Self.isReply(message) { repliesRead += 1 }
            return message
        }
        let message = try readMessage(deadline: deadline)
        if let message, Self.isReply(message) { repliesRead += 1 }
        return message
    }

    /// Reads and classifies the next line from the socket.
    private func readMessage(deadline: UInt64?) throws -> ServerMessage? {
        while true {
            if let message = try reader.nextLine({ line throws in try ServerMessage.parse(line) }) {
                return message
            }
            if let limit = reader.overlong {
                throw KevdClientError.protocolViolation("a line longer than \(limit) bytes")
            }
            try waitReadable(deadline: deadline)
            let n = reader.fill(from: fd.rawValue)
            if n > 0 { continue }
            if n == 0 {
                guard reader.isEmpty else {
                    throw KevdClientError.protocolViolation("the connection closed in the middle of a line")
                }
                return nil
            }
            let code = errno
            if code == EINTR { continue }
            if code == ECONNRESET { return nil }  // the server went away without a clean close: same as EOF
            throw KevdClientError.io(SyscallError(call: "read", errno: Errno(rawValue: code)))
        }
    }

    /// Returns when the socket is readable (or at EOF/error, which the read then reports).
    private func waitReadable(deadline: UInt64?) throws {
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let now = Clock.monotonicNanoseconds()
                guard now < deadline else { throw KevdClientError.timedOut }
                // Round up: a poll that returns a little early would only loop, one that returns late is wrong.
                timeout = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
            }
            var entries = [pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)]
            if let wakeFD { entries.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)) }
            let result = poll(&entries, nfds_t(entries.count), timeout)
            if result > 0 {
                if entries.count > 1, entries[1].revents != 0 {
                    var scratch = [UInt8](repeating: 0, count: 64)
                    while read(entries[1].fd, &scratch, scratch.count) > 0 {}
                    throw KevdClientError.interrupted
                }
                return
            }
            if result == 0 { continue }  // the deadline check above decides
            let code = errno
            if code == EINTR { continue }
            throw KevdClientError.io(SyscallError(call: "poll", errno: Errno(rawValue: code)))
        }
    }

    private func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a server that went away is an error to report, not a SIGPIPE that kills kevctl.
            let n = bytes.withUnsafeBytes { raw in
                Glibc.send(fd.rawValue, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n >= 0 {
                offset += n
                continue
            }
            let code = errno
            if code == EINTR { continue }
            if code == EPIPE || code == ECONNRESET { throw KevdClientError.closed }
            throw KevdClientError.io(SyscallError(call: "send", errno: Errno(rawValue: code)))
        }
    }

    // MARK: - The requests

    /// Subscribes and returns the reply's `next`: the first seq the subscription will consider.
    public func subscribe(
        filter: [String], from: SubscribeStart? = nil, name: String? = nil, deadline: UInt64? = nil
    ) throws -> UInt64 {
        let reply = try request(KevdRequest.subscribe(filter: filter, from: from, name: name), deadline: deadline)
        guard let next = reply["next"]?.uint64Value else {
            throw KevdClientError.protocolViolation("a subscribe reply without next: \(reply.value.jsonText)")
        }
        return next
    }

    /// Publishes an event; the reply (`seq`, `id`, maybe `duplicate`) comes once it is durable. `cause` and
    /// `depth` say which event's rule run is emitting, and how many runs deep it is.
    public func emit(
        type: String, key: String? = nil, data: [(String, EventValue)] = [], idempotencyKey: String? = nil,
        cause: String? = nil, depth: Int? = nil, deadline: UInt64? = nil
    ) throws -> KevdReply {
        let reply = try request(
            KevdRequest.emit(
                type: type, key: key, data: data, idempotencyKey: idempotencyKey, cause: cause, depth: depth),
            deadline: deadline)
        guard reply["seq"]?.uint64Value != nil else {
            throw KevdClientError.protocolViolation("an emit reply without seq: \(reply.value.jsonText)")
        }
        return reply
    }

    /// The daemon's status reply.
    public func status(deadline: UInt64? = nil) throws -> KevdReply {
        try request(KevdRequest.status, deadline: deadline)
    }
}

/// Buffered line splitting over a file descriptor: one large read, then every complete line in it.
final class LineReader {
    /// A line longer than this is a protocol error rather than a reason to grow without bound. Generous: an
    /// event with every udev property is a few KiB, a status reply with thousands of subscribers a few MiB.
    static let maximumLine = 64 << 20
    static let readSize = 64 << 10

    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private var start = 0
    private var end = 0
    /// Where the newline search resumes: bytes before it (from `start`) are known to hold none.
    private var scanned = 0

    init() {
        capacity = 256 << 10
        storage = .allocate(byteCount: capacity, alignment: 1)
    }

    deinit { storage.deallocate() }

    var isEmpty: Bool { start == end }

    var hasLine: Bool {
        memchr(storage + scanned, 0x0A, end - scanned) != nil
    }

    /// Set once the unterminated line exceeds `maximumLine`.
    var overlong: Int? { end - start > Self.maximumLine ? Self.maximumLine : nil }

    /// Hands the next complete line (without `\n`) to `body`, nil when none is buffered.
    func nextLine<T>(_ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
        guard let found = memchr(storage + scanned, 0x0A, end - scanned) else {
            scanned = end
            return nil
        }
        let newline = storage.distance(to: found)
        let line = UnsafeRawBufferPointer(start: storage + start, count: newline - start)
        start = newline + 1
        scanned = start
        if start == end {
            start = 0
            end = 0
            scanned = 0
        }
        return try body(line)
    }

    /// One `read` into the free space (made room for first); returns read's result, errno set on -1.
    func fill(from fd: Int32) -> Int {
        if capacity - end < Self.readSize {
            if start > 0 {
                // Move the partial line to the front rather than grow.
                memmove(storage, storage + start, end - start)  // the regions may overlap
                end -= start
                scanned -= start
                start = 0
            }
            if capacity - end < Self.readSize {
                let bigger = UnsafeMutableRawPointer.allocate(byteCount: capacity * 2, alignment: 1)
                bigger.copyMemory(from: storage, byteCount: end)
                storage.deallocate()
                storage = bigger
                capacity *= 2
            }
        }
        let n = read(fd, storage + end, capacity - end)
        if n > 0 { end += n }
        return n
    }
}
