import ArgumentParser
import Glibc
import KevdClient
import KevdEvent

/// `kevctl emit`: publish an event of source `emit`, and print its seq once it is durable.
struct EmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "emit",
        abstract: "Publish an event (source emit) and print its seq once it is durable in the journal.",
        discussion: """
            Data fields are NAME=VALUE, split at the first =. A VALUE that is a
            plain decimal integer (0, 42, -7: no +, no leading zeros, within 64
            bits) becomes a JSON number, true and false booleans, anything else a
            string. --string NAME=VALUE always sends a string (--string n=42 sends
            "42"; 01234 is a string anyway). Fields are sent in the order given,
            the --string ones last. Names starting with _ are reserved: kevd adds
            _uid, _gid and _pid itself.

            Prints the seq once the event is durable; --json prints kevd's reply
            line ({"ok":true,"op":"emit","seq":…,"id":…}) as it is. With
            --idempotency-key, an emit repeated within kevd's idempotency window
            publishes nothing and prints the first event's seq (and a note on
            stderr; "duplicate":true in the --json reply).

            In a rule's script (KEVD_EVENT_ID set), the emit says where it comes
            from: kevd adds _cause (the event that triggered the rule) and _depth
            (KEVD_DEPTH: how many rule runs deep the script is; 1 when unset or
            not a number) to the event's data. An emit deeper than kevd's [rules]
            cascade_limit is refused (exit 1) and reported as a kevd/error event,
            so rules that trigger each other through emit stop.

            Exit codes: 0 published (or a duplicate of one published); 1 an error
            (no daemon, a bad field, refused by kevd, the cascade limit); 64 a bad
            command line.
            """)

    @OptionGroup var client: ClientOptions

    @Argument(help: "The event type, e.g. backup.done.")
    var type: String

    @Option(help: "The event's key (its ordering key; default empty).")
    var key: String?

    @Option(help: "Publish at most once per key within kevd's idempotency window.")
    var idempotencyKey: String?

    @Option(name: .customLong("string"), help: ArgumentHelp(
        "A data field that is always a string. Repeatable.", valueName: "name=value"))
    var strings: [String] = []

    @Flag(help: "Print kevd's reply line instead of the seq.")
    var json = false

    @Argument(help: ArgumentHelp(
        "Data fields: numbers and true/false are typed, the rest strings.", valueName: "name=value"))
    var fields: [String] = []

    func run() throws {
        try reportingFailures {
            var data: [(String, EventValue)] = []
            for field in fields { try Self.add(field, typed: true, to: &data) }
            for field in strings { try Self.add(field, typed: false, to: &data) }
            let (cause, depth) = Self.ruleRun()
            let connection = try client.connect()
            let reply = try connection.emit(
                type: type, key: key, data: data, idempotencyKey: idempotencyKey, cause: cause, depth: depth)
            let seq = reply["seq"]?.uint64Value ?? 0
            if reply["duplicate"]?.boolValue == true {
                Output.error(
                    "kevctl: already emitted with idempotency key \(idempotencyKey ?? ""): seq \(seq), "
                        + "not published again")
            }
            var out: [UInt8] = []
            if json {
                out = reply.line
            } else {
                out = Array(String(seq).utf8)
            }
            out.append(UInt8(ascii: "\n"))
            signal(SIGPIPE, SIG_IGN)
            _ = writeStdout(out)
        }
    }

    /// The rule run this kevctl is part of, from the environment kevd gives a rule's script: the triggering
    /// event's id (`KEVD_EVENT_ID`) and the run's depth (`KEVD_DEPTH`). Nil outside a rule. A depth that is
    /// missing or not a non-negative integer counts as 1: a script with KEVD_EVENT_ID is at least one run deep.
    static func ruleRun() -> (cause: String?, depth: Int?) {
        guard let id = environment("KEVD_EVENT_ID"), !id.isEmpty else { return (nil, nil) }
        guard let text = environment("KEVD_DEPTH"), let depth = Int(text), depth >= 0 else { return (id, 1) }
        return (id, depth)
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Parses `NAME=VALUE` and appends it; names must be non-empty and unique.
    static func add(_ field: String, typed: Bool, to data: inout [(String, EventValue)]) throws {
        guard let equals = field.firstIndex(of: "=") else {
            throw Failure("data field '\(field)': expected NAME=VALUE")
        }
        let name = String(field[..<equals])
        let text = String(field[field.index(after: equals)...])
        guard !name.isEmpty else { throw Failure("data field '\(field)': empty name") }
        guard !data.contains(where: { $0.0 == name }) else { throw Failure("data field '\(name)' given twice") }
        data.append((name, typed ? typedValue(text) : .string(text)))
    }

    /// An integer in canonical form, a boolean, or the text itself.
    static func typedValue(_ text: String) -> EventValue {
        if text == "true" { return .bool(true) }
        if text == "false" { return .bool(false) }
        let digits = text.hasPrefix("-") ? text.utf8.dropFirst() : text.utf8[...]
        let canonical = !digits.isEmpty && digits.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
            && (digits.first != UInt8(ascii: "0") || digits.count == 1) && text != "-0"
        if canonical, let n = Int64(text) { return .int(n) }
        return .string(text)
    }
}
