import Testing

@testable import KevdKernel

@Suite("uevent decoder")
struct UeventDecoderTests {
    func decode(_ parts: [String]) -> UdevMonitor.Device? {
        var bytes: [UInt8] = []
        for part in parts {
            bytes += Array(part.utf8)
            bytes.append(0)
        }
        return bytes.withUnsafeBufferPointer { UeventDecoder.decode($0) }
    }

    @Test("a kernel uevent becomes a device with its properties in order")
    func valid() throws {
        let device = try #require(
            decode([
                "add@/devices/pci0000:00/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb", "ACTION=add",
                "DEVPATH=/devices/pci0000:00/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
                "SUBSYSTEM=block", "MAJOR=8", "MINOR=16", "DEVNAME=sdb", "DEVTYPE=disk", "DISKSEQ=12", "SEQNUM=4711",
            ]))
        #expect(device.action == "add")
        #expect(device.subsystem == "block")
        #expect(device.devtype == "disk")
        #expect(device.devnode == "/dev/sdb")
        #expect(device.sysname == "sdb")
        #expect(device.seqnum == 4711)
        #expect(device.properties.map(\.name) == ["ACTION", "DEVPATH", "SUBSYSTEM", "MAJOR", "MINOR", "DEVNAME", "DEVTYPE", "DISKSEQ", "SEQNUM"])
    }

    @Test("inconsistent or incomplete uevents are rejected")
    func rejected() {
        #expect(decode(["add@/devices/x", "ACTION=remove", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1"]) == nil)
        #expect(decode(["add@/devices/x", "ACTION=add", "DEVPATH=/devices/y", "SUBSYSTEM=net", "SEQNUM=1"]) == nil)
        #expect(decode(["add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net"]) == nil)
        #expect(decode(["add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SEQNUM=1"]) == nil)
        #expect(decode(["add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=x1"]) == nil)
        #expect(decode(["add@/devices/x", "ACTION=add", "novalue", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1"]) == nil)
        #expect(decode(["libudev", "ACTION=add"]) == nil)
        #expect(decode([""]) == nil)
    }

    @Test("random bytes never crash the decoder")
    func randomBytes() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("add@/=ACTIONDEVPATHSUBSYSTEMSEQNUM1\0".utf8)
        for _ in 0..<20_000 {
            let length = Int.random(in: 0..<200, using: &generator)
            let bytes = (0..<length).map { _ in
                Bool.random(using: &generator) ? alphabet.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
            }
            _ = bytes.withUnsafeBufferPointer { UeventDecoder.decode($0) }
        }
    }
}
