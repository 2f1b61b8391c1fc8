import KevdSpec

/// The NATS subject of each event, from the `[[forward]] subject` template (`kevd.{host}.{source}.{type}`).
/// Values become single tokens: bytes NATS would read as a separator, a wildcard or whitespace become `_`, so an
/// event can never publish outside the stream's subjects. Built into one reused buffer (the hot path).
struct SubjectBuilder {
    let template: SubjectTemplate
    /// `{host}`, already a token.
    let host: [UInt8]
    /// The last subject built.
    private(set) var subject: [UInt8] = []

    init(template: SubjectTemplate, host: String) {
        self.template = template
        self.host = Self.token(Array(host.utf8))
    }

    mutating func build(source: UnsafeRawBufferPointer, type: UnsafeRawBufferPointer) {
        subject.removeAll(keepingCapacity: true)
        for (i, part) in template.parts.enumerated() {
            if i > 0 { subject.append(UInt8(ascii: ".")) }
            switch part {
            case .literal(let text): subject.append(contentsOf: text.utf8)
            case .host: subject.append(contentsOf: host)
            case .source: Self.appendToken(source, to: &subject)
            case .type: Self.appendToken(type, to: &subject)
            }
        }
    }

    mutating func build(source: [UInt8], type: [UInt8]) {
        source.withUnsafeBytes { s in type.withUnsafeBytes { build(source: s, type: $0) } }
    }

    /// A value as one subject token: bytes NATS would read as a separator, a wildcard or whitespace become `_`.
    private static func appendToken(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        guard !bytes.isEmpty else {
            out.append(UInt8(ascii: "_"))
            return
        }
        for c in bytes {
            let keep = SubjectTemplate.isLiteralByte(c) && c != UInt8(ascii: "*") && c != UInt8(ascii: ">")
            out.append(keep ? c : UInt8(ascii: "_"))
        }
    }

    static func token(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        bytes.withUnsafeBytes { appendToken($0, to: &out) }
        return out
    }
}
