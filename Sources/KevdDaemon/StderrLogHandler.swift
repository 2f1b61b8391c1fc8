import Glibc
import KevdEvent
import KevdKernel
import Logging

/// kevd's log lines on stderr, metadata as `key=value`, written by `StderrWriter`'s thread so that logging never
/// blocks the caller.
///
/// Two forms: under systemd, stderr is a stream to journald, which stamps every line itself and reads a `<N>`
/// syslog priority prefix (sd-daemon(3)), so a line is `<4>client refused: max_clients uid=1000 …`; anywhere
/// else a line is `2026-11-23T14:25:00.123456789Z warning kevd: client refused: max_clients uid=1000 …`.
public struct StderrLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        /// journald when stderr is the journal (`JOURNAL_STREAM` names stderr's device and inode), else plain.
        case auto
        case journald
        case plain
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let journald: Bool

    /// `journald`: the form, decided once at start-up with `resolve(_:journalStream:)`.
    public init(label: String, level: Logger.Level, journald: Bool) {
        self.label = label
        logLevel = level
        self.journald = journald
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Whether lines get the journald form.
    public static func resolve(_ format: Format, journalStream: String?) -> Bool {
        switch format {
        case .journald: return true
        case .plain: return false
        case .auto: return stderrIsJournal(journalStream)
        }
    }

    /// systemd.exec(5): `JOURNAL_STREAM` is `DEVICE:INODE` of the stream it connected stdout/stderr to. Only if
    /// stderr is still that very file (not redirected by a wrapper) do lines reach journald as they are.
    static func stderrIsJournal(_ journalStream: String?) -> Bool {
        guard let journalStream else { return false }
        let parts = journalStream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(STDERR_FILENO, &st) == 0 else { return false }
        return UInt64(st.st_dev) == device && UInt64(st.st_ino) == inode
    }

    /// The syslog priority journald reads from the `<N>` prefix.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
        file: String, function: String, line: UInt
    ) {
        var fields = metadata
        if let explicit { fields.merge(explicit) { $1 } }
        var text = "\(message)"
        for key in fields.keys.sorted() {
            text += " " + key + "=" + Self.quoted("\(fields[key]!)")
        }
        // Queued for the writer thread: a slow or unread stderr never blocks the caller (the loop).
        StderrWriter.shared.write(Self.line(level: level, label: label, text: text, journald: journald))
    }

    /// The bytes of one log entry in the chosen form, newline included.
    static func line(level: Logger.Level, label: String, text: String, journald: Bool) -> [UInt8] {
        var out: [UInt8] = []
        if journald {
            // One journal entry per line: a message of several lines keeps its priority on each.
            let prefix = "<\(Self.priority(level))>"
            for part in text.split(separator: "\n", omittingEmptySubsequences: false) {
                out += prefix.utf8
                out += part.utf8
                out.append(UInt8(ascii: "\n"))
            }
        } else {
            WallTime(nanoseconds: Clock.realtimeNanoseconds()).appendRFC3339(to: &out)
            out += " \(level) \(label): ".utf8
            out += text.utf8
            out.append(UInt8(ascii: "\n"))
        }
        return out
    }

    /// Starts the thread that writes log lines to stderr (`StderrWriter`), with the drop notice in the same form
    /// as every other line. Call it after the signal mask is set and before `LoggingSystem.bootstrap`.
    public static func startWriter(label: String, journald: Bool) throws {
        try StderrWriter.shared.start { count in
            line(level: .warning, label: label, text: "log lines dropped: stderr was not keeping up log.dropped=\(count)",
                 journald: journald)
        }
    }

    /// A value as is when it is one plain word, else in double quotes with `"`, `\` and line breaks escaped, so
    /// that `key=value` pairs split unambiguously.
    static func quoted(_ value: String) -> String {
        let plain = !value.isEmpty && value.utf8.allSatisfy {
            $0 > 0x20 && $0 != 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "=")
        }
        if plain { return value }
        var out = "\""
        for ch in value.unicodeScalars {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out + "\""
    }
}
