/// A `[[rule]]` table of a rule file, validated: its filter terms parse, its placeholders are known, its
/// program exists and is executable, its user and group resolve.
public struct RuleSpec: Sendable, Equatable {
    /// Unique across all rule files; letters, digits, `.`, `_`, `-` (it names the rule's stored position).
    public var name: String
    /// The rule file it came from (absolute) and the line of its `[[rule]]` header, for messages and `rules list`.
    public var file: String
    public var line: Int
    /// Filter terms as written (the syntax of `kevctl subscribe`); all must hold. Empty matches every event.
    public var match: [String]
    /// The command line. Without `shell`, `run[0]` is the program (absolute, or found in the fixed PATH at load
    /// time: `program` is the resolved path) and every element is one argument, placeholders substituted
    /// inside it. With `shell`, `program` is `/bin/sh` and the arguments are `-c`, the script, `kevd-<name>`
    /// ($0), then the rest of `run` ($1…): the script text itself has no placeholders (the shell would
    /// interpret what they expand to), only the arguments after it.
    public var run: [RunArgument]
    public var program: String
    public var shell: Bool
    /// Drop privileges to these before exec (kevd must be root to use another user). `groups` are the
    /// supplementary groups of `user`, resolved at load time (the child cannot read /etc/group safely).
    public var user: UInt32?
    public var group: UInt32?
    public var groups: [UInt32]
    /// `no_new_privs = true`: the script and what it starts cannot gain privileges through setuid/setgid
    /// programs or file capabilities (sudo stops working, as it should for a rule that runs untrusted input).
    public var noNewPrivileges: Bool
    public var timeoutNanoseconds: Int64
    /// After the timeout's SIGTERM to the process group, how long before SIGKILL.
    public var killGraceNanoseconds: Int64
    /// Runs of this rule at once; runs for the same key never overlap and start in seq order.
    public var concurrency: Int
    /// Per key: run once the key has been quiet this long, with its latest event. 0: no debounce.
    public var debounceNanoseconds: Int64
    /// With `debounce`: the longest a key's first event waits for its run. 0: no cap.
    public var maxWaitNanoseconds: Int64
    /// Extra attempts after a failure; then a `rule.dead` event.
    public var retries: Int
    /// The wait before the first retry; it doubles for each further one (capped at `maxBackoff`).
    public var backoffNanoseconds: Int64
    /// Whether events journaled while kevd was down, or while the rule was busy, are run later.
    public var catchUp: Bool

    public static let defaultTimeout: Int64 = 60_000_000_000
    public static let defaultKillGrace: Int64 = 5_000_000_000
    public static let defaultBackoff: Int64 = 1_000_000_000
    public static let maxBackoff: Int64 = 3_600_000_000_000

    public init(name: String, file: String, line: Int, match: [String], run: [RunArgument], program: String) {
        self.name = name
        self.file = file
        self.line = line
        self.match = match
        self.run = run
        self.program = program
        shell = false
        user = nil
        group = nil
        groups = []
        noNewPrivileges = false
        timeoutNanoseconds = Self.defaultTimeout
        killGraceNanoseconds = Self.defaultKillGrace
        concurrency = 1
        debounceNanoseconds = 0
        maxWaitNanoseconds = 0
        retries = 0
        backoffNanoseconds = Self.defaultBackoff
        catchUp = true
    }
}

/// One element of a rule's `run`: literal text and `{placeholder}`s, which become exactly one argument.
public struct RunArgument: Sendable, Equatable, CustomStringConvertible {
    public enum Part: Sendable, Equatable {
        case literal(String)
        case field(PlaceholderField)
    }

    public var parts: [Part]
    public init(parts: [Part]) { self.parts = parts }

    /// As written in the rule file (`{{` and `}}` for literal braces).
    public var description: String {
        parts.map { part in
            switch part {
            case .literal(let text): return text.replacingBraces()
            case .field(let field): return "{\(field)}"
            }
        }.joined()
    }
}

/// What a placeholder names: the event's fixed fields, a data field, or the rule's own name.
public enum PlaceholderField: Sendable, Hashable, CustomStringConvertible {
    case seq, id, time, source, type, key, rule
    case data(String)

    public var description: String {
        switch self {
        case .seq: return "seq"
        case .id: return "id"
        case .time: return "time"
        case .source: return "source"
        case .type: return "type"
        case .key: return "key"
        case .rule: return "rule"
        case .data(let name): return "data." + name
        }
    }
}

extension RuleSpec {
    /// The PATH bare program names are looked up in, by the rule loader and by the engine: fixed, so what a
    /// rule runs does not depend on the environment kevd was started from.
    public static let fixedPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

/// Every rule file, in the order read, and what they declare together.
public struct RuleSet: Sendable, Equatable {
    public struct File: Sendable, Equatable {
        /// The file name (`10-usb.toml`): the key for overriding and masking.
        public var name: String
        /// The path it was read from, after overriding.
        public var path: String

        public init(name: String, path: String) {
            self.name = name
            self.path = path
        }
    }

    public var files: [File] = []
    /// Names masked by a symlink to /dev/null, with the mask's path.
    public var masked: [File] = []
    public var rules: [RuleSpec] = []
    /// Sources the rule files declare, added to the configuration's own.
    public var watches: [WatchSpec] = []
    public var timers: [TimerSpec] = []
    public init() {}
}

extension String {
    fileprivate func replacingBraces() -> String {
        var out = ""
        for c in self {
            if c == "{" { out += "{{" } else if c == "}" { out += "}}" } else { out.append(c) }
        }
        return out
    }
}
