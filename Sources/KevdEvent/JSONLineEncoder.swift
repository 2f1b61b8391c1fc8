/// Writes events as JSON lines, one object plus `\n` each, with the fields in the documented order:
/// `{"seq":N,"id":"<uuid>","time":"<rfc3339>","mono":N,"source":"..","type":"..","key":"..","data":{...}}`.
///
/// This is the daemon's hot path, so everything appends into a caller-owned buffer that is reused between
/// events: no Foundation, no intermediate Strings, bulk copies of text that needs no escaping. The `append*`
/// helpers are public so other writers (the socket protocol's replies) produce byte-identical JSON.
public struct JSONLineEncoder {
    private var buffer: [UInt8]

    public init(capacity: Int = 1024) {
        buffer = []
        buffer.reserveCapacity(capacity)
    }

    /// Encodes one event into the encoder's own reused buffer and returns the line, `\n` included.
    ///
    /// Keeping the result past the next call is safe but costs a copy then; drop it first to stay allocation-free.
    public mutating func encode(_ event: Event) -> [UInt8] {
        buffer.removeAll(keepingCapacity: true)
        JSONLineEncoder.append(event, to: &buffer)
        return buffer
    }

    /// Appends `event` as one JSON object followed by `\n`.
    public static func append(_ event: Event, to out: inout [UInt8]) {
        appendRaw("{\"seq\":", to: &out)
        appendUInt(event.seq, to: &out)
        appendRaw(",\"id\":\"", to: &out)
        event.id.appendCanonical(to: &out)
        appendRaw("\",\"time\":\"", to: &out)
        event.time.appendRFC3339(to: &out)
        appendRaw("\",\"mono\":", to: &out)
        appendUInt(event.mono, to: &out)
        appendRaw(",\"source\":", to: &out)
        appendString(event.source.name, to: &out)
        appendRaw(",\"type\":", to: &out)
        appendString(event.type, to: &out)
        appendRaw(",\"key\":", to: &out)
        appendString(event.key, to: &out)
        appendRaw(",\"data\":", to: &out)
        appendData(event.data, to: &out)
        appendRaw("}\n", to: &out)
    }

    /// Appends `data` as a JSON object, fields in their stored order.
    public static func appendData(_ data: EventData, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        var first = true
        for field in data.fields {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            appendString(field.name, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(field.value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    public static func appendValue(_ value: EventValue, to out: inout [UInt8]) {
        switch value {
        case .string(let s): appendString(s, to: &out)
        case .int(let n): appendInt(n, to: &out)
        case .double(let d): appendDouble(d, to: &out)
        case .bool(let b): appendBool(b, to: &out)
        }
    }

    /// Appends a static ASCII fragment (keys, punctuation) verbatim; the caller guarantees it is valid JSON.
    @inline(__always)
    public static func appendRaw(_ fragment: StaticString, to out: inout [UInt8]) {
        fragment.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    public static func appendBool(_ value: Bool, to out: inout [UInt8]) {
        appendRaw(value ? "true" : "false", to: &out)
    }

    public static func appendNull(to out: inout [UInt8]) {
        appendRaw("null", to: &out)
    }

    /// Appends the shortest decimal that round-trips (Swift's `description`, which is valid JSON for finite
    /// values, e.g. `0.1`, `1e-05`, `-0.0`). JSON has no NaN or infinity, so those become `null`.
    public static func appendDouble(_ value: Double, to out: inout [UInt8]) {
        guard value.isFinite else { return appendNull(to: &out) }
        out.append(contentsOf: value.description.utf8)
    }

    public static func appendInt(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        appendUInt(value.magnitude, to: &out)
    }

    public static func appendUInt(_ value: UInt64, to out: inout [UInt8]) {
        if value < 10 {
            out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
            return
        }
        // Digits come out least significant first, so fill a scratch area from its end and copy once.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var v = value
            var i = 20
            while v != 0 {
                let (q, r) = v.quotientAndRemainder(dividingBy: 10)
                i -= 1
                digits[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: r)
                v = q
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: digits[i...]))
        }
    }

    /// Appends `s` as a quoted JSON string. Escapes `"`, `\` and the C0 controls (short forms where JSON has
    /// them, `\u00XX` otherwise); everything else, DEL and non-ASCII included, is copied as UTF-8, which a
    /// Swift String always is.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        let done: Void? = s.utf8.withContiguousStorageIfAvailable { appendEscaped($0, to: &out) }
        if done == nil { appendEscapedSlow(s.utf8, to: &out) }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    /// Most text (paths, names) needs no escaping at all, so copy the runs between escapes in bulk.
    static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        var runStart = 0
        for i in bytes.indices where needsEscape(bytes[i]) {
            if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
            appendEscape(bytes[i], to: &out)
            runStart = i + 1
        }
        if runStart < bytes.count {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
    }

    /// For strings without contiguous UTF-8 (bridged ones): byte by byte, same output.
    static func appendEscapedSlow(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for byte in bytes {
            if needsEscape(byte) { appendEscape(byte, to: &out) } else { out.append(byte) }
        }
    }

    static func appendEscape(_ byte: UInt8, to out: inout [UInt8]) {
        switch byte {
        case UInt8(ascii: "\""): appendRaw("\\\"", to: &out)
        case UInt8(ascii: "\\"): appendRaw("\\\\", to: &out)
        case UInt8(ascii: "\n"): appendRaw("\\n", to: &out)
        case UInt8(ascii: "\r"): appendRaw("\\r", to: &out)
        case UInt8(ascii: "\t"): appendRaw("\\t", to: &out)
        case 0x08: appendRaw("\\b", to: &out)
        case 0x0C: appendRaw("\\f", to: &out)
        default:
            let hex: StaticString = "0123456789abcdef"
            appendRaw("\\u00", to: &out)
            hex.withUTF8Buffer { digits in
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0xF)])
            }
        }
    }
}
