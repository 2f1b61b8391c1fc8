import CKevdShim
import DequeModule
import Glibc
import KevdEvent
import KevdJournal
import KevdKernel

/// One client on the socket: its credentials, its unparsed input, its bounded output, its subscription.
final class Connection {
    struct Credentials: Equatable {
        let pid: Int32
        let uid: UInt32
        let gid: UInt32
        let groups: [UInt32]
    }

    enum Mode: String {
        /// Receives events as the loop publishes them.
        case live
        /// Reads from the journal at its own pace (it started in the past, or fell behind).
        case journal
    }

    /// A subscription: which events, from where, and how it is being fed.
    final class Subscription {
        let filter: EventFilter?
        let terms: [String]
        let name: String?
        /// The first seq not yet considered: everything below it was sent (if it matched) or skipped.
        var next: UInt64
        var mode: Mode
        var reader: JournalReader?
        /// Set when the reader reached the end of what the journal holds.
        var drained = false
        /// The last event queued to it live (not from the journal): its output is held back while the journal
        /// has not written that far (see `Server.endOfTurn`).
        var lastLive: UInt64 = 0
        /// Journal catch-up (Server+CatchUp.swift): the turn it was last fed in, and how many of its reader's
        /// problems it has already handled.
        var lastCatchUpTurn: UInt64 = 0
        var problemsSeen = 0
        var problemsReader: ObjectIdentifier? = nil

        /// Events published but not yet considered for this subscriber, given the pipeline's next seq.
        func lag(nextSeq: UInt64) -> UInt64 { nextSeq > next ? nextSeq - next : 0 }

        init(filter: EventFilter?, terms: [String], name: String?, next: UInt64, mode: Mode) {
            self.filter = filter
            self.terms = terms
            self.name = name
            self.next = next
            self.mode = mode
        }
    }

    let id: UInt64
    let fd: OwnedFD
    let credentials: Credentials
    var input: [UInt8] = []
    let output = ByteBuffer(capacity: 16 * 1024)
    var subscription: Subscription?
    var waitingForWritable = false
    /// Set once the connection must go after its output is written (a request too long).
    var closing = false
    /// The client shut down its sending side (EOF): its queued requests are still answered; without a
    /// subscription the connection closes once they are.
    var inputClosed = false
    /// Set once a complete request line arrived: `[server] first_request_timeout` no longer applies.
    var sentRequest = false
    /// A reply that must wait: an emit until its event is durable, an ack until its position is stored.
    struct PendingReply {
        var bytes: [UInt8]
        /// Released once the journal is durable up to here (0: ready now, but queued behind an earlier one).
        var durableSeq: UInt64
        /// For acks: the position to store once `durableSeq` is durable; the reply goes after the store.
        var store: (name: String, seq: UInt64)?
        var storing = false
    }

    /// Replies go out in request order: once one waits, later ones queue behind it.
    var replyQueue = Deque<PendingReply>()

    init(id: UInt64, fd: Int32, credentials: Credentials) {
        self.id = id
        self.fd = OwnedFD(fd)
        self.credentials = credentials
    }

    static func credentials(of fd: Int32) -> Credentials {
        var pid: Int32 = 0
        var uid: UInt32 = .max
        var gid: UInt32 = .max
        _ = kevd_peercred(fd, &pid, &uid, &gid)
        var groups = [UInt32](repeating: 0, count: 256)
        let n = groups.withUnsafeMutableBufferPointer { kevd_peergroups(fd, $0.baseAddress, Int32($0.count)) }
        return Credentials(pid: pid, uid: uid, gid: gid, groups: n > 0 ? Array(groups.prefix(Int(n))) : [])
    }

    /// Sends a reply (a JSON object and its newline), after any that are still waiting.
    func reply(_ value: JSONValue, waitingFor seq: UInt64 = 0, store: (name: String, seq: UInt64)? = nil) {
        var bytes: [UInt8] = []
        value.appendJSON(to: &bytes)
        bytes.append(UInt8(ascii: "\n"))
        if replyQueue.isEmpty && seq == 0 && store == nil {
            bytes.withUnsafeBytes { output.append($0) }
        } else {
            replyQueue.append(PendingReply(bytes: bytes, durableSeq: seq, store: store))
        }
    }

    /// Sends the replies at the front of the queue that no longer wait. Returns the first one whose position
    /// must now be stored (the caller stores it and calls `stored()` when done).
    func releaseReplies(durable: UInt64) -> (name: String, seq: UInt64)? {
        while let first = replyQueue.first, first.durableSeq <= durable, !first.storing {
            if let store = first.store {
                replyQueue[0].storing = true
                return store
            }
            first.bytes.withUnsafeBytes { output.append($0) }
            replyQueue.removeFirst()
        }
        return nil
    }

    /// The position at the front was stored (or could not be): send its reply, or `failure` instead.
    func stored(failure: JSONValue?) {
        guard let first = replyQueue.first, first.storing else { return }
        replyQueue.removeFirst()
        if let failure {
            var bytes: [UInt8] = []
            failure.appendJSON(to: &bytes)
            bytes.append(UInt8(ascii: "\n"))
            bytes.withUnsafeBytes { output.append($0) }
        } else {
            first.bytes.withUnsafeBytes { output.append($0) }
        }
    }

    func replyError(_ message: String) {
        reply(.object([("ok", .bool(false)), ("error", .string(message))]))
    }
}
