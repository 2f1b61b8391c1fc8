import KevdEvent
import KevdSpec

/// A rule's command line and environment for one event.
///
/// Placeholders become text inside exactly the argument they were written in: nothing is split, globbed or
/// interpreted, so a file named `$(touch pwned)` or `-rf` reaches the program as that one argument.
enum RunCommand {
    /// Why an event cannot be turned into a command line (retrying cannot help).
    struct Unfillable: Error, CustomStringConvertible {
        let description: String
    }

    static func arguments(_ spec: RuleSpec, for event: Event) throws(Unfillable) -> [String] {
        var arguments: [String] = []
        arguments.reserveCapacity(spec.run.count)
        for (index, argument) in spec.run.enumerated() {
            if argument.parts.count == 1, case .literal(let text) = argument.parts[0] {
                arguments.append(text)
                continue
            }
            var text = ""
            for part in argument.parts {
                switch part {
                case .literal(let literal): text += literal
                case .field(let field):
                    guard let value = value(of: field, in: event, rule: spec.name) else {
                        throw Unfillable(description: "run[\(index)] needs {\(field)}, which this event does not have")
                    }
                    text += value
                }
            }
            guard !text.utf8.contains(0) else {
                throw Unfillable(description: "run[\(index)] would contain a NUL byte")
            }
            arguments.append(text)
        }
        return arguments
    }

    /// A placeholder's text: numbers and booleans as in the event's JSON line, like filter terms read them.
    static func value(of field: PlaceholderField, in event: Event, rule: String) -> String? {
        switch field {
        case .seq: return String(event.seq)
        case .id: return event.id.string
        case .time: return event.time.rfc3339
        case .source: return event.source.name
        case .type: return event.type
        case .key: return event.key
        case .rule: return rule
        case .data(let name): return FilterField.data(name).text(of: event)
        }
    }

    /// What every run of one rule has in its environment, whatever the event: built once per rule (and again
    /// when a reload changes it), not per run.
    struct FixedEnvironment {
        let path: String
        /// nil when it would hold a NUL byte (left out, like any such variable).
        let rule: String?
        let socket: String?

        init(_ spec: RuleSpec, socket: String) {
            path = "PATH=" + RuleSpec.fixedPATH
            rule = RunCommand.variable("KEVD_RULE=", spec.name)
            self.socket = RunCommand.variable("KEVD_SOCKET=", socket)
        }
    }

    /// The whole environment of a run: a fixed PATH and the event; nothing inherited from kevd. `eventID` is
    /// `event.id.string`, which the caller needs again for the run's events.
    static func environment(
        _ fixed: FixedEnvironment, for event: Event, eventID: String, depth: Int, attempt: Int
    ) -> [String] {
        var env: [String] = []
        env.reserveCapacity(11 + event.data.count)
        env.append(fixed.path)
        env.append("KEVD_EVENT_ID=" + eventID)
        env.append("KEVD_SEQ=" + String(event.seq))
        env.append("KEVD_TIME=" + event.time.rfc3339)
        if let entry = variable("KEVD_SOURCE=", event.source.name) { env.append(entry) }
        if let entry = variable("KEVD_TYPE=", event.type) { env.append(entry) }
        if let entry = variable("KEVD_KEY=", event.key) { env.append(entry) }
        if let rule = fixed.rule { env.append(rule) }
        if let socket = fixed.socket { env.append(socket) }
        env.append("KEVD_DEPTH=" + String(depth))
        env.append("KEVD_ATTEMPT=" + String(attempt))
        if event.data.isEmpty { return env }
        var taken = Set<String>()
        for field in event.data {
            let name = "KEVD_DATA_" + sanitized(field.name)
            // Two data names can sanitize alike (`a-b`, `a.b`): the first keeps the variable, as the event
            // orders them; the JSON line on stdin has both.
            guard taken.insert(name).inserted, let text = FilterField.data(field.name).text(of: event) else { continue }
            if let entry = variable(name + "=", text) { env.append(entry) }
        }
        return env
    }

    /// `prefix` + `value`, or nil when `value` holds a NUL byte: a variable cannot hold one (an emitted key or
    /// value may), so it is left out; the stdin line has it.
    static func variable(_ prefix: String, _ value: String) -> String? {
        value.utf8.contains(0) ? nil : prefix + value
    }

    /// An environment-variable name from a data field name: ASCII letters upper-cased, digits kept, anything
    /// else `_` (`ID_FS.TYPE` → `ID_FS_TYPE`, `dir` → `DIR`).
    static func sanitized(_ name: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(name.utf8.count)
        for c in name.utf8 {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"): bytes.append(c - 32)
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): bytes.append(c)
            default: bytes.append(UInt8(ascii: "_"))
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
