/// Writes events as JSON lines, one object plus `\n` each, with the fields in the documented order:
/// `{"seq":N,"id":"<uuid>","time":"<rfc3339>","mono":N,"source":"..","type":"..","key":"..","data":{...}}`.
///
/// This is the daemon's hot path: an event's worst-case size is computed from its strings' byte counts, the
/// output buffer is grown once for it, and everything is then stored through a raw pointer (`JSONWriter`):
/// no Foundation, no intermediate Strings, bulk copies of text that needs no escaping. The `append*` helpers
/// on `[UInt8]` are for other writers (the socket protocol's replies) and tests; they produce the same bytes.
public struct JSONLineEncoder {
    private let buffer: ByteBuffer

    public init(capacity: Int = 1024) { buffer = ByteBuffer(capacity: capacity) }

    /// Encodes one event and returns the line, `\n` included.
    public mutating func encode(_ event: Event) -> [UInt8] {
        buffer.removeAll()
        JSONLineEncoder.append(event, to: buffer)
        return Array(buffer.bytes)
    }

    /// Appends `event` as one JSON object followed by `\n`: the hot-path entry point.
    public static func append(_ event: Event, to out: ByteBuffer) {
        var noCache = RFC3339SecondCache()
        append(event, to: out, timeCache: &noCache)
    }

    /// The same, for a writer of many events a second: the date and time of day are formatted once per second.
    public static func append(_ event: Event, to out: ByteBuffer, timeCache: inout RFC3339SecondCache) {
        let start = out.reserve(maximumLength(of: event))
        var w = JSONWriter(start)
        w.raw("{\"seq\":")
        w.uint(event.seq)
        w.raw(",\"id\":\"")
        w.id(event.id)
        w.raw("\",\"time\":\"")
        w.time(event.time, cache: &timeCache)
        w.raw("\",\"mono\":")
        w.uint(event.mono)
        w.raw(",\"source\":")
        w.string(event.source.name)
        w.raw(",\"type\":")
        w.string(event.type)
        w.raw(",\"key\":")
        w.string(event.key)
        w.raw(",\"data\":")
        w.data(event.data)
        w.raw("}\n")
        out.commit(w.position - start)
    }

    /// The fixed part's worst case: keys and punctuation (76), two 20-digit integers, the 36-byte id, the 30-byte
    /// time, six quotes and the data braces: 182. Rounded up, so a future field cannot silently overrun.
    static let fixedPartBound = 256

    /// An upper bound of the encoded size: escaping grows a byte to at most 6 (`\u00XX`).
    static func maximumLength(of event: Event) -> Int {
        var n = fixedPartBound + 6 * (event.source.name.utf8.count + event.type.utf8.count + event.key.utf8.count)
        for field in event.data.fields {
            n += 6 * field.name.utf8.count + 4 + maximumLength(of: field.value)
        }
        return n
    }

    static func maximumLength(of value: EventValue) -> Int {
        switch value {
        case .string(let s): return 6 * s.utf8.count + 2
        case .int: return 20
        case .double: return 32
        case .bool: return 5
        }
    }

    public static func append(_ event: Event, to out: inout [UInt8]) {
        let buffer = ByteBuffer(capacity: maximumLength(of: event))
        append(event, to: buffer)
        out.append(contentsOf: buffer.bytes)
    }

    /// Appends `data` as a JSON object, fields in their stored order.
    public static func appendData(_ data: EventData, to out: inout [UInt8]) {
        var n = 2
        for field in data.fields { n += 6 * field.name.utf8.count + 4 + maximumLength(of: field.value) }
        write(upTo: n, to: &out) { $0.data(data) }
    }

    public static func appendValue(_ value: EventValue, to out: inout [UInt8]) {
        write(upTo: maximumLength(of: value), to: &out) { $0.value(value) }
    }

    /// Appends a static ASCII fragment (keys, punctuation) verbatim; the caller guarantees it is valid JSON.
    public static func appendRaw(_ fragment: StaticString, to out: inout [UInt8]) {
        fragment.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    public static func appendBool(_ value: Bool, to out: inout [UInt8]) { appendRaw(value ? "true" : "false", to: &out) }
    public static func appendNull(to out: inout [UInt8]) { appendRaw("null", to: &out) }
    public static func appendDouble(_ value: Double, to out: inout [UInt8]) { appendValue(.double(value), to: &out) }
    public static func appendInt(_ value: Int64, to out: inout [UInt8]) { write(upTo: 20, to: &out) { $0.int(value) } }
    public static func appendUInt(_ value: UInt64, to out: inout [UInt8]) { write(upTo: 20, to: &out) { $0.uint(value) } }

    /// Appends `s` as a quoted JSON string. Escapes `"`, `\` and the C0 controls (short forms where JSON has
    /// them, `\u00XX` otherwise); everything else, DEL and non-ASCII included, is copied as UTF-8, which a
    /// Swift String always is.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        write(upTo: 6 * s.utf8.count + 2, to: &out) { $0.string(s) }
    }

    static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        write(upTo: 6 * bytes.count, to: &out) { $0.escaped(bytes) }
    }

    static func appendEscapedSlow(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        let array = Array(bytes)
        write(upTo: 6 * array.count, to: &out) { w in
            for byte in array { w.escapedByte(byte) }
        }
    }

    private static func write(upTo bound: Int, to out: inout [UInt8], _ body: (inout JSONWriter) -> Void) {
        let buffer = ByteBuffer(capacity: bound)
        let start = buffer.reserve(bound)
        var w = JSONWriter(start)
        body(&w)
        buffer.commit(w.position - start)
        out.append(contentsOf: buffer.bytes)
    }
}

/// Stores JSON text through a raw pointer into space the caller reserved (see `JSONLineEncoder`).
struct JSONWriter {
    private(set) var position: UnsafeMutablePointer<UInt8>

    init(_ start: UnsafeMutablePointer<UInt8>) { position = start }

    @inline(__always)
    mutating func byte(_ b: UInt8) {
        position.pointee = b
        position += 1
    }

    @inline(__always)
    mutating func raw(_ fragment: StaticString) {
        let count = fragment.utf8CodeUnitCount
        position.update(from: fragment.utf8Start, count: count)
        position += count
    }

    @inline(__always)
    mutating func bytes(_ source: UnsafeBufferPointer<UInt8>) {
        guard let base = source.baseAddress, source.count > 0 else { return }
        position.update(from: base, count: source.count)
        position += source.count
    }

    /// "00" through "99": two digits per division (seq and mono have 6 to 14 digits on every line).
    private static let digitPairs: [UInt8] = {
        var pairs = [UInt8]()
        pairs.reserveCapacity(200)
        for n in 0..<100 {
            pairs.append(UInt8(ascii: "0") + UInt8(n / 10))
            pairs.append(UInt8(ascii: "0") + UInt8(n % 10))
        }
        return pairs
    }()

    mutating func uint(_ value: UInt64) {
        if value < 10 {
            byte(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
            return
        }
        var digits = 1
        var bound: UInt64 = 10
        while digits < 20 && value >= bound {
            digits += 1
            bound = bound &* 10
        }
        var v = value
        var p = position + digits
        position = p
        Self.digitPairs.withUnsafeBufferPointer { pairs in
            while v >= 100 {
                let (q, r) = v.quotientAndRemainder(dividingBy: 100)
                p -= 2
                p[0] = pairs[Int(r) * 2]
                p[1] = pairs[Int(r) * 2 + 1]
                v = q
            }
            if v >= 10 {
                p -= 2
                p[0] = pairs[Int(v) * 2]
                p[1] = pairs[Int(v) * 2 + 1]
            } else {
                p -= 1
                p[0] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: v)
            }
        }
    }

    mutating func int(_ value: Int64) {
        if value < 0 { byte(UInt8(ascii: "-")) }
        uint(value.magnitude)
    }

    mutating func value(_ value: EventValue) {
        switch value {
        case .string(let s): string(s)
        case .int(let n): int(n)
        case .bool(let b): b ? raw("true") : raw("false")
        case .double(let d):
            // JSON has no NaN or infinity. Finite values: Swift's shortest round-trip form is valid JSON.
            guard d.isFinite else { return raw("null") }
            var text = d.description
            text.withUTF8 { bytes($0) }
        }
    }

    mutating func data(_ data: EventData) {
        byte(UInt8(ascii: "{"))
        var first = true
        for field in data.fields {
            if !first { byte(UInt8(ascii: ",")) }
            first = false
            string(field.name)
            byte(UInt8(ascii: ":"))
            value(field.value)
        }
        byte(UInt8(ascii: "}"))
    }

    mutating func id(_ id: EventID) {
        id.writeCanonical(to: UnsafeMutableRawPointer(position))
        position += 36
    }

    mutating func time(_ time: WallTime, cache: inout RFC3339SecondCache) {
        time.writeRFC3339(into: UnsafeMutableBufferPointer(start: position, count: WallTime.rfc3339Count), cache: &cache)
        position += WallTime.rfc3339Count
    }

    mutating func string(_ s: String) {
        byte(UInt8(ascii: "\""))
        // A native string lends its bytes as they are; `withUTF8` needs a mutable copy, retained and released
        // for every string of every event.
        if s.utf8.withContiguousStorageIfAvailable({ escaped($0) }) == nil {
            var copy = s
            copy.withUTF8 { escaped($0) }
        }
        byte(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func needsEscape(_ b: UInt8) -> Bool {
        b < 0x20 || b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\")
    }

    /// Most text (paths, names) needs no escaping at all, so copy the runs between escapes in bulk, finding
    /// them 8 bytes at a time (SWAR: a word has a byte below 0x20, a `"` or a `\` iff these masks say so).
    mutating func escaped(_ source: UnsafeBufferPointer<UInt8>) {
        guard let base = source.baseAddress else { return }
        let count = source.count
        var runStart = 0
        var i = 0
        while i < count {
            if i + 8 <= count {
                let word = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
                if !Self.wordNeedsEscape(word) {
                    i += 8
                    continue
                }
            }
            let end = min(i + 8, count)
            while i < end {
                let b = base[i]
                if Self.needsEscape(b) {
                    if runStart < i { bytes(UnsafeBufferPointer(start: base + runStart, count: i - runStart)) }
                    escapedByte(b)
                    runStart = i + 1
                }
                i += 1
            }
        }
        if runStart < count { bytes(UnsafeBufferPointer(start: base + runStart, count: count - runStart)) }
    }

    @inline(__always)
    static func wordNeedsEscape(_ w: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        // Bytes < 0x20: subtracting 0x20 borrows into the high bit only for them (ASCII input; bytes >= 0x80
        // have the high bit set already and are excluded by `& ~w`).
        let control = (w &- 0x2020_2020_2020_2020) & ~w & highs
        let quote = w ^ 0x2222_2222_2222_2222
        let backslash = w ^ 0x5C5C_5C5C_5C5C_5C5C
        let hasQuote = (quote &- ones) & ~quote & highs
        let hasBackslash = (backslash &- ones) & ~backslash & highs
        return (control | hasQuote | hasBackslash) != 0
    }

    mutating func escapedByte(_ b: UInt8) {
        guard Self.needsEscape(b) else { return byte(b) }
        switch b {
        case UInt8(ascii: "\""): raw("\\\"")
        case UInt8(ascii: "\\"): raw("\\\\")
        case UInt8(ascii: "\n"): raw("\\n")
        case UInt8(ascii: "\r"): raw("\\r")
        case UInt8(ascii: "\t"): raw("\\t")
        case 0x08: raw("\\b")
        case 0x0C: raw("\\f")
        default:
            let hex: StaticString = "0123456789abcdef"
            raw("\\u00")
            byte(hex.utf8Start[Int(b >> 4)])
            byte(hex.utf8Start[Int(b & 0xF)])
        }
    }
}
