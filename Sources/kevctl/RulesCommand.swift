import ArgumentParser
import Glibc
import KevdClient
import KevdConfig
import KevdEvent
import KevdJournal
import KevdKernel
import KevdSpec

/// `kevctl rules`: check rule files before kevd reloads them, try them on an event without running anything,
/// and list what the running daemon's rules are doing.
struct RulesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Check rule files, dry-run them on an event, or list the daemon's rules.",
        discussion: """
            check and test read the rule files themselves (no daemon needed):
            the FILEs given, else every rule file in the configuration's [rules]
            directories, with overriding and masking as kevd applies them. They
            check as kevd would if it ran as the invoking user: run them as root,
            like kevd, for the checks only root gets (files owned by root, rules
            with a user or group).
            """,
        subcommands: [RulesCheckCommand.self, RulesTestCommand.self, RulesListCommand.self])
}

/// Where `check` and `test` get their rules from: the FILEs, or the configuration's rule directories.
struct RuleSourceOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The kevd configuration whose [rules] directories and timer names to use (default /etc/kevd/kevd.toml).",
        valueName: "file"))
    var config: String?

    @Argument(help: ArgumentHelp(
        "Rule files to read, in this order, instead of the configuration's rule directories.", valueName: "file"))
    var files: [String] = []

    var configPath: String { config ?? ClientOptions.defaultConfig }

    /// Loads the configuration; its problem (`file: cannot read: …`, or `file:line:col: …`) on failure.
    func loadConfig() -> Result<Config, ConfigError> {
        do {
            return .success(try ConfigLoader.load(file: configPath))
        } catch let error as ConfigError {
            return .failure(error)
        } catch {
            return .failure(ConfigError(file: configPath, line: 0, column: 0, message: "\(error)"))
        }
    }

    /// Reads the rules. With FILEs the configuration is read only when `--config` names one (for its timer
    /// names, which rule files may not declare again); without, it is required, since it names the
    /// directories. Never throws: every problem, the configuration's included, is in `problems`.
    func load() -> LoadedRules {
        var problems: [ConfigError] = []
        var config: Config? = nil
        if !files.isEmpty {
            if self.config != nil {
                switch loadConfig() {
                case .success(let loaded): config = loaded
                case .failure(let error): problems.append(error)
                }
            }
            let (set, errors) = RuleLoader.load(files: files, baseTimers: config?.timers.map(\.name) ?? [])
            return LoadedRules(set: set, problems: problems + errors, fileCount: files.count, config: config)
        }
        switch loadConfig() {
        case .success(let loaded): config = loaded
        case .failure(let error): return LoadedRules(set: RuleSet(), problems: [error], fileCount: 0, config: nil)
        }
        let directories = config!.rules.directories
        let (set, errors) = RuleLoader.load(directories: directories, baseTimers: config!.timers.map(\.name))
        // Files refused before they could be parsed (permissions, owner) are not in `set.files` but were checked.
        var checked = Set(set.files.map(\.path))
        let absoluteDirectories = Set(directories.map(PathText.absolute))
        for error in errors where !absoluteDirectories.contains(error.file) { checked.insert(error.file) }
        return LoadedRules(set: set, problems: errors, fileCount: checked.count, config: config)
    }
}

/// The rules read, what was wrong, and how many files that covered (for the summary line).
struct LoadedRules {
    var set: RuleSet
    var problems: [ConfigError]
    var fileCount: Int
    var config: Config?

    /// `3 rule files (1 masked), 5 rules: 2 problems`, or `…: ok`.
    var summary: String {
        var text = counted(fileCount, "rule file")
        if !set.masked.isEmpty { text += " (\(set.masked.count) masked)" }
        text += ", " + counted(set.rules.count, "rule") + ": "
        return text + (problems.isEmpty ? "ok" : counted(problems.count, "problem"))
    }
}

/// `1 rule`, `2 rules`.
func counted(_ n: Int, _ noun: String) -> String { n == 1 ? "1 \(noun)" : "\(n) \(noun)s" }

// MARK: - check

/// `kevctl rules check`: what a reload would say about the rule files, without asking the daemon.
struct RulesCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check rule files: every problem as file:line:col: message.",
        discussion: """
            Prints each problem on stdout, one per line, as FILE:LINE:COL: MESSAGE
            (FILE: MESSAGE when it has no place in the file: unreadable, refused
            for its permissions or owner), and a summary on stderr:
              3 rule files, 5 rules: 2 problems
            kevd refuses a whole set with any problem on reload, keeping the rules
            it runs, so a set is only usable when this says ok.

            Without FILEs, checks what kevd would load: the rule directories of
            --config (a configuration that cannot be read is a problem too).
            With FILEs, checks just those, as one set (duplicate names across them
            are problems); --config then adds its timer names, which rule files
            may not declare again.

            Exit codes: 0 no problems; 1 problems; 64 a bad command line.
            """)

    @OptionGroup var source: RuleSourceOptions

    func run() throws {
        let loaded = source.load()
        var out = ""
        for problem in loaded.problems { out += "\(problem)\n" }
        signal(SIGPIPE, SIG_IGN)
        _ = writeStdout(Array(out.utf8))
        Output.error(loaded.summary)
        if !loaded.problems.isEmpty { throw ExitCode(1) }
    }
}

// MARK: - test

/// `kevctl rules test`: which rules an event would run, and for the others the first term that failed.
struct RulesTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Dry run: which rules would run for an event, and why the others would not. Runs nothing.",
        discussion: """
            The event is --event JSON: an event line as the journal and subscribe
            print it, or just part of one; source and type are required, key
            defaults to "", data to {}, seq to 0, id to all zeros, time to now.
              --event '{"source":"udev","type":"add","data":{"ID_BUS":"usb"}}'
            Or --from-journal SEQ…: those events from the journal
            (<state_dir>/journal of --config, or --state-dir). Put rule FILEs
            before --from-journal, which takes every value up to the next option.

            Rules are read as `kevctl rules check` reads them; their problems are
            printed on stderr, and the rules that loaded are tested.

            For each event, a header line, then one line per rule, in rule order:
              event seq=0 source=udev type=add key=/devices/x
                match    usb-backup  (/etc/kevd/rules.d/10-usb.toml:3)
                no match dvd: term 'data.ID_CDROM' failed: the event has no data.ID_CDROM
                no match sata: term 'data.ID_BUS=ata' failed: data.ID_BUS is "usb"
            Values are as the filter compares them (numbers as their JSON text).
            With --json, one object per event and rule instead:
              {"seq":0,"id":"…","rule":"usb-backup","file":"…","line":3,"match":true}
              {"seq":0,"id":"…","rule":"sata","file":"…","line":9,"match":false,
               "failed":"data.ID_BUS=ata","field":"data.ID_BUS","value":"usb"}
            (one line each; value is null when the event lacks the field).

            Exit codes: 0 the dry run was made (whether rules matched or not);
            1 an error: bad --event JSON, a seq not in the journal, no rule could
            be loaded; 64 a bad command line.
            """)

    @OptionGroup var source: RuleSourceOptions

    @Option(help: ArgumentHelp("An event (or part of one) as a JSON object. Repeatable.", valueName: "json"))
    var event: [String] = []

    @Option(parsing: .upToNextOption, help: ArgumentHelp("Test these events of the journal (one or more seqs).", valueName: "seq"))
    var fromJournal: [UInt64] = []

    @Option(help: "The state directory whose journal --from-journal reads. Default: the config's state_dir.")
    var stateDir: String?

    @Flag(help: "Print one JSON object per event and rule.")
    var json = false

    func validate() throws {
        if event.isEmpty && fromJournal.isEmpty { throw ValidationError("give --event JSON or --from-journal SEQ") }
        if stateDir != nil && fromJournal.isEmpty { throw ValidationError("--state-dir is for --from-journal") }
    }

    func run() throws {
        var failed = false
        try reportingFailures {
            let loaded = source.load()
            for problem in loaded.problems { Output.error("\(problem)") }
            guard !loaded.set.rules.isEmpty else {
                throw Failure(
                    loaded.problems.isEmpty
                        ? "no rules to test (\(loaded.summary))"
                        : "no rule could be loaded (\(loaded.summary)); nothing to test")
            }
            if !loaded.problems.isEmpty {
                Output.error("kevctl: \(loaded.summary); testing the \(counted(loaded.set.rules.count, "rule")) that loaded")
            }
            // Parsed again from their terms, which the loader has already checked.
            let rules = try loaded.set.rules.map { rule in
                do {
                    return (rule, try EventFilter(terms: rule.match))
                } catch {
                    throw Failure("\(rule.file):\(rule.line): rule '\(rule.name)': \(error)")
                }
            }
            var events = try event.map(Self.parse)
            if !fromJournal.isEmpty {
                let (found, missing) = try readJournal(loaded.config)
                events += found
                failed = missing
            }
            signal(SIGPIPE, SIG_IGN)
            for event in events {
                var out = ""
                if !json { out += Self.header(event) }
                for (rule, filter) in rules {
                    out += json ? Self.jsonResult(event, rule, filter) : Self.textResult(event, rule, filter)
                }
                guard writeStdout(Array(out.utf8)) else { return }
            }
        }
        if failed { throw ExitCode(1) }
    }

    // MARK: Events

    /// The members an event line has, in its order, with what a partial `--event` gets for those it lacks.
    static let defaults: [(String, JSONValue?)] = [
        ("seq", .int(0)), ("id", .string(EventID(high: 0, low: 0).string)), ("time", nil), ("mono", .int(0)),
        ("source", nil), ("type", nil), ("key", .string("")), ("data", .object([])),
    ]

    /// An `--event` object, completed with `defaults` and decoded as an event line is, so its fields are
    /// checked the same way. Unknown members are errors: a misspelled "data" must not test an event without it.
    static func parse(_ text: String) throws -> Event {
        let value: JSONValue
        do {
            value = try JSONReader.parse(text)
        } catch {
            throw Failure("--event: not JSON: \(error)")
        }
        guard let members = value.objectValue else { throw Failure("--event: not a JSON object") }
        if let unknown = members.first(where: { member in !defaults.contains { $0.0 == member.0 } }) {
            throw Failure(
                "--event: unknown member \"\(unknown.0)\" (expected seq, id, time, mono, source, type, key, data)")
        }
        var complete: [(String, JSONValue)] = []
        for (name, fallback) in defaults {
            if let given = value[name] {
                complete.append((name, given))
            } else if name == "time" {
                complete.append((name, .string(WallTime(nanoseconds: Clock.realtimeNanoseconds()).rfc3339)))
            } else if let fallback {
                complete.append((name, fallback))
            } else {
                throw Failure("--event: \"\(name)\" is required (the event needs at least source and type)")
            }
        }
        var line: [UInt8] = []
        JSONValue.object(complete).appendJSON(to: &line)
        do {
            return try Event(jsonLine: line)
        } catch {
            throw Failure("--event: \(error)")
        }
    }

    /// The `--from-journal` events, in the order given; whether any seq was missing (reported on stderr).
    private func readJournal(_ config: Config?) throws -> (events: [Event], missing: Bool) {
        let directory: String
        if let stateDir {
            directory = PathText.absolute(stateDir) + "/journal"
        } else if let config {
            directory = config.journalDirectory
        } else {
            switch source.loadConfig() {
            case .success(let loaded): directory = loaded.journalDirectory
            case .failure(let error): throw Failure("--from-journal needs the state directory: \(error)")
            }
        }
        guard FileKind.of(directory) == .directory else {
            throw Failure("no journal at \(directory) (check --state-dir or the config's state_dir)")
        }
        let reader = try JournalReader(directory: directory)
        reader.onProblem = { Output.error("journal: \($0) (skipped)") }
        var events: [Event] = []
        var missing = false
        for seq in fromJournal {
            try reader.seek(.seq(seq))
            let record = try reader.next()
            guard let record, record.seq == seq else {
                let why: String
                if let startsAt = reader.startsAt {
                    why = "retention removed it; the journal starts at seq \(startsAt)"
                } else if record == nil {
                    why = reader.firstAvailableSeq == nil ? "the journal is empty" : "the journal ends before it"
                } else {
                    why = "the journal skips it"
                }
                Output.error("kevctl: seq \(seq) is not in the journal at \(directory) (\(why))")
                missing = true
                continue
            }
            do {
                events.append(try Event(jsonLine: record.payload))
            } catch {
                Output.error("kevctl: seq \(seq) in the journal is not a readable event: \(error)")
                missing = true
            }
        }
        return (events, missing)
    }

    // MARK: Output

    /// `event seq=N source=S type=T key=K`, values as tokens of the text format.
    static func header(_ event: Event) -> String {
        var out = Array("event seq=\(event.seq) source=".utf8)
        EventFormat.appendToken(event.source.name, to: &out)
        out += Array(" type=".utf8)
        EventFormat.appendToken(event.type, to: &out)
        out += Array(" key=".utf8)
        EventFormat.appendToken(event.key, to: &out)
        out.append(UInt8(ascii: "\n"))
        return String(decoding: out, as: UTF8.self)
    }

    /// The first term `event` fails, with the field's value as the filter saw it (nil: the event lacks it).
    static func failure(_ event: Event, _ filter: EventFilter) -> (term: FilterTerm, value: String?)? {
        guard let text = filter.firstFailingTerm(event),
            let term = filter.terms.first(where: { $0.text == text && !$0.matches(event) })
        else { return nil }
        return (term, term.field.text(of: event))
    }

    static func textResult(_ event: Event, _ rule: RuleSpec, _ filter: EventFilter) -> String {
        guard let (term, value) = failure(event, filter) else {
            return "  match    \(rule.name)  (\(rule.file):\(rule.line))\n"
        }
        let why = value.map { "\(term.field) is \(JSONValue.string($0).jsonText)" } ?? "the event has no \(term.field)"
        return "  no match \(rule.name): term '\(term.text)' failed: \(why)\n"
    }

    static func jsonResult(_ event: Event, _ rule: RuleSpec, _ filter: EventFilter) -> String {
        var members: [(String, JSONValue)] = [
            ("seq", .uint(event.seq)), ("id", .string(event.id.string)), ("rule", .string(rule.name)),
            ("file", .string(rule.file)), ("line", .int(Int64(rule.line))),
        ]
        if let (term, value) = failure(event, filter) {
            members += [
                ("match", .bool(false)), ("failed", .string(term.text)), ("field", .string(term.field.description)),
                ("value", value.map { .string($0) } ?? .null),
            ]
        } else {
            members.append(("match", .bool(true)))
        }
        return JSONValue.object(members).jsonText + "\n"
    }
}

// MARK: - list

/// `kevctl rules list`: the running daemon's rules, from its status reply.
struct RulesListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the daemon's active rules with their run counts and lag.",
        discussion: """
            One row per active rule: RUNS started, FAILED runs (each attempt),
            DEAD events (failed after every retry), RUNNING now, PENDING (queued,
            debounced or waiting to retry), LAG (events journaled after the rule's
            position; "catching up" while it works through events journaled while
            it was busy or kevd was down), and where the rule is defined. Then
            the masked rule files and the last reload error, if any.
            --json prints the "rules" member of kevd's status reply as it is.

            Exit codes: 0 success; 1 an error (no daemon, refused, a kevd without
            rules); 64 a bad command line.
            """)

    @OptionGroup var client: ClientOptions

    @Flag(help: "Print the rules member of kevd's status reply instead of the table.")
    var json = false

    func run() throws {
        try reportingFailures {
            let reply = try client.connect().status()
            guard let rules = reply["rules"], rules.objectValue != nil else {
                throw Failure("kevd's status reply has no rules (this kevd does not run rules)")
            }
            let out = json ? rules.jsonText + "\n" : Self.render(rules)
            signal(SIGPIPE, SIG_IGN)
            _ = writeStdout(Array(out.utf8))
        }
    }

    /// The table, then masks and the reload error. Tolerant like `StatusTable`: what kevd does not send is `-`.
    static func render(_ rules: JSONValue) -> String {
        let text = StatusTable.text
        let active = rules["active"]?.arrayValue ?? []
        let files = rules["files"]?.arrayValue ?? []
        var result = ""
        if active.isEmpty {
            result += "no active rules (\(counted(files.count, "rule file")))\n"
        } else {
            var table = [["NAME", "RUNS", "FAILED", "DEAD", "RUNNING", "PENDING", "LAG", "FILE:LINE"]]
            for rule in active {
                var lag = text(rule["lag"])
                if rule["catching_up"]?.boolValue == true { lag += " catching up" }
                table.append([
                    text(rule["name"]), text(rule["runs"]), text(rule["failed"]), text(rule["dead"]),
                    text(rule["running"]), text(rule["pending"]), lag,
                    text(rule["file"]) + (rule["line"].map { ":" + text($0) } ?? ""),
                ])
            }
            result += StatusTable.aligned(table)
        }
        for mask in rules["masked"]?.arrayValue ?? [] { result += "masked: \(text(mask))\n" }
        if let error = rules["error"], !error.isNull { result += "last reload failed: \(text(error))\n" }
        return result
    }
}
