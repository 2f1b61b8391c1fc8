import KevdEvent

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

extension TableReader {
    func forward(_ t: TOMLTable, index: Int) throws -> ForwardSpec {
        try rejectUnknownKeys(
            t,
            allowed: [
                "name", "type", "url", "credentials", "nkey", "nkey_seed", "tls", "tls_ca", "tls_cert", "tls_key",
                "subject", "filter", "stream", "create_stream", "replicas", "duplicate_window", "max_in_flight",
                "ack_timeout",
            ], name: "forward", index: index)
        guard let type = try string(t, "type", table: "forward", index: index) else {
            throw problem("[[forward]] needs a 'type' (\"nats\")", table: "forward", index: index)
        }
        guard type == "nats" else {
            throw problem("unknown forward type '\(type)'; expected nats", table: "forward", index: index, key: "type")
        }
        let name = try string(t, "name", table: "forward", index: index) ?? "nats"
        guard PositionName.isValid(name) else {
            throw problem(
                "bad forward name '\(name)': letters, digits, '.', '_', '-', at most 64, not starting with a dot",
                table: "forward", index: index, key: "name")
        }
        let urls: [String]
        if let v = t["url"], let one = v.string {
            urls = [one]
        } else {
            urls = try strings(t, "url", table: "forward", index: index) ?? []
        }
        guard !urls.isEmpty else {
            throw problem("[[forward]] needs a 'url': a server URL or an array of them", table: "forward", index: index)
        }
        for url in urls where url.isEmpty || url.contains(" ") {
            throw problem("bad server URL '\(url)'", table: "forward", index: index, key: "url")
        }
        let subjectText = try string(t, "subject", table: "forward", index: index) ?? SubjectTemplate.defaultText
        let subject: SubjectTemplate
        do {
            subject = try SubjectTemplate(subjectText)
        } catch {
            throw problem("bad subject '\(subjectText)': \(error.message)", table: "forward", index: index, key: "subject")
        }
        var spec = ForwardSpec(name: name, urls: urls, subject: subject)
        func file(_ key: String) throws -> String? {
            try string(t, key, table: "forward", index: index).map { try path($0, key: key, table: "forward", index: index) }
        }
        spec.credentials = try file("credentials")
        spec.nkey = try string(t, "nkey", table: "forward", index: index)
        spec.nkeySeed = try file("nkey_seed")
        if spec.credentials != nil && (spec.nkey != nil || spec.nkeySeed != nil) {
            throw problem("'credentials' and 'nkey' are exclusive; choose one", table: "forward", index: index, key: "nkey")
        }
        if (spec.nkey == nil) != (spec.nkeySeed == nil) {
            throw problem("'nkey' (the public key) and 'nkey_seed' (its seed file) go together",
                          table: "forward", index: index, key: spec.nkey == nil ? "nkey_seed" : "nkey")
        }
        spec.tls = try bool(t, "tls", table: "forward", index: index) ?? false
        spec.tlsCA = try file("tls_ca")
        spec.tlsCert = try file("tls_cert")
        spec.tlsKey = try file("tls_key")
        if (spec.tlsCert == nil) != (spec.tlsKey == nil) {
            throw problem("'tls_cert' and 'tls_key' go together", table: "forward", index: index,
                          key: spec.tlsCert == nil ? "tls_key" : "tls_cert")
        }
        if let terms = try strings(t, "filter", table: "forward", index: index) {
            do {
                _ = try EventFilter(terms: terms)
            } catch {
                throw problem("\(error)", table: "forward", index: index, key: "filter")
            }
            spec.filter = terms
        }
        if let stream = try string(t, "stream", table: "forward", index: index) {
            // JetStream stream names: no whitespace, '.', '*', '>', path separators.
            guard !stream.isEmpty, stream.utf8.count <= 255,
                stream.utf8.allSatisfy({ SubjectTemplate.isLiteralByte($0) && !"*>/\\".utf8.contains($0) })
            else {
                throw problem("bad stream name '\(stream)': no spaces, '.', '*', '>', '/' or '\\'",
                              table: "forward", index: index, key: "stream")
            }
            spec.stream = stream
        }
        spec.createStream = try bool(t, "create_stream", table: "forward", index: index) ?? true
        if let n = try int(t, "replicas", in: 1...5, table: "forward", index: index) { spec.replicas = n }
        if let ns = try duration(t, "duplicate_window", table: "forward", index: index) {
            guard ns >= 1_000_000_000 else {
                throw problem("'duplicate_window' must be at least 1s", table: "forward", index: index, key: "duplicate_window")
            }
            spec.duplicateWindowNanoseconds = ns
        }
        if let n = try int(t, "max_in_flight", in: 1...65536, table: "forward", index: index) { spec.maxInFlight = n }
        if let ns = try duration(t, "ack_timeout", table: "forward", index: index) {
            guard ns >= 10_000_000, ns <= 600_000_000_000 else {
                throw problem("'ack_timeout' must be between 10ms and 10m", table: "forward", index: index, key: "ack_timeout")
            }
            spec.ackTimeoutNanoseconds = ns
        }
        return spec
    }
}
