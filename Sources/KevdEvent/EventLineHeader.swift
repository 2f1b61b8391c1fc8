import Glibc

/// The fixed fields at the start of a JSON line written by `JSONLineEncoder`, read without a JSON decode:
/// `{"seq":N,"id":"…","time":"…","mono":N,"source":"S","type":"T","key":"K","data":…`.
///
/// Catching-up subscribers filter journal records by these fields far more often than by data; reading them
/// in place saves decoding the whole line per record. Any surprise (another writer's layout, an escaped
/// string) yields nil, and the caller decodes the line properly.
public struct EventLineHeader: Sendable, Equatable {
    public let seq: UInt64
    /// Where each value's bytes are in the line (inside its quotes; the seq's digits).
    public let seqRange: Range<Int>
    public let sourceRange: Range<Int>
    public let typeRange: Range<Int>
    public let keyRange: Range<Int>

    public init?(_ line: UnsafeRawBufferPointer) {
        var reader = Reader(bytes: line)
        // The id (36 characters) and the time (30) have fixed lengths: jump over them rather than scan.
        guard reader.expect(#"{"seq":"#) else { return nil }
        let seqStart = reader.offset
        guard let seq = reader.unsigned() else { return nil }
        let seqRange = seqStart..<reader.offset
        guard reader.expect(#","id":""#), reader.advance(36), reader.expect(#"","time":""#), reader.advance(30),
            reader.expect(#"","mono":"#), reader.unsigned() != nil,
            reader.expect(#","source":""#), let source = reader.plainString(),
            reader.expect(#","type":""#), let type = reader.plainString(),
            reader.expect(#","key":""#), let key = reader.plainString()
        else { return nil }
        self.seq = seq
        self.seqRange = seqRange
        sourceRange = source
        typeRange = type
        keyRange = key
    }

    /// A field's text, for callers that need a String (the filter's glob and regex terms, tests).
    public static func text(_ range: Range<Int>, in line: UnsafeRawBufferPointer) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: line[range]), as: UTF8.self)
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        mutating func expect(_ text: StaticString) -> Bool {
            let n = text.utf8CodeUnitCount
            guard offset + n <= bytes.count, memcmp(bytes.baseAddress! + offset, text.utf8Start, n) == 0 else {
                return false
            }
            offset += n
            return true
        }

        mutating func advance(_ n: Int) -> Bool {
            guard offset + n <= bytes.count else { return false }
            offset += n
            return true
        }

        mutating func unsigned() -> UInt64? {
            var value: UInt64 = 0
            let start = offset
            while offset < bytes.count, bytes[offset] >= 0x30, bytes[offset] <= 0x39 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(bytes[offset] - 0x30))
                guard !o1, !o2 else { return nil }
                value = a
                offset += 1
            }
            return offset > start ? value : nil
        }

        /// The range of a string without escapes, up to its closing quote (consumed).
        mutating func plainString() -> Range<Int>? {
            let start = offset
            while offset < bytes.count {
                let b = bytes[offset]
                if b == UInt8(ascii: "\\") { return nil }
                if b == UInt8(ascii: "\"") {
                    offset += 1
                    return start..<(offset - 1)
                }
                offset += 1
            }
            return nil
        }
    }
}

extension EventFilter {
    /// Whether `line` (an event's JSON line) passes, decided from its fixed fields alone; nil when a term needs
    /// more (`data.*`, `id`) or the line's layout is not the encoder's, and the caller must decode it.
    public func matches(line: UnsafeRawBufferPointer) -> Bool? {
        for term in terms {
            switch term.field {
            case .source, .type, .key, .seq: continue
            case .id, .data: return nil
            }
        }
        guard let header = EventLineHeader(line) else { return nil }
        for term in terms {
            let range: Range<Int>
            switch term.field {
            case .source: range = header.sourceRange
            case .type: range = header.typeRange
            case .key: range = header.keyRange
            default: range = header.seqRange
            }
            let bytes = UnsafeRawBufferPointer(rebasing: line[range])
            // Literal terms compare bytes in place; globs and regexes need the text as a String.
            let passed = term.matches(rawField: bytes) ?? term.matches(text: EventLineHeader.text(range, in: line))
            if !passed { return false }
        }
        return true
    }
}
