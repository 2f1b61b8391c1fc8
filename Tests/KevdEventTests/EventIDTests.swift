import Foundation
import KevdTestSupport
import Testing

import KevdEvent

@Suite struct EventIDTests {
    static let base = EventIDBase(randA: 0x5A5, randB: 0x2F00_0000_0000_0042)

    static func isCanonical(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard bytes.count == 36 else { return false }
        for (i, c) in bytes.enumerated() {
            let ok = [8, 13, 18, 23].contains(i) ? c == UInt8(ascii: "-") : "0123456789abcdef".utf8.contains(c)
            if !ok { return false }
        }
        return true
    }

    @Test func canonicalForm() {
        let id = EventID(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210)
        #expect(id.string == "01234567-89ab-cdef-fedc-ba9876543210")
        #expect(EventID(high: 0, low: 0).string == "00000000-0000-0000-0000-000000000000")
        #expect(EventID(high: .max, low: .max).string == "ffffffff-ffff-ffff-ffff-ffffffffffff")
        var out: [UInt8] = Array("x".utf8)
        id.appendCanonical(to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "x" + id.string)
    }

    @Test func versionVariantAndTimestamp() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<5000 {
            let ms = rng.next() >> 16
            let base = EventIDBase(randA: rng.next(), randB: rng.next())
            let id = EventID(unixMilliseconds: ms, seq: rng.next() >> (rng.next() % 64), base: base)
            let s = Array(id.string.utf8)
            #expect(Self.isCanonical(id.string))
            #expect(id.high >> 16 == ms)
            #expect((id.high >> 12) & 0xF == 7)
            #expect(s[14] == UInt8(ascii: "7"))
            #expect(id.low >> 62 == 0b10)
            #expect([UInt8(ascii: "8"), UInt8(ascii: "9"), UInt8(ascii: "a"), UInt8(ascii: "b")].contains(s[19]))
            // Foundation agrees it is a UUID and spells it the same way.
            #expect(UUID(uuidString: id.string)?.uuidString.lowercased() == id.string)
        }
        // Milliseconds are 48 bits: 2^48 ms is year 10889, so only the top bits are dropped.
        #expect(EventID(unixMilliseconds: 1 << 48 | 5, seq: 0, base: Self.base).high >> 16 == 5)
    }

    @Test func parseRoundTrip() {
        var rng = SplitMix64(seed: 8)
        for _ in 0..<2000 {
            let id = EventID(high: rng.next(), low: rng.next())
            #expect(EventID(id.string) == id)
            #expect(EventID(id.string.uppercased()) == id)
        }
    }

    @Test(arguments: [
        "", "01234567-89ab-cdef-fedc-ba987654321", "01234567-89ab-cdef-fedc-ba98765432100",
        "0123456789ab-cdef-fedc-ba9876543210-", "01234567-89ab-cdef-fedc_ba9876543210",
        "0123456g-89ab-cdef-fedc-ba9876543210", "01234567089ab-cdef-fedc-ba9876543210",
        "{01234567-89ab-cdef-fedc-ba9876543210}", " 01234567-89ab-cdef-fedc-ba987654321",
        "01234567-89ab-cdef-fedc-ba987654321é",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(EventID(text) == nil)
    }

    @Test func distinctSeqsGiveDistinctIDs() {
        let ms: UInt64 = 1_795_417_883_123
        var seen = Set<EventID>()
        for seq in UInt64(0)..<20_000 { seen.insert(EventID(unixMilliseconds: ms, seq: seq, base: Self.base)) }
        #expect(seen.count == 20_000)

        // Where the 62-bit low counter wraps, the carry moves into rand_a, so the ids still differ.
        let wrapBase = EventIDBase(randA: 0xFFF, randB: .max)
        let edges: [UInt64] = [0, 1, 2, 1 << 62 - 1, 1 << 62, 1 << 62 + 1, 2 << 62, 3 << 62, .max - 1, .max]
        var edgeIDs = Set<EventID>()
        for seq in edges {
            let id = EventID(unixMilliseconds: ms, seq: seq, base: wrapBase)
            #expect((id.high >> 12) & 0xF == 7 && id.low >> 62 == 0b10)
            edgeIDs.insert(id)
        }
        #expect(edgeIDs.count == edges.count)
    }
}

@Suite("an id's run")
struct EventIDRunTests {
    @Test("every id of a run gives back the run's base, whatever its seq and time; another run's does not")
    func runBase() {
        var random = SplitMix64(seed: 18)
        for _ in 0..<1000 {
            let base = EventIDBase(randA: random.next(), randB: random.next())
            let other = EventIDBase(randA: random.next(), randB: random.next())
            let seq = random.next() >> (random.next() % 64)
            let ms = random.next() & 0xFFFF_FFFF_FFFF
            #expect(EventID(unixMilliseconds: ms, seq: seq, base: base).runBase(seq: seq) == base)
            #expect(EventID(unixMilliseconds: ms, seq: seq, base: other).runBase(seq: seq) != base)
        }
        // The wrap-arounds: a base near the top of its 62 bits, a seq past 2^62 (it carries into randA).
        let top = EventIDBase(randA: 0xFFF, randB: 0x3FFF_FFFF_FFFF_FFFF)
        for seq: UInt64 in [0, 1, 1 << 62, UInt64.max] {
            #expect(EventID(unixMilliseconds: 1, seq: seq, base: top).runBase(seq: seq) == top)
        }
    }
}
