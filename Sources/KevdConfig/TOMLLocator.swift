/// Finds where tables and keys stand in TOML source text.
///
/// toml++ locates syntax errors; a semantic error ("unknown key", "bad duration") must name the file:line:col
/// of its key or table too. This scanner indexes the headers (`[daemon]`, the n-th `[[watch]]`) and the keys
/// under them. It understands what valid TOML needs for that (comments, quoted keys, multi-line strings and
/// arrays); it runs only on text toml++ already accepted.
struct TOMLLocator {
    struct Position: Equatable {
        let line: Int
        let column: Int
    }

    /// `table` is the header path ("" for the root, "watch" for `[[watch]]`), `index` which array element.
    private struct Scope: Hashable {
        let table: String
        let index: Int
    }

    private var headers: [Scope: Position] = [:]
    private var keys: [Scope: [String: Position]] = [:]

    init(source: String) {
        var scope = Scope(table: "", index: 0)
        var arrayCounts: [String: Int] = [:]
        _ = Self.forEachStatementLine(in: source) { lineNumber, line, trimmed in
            let column = line.count - trimmed.count + 1
            if trimmed.hasPrefix("[[") {
                let name = Self.headerName(trimmed.dropFirst(2))
                let index = arrayCounts[name, default: 0]
                arrayCounts[name] = index + 1
                scope = Scope(table: name, index: index)
                headers[scope] = Position(line: lineNumber, column: column)
            } else if trimmed.hasPrefix("[") {
                scope = Scope(table: Self.headerName(trimmed.dropFirst()), index: 0)
                headers[scope] = Position(line: lineNumber, column: column)
            } else if let equals = trimmed.firstIndex(of: "=") {
                var key = String(trimmed[..<equals]).trimmingSpaces()
                if key.count >= 2, key.first == "\"" || key.first == "'" { key = String(key.dropFirst().dropLast()) }
                keys[scope, default: [:]][key] = Position(line: lineNumber, column: column)
            }
            return nil
        }
    }

    /// Calls `body` with each line that starts a header or a key (its number, the line, the line without leading
    /// blanks), skipping blank and comment lines and the continuation lines of multi-line strings and arrays,
    /// until `body` returns a position, which it returns.
    private static func forEachStatementLine(
        in source: String, _ body: (Int, Substring, Substring) -> Position?
    ) -> Position? {
        var inMultilineString: String? = nil
        var bracketDepth = 0
        var lineNumber = 0
        for rawLine in source.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Substring(rawLine)
            if let delimiter = inMultilineString {
                if line.contains(delimiter) { inMultilineString = nil }
                continue
            }
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if bracketDepth > 0 {
                bracketDepth += bracketBalance(trimmed)
                continue
            }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            if let found = body(lineNumber, line, trimmed) { return found }
            guard !trimmed.hasPrefix("["), let equals = trimmed.firstIndex(of: "=") else { continue }
            let value = trimmed[trimmed.index(after: equals)...].drop { $0 == " " || $0 == "\t" }
            for delimiter in ["\"\"\"", "'''"] where value.hasPrefix(delimiter) {
                if !value.dropFirst(3).contains(delimiter) { inMultilineString = delimiter }
            }
            if value.hasPrefix("[") { bracketDepth = bracketBalance(value) }
        }
        return nil
    }

    /// The first table header whose key starts with neither a bare-key character nor a quote (`[^x]`, `[ !]`, a
    /// `[` that ends its line): toml++ (3.3 and 3.4) asserts on one instead of reporting it, which aborts
    /// kevd, or is undefined behaviour where assertions are off (found by fuzzing). Lines are followed as
    /// `init` follows them, so a `[` inside a multi-line string or array is not taken for a header.
    static func unparsableHeader(in source: String) -> Position? {
        forEachStatementLine(in: source) { lineNumber, line, trimmed in
            guard trimmed.hasPrefix("[") else { return nil }
            // As toml++ reads a header: `[`, blanks, a second `[` only right after the first, blanks, the key.
            let blank: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            var rest = trimmed.utf8.dropFirst()
            let hadBlank = rest.first.map(blank) ?? false
            rest = rest.drop(while: blank)
            if !hadBlank, rest.first == UInt8(ascii: "[") { rest = rest.dropFirst().drop(while: blank) }
            return startsKey(rest.first) ? nil : Position(line: lineNumber, column: line.utf8.count - rest.count + 1)
        }
    }

    /// The first `}` where an array expects an element (`[}]`, `[1, }]`): toml++ asserts on it too, instead of
    /// reporting it (found by fuzzing). Scans characters, skipping strings and comments, and follows the
    /// nesting of arrays and inline tables in values; a `[` first on a line outside any value opens a header.
    static func unparsableArrayElement(in source: String) -> Position? {
        let b = Array(source.utf8)
        var stack: [UInt8] = []  // `[` or `{` of the open values
        var expectElement = false
        var line = 1
        var lineStart = 0
        var blankSoFar = true  // nothing but blanks yet on this line
        var i = 0
        func skipString() {
            let quote = b[i]
            let triple = i + 2 < b.count && b[i + 1] == quote && b[i + 2] == quote
            i += triple ? 3 : 1
            while i < b.count {
                if b[i] == UInt8(ascii: "\\") && quote == UInt8(ascii: "\"") {
                    i += 2
                    continue
                }
                if b[i] == UInt8(ascii: "\n") {
                    guard triple else { return }  // An unterminated string: toml++ reports it.
                    line += 1
                    lineStart = i + 1
                }
                if b[i] == quote {
                    if !triple {
                        i += 1
                        return
                    }
                    if i + 2 < b.count && b[i + 1] == quote && b[i + 2] == quote {
                        i += 3
                        while i < b.count && b[i] == quote { i += 1 }  // `""""` ends with a quote in the text
                        return
                    }
                }
                i += 1
            }
        }
        while i < b.count {
            let c = b[i]
            switch c {
            case UInt8(ascii: "\n"):
                line += 1
                i += 1
                lineStart = i
                blankSoFar = true
                continue
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                i += 1
                continue
            case UInt8(ascii: "#"):
                while i < b.count && b[i] != UInt8(ascii: "\n") { i += 1 }
                continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                skipString()
                expectElement = false
            case UInt8(ascii: "["):
                if stack.isEmpty && blankSoFar {
                    // A table header: its keys may be quoted, and a comment may follow.
                    while i < b.count && b[i] != UInt8(ascii: "\n") && b[i] != UInt8(ascii: "#") {
                        if b[i] == UInt8(ascii: "\"") || b[i] == UInt8(ascii: "'") { skipString() } else { i += 1 }
                    }
                    blankSoFar = false
                    continue
                }
                stack.append(c)
                expectElement = true
                i += 1
            case UInt8(ascii: "{"):
                stack.append(c)
                expectElement = false
                i += 1
            case UInt8(ascii: ","):
                expectElement = stack.last == UInt8(ascii: "[")
                i += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                if c == UInt8(ascii: "}") && expectElement && stack.last == UInt8(ascii: "[") {
                    return Position(line: line, column: i - lineStart + 1)
                }
                if !stack.isEmpty { stack.removeLast() }
                expectElement = false
                i += 1
            default:
                expectElement = false
                i += 1
            }
            blankSoFar = false
        }
        return nil
    }

    /// Whether a header's key may start with `byte` (nil: the line ended): a bare key's letter, digit, `_` or
    /// `-`, a quote, or the `]` of an empty key, which toml++ reports properly.
    private static func startsKey(_ byte: UInt8?) -> Bool {
        guard let byte else { return false }
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return [UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "]")].contains(byte)
        }
    }

    /// Where `key` of the `index`-th `table` is, else (a key written as a header, like an unknown `[extra]`)
    /// the first header of that name, else where the table starts, else the top of the file.
    func position(table: String, index: Int = 0, key: String? = nil) -> Position {
        let scope = Scope(table: table, index: index)
        if let key {
            if let position = keys[scope]?[key] { return position }
            if let position = headers[Scope(table: table.isEmpty ? key : table + "." + key, index: 0)] { return position }
        }
        return headers[scope] ?? Position(line: 1, column: 1)
    }

    private static func headerName(_ text: Substring) -> String {
        let end = text.firstIndex(of: "]") ?? text.endIndex
        return String(text[..<end]).trimmingSpaces()
    }

    /// Net `[` minus `]` outside strings and comments, to follow arrays that span lines.
    private static func bracketBalance(_ text: Substring) -> Int {
        var balance = 0
        var quote: Character? = nil
        var escaped = false
        for c in text {
            if let q = quote {
                if escaped { escaped = false } else if c == "\\" && q == "\"" { escaped = true } else if c == q { quote = nil }
                continue
            }
            switch c {
            case "\"", "'": quote = c
            case "#": return balance
            case "[": balance += 1
            case "]": balance -= 1
            default: break
            }
        }
        return balance
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
