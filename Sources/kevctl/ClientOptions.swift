import ArgumentParser
import Glibc
import KevdClient
import KevdConfig
import KevdEvent
import KevdKernel
import KevdSchedule
import KevdSpec

/// The options every command that talks to the daemon shares: which socket to connect to.
struct ClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The kevd socket. Default: $KEVD_SOCKET, else the config's [daemon] socket, else /run/kevd/kevd.sock.",
        valueName: "path"))
    var socket: String?

    @Option(help: ArgumentHelp(
        "The kevd configuration whose [daemon] socket to use (default /etc/kevd/kevd.toml, when it exists).",
        valueName: "file"))
    var config: String?

    static let defaultConfig = "/etc/kevd/kevd.toml"

    /// `--socket`, else `$KEVD_SOCKET`, else the configuration's `[daemon] socket`, else the built-in default.
    /// An explicit `--config` must be readable; the default one is used only when it exists.
    func socketPath() throws -> String {
        if let socket, !socket.isEmpty { return socket }
        if let env = getenv("KEVD_SOCKET"), env.pointee != 0 { return String(cString: env) }
        let file = config ?? Self.defaultConfig
        if config != nil || access(file, F_OK) == 0 {
            do {
                return try ConfigLoader.load(file: file).daemon.socket
            } catch {
                throw Failure("\(error)")
            }
        }
        return DaemonSettings.defaultSocket
    }

    /// Connects to the daemon; the error names the path tried and what to check.
    func connect() throws -> KevdConnection {
        try KevdConnection(path: try socketPath())
    }
}

/// A runtime error: printed as `kevctl: …` on stderr, then the command exits with `code` (1 unless said).
///
/// Thrown instead of ValidationError (exit 64 with usage text): a bad filter, a refused request and a missing
/// daemon are all "it did not work" to a script, which should only need to tell them from a timeout (wait's 2).
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// Runs `body`, turning a `Failure` or a client error into the `kevctl: …` message and its exit code.
func reportingFailures(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as Failure {
        Output.error("kevctl: \(failure.description)")
        throw ExitCode(1)
    } catch let error as KevdClientError {
        Output.error("kevctl: \(error)")
        throw ExitCode(1)
    }
}

/// The `--format` of subscribe and wait.
enum EventOutputFormat: String, ExpressibleByArgument, CaseIterable {
    case json, text, env

    /// Appends `message`'s event in this format.
    func append(_ received: ReceivedEvent, to out: inout [UInt8]) {
        switch self {
        case .json:
            out.append(contentsOf: received.line)
            out.append(UInt8(ascii: "\n"))
        case .text: EventFormat.appendText(received.event, to: &out)
        case .env: EventFormat.appendEnvironment(received.event, to: &out)
        }
    }
}

/// Parses `--from`: `all`, `new`, a seq, an RFC 3339 time, or a duration ago (`10m`, `2h`).
func parseStart(_ text: String) throws -> SubscribeStart {
    switch text {
    case "all": return .all
    case "new": return .new
    default:
        if let seq = UInt64(text) { return .seq(seq) }
        do {
            return .time(WallTime(nanoseconds: try JournalCommand.parseTime(text, "--from")))
        } catch {
            throw Failure("--from: '\(text)' is not all, new, a seq, an RFC 3339 time or a duration ago (10m, 2h)")
        }
    }
}

/// Checks filter terms before sending them, so a typo is reported with the same words as `kevctl journal`.
func checkFilter(_ terms: [String]) throws {
    do {
        _ = try EventFilter(terms: terms)
    } catch {
        throw Failure("\(error)")
    }
}

/// Writes all of `bytes` to stdout; false when stdout is closed (EPIPE, with SIGPIPE ignored) or broken, or
/// when a signal interrupted a blocked write and `interrupted` says to stop (a reader that stopped reading
/// must not keep kevctl from exiting).
func writeStdout(_ bytes: [UInt8], interrupted: (() -> Bool)? = nil) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 {
            if errno == EINTR && interrupted?() != true { continue }
            return false
        }
        offset += n
    }
    return true
}

/// Deadlines on the monotonic clock, as `KevdConnection` takes them.
enum KevctlDeadline {
    /// `text` from now: `0.5`, `30` (seconds) or a duration (`250ms`, `2m`).
    static func after(_ text: String, option: String) throws -> UInt64 {
        let nanoseconds: Int64
        do {
            nanoseconds = try DurationText.parseNanoseconds(text)
        } catch {
            throw Failure("\(option): '\(text)' is not a number of seconds or a duration (0.5, 30, 250ms, 2m)")
        }
        guard nanoseconds > 0 else { throw Failure("\(option) must be more than 0") }
        return Clock.monotonicNanoseconds() + UInt64(nanoseconds)
    }
}
