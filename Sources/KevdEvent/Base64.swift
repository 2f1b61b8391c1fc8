/// RFC 4648 base64 (standard alphabet, `=` padding), for keeping exact kernel bytes that are not valid UTF-8.
public enum Base64 {
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(encodedCount(bytes.count))
        append(bytes, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the encoding to `out`, for callers that build a larger buffer.
    public static func append(_ bytes: some Collection<UInt8>, to out: inout [UInt8]) {
        let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        alphabet.withUTF8Buffer { table in
            var iterator = bytes.makeIterator()
            while let b0 = iterator.next() {
                let b1 = iterator.next()
                let b2 = b1 == nil ? nil : iterator.next()
                let group = UInt32(b0) << 16 | UInt32(b1 ?? 0) << 8 | UInt32(b2 ?? 0)
                out.append(table[Int(group >> 18)])
                out.append(table[Int(group >> 12 & 0x3F)])
                out.append(b1 == nil ? UInt8(ascii: "=") : table[Int(group >> 6 & 0x3F)])
                out.append(b2 == nil ? UInt8(ascii: "=") : table[Int(group & 0x3F)])
            }
        }
    }

    /// The length of the padded encoding of `count` bytes.
    public static func encodedCount(_ count: Int) -> Int { (count + 2) / 3 * 4 }
}
