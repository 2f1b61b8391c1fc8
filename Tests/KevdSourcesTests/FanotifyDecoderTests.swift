import Testing

@testable import KevdKernel

@Suite("fanotify record decoder")
struct FanotifyDecoderTests {
    /// One info record as the kernel lays it out: header (type, pad, length), fsid, `struct file_handle` (bytes,
    /// type, handle), then the NUL-terminated name, padded to 4 bytes.
    func info(type: UInt8, fsid: UInt64, handleType: Int32, handle: [UInt8], name: String?) -> [UInt8] {
        var body: [UInt8] = []
        withUnsafeBytes(of: fsid.littleEndian) { body += $0 }
        withUnsafeBytes(of: UInt32(handle.count).littleEndian) { body += $0 }
        withUnsafeBytes(of: handleType.littleEndian) { body += $0 }
        body += handle
        if let name { body += Array(name.utf8) + [0] }
        while (body.count + 4) % 4 != 0 { body.append(0) }
        var out: [UInt8] = [type, 0]
        withUnsafeBytes(of: UInt16(body.count + 4).littleEndian) { out += $0 }
        return out + body
    }

    /// `struct fanotify_event_metadata` (24 bytes) followed by `infos`.
    func event(mask: UInt64, pid: Int32, infos: [[UInt8]], version: UInt8 = 3) -> [UInt8] {
        let body = infos.flatMap { $0 }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt32(24 + body.count).littleEndian) { out += $0 }
        out += [version, 0]
        withUnsafeBytes(of: UInt16(24).littleEndian) { out += $0 }
        withUnsafeBytes(of: mask.littleEndian) { out += $0 }
        withUnsafeBytes(of: Int32(-1).littleEndian) { out += $0 }
        withUnsafeBytes(of: pid.littleEndian) { out += $0 }
        return out + body
    }

    func decode(_ bytes: [UInt8]) -> [(mask: UInt64, pid: Int32, dir: KernelFileHandle?, name: String?, old: String?, new: String?)] {
        bytes.withUnsafeBytes { raw in
            var decoder = FanotifyRecordDecoder(raw)
            var out: [(UInt64, Int32, KernelFileHandle?, String?, String?, String?)] = []
            while let r = decoder.next() {
                let text = { (b: UnsafeBufferPointer<UInt8>?) in b.map { String(decoding: $0, as: UTF8.self) } }
                out.append((r.mask.rawValue, r.pid, r.directory, text(r.name), text(r.oldName), text(r.newName)))
            }
            return out
        }
    }

    @Test("directory handle, name, pid and mask; a rename's two ends")
    func wellFormed() {
        let handle: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        let create = event(
            mask: 0x4000_0100, pid: 42, infos: [info(type: 2, fsid: 7, handleType: 1, handle: handle, name: "new-dir")])
        let rename = event(
            mask: 0x1000_0000, pid: 43,
            infos: [
                info(type: 10, fsid: 7, handleType: 1, handle: handle, name: "a"),
                info(type: 12, fsid: 7, handleType: 1, handle: [9, 9, 9, 9, 9, 9, 9, 9], name: "b"),
            ])
        let records = decode(create + rename)
        #expect(records.count == 2)
        #expect(records[0].mask == 0x4000_0100 && records[0].pid == 42)
        #expect(records[0].dir == KernelFileHandle(fsid: 7, type: 1, bytes: handle))
        #expect(records[0].name == "new-dir")
        #expect(records[1].old == "a" && records[1].new == "b" && records[1].dir == nil)
    }

    @Test("a length past the end, a short header or an unknown version stops decoding without a crash")
    func malformed() {
        let good = event(mask: 0x2, pid: 1, infos: [info(type: 2, fsid: 1, handleType: 1, handle: [1, 2], name: "f")])
        // Truncated at every length: never a crash, never a record that runs past the bytes.
        for cut in 0..<good.count {
            #expect(decode(Array(good[0..<cut])).isEmpty)
        }
        #expect(decode(good).count == 1)
        // An event whose info claims more bytes than the event has: the event is kept, the info is not read.
        var lying = good
        lying[26] = 0xFF
        let records = decode(lying)
        #expect(records.count == 1 && records[0].name == nil)
        // A version this decoder does not know.
        #expect(decode(event(mask: 0x2, pid: 1, infos: [], version: 2)).isEmpty)
        // A handle length past its info record.
        var longHandle = good
        longHandle[24 + 12] = 0xFF
        #expect(decode(longHandle).first?.name == nil)
    }
}
