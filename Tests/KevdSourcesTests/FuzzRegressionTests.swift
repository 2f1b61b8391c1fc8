import Foundation
import KevdEvent
import Testing

@testable import KevdKernel
@testable import KevdSources

/// Inputs `scripts/fuzz` found (Fuzz/), kept as regression cases.
@Suite("Reliability: fuzz regressions (uevents)")
struct ReliabilityFuzzUeventRegressionTests {
    /// The uevent fuzz target's input: `ACTION` and `DEVPATH` twice. The device's event then had two `ACTION`
    /// members in `data`, a journal line that `Event(jsonLine:)` (kevctl, subscribers catching up, rules
    /// replaying) refuses as a duplicate member.
    static let repeatedProperties = Data(
        base64Encoded:
            "YmluZEAvZGV2aWNlcy9wY2kwMDAwOjAwL3VzYjEvMS0xLzEtMToxLjAAQUNUSU9OPWJpbmQAREVWUEFUSD0vZGV2aWNlLjAAQUNUSU9OPWJpbmQA"
            + "REVWUEFUSD0vZGV2aWNlcy9wY2kwMDAwOjAwL3VzYjEvMS0xLzEtMToxLjAAU1VCU1lTVEVNPXVzYgBERVZUWVBFPXVzYl9pbnRlcgFFVlRZUEU9"
            + "NjcvMTAwAFRZUEU9MC8wLzAASU5URVJGQUNFPTgvNi84MABNT0RBTElBUz11c2I6djA3ODFwNTU2N2QwMYswZERFVk5BTUU9ZUBtMGljMDhpc2Mw"
            + "NmlwNTBpbjAwAFNFUU5VTT00NzA1AA==")!

    func decode(_ bytes: [UInt8]) -> UdevMonitor.Device? {
        bytes.withUnsafeBufferPointer { UeventDecoder.decode($0) }
    }

    @Test("a uevent naming a property twice is rejected")
    func repeatedPropertyIsRejected() {
        #expect(decode(Array(Self.repeatedProperties)) == nil)
        var bytes: [UInt8] = []
        for part in ["add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "FOO=1", "FOO=2", "SEQNUM=1"] {
            bytes += Array(part.utf8) + [0]
        }
        #expect(decode(bytes) == nil)
    }

    @Test("every device the decoder accepts makes an event that reads back from its JSON line")
    func acceptedDeviceRoundTrips() throws {
        var bytes: [UInt8] = []
        for part in [
            "add@/devices/virtual/net/veth0", "ACTION=add", "DEVPATH=/devices/virtual/net/veth0", "SUBSYSTEM=net",
            "subsystem=shadow", "INTERFACE=veth0", "IFINDEX=7", "SEQNUM=5012",
        ] {
            bytes += Array(part.utf8) + [0]
        }
        let device = try #require(decode(bytes))
        let draft = UdevSource.draft(device)
        let event = Event(
            seq: 1, id: EventID(high: 0x0190_0000_0000_7000, low: 0x8000_0000_0000_0001), time: WallTime(nanoseconds: 0),
            mono: 1, source: draft.source, type: draft.type, key: draft.key, data: draft.data)
        var encoder = JSONLineEncoder()
        #expect(try Event(jsonLine: encoder.encode(event)) == event)
    }
}
