import KevdEvent

/// The line forms `kevctl subscribe` and `kevctl wait` print besides JSON: a greppable text line and
/// shell-safe `KEY='value'` blocks. Both are documented in their commands' help; the rules are here.
public enum EventFormat {
    // MARK: - text

    /// Appends `SEQ TIME SOURCE TYPE KEY NAME=VALUE…` and `\n`: one line per event, fields separated by one
    /// space, data fields in the event's order.
    ///
    /// TIME is the event's RFC 3339 time (UTC, nine fraction digits). SOURCE, TYPE, KEY, and each data NAME
    /// and string VALUE are tokens (`appendToken`). Numbers and booleans are written as their JSON text
    /// (`42`, `0.5`, `true`), so the string `"42"` and the number 42 both read `42`: use JSON for types.
    public static func appendText(_ event: Event, to out: inout [UInt8]) {
        JSONLineEncoder.appendUInt(event.seq, to: &out)
        out.append(space)
        event.time.appendRFC3339(to: &out)
        out.append(space)
        appendToken(event.source.name, to: &out)
        out.append(space)
        appendToken(event.type, to: &out)
        out.append(space)
        appendToken(event.key, to: &out)
        for field in event.data {
            out.append(space)
            appendToken(field.name, to: &out, bareEquals: false)
            out.append(UInt8(ascii: "="))
            if case .string(let s) = field.value {
                appendToken(s, to: &out)
            } else {
                JSONLineEncoder.appendValue(field.value, to: &out)
            }
        }
        out.append(UInt8(ascii: "\n"))
    }

    /// Appends `s` bare when it is non-empty and all printable ASCII (0x21–0x7E) other than `"` and `\` (and
    /// `=` when `bareEquals` is false, for names), else as a JSON string literal: `"…"` with `\"`, `\\`,
    /// `\n`, `\t`, `\r`, `\b`, `\f` and `\u00XX` for the other control bytes, everything else as UTF-8.
    ///
    /// So a token never contains a space or a newline, and a token that starts with `"` is always quoted
    /// (a bare one never does): splitting a line on spaces outside quotes recovers the fields.
    public static func appendToken(_ s: String, to out: inout [UInt8], bareEquals: Bool = true) {
        let bare = !s.isEmpty && s.utf8.allSatisfy { b in
            b > 0x20 && b < 0x7F && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\")
                && (bareEquals || b != UInt8(ascii: "="))
        }
        if bare {
            out.append(contentsOf: s.utf8)
        } else {
            JSONLineEncoder.appendString(s, to: &out)
        }
    }

    // MARK: - env

    /// Appends one `NAME='value'` line per field, then an empty line, for `eval` in a POSIX shell:
    /// `KEVD_SEQ`, `KEVD_ID`, `KEVD_TIME`, `KEVD_SOURCE`, `KEVD_TYPE`, `KEVD_KEY`, then `KEVD_DATA_<NAME>` per
    /// data field (see `environmentName`). Every value is single-quoted (`appendShellQuoted`), numbers and
    /// booleans as their JSON text. Two data names that map to one variable are both written; the later wins.
    public static func appendEnvironment(_ event: Event, to out: inout [UInt8]) {
        func line(_ name: String, _ value: String) {
            out.append(contentsOf: name.utf8)
            out.append(UInt8(ascii: "="))
            appendShellQuoted(value, to: &out)
            out.append(UInt8(ascii: "\n"))
        }
        line("KEVD_SEQ", String(event.seq))
        line("KEVD_ID", event.id.string)
        line("KEVD_TIME", event.time.rfc3339)
        line("KEVD_SOURCE", event.source.name)
        line("KEVD_TYPE", event.type)
        line("KEVD_KEY", event.key)
        for field in event.data {
            let value: String
            if case .string(let s) = field.value {
                value = s
            } else {
                var text: [UInt8] = []
                JSONLineEncoder.appendValue(field.value, to: &text)
                value = String(decoding: text, as: UTF8.self)
            }
            line(environmentName(field.name), value)
        }
        out.append(UInt8(ascii: "\n"))
    }

    /// `KEVD_DATA_` plus the name upper-cased (ASCII letters), with every character other than `A-Z`, `0-9`
    /// and `_` (one per Unicode scalar) replaced by `_`: `ID_SERIAL` stays, `dir` is `KEVD_DATA_DIR`,
    /// `a-b.c` is `KEVD_DATA_A_B_C`.
    public static func environmentName(_ name: String) -> String {
        var result = "KEVD_DATA_"
        result.unicodeScalars.append(
            contentsOf: name.unicodeScalars.map { scalar -> Unicode.Scalar in
                switch scalar {
                case "A"..."Z", "0"..."9", "_": return scalar
                case "a"..."z": return Unicode.Scalar(UInt8(scalar.value) - 0x20)
                default: return "_"
                }
            })
        return result
    }

    /// Appends `s` in single quotes for a POSIX shell: `'` is written `'\''` (close, escaped quote, reopen),
    /// a newline `'"⏎"'` (close, a double-quoted newline, reopen), and NUL, which no shell variable can hold,
    /// is dropped. Inside single quotes nothing else is special, so `$(…)`, backquotes and `\` stay text.
    ///
    /// The newline form keeps every line of a value non-empty (a line after a newline starts with `"`), so
    /// an empty line always ends an env block, even for values with blank lines in them.
    public static func appendShellQuoted(_ s: String, to out: inout [UInt8]) {
        out.append(quote)
        for b in s.utf8 {
            switch b {
            case quote: out.append(contentsOf: [quote, UInt8(ascii: "\\"), quote, quote])
            case UInt8(ascii: "\n"):
                out.append(contentsOf: [quote, UInt8(ascii: "\""), UInt8(ascii: "\n"), UInt8(ascii: "\""), quote])
            case 0: break
            default: out.append(b)
            }
        }
        out.append(quote)
    }

    private static let space = UInt8(ascii: " ")
    private static let quote = UInt8(ascii: "'")
}
