import ArgumentParser
import Glibc
import KevdClient
import KevdEvent
import KevdKernel
import Synchronization

/// `kevctl subscribe`: print the live stream (optionally from a point in the journal), one event per line.
struct SubscribeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Print matching events as they happen (after the journal's, with --from), one per line or block.",
        discussion: """
            Formats:
              json  Each event line exactly as kevd journals it (README, "Events").
                    Gap lines ({"gap":{"from":A,"to":B},"reason":…}: events A to B
                    were deleted by retention before they could be sent) are
                    printed as they are too.
              text  SEQ TIME SOURCE TYPE KEY NAME=VALUE…: one line per event, one
                    space between fields, data fields in the event's order. TIME
                    is RFC 3339 UTC with nine fraction digits. SOURCE, TYPE, KEY,
                    NAME and string VALUEs are bare when non-empty and only
                    printable ASCII other than " and \\ (and = in a NAME), else a
                    JSON string ("…" with \\" \\\\ \\n \\t \\r \\b \\f \\u00XX escapes,
                    other bytes as UTF-8), so no field holds an unquoted space or
                    newline. Numbers and booleans are their JSON text: the string
                    "42" and the number 42 both print 42 (use json for types).
              env   NAME='value' lines, then an empty line, per event: KEVD_SEQ,
                    KEVD_ID, KEVD_TIME, KEVD_SOURCE, KEVD_TYPE, KEVD_KEY, then
                    KEVD_DATA_<NAME> per data field (NAME upper-cased, characters
                    other than A-Z 0-9 _ replaced by _; if two names collide the
                    later line wins). Values are single-quoted; ' is written '\\''
                    and a newline '"<newline>"', so no line inside a block is
                    empty; NUL bytes are dropped. eval "$block" in a POSIX shell
                    sets the variables (not exported) and runs nothing.
            Gaps are also warned about on stderr, in every format.

            Output is written as soon as kevctl has nothing more to read, so each
            event reaches a pipe (| while read -r line) before kevctl waits again.

            With --name, kevd keeps the subscription's position: without --from it
            resumes after the last acknowledged event. kevctl acknowledges the
            events it has completely written to stdout, in batches: an ack for the
            last written seq once 100 events are unacknowledged, or 100 ms after
            the first of them, whichever comes first; and a last one when it stops
            (end of stream, stdout closed, SIGINT, SIGTERM, SIGHUP), waiting up to
            5 s for its reply. After kill -9 at most one batch is delivered again
            (at least once). "Written" means accepted by the pipe, so events
            in its buffer that the reader never read count as printed.
            --no-ack reads a named subscription without moving its position.

            Exit codes: 0 when kevd ends the stream or stdout is closed
            (| head -n 1); 1 on an error (no daemon, a bad filter, a refused
            request); 64 for a bad command line. After SIGINT, SIGTERM or SIGHUP
            kevctl dies by that signal (with --name, after the last ack).
            """)

    @OptionGroup var client: ClientOptions

    @Option(help: ArgumentHelp(
        "Where to start: all, new, a seq, an RFC 3339 time, or a duration ago (10m). "
            + "Default: new, or after the last acknowledged event with --name.",
        valueName: "start"))
    var from: String?

    @Option(help: "A named subscription whose position kevd keeps (see below).")
    var name: String?

    @Option(help: "json, text or env (see below).")
    var format: EventOutputFormat = .json

    @Flag(
        inversion: .prefixedNo,
        help: "Acknowledge printed events (the default with --name; --ack without --name is an error).")
    var ack: Bool?

    @Argument(help: "Filter terms; all must match.")
    var filters: [String] = []

    func run() throws {
        var killedBy: Int32 = 0
        try reportingFailures {
            if ack == true && name == nil {
                throw Failure("--ack needs --name: only a named subscription has a position to keep")
            }
            try checkFilter(filters)
            let start = try from.map(parseStart)
            // A closed stdout must show up as EPIPE from write, so it can end the command with 0.
            signal(SIGPIPE, SIG_IGN)
            let acking = name != nil && ack != false
            let wakeFD = acking ? try Interrupts.install() : nil
            let connection = try client.connect()
            connection.wakeFD = wakeFD
            do {
                _ = try connection.subscribe(filter: filters, from: start, name: name)
                let session = SubscribeSession(connection: connection, format: format, acking: acking)
                try session.run()
            } catch KevdClientError.interrupted {
                killedBy = Interrupts.signal.load(ordering: .relaxed)
            }
        }
        if killedBy != 0 { Interrupts.dieBy(killedBy) }
    }
}

/// The print-and-acknowledge loop of one subscription.
final class SubscribeSession {
    /// Send an ack after this many written events...
    static let ackBatch = 100
    /// ...or this long after the first written event not yet acknowledged.
    static let ackDelay: UInt64 = 100_000_000
    /// How long a stopping kevctl waits for its last ack's reply.
    static let finalAckWait: UInt64 = 5_000_000_000
    /// Formatted output is written when nothing more can be read without waiting, or when this big.
    static let outputLimit = 1 << 20

    let connection: KevdConnection
    let format: EventOutputFormat
    let acking: Bool

    private var out: [UInt8] = []
    /// The seq of the last event in `out`, and how many events `out` holds.
    private var outSeq: UInt64?
    private var outCount = 0
    /// The last seq written to stdout and not acknowledged yet, how many events that covers, and when the
    /// batch must be sent at the latest.
    private var ackable: UInt64?
    private var ackableCount = 0
    private var ackDue: UInt64 = 0

    init(connection: KevdConnection, format: EventOutputFormat, acking: Bool) {
        self.connection = connection
        self.format = format
        self.acking = acking
    }

    /// Prints until the stream ends or stdout closes; throws on errors and on `.interrupted` (after the last
    /// ack has been sent).
    func run() throws {
        while true {
            if !connection.hasBufferedMessage || out.count >= Self.outputLimit {
                guard flush() else { return try finish(streamOpen: true) }
            }
            if let seq = ackable, ackableCount >= Self.ackBatch || Clock.monotonicNanoseconds() >= ackDue {
                try sendAck(seq)
            }
            let message: ServerMessage?
            do {
                message = try connection.next(deadline: ackable == nil ? nil : ackDue)
            } catch KevdClientError.timedOut {
                continue
            } catch KevdClientError.interrupted {
                _ = flush()
                try finish(streamOpen: true)
                throw KevdClientError.interrupted
            }
            guard let message else {
                _ = flush()
                return try finish(streamOpen: false)
            }
            switch message {
            case .event(let received):
                format.append(received, to: &out)
                outSeq = received.event.seq
                outCount += 1
            case .gap(let gap):
                Output.error(
                    "kevctl: warning: events \(gap.from) to \(gap.to) were lost before they could be delivered"
                        + (gap.reason.isEmpty ? "" : " (\(gap.reason))"))
                if format == .json {
                    out.append(contentsOf: gap.line)
                    out.append(UInt8(ascii: "\n"))
                }
            case .reply(let reply):
                // Only acks are sent after the subscribe, so this is an ack's reply.
                guard reply.ok else { throw KevdClientError.server(reply.error ?? reply.value.jsonText) }
            }
        }
    }

    /// Writes `out`; on success its events become acknowledgeable. False when stdout is gone.
    private func flush() -> Bool {
        guard !out.isEmpty else { return true }
        let written = writeStdout(out, interrupted: acking ? Interrupts.received : nil)
        out.removeAll(keepingCapacity: true)
        guard written else { return false }
        if let seq = outSeq, acking {
            if ackable == nil { ackDue = Clock.monotonicNanoseconds() + Self.ackDelay }
            ackable = seq
            ackableCount += outCount
        }
        outSeq = nil
        outCount = 0
        return true
    }

    /// Pipelined: the reply is checked when it arrives among the events.
    private func sendAck(_ seq: UInt64) throws {
        try connection.send(KevdRequest.ack(seq))
        ackable = nil
        ackableCount = 0
    }

    /// Sends the last ack and waits (bounded) for every outstanding reply, so the position is stored before
    /// kevctl exits. Nothing to do when the server already closed the stream.
    private func finish(streamOpen: Bool) throws {
        guard acking, streamOpen else { return }
        if let seq = ackable { try sendAck(seq) }
        let deadline = Clock.monotonicNanoseconds() + Self.finalAckWait
        while connection.outstandingReplies > 0 {
            let message: ServerMessage?
            do {
                message = try connection.next(deadline: deadline)
            } catch KevdClientError.timedOut {
                throw Failure("no reply to the last ack within 5 s: the last events may be delivered again")
            }  // A second signal (.interrupted) ends the wait: the caller dies by it.
            guard let message else { return }
            if case .reply(let reply) = message, !reply.ok {
                throw KevdClientError.server(reply.error ?? reply.value.jsonText)
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP while a named subscription is acknowledging: recorded, and announced on a
/// self-pipe that the connection polls (`wakeFD`), so kevctl sends its last ack before dying by the same signal.
/// A blocked write to stdout returns EINTR (no SA_RESTART) and checks the recorded signal.
enum Interrupts {
    /// The signal received, 0 for none. Atomics, so the handler's accesses are async-signal-safe.
    static let signal = Atomic<Int32>(0)
    /// The self-pipe's write end, -1 before `install`.
    static let wakeWriter = Atomic<Int32>(-1)
    static let handled = [SIGINT, SIGTERM, SIGHUP]

    /// Installs the handlers; returns the self-pipe's read end (non-blocking) for `KevdConnection.wakeFD`.
    static func install() throws -> Int32 {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw Failure("pipe: \(String(cString: strerror(errno)))") }
        for fd in fds {
            // Non-blocking: a handler must never block on a full pipe, and draining stops when it is empty.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        // Initialize the lazy globals now: the handler must not be the first to touch them.
        _ = signal.load(ordering: .relaxed)
        wakeWriter.store(fds[1], ordering: .relaxed)
        for signo in handled {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signo in
                Interrupts.signal.store(signo, ordering: .relaxed)
                var byte: UInt8 = 1
                _ = Glibc.write(Interrupts.wakeWriter.load(ordering: .relaxed), &byte, 1)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            sigaction(signo, &action, nil)
        }
        // A parent may start kevctl with these blocked (the mask is inherited across exec; test runners and
        // some supervisors do): blocked, they would stay pending and never stop it.
        var set = sigset_t()
        sigemptyset(&set)
        for signo in handled { sigaddset(&set, signo) }
        sigprocmask(SIG_UNBLOCK, &set, nil)
        return fds[0]
    }

    static func received() -> Bool { signal.load(ordering: .relaxed) != 0 }

    /// Dies by `signo` with its default action, so a shell sees what stopped kevctl (a `while` loop around it
    /// stops on Ctrl-C, for instance).
    static func dieBy(_ signo: Int32) -> Never {
        Glibc.signal(signo, SIG_DFL)
        raise(signo)
        exit(128 + signo)
    }
}
