import ArgumentParser
import Glibc
import KevdClient
import KevdEvent

/// `kevctl status`: what the daemon is doing: sources, journal positions, subscribers.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the daemon's sources, journal, and subscribers.",
        discussion: """
            head is the last seq published, durable the last one the journal has
            synced. Per subscriber: next is the first seq it has not been sent,
            lag how many events it is behind head, mode live (in step with the
            stream) or journal (catching up from disk), buffered the bytes waiting
            in its send buffer. Per [[forward]]: position is the last seq
            acknowledged by JetStream (with everything before it), lag how far it
            is behind head, lost how many events journal retention deleted before
            they were sent (each range a kevd/gap event). --json prints kevd's status reply as it is
            (docs/PROTOCOL.md, "status").

            Exit codes: 0 success; 1 an error (no daemon, refused); 64 a bad
            command line.
            """)

    @OptionGroup var client: ClientOptions

    @Flag(help: "Print kevd's reply line instead of the table.")
    var json = false

    func run() throws {
        try reportingFailures {
            let reply = try client.connect().status()
            var out: [UInt8]
            if json {
                out = reply.line
                out.append(UInt8(ascii: "\n"))
            } else {
                out = Array(StatusTable.render(reply.value).utf8)
            }
            signal(SIGPIPE, SIG_IGN)
            _ = writeStdout(out)
        }
    }
}

/// The human form of a status reply. Tolerant: a member the server does not send prints as `-`, so a newer or
/// older kevd still gets a table.
enum StatusTable {
    static func render(_ status: JSONValue) -> String {
        var lines: [[String]] = []
        lines.append(["pid", text(status["pid"])])
        if let config = status["config"] { lines.append(["config", text(config)]) }
        lines.append(["head", text(status["head"])])
        lines.append(["durable", text(status["durable"])])
        if let journal = status["journal"] {
            var parts = [text(journal["directory"])]
            if let segments = journal["segments"]?.uint64Value {
                parts.append(segments == 1 ? "1 segment" : "\(segments) segments")
            }
            if let bytes = journal["bytes"]?.uint64Value { parts.append(Self.bytes(bytes)) }
            if let first = journal["first"], !first.isNull { parts.append("first seq \(text(first))") }
            if let sync = journal["sync"]?.stringValue { parts.append("sync \(sync)") }
            lines.append(["journal", parts.joined(separator: ", ")])
            if let error = journal["error"], !error.isNull { lines.append(["journal error", text(error)]) }
        } else {
            lines.append(["journal", "-"])
        }
        if let lost = status["retention"]?["lost"]?.objectValue, !lost.isEmpty {
            // Events journal retention deleted before a forwarder, rule or named subscription read them.
            lines.append(["lost to retention", lost.map { "\($0.0) \(text($0.1))" }.joined(separator: ", ")])
        }
        if let clients = status["clients"] { lines.append(["clients", text(clients)]) }
        var result = aligned(lines)

        result += "\nsources\n"
        if let sources = status["sources"]?.objectValue, !sources.isEmpty {
            result += aligned(sources.map { ["  " + $0.0, fields($0.1)] })
        } else {
            result += "  -\n"
        }

        if let forwards = status["forward"]?.arrayValue, !forwards.isEmpty {
            result += "\nforward\n"
            var table = [["  NAME", "STATE", "POSITION", "LAG", "IN FLIGHT", "ACKED", "DUPLICATES", "LOST", "URL", "LAST ERROR"]]
            for f in forwards {
                table.append([
                    "  " + text(f["name"]), text(f["state"]), text(f["position"]), text(f["lag"]), text(f["in_flight"]),
                    text(f["acked"]), text(f["duplicates"]), text(f["lost"]), text(f["url"]), text(f["last_error"]),
                ])
            }
            result += aligned(table)
        }

        let subscribers = status["subscribers"]?.arrayValue ?? []
        result += "\nsubscribers: \(subscribers.count)\n"
        guard !subscribers.isEmpty else { return result }
        var table = [["ID", "UID", "PID", "NAME", "NEXT", "LAG", "MODE", "BUFFERED", "FILTER"]]
        for s in subscribers {
            let filter = s["filter"]?.arrayValue?.map { term -> String in
                var out: [UInt8] = []
                EventFormat.appendToken(term.stringValue ?? term.jsonText, to: &out)
                return String(decoding: out, as: UTF8.self)
            }
            table.append([
                text(s["id"]), text(s["uid"]), text(s["pid"]), text(s["name"]), text(s["next"]), text(s["lag"]),
                text(s["mode"]), s["buffered"]?.uint64Value.map(bytes) ?? text(s["buffered"]),
                filter.map { $0.isEmpty ? "(all)" : $0.joined(separator: " ") } ?? "-",
            ])
        }
        return result + aligned(table)
    }

    /// A scalar as plain text (strings unquoted), `-` for absent or null, other values as JSON.
    static func text(_ value: JSONValue?) -> String {
        guard let value, !value.isNull else { return "-" }
        if let s = value.stringValue { return s.isEmpty ? "-" : s }
        return value.jsonText
    }

    /// An object as `name=value` tokens (the text format's quoting), anything else as `text`.
    static func fields(_ value: JSONValue) -> String {
        guard let members = value.objectValue else { return text(value) }
        var out: [UInt8] = []
        for (i, (name, member)) in members.enumerated() {
            if i > 0 { out.append(UInt8(ascii: " ")) }
            EventFormat.appendToken(name, to: &out, bareEquals: false)
            out.append(UInt8(ascii: "="))
            if let s = member.stringValue {
                EventFormat.appendToken(s, to: &out)
            } else {
                member.appendJSON(to: &out)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `12.3 MiB`: binary units, one decimal above bytes.
    static func bytes(_ n: UInt64) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB"]
        guard n >= 1024 else { return "\(n) B" }
        var value = Double(n) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }

    /// Left-aligned columns, two spaces apart; the last column is not padded.
    static func aligned(_ rows: [[String]]) -> String {
        var widths: [Int] = []
        for row in rows {
            for (i, cell) in row.enumerated() {
                if i >= widths.count { widths.append(0) }
                widths[i] = max(widths[i], cell.count)
            }
        }
        var result = ""
        for row in rows {
            for (i, cell) in row.enumerated() {
                result += cell
                if i < row.count - 1 { result += String(repeating: " ", count: widths[i] - cell.count + 2) }
            }
            result += "\n"
        }
        return result
    }
}
