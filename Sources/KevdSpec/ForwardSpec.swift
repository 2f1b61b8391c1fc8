/// A `[[forward]]` table: a durable, exactly-once copy of the journal into a NATS JetStream stream.
public struct ForwardSpec: Sendable, Equatable {
    /// Names the stored position (`<state_dir>/forward/<name>`): a file name, like a named subscription's.
    public var name: String
    /// One or several server URLs (`nats://host:4222`, `tls://…`); the client fails over between them.
    public var urls: [String]
    /// A `.creds` file (user JWT and seed), or an NKey public key with its seed file; at most one of the two.
    public var credentials: String? = nil
    public var nkey: String? = nil
    public var nkeySeed: String? = nil
    /// Require TLS; `tlsCA` verifies the server, `tlsCert`/`tlsKey` authenticate kevd.
    public var tls = false
    public var tlsCA: String? = nil
    public var tlsCert: String? = nil
    public var tlsKey: String? = nil
    public var subject: SubjectTemplate
    /// Filter terms (as `kevctl subscribe` takes them); events that do not pass are skipped, not forwarded.
    public var filter: [String] = []
    public var stream = "KEVD"
    /// Create the stream when it does not exist (with `subjects` from the template); otherwise it must exist.
    public var createStream = true
    public var replicas = 1
    /// JetStream's duplicate window for a stream kevd creates: republished events within it collapse into one.
    public var duplicateWindowNanoseconds: Int64 = 120_000_000_000
    /// Publishes awaiting their acknowledgement at most.
    public var maxInFlight = 4096
    /// How long a publish waits for its acknowledgement before it counts as failed and is sent again.
    public var ackTimeoutNanoseconds: Int64 = 5_000_000_000

    public init(name: String, urls: [String], subject: SubjectTemplate) {
        self.name = name
        self.urls = urls
        self.subject = subject
    }
}

/// A subject with `{host}`, `{source}` and `{type}` tokens, each a whole dot-separated part, so the stream's
/// subjects can be derived (every token becomes `*`) and a value can never add or remove a level.
public struct SubjectTemplate: Sendable, Equatable, CustomStringConvertible {
    public enum Part: Sendable, Equatable {
        case literal(String)
        case host, source, type
    }

    public static let defaultText = "kevd.{host}.{source}.{type}"

    /// The dot-separated parts in order.
    public let parts: [Part]
    public let description: String

    public init(_ text: String) throws(SubjectTemplateError) {
        var parts: [Part] = []
        for token in text.split(separator: ".", omittingEmptySubsequences: false) {
            switch token {
            case "{host}": parts.append(.host)
            case "{source}": parts.append(.source)
            case "{type}": parts.append(.type)
            case "": throw SubjectTemplateError(message: "empty part (two dots in a row, or a dot at an end)")
            default:
                if token.contains("{") || token.contains("}") {
                    throw SubjectTemplateError(
                        message: "'\(token)': a token must be a whole part, one of {host}, {source}, {type}")
                }
                for c in token.utf8 where !SubjectTemplate.isLiteralByte(c) || c == UInt8(ascii: ">") || c == UInt8(ascii: "*") {
                    throw SubjectTemplateError(
                        message: "'\(token)': subjects cannot contain spaces, control characters, '*' or '>'")
                }
                parts.append(.literal(String(token)))
            }
        }
        self.parts = parts
        description = text
    }

    /// The stream subject that covers every subject the template can produce.
    public var streamSubject: String {
        parts.map { part in
            if case .literal(let s) = part { return s }
            return "*"
        }.joined(separator: ".")
    }

    /// Bytes a token value can keep as they are; anything else becomes `_`.
    @inline(__always)
    public static func isLiteralByte(_ c: UInt8) -> Bool {
        c > 0x20 && c < 0x7F && c != UInt8(ascii: ".")
    }
}

public struct SubjectTemplateError: Error, Sendable, Equatable {
    public let message: String
}
