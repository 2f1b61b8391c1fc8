import Testing

@testable import KevdKernel

@Suite("inotify record decoder")
struct InotifyDecoderTests {
    /// Builds records the way the kernel lays them out: 16-byte header, NUL-padded name.
    func record(wd: Int32, mask: UInt32, cookie: UInt32, name: String, padTo: Int = 16) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: wd.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: mask.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: cookie.littleEndian) { bytes += $0 }
        var nameBytes = Array(name.utf8)
        if !nameBytes.isEmpty {
            nameBytes.append(0)
            while nameBytes.count % padTo != 0 { nameBytes.append(0) }
        }
        withUnsafeBytes(of: UInt32(nameBytes.count).littleEndian) { bytes += $0 }
        return bytes + nameBytes
    }

    @Test("decodes consecutive records, names without padding")
    func decodesRecords() {
        let buffer = record(wd: 1, mask: 0x100, cookie: 0, name: "a.txt") + record(wd: 2, mask: 0x40, cookie: 7, name: "")
            + record(wd: 3, mask: 0x80, cookie: 7, name: "exactly-sixteen!")
        let decoded = buffer.withUnsafeBytes { raw in
            var decoder = InotifyRecordDecoder(raw)
            var out: [(Int32, UInt32, UInt32, String)] = []
            while let r = decoder.next() { out.append((r.wd, r.mask.rawValue, r.cookie, String(decoding: r.name, as: UTF8.self))) }
            #expect(decoder.malformedBytes == 0)
            return out
        }
        #expect(decoded.count == 3)
        #expect(decoded[0] == (1, 0x100, 0, "a.txt"))
        #expect(decoded[1] == (2, 0x40, 7, ""))
        #expect(decoded[2] == (3, 0x80, 7, "exactly-sixteen!"))
    }

    @Test("a length running past the buffer stops decoding without reading beyond it")
    func truncatedRecord() {
        var buffer = record(wd: 1, mask: 0x100, cookie: 0, name: "ok")
        buffer += record(wd: 2, mask: 0x100, cookie: 0, name: "cut-short").prefix(20)
        buffer.withUnsafeBytes { raw in
            var decoder = InotifyRecordDecoder(raw)
            var count = 0
            while decoder.next() != nil { count += 1 }
            #expect(count == 1)
            #expect(decoder.malformedBytes == 20)
        }
    }

    @Test("random bytes never crash or hang the decoder")
    func randomBytes() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let length = Int.random(in: 0..<256, using: &generator)
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            bytes.withUnsafeBytes { raw in
                var decoder = InotifyRecordDecoder(raw)
                var steps = 0
                while decoder.next() != nil {
                    steps += 1
                    precondition(steps <= length / 16 + 1)
                }
            }
        }
    }
}
