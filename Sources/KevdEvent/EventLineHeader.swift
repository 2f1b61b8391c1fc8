import Glibc

/// The fixed fields at the start of a JSON line written by `JSONLineEncoder`, read without a JSON decode:
/// `{"seq":N,"id":"…","time":"…","mono":N,"source":"S","type":"T","key":"K","data":…`.
///
/// Catching-up subscribers filter journal records by these fields far more often than by data; reading them
/// in place saves decoding the whole line per record. Any surprise (another writer's layout, an escaped
/// string) yields nil, and the caller decodes the line properly.
public struct EventLineHeader: Sendable, Equatable {
    public let seq: UInt64
    public let source: String
    public let type: String
    public let key: String

    public init?(_ line: UnsafeRawBufferPointer) {
        var reader = Reader(bytes: line)
        // The id (36 characters) and the time (30) have fixed lengths: jump over them rather than scan.
        guard reader.expect(#"{"seq":"#), let seq = reader.unsigned(),
            reader.expect(#","id":""#), reader.advance(36), reader.expect(#"","time":""#), reader.advance(30),
            reader.expect(#"","mono":"#), reader.unsigned() != nil,
            reader.expect(#","source":""#), let source = reader.plainString(),
            reader.expect(#","type":""#), let type = reader.plainString(),
            reader.expect(#","key":""#), let key = reader.plainString()
        else { return nil }
        self.seq = seq
        self.source = source
        self.type = type
        self.key = key
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

        /// A string without escapes, up to its closing quote (consumed).
        mutating func plainString() -> String? {
            let start = offset
            while offset < bytes.count {
                let b = bytes[offset]
                if b == UInt8(ascii: "\\") { return nil }
                if b == UInt8(ascii: "\"") {
                    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
                    offset += 1
                    return text
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
        // Only the fields the terms read are real; the rest are placeholders they never look at.
        let event = Event(
            seq: header.seq, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0,
            source: EventSource(header.source), type: header.type, key: header.key, data: EventData())
        return matches(event)
    }
}
