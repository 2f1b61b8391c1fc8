#if canImport(Glibc)
import Glibc
#endif

/// Why a filter term is malformed, naming the term so the user can find it among several.
public struct FilterError: Error, Equatable, CustomStringConvertible {
    /// The term as written.
    public let term: String
    /// The UTF-8 byte offset in `term` where the problem starts.
    public let offset: Int
    public let message: String

    /// An error in `term` at UTF-8 byte `offset`.
    public init(term: String, offset: Int, message: String) {
        self.term = term
        self.offset = offset
        self.message = message
    }

    public var description: String { "filter term '\(term)': \(message)" }
}

/// The event field a term tests.
public enum FilterField: Sendable, Hashable, CustomStringConvertible {
    /// The fixed fields, present on every event; `id` reads as its lower-case canonical form.
    case source, type, key, id, seq
    /// A field of `data`, by its full name (`data.ID_SERIAL` is `.data("ID_SERIAL")`).
    case data(String)

    public var description: String {
        switch self {
        case .source: return "source"
        case .type: return "type"
        case .key: return "key"
        case .id: return "id"
        case .seq: return "seq"
        case .data(let name): return "data." + name
        }
    }

    /// The field's value as text, as the filter compares it; nil when the event has no such field.
    ///
    /// Numbers and booleans read as their JSON text (`42`, `0.5`, `true`, `null` for a non-finite double),
    /// so a term can be written the way the value appears in a journal line.
    public func text(of event: Event) -> String? {
        switch self {
        case .source: return event.source.name
        case .type: return event.type
        case .key: return event.key
        case .id: return event.id.string
        case .seq: return String(event.seq)
        case .data(let name):
            switch event.data[name] {
            case nil: return nil
            case .string(let s): return s
            case .int(let n): return String(n)
            case .double(let d): return d.isFinite ? d.description : "null"
            case .bool(let b): return b ? "true" : "false"
            }
        }
    }
}

/// How a term tests its field.
public enum FilterOperator: Sendable, Hashable {
    /// `field=glob`: present and matching the fnmatch(3) glob.
    case equals
    /// `field!=glob`: absent, or not matching the glob.
    case notEquals
    /// `field~regex`: present and containing a match of the POSIX extended regex (unanchored, like grep -E).
    case matches
    /// A bare `field`: present.
    case present
}

/// One parsed term of a filter: `field=glob`, `field!=glob`, `field~regex` or a bare `field`.
public struct FilterTerm: Sendable, CustomStringConvertible {
    /// The term as written.
    public let text: String
    /// The field tested.
    public let field: FilterField
    /// How it is tested.
    public let op: FilterOperator
    /// The glob or regex; empty for `present`.
    public let value: String
    private let matcher: Matcher

    /// A compiled value. Globs without wildcards or escapes compare as bytes, which is what fnmatch would do,
    /// only without a C call per event.
    private enum Matcher: Sendable {
        case none
        case literal([UInt8])
        case glob(ContiguousArray<CChar>)
        case regex(CompiledRegex)
    }

    /// Parses one term: the field ends at the first `!=`, `=` or `~`, and everything after the operator is
    /// the value, `=` and `~` included.
    public init(_ text: String) throws(FilterError) {
        self.text = text
        let utf8 = Array(text.utf8)
        guard !utf8.isEmpty else { throw FilterError(term: text, offset: 0, message: "empty term") }

        var op = FilterOperator.present
        var fieldEnd = utf8.count
        var valueStart = utf8.count
        for k in utf8.indices {
            if utf8[k] == UInt8(ascii: "!"), k + 1 < utf8.count, utf8[k + 1] == UInt8(ascii: "=") {
                (op, fieldEnd, valueStart) = (.notEquals, k, k + 2)
                break
            }
            if utf8[k] == UInt8(ascii: "=") {
                (op, fieldEnd, valueStart) = (.equals, k, k + 1)
                break
            }
            if utf8[k] == UInt8(ascii: "~") {
                (op, fieldEnd, valueStart) = (.matches, k, k + 1)
                break
            }
        }
        let fieldText = String(decoding: utf8[..<fieldEnd], as: UTF8.self)
        let value = String(decoding: utf8[valueStart...], as: UTF8.self)
        self.op = op
        self.value = value

        switch fieldText {
        case "": throw FilterError(term: text, offset: 0, message: "empty field name")
        case "source": field = .source
        case "type": field = .type
        case "key": field = .key
        case "id": field = .id
        case "seq": field = .seq
        case _ where fieldText.hasPrefix("data."):
            let name = String(fieldText.dropFirst(5))
            guard !name.isEmpty else { throw FilterError(term: text, offset: 5, message: "empty data field name") }
            field = .data(name)
        default:
            throw FilterError(
                term: text, offset: 0,
                message: "unknown field '\(fieldText)' (expected source, type, key, id, seq or data.NAME)")
        }

        // fnmatch and regcomp take C strings: a NUL would silently cut the pattern short.
        if let nul = utf8[valueStart...].firstIndex(of: 0) {
            throw FilterError(term: text, offset: nul, message: "NUL byte in the value")
        }
        switch op {
        case .present:
            matcher = .none
        case .equals, .notEquals:
            let wildcards: [UInt8] = [UInt8(ascii: "*"), UInt8(ascii: "?"), UInt8(ascii: "["), UInt8(ascii: "\\")]
            if value.utf8.contains(where: wildcards.contains) {
                matcher = .glob(value.utf8CString)
            } else {
                matcher = .literal(Array(value.utf8))
            }
        case .matches:
            switch CompiledRegex.compile(value) {
            case .success(let regex): matcher = .regex(regex)
            case .failure(let message):
                throw FilterError(term: text, offset: valueStart, message: "bad regex: \(message.text)")
            }
        }
    }

    public var description: String { text }

    /// Whether `event` passes this term. A missing field fails `=`, `~` and a bare field, and passes `!=`
    /// (as in udev rules: `data.DEVTYPE!=disk` holds for events without a DEVTYPE).
    public func matches(_ event: Event) -> Bool {
        if case .present = op {
            if case .data(let name) = field { return event.data[name] != nil }
            return true  // the fixed fields are on every event
        }
        guard let subject = field.text(of: event) else { return op == .notEquals }
        return matches(text: subject)
    }

    /// Tests a present field's text.
    func matches(text subject: String) -> Bool {
        if case .present = op { return true }
        let found: Bool
        switch matcher {
        case .none: found = true
        case .literal(let bytes): found = subject.utf8.elementsEqual(bytes)
        case .glob(let pattern):
            // fnmatch sees C strings: a value with a NUL byte (only possible from a client's JSON) cannot be
            // matched whole, so no glob matches it rather than one matching a prefix of it.
            if subject.utf8.contains(0) {
                found = false
            } else {
                found = subject.withCString { s in
                    pattern.withUnsafeBufferPointer { fnmatch($0.baseAddress!, s, 0) == 0 }
                }
            }
        case .regex(let regex): found = regex.search(subject)
        }
        return op == .notEquals ? !found : found
    }

    /// Tests a present field given as its raw UTF-8 bytes, without building a String; nil when only the text
    /// path can decide (globs, regexes).
    func matches(rawField bytes: UnsafeRawBufferPointer) -> Bool? {
        if case .present = op { return true }
        let found: Bool
        switch matcher {
        case .none: found = true
        case .literal(let literal):
            found = bytes.count == literal.count
                && (bytes.isEmpty || literal.withUnsafeBytes { memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 })
        case .glob, .regex: return nil
        }
        return op == .notEquals ? !found : found
    }
}

/// A POSIX extended regex compiled once by regcomp(3) and freed with its last user.
///
/// @unchecked Sendable: after regcomp the regex_t is only read, and POSIX requires regexec to be safe to call
/// from several threads on one compiled regex (glibc takes a lock inside it). The regex_t lives in its own
/// allocation rather than a stored property so no `&self.property` access (and its exclusivity check, which
/// would trap on concurrent calls) is ever made.
final class CompiledRegex: @unchecked Sendable {
    private let regex: UnsafeMutablePointer<regex_t>

    private init(_ regex: UnsafeMutablePointer<regex_t>) { self.regex = regex }

    deinit {
        regfree(regex)
        regex.deallocate()
    }

    struct Message: Error { let text: String }

    /// How many atoms a regex may stand for once its repetitions are expanded (see `refusal`).
    static let maximumExpandedSize = 1000

    /// Compiles `pattern`, or returns regerror's explanation.
    static func compile(_ pattern: String) -> Result<CompiledRegex, Message> {
        // A subscriber's filter is compiled and matched on the event loop: patterns glibc takes seconds over are
        // refused before they get there.
        if let why = refusal(pattern) { return .failure(Message(text: why)) }
        let regex = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        regex.initialize(to: regex_t())
        // REG_NOSUB: only whether it matches matters, which lets glibc skip tracking submatches.
        let code = regcomp(regex, pattern, REG_EXTENDED | REG_NOSUB)
        guard code == 0 else {
            var buffer = [CChar](repeating: 0, count: 256)
            _ = regerror(code, regex, &buffer, buffer.count)
            // A failed regcomp frees what it allocated; regfree would be undefined here.
            regex.deallocate()
            let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(Message(text: text))
        }
        return .success(CompiledRegex(regex))
    }

    /// Why `pattern` is refused before regcomp sees it, or nil. glibc's regcomp expands every bounded repetition
    /// and computes epsilon closures over the copies, which explodes on some small patterns (found by
    /// fuzzing; times are glibc's, without sanitizers):
    /// - a repetition expanding past `maximumExpandedSize` atoms: `a{1,32767}` takes 45 s;
    /// - a quantifier on a piece that can match empty and repeats already: each `+` in `^A*+++++` or
    ///   `(((((^A*)+)+)+)+)+` multiplies the time (8 s and 13 s), `^((a|b|)+){1,63}$` takes over 5 s. POSIX leaves
    ///   adjacent quantifiers undefined anyway, and `(a*)+` matches what `a*` does;
    /// - an anchor (`^`, `$`, `\b`, `\B`, `\<`, `\>`) inside a repetition: `((((\b)+)+)+)+` takes 2 minutes, and
    ///   repeating an anchor means nothing;
    /// - a back-reference: POSIX extended regexes have none; glibc's extension matches by backtracking, and
    ///   `(.*)(.*)(.*)(.*)(.*)\5\4\3\2\1x` held regexec for minutes on a 100-byte key.
    /// Malformed syntax is passed on to regcomp, which says what is wrong.
    static func refusal(_ pattern: String) -> String? {
        let b = Array(pattern.utf8)
        let cap = Int(Int32.max)
        func times(_ x: Int, _ y: Int) -> Int {
            let (product, overflow) = x.multipliedReportingOverflow(by: y)
            return overflow ? cap : min(product, cap)
        }
        /// A piece: an atom, a group or a repetition of one.
        struct Piece {
            var size: Int
            var nullable: Bool
            var repeats: Bool
            var anchored: Bool
        }
        /// An open group: its size so far, what it holds, whether an alternative ended that can match empty,
        /// whether the pieces of the current alternative before `last` all can.
        struct Group {
            var size = 0
            var repeats = false
            var anchored = false
            var emptyAlternative = false
            var emptySoFar = true
            var last: Piece? = nil
        }
        var groups = [Group()]
        func add(_ piece: Piece) {
            var g = groups[groups.count - 1]
            if let last = g.last { g.emptySoFar = g.emptySoFar && last.nullable }
            g.size = min(g.size + piece.size, cap)
            g.repeats = g.repeats || piece.repeats
            g.anchored = g.anchored || piece.anchored
            g.last = piece
            groups[groups.count - 1] = g
        }
        func close(_ g: Group) -> Piece {
            let nullable = g.emptyAlternative || (g.emptySoFar && (g.last?.nullable ?? true))
            return Piece(size: max(g.size, 1), nullable: nullable, repeats: g.repeats, anchored: g.anchored)
        }
        let atom = Piece(size: 1, nullable: false, repeats: false, anchored: false)
        let anchor = Piece(size: 1, nullable: true, repeats: false, anchored: true)
        /// Applies a quantifier to the last piece; the refusal, if any.
        func quantify(factor: Int, allowsNone: Bool) -> String? {
            var g = groups[groups.count - 1]
            guard var piece = g.last else {
                add(atom)  // Nothing to repeat: regcomp takes it literally or refuses it.
                return nil
            }
            if piece.anchored { return "an anchor (^, $, \\b, \\B, \\<, \\>) cannot be repeated" }
            if piece.nullable && piece.repeats {
                return "a repetition of something that can match empty and repeats already (like a*+ or (a*)+) "
                    + "is not supported: it can take glibc minutes to compile"
            }
            g.size = min(g.size + times(piece.size, factor - 1), cap)
            piece.size = times(piece.size, factor)
            piece.nullable = piece.nullable || allowsNone
            piece.repeats = true
            g.repeats = true
            g.last = piece
            groups[groups.count - 1] = g
            return nil
        }
        func number(_ k: inout Int) -> Int? {
            var n: Int? = nil
            while k < b.count, b[k] >= UInt8(ascii: "0"), b[k] <= UInt8(ascii: "9") {
                n = min((n ?? 0) * 10 + Int(b[k] - UInt8(ascii: "0")), 1 << 20)
                k += 1
            }
            return n
        }
        var i = 0
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "\\"):
                let next = i + 1 < b.count ? b[i + 1] : 0
                if next >= UInt8(ascii: "1") && next <= UInt8(ascii: "9") {
                    return "back-references (\\1 to \\9) are not supported: they can take exponential time"
                }
                let anchors: [UInt8] = [UInt8(ascii: "b"), UInt8(ascii: "B"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "`"), UInt8(ascii: "'")]
                add(anchors.contains(next) ? anchor : atom)
                i += 2
            case UInt8(ascii: "^"), UInt8(ascii: "$"):
                add(anchor)
                i += 1
            case UInt8(ascii: "["):
                // A bracket expression is one atom: `]` first (after an optional `^`) is literal, and `[:`,
                // `[.`, `[=` open classes that end at `:]`, `.]`, `=]`.
                var k = i + 1
                if k < b.count, b[k] == UInt8(ascii: "^") { k += 1 }
                if k < b.count, b[k] == UInt8(ascii: "]") { k += 1 }
                while k < b.count, b[k] != UInt8(ascii: "]") {
                    if b[k] == UInt8(ascii: "["), k + 1 < b.count, [UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "=")].contains(b[k + 1]) {
                        let close = b[k + 1]
                        k += 2
                        while k + 1 < b.count, !(b[k] == close && b[k + 1] == UInt8(ascii: "]")) { k += 1 }
                        k += 2
                    } else {
                        k += 1
                    }
                }
                add(atom)
                i = k + 1
            case UInt8(ascii: "("):
                groups.append(Group())
                i += 1
            case UInt8(ascii: ")"):
                add(groups.count > 1 ? close(groups.removeLast()) : atom)
                i += 1
            case UInt8(ascii: "|"):
                var g = groups[groups.count - 1]
                g.emptyAlternative = g.emptyAlternative || (g.emptySoFar && (g.last?.nullable ?? true))
                g.emptySoFar = true
                g.last = nil
                groups[groups.count - 1] = g
                i += 1
            case UInt8(ascii: "*"), UInt8(ascii: "?"):
                if let why = quantify(factor: 2, allowsNone: true) { return why }
                i += 1
            case UInt8(ascii: "+"):
                if let why = quantify(factor: 2, allowsNone: false) { return why }
                i += 1
            case UInt8(ascii: "{"):
                var k = i + 1
                let low = number(&k)
                var high = low
                if k < b.count, b[k] == UInt8(ascii: ",") {
                    k += 1
                    high = number(&k) ?? low
                }
                if let low, k < b.count, b[k] == UInt8(ascii: "}") {
                    if let why = quantify(factor: max(low, high ?? low) + 1, allowsNone: low == 0) { return why }
                    i = k + 1
                } else {
                    add(atom)
                    i += 1
                }
            default:
                add(atom)
                i += 1
            }
        }
        while groups.count > 1 { add(close(groups.removeLast())) }
        guard groups[0].size <= maximumExpandedSize else {
            return "too complex: its repetitions expand to more than \(maximumExpandedSize) atoms (write smaller {m,n})"
        }
        return nil
    }

    /// Whether `subject` contains a match anywhere. REG_STARTEND passes the length, so text after an embedded
    /// NUL is searched too.
    func search(_ subject: String) -> Bool {
        subject.withCString { text in
            var range = regmatch_t()
            range.rm_so = 0
            range.rm_eo = regoff_t(subject.utf8.count)
            return regexec(regex, text, 1, &range, REG_STARTEND) == 0
        }
    }
}

/// The filter syntax shared by `kevctl journal`, `subscribe`, `wait` and rules: terms that must all hold.
///
/// Terms are `field=glob`, `field!=glob`, `field~regex` and bare `field` (present), over the fields `source`,
/// `type`, `key`, `id`, `seq` and `data.NAME`. Globs are fnmatch(3) with no flags, so `*` matches `/` too
/// (`key=/srv/*` matches `/srv/a/b/c`). Regexes are POSIX extended and match anywhere, like `grep -E`; anchor
/// them with `^` and `$`. Glob and regex compile once; a filter is immutable and safe to use from any thread.
/// Matching is bytewise unless the process has set a UTF-8 LC_CTYPE, as in any C program (`?` and `.` then
/// match one byte of a multi-byte character).
public struct EventFilter: Sendable {
    /// The parsed terms, in the order given; all must hold.
    public let terms: [FilterTerm]

    /// Parses every term; the error names the first bad one. No terms match every event.
    public init(terms: [String]) throws(FilterError) {
        var parsed: [FilterTerm] = []
        parsed.reserveCapacity(terms.count)
        for term in terms { parsed.append(try FilterTerm(term)) }
        self.terms = parsed
    }

    /// Whether `event` passes every term.
    public func matches(_ event: Event) -> Bool {
        terms.allSatisfy { $0.matches(event) }
    }

    /// The first term (as written) that `event` fails, nil when it passes them all: the answer to "why did
    /// my rule not match".
    public func firstFailingTerm(_ event: Event) -> String? {
        terms.first { !$0.matches(event) }?.text
    }
}
