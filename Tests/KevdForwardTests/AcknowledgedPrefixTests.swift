import Testing

@testable import KevdForward

/// The forwarder's core invariant: the position it may store never passes an event JetStream has not
/// acknowledged, whatever order acknowledgements come back in, and does not lag behind a fully acknowledged prefix.
@Suite("forward: the acknowledged prefix")
struct AcknowledgedPrefixTests {
    @Test("in-order acknowledgements move the position one by one")
    func inOrder() {
        var acks = AcknowledgedPrefix(position: 10)
        for seq in UInt64(11)...15 { acks.published(seq) }
        #expect(acks.position == 10)
        for seq in UInt64(11)...15 {
            do { let ok = acks.resolve(seq, failed: false); #expect(ok) }
            #expect(acks.position == seq)
        }
        #expect(acks.isSettled)
        #expect(acks.readThrough == 15)
    }

    @Test("out-of-order acknowledgements move it only over the contiguous prefix")
    func outOfOrder() {
        var acks = AcknowledgedPrefix(position: 0)
        for seq in UInt64(1)...5 { acks.published(seq) }
        do { let ok = acks.resolve(3, failed: false); #expect(ok) }
        do { let ok = acks.resolve(5, failed: false); #expect(ok) }
        do { let ok = acks.resolve(2, failed: false); #expect(ok) }
        #expect(acks.position == 0)  // 1 is still in flight
        do { let ok = acks.resolve(1, failed: false); #expect(ok) }
        #expect(acks.position == 3)  // 4 is still in flight
        #expect(!acks.isSettled)
        do { let ok = acks.resolve(4, failed: false); #expect(ok) }
        #expect(acks.position == 5)
        #expect(acks.isSettled)
    }

    @Test("a failed publish holds the position before it, however many later ones are acknowledged")
    func failureHoldsThePrefix() {
        var acks = AcknowledgedPrefix(position: 0)
        for seq in UInt64(1)...6 { acks.published(seq) }
        do { let ok = acks.resolve(1, failed: false); #expect(ok) }
        do { let ok = acks.resolve(2, failed: true); #expect(ok) }
        for seq in UInt64(3)...6 { do { let ok = acks.resolve(seq, failed: false); #expect(ok) } }
        #expect(acks.position == 1)
        #expect(!acks.isSettled)
        // The retry: everything after the position is read and published again.
        acks.rewind()
        #expect(acks.isSettled)
        #expect(acks.readThrough == 1)
        #expect(acks.position == 1)
        for seq in UInt64(2)...6 { acks.published(seq) }
        for seq in UInt64(2)...6 { do { let ok = acks.resolve(seq, failed: false); #expect(ok) } }
        #expect(acks.position == 6)
    }

    @Test("a failure at the head of the window holds the position even when it is the first in flight")
    func failureAtTheHead() {
        var acks = AcknowledgedPrefix(position: 7)
        acks.published(8)
        acks.published(9)
        do { let ok = acks.resolve(8, failed: true); #expect(ok) }
        do { let ok = acks.resolve(9, failed: false); #expect(ok) }
        #expect(acks.position == 7)
    }

    @Test("a second report for one publish, or a report for one never made, changes nothing")
    func staleReports() {
        var acks = AcknowledgedPrefix(position: 0)
        acks.published(1)
        acks.published(2)
        do { let ok = acks.resolve(2, failed: true); #expect(ok) }
        do { let ok = acks.resolve(2, failed: false); #expect(!ok) }  // failed stays failed: it must be published again
        do { let ok = acks.resolve(1, failed: false); #expect(ok) }
        #expect(acks.position == 1)
        do { let ok = acks.resolve(1, failed: false); #expect(!ok) }
        do { let ok = acks.resolve(3, failed: false); #expect(!ok) }
        #expect(acks.position == 1)
        // After a rewind (a new connection), the old connection's late acknowledgements are not counted.
        acks.rewind()
        do { let ok = acks.resolve(2, failed: false); #expect(!ok) }
        #expect(acks.position == 1)
    }

    @Test("events read and not published count as done once everything before them is")
    func skipped() {
        var acks = AcknowledgedPrefix(position: 0)
        acks.skipped(1)  // nothing in flight: the position moves at once
        #expect(acks.position == 1)
        acks.published(2)
        acks.skipped(3)
        acks.published(4)
        acks.skipped(5)
        do { let ok = acks.resolve(4, failed: false); #expect(ok) }
        #expect(acks.position == 1)
        do { let ok = acks.resolve(2, failed: false); #expect(ok) }
        #expect(acks.position == 5)  // 3 and 5 were filtered out, 2 and 4 acknowledged
    }

    @Test("seqs deleted by retention move the read point, and the position once nothing is in flight")
    func markRead() {
        var acks = AcknowledgedPrefix(position: 3)
        acks.markRead(through: 9)
        #expect(acks.position == 9)
        #expect(acks.readThrough == 9)
        acks.markRead(through: 5)  // never backwards
        #expect(acks.readThrough == 9)
        #expect(acks.position == 9)
        acks.published(10)
        acks.markRead(through: 20)
        #expect(acks.position == 9)  // 10 still in flight
        do { let ok = acks.resolve(10, failed: false); #expect(ok) }
        #expect(acks.position == 20)
    }

    /// A window of `maxInFlight` publishes, acknowledged in random order, some failing, each failure followed by
    /// a rewind once the window has drained (as the forwarder does), over many windows so the pending queue wraps
    /// its storage many times. After every step the position is checked against a plain model.
    @Test("random acknowledgement orders and failures over many windows keep the invariant",
          arguments: [1, 2, 7, 64])
    func randomWindows(maxInFlight: Int) {
        var random = SplitMix64(seed: UInt64(maxInFlight) &* 0x9E37_79B9)
        var acks = AcknowledgedPrefix(position: 0)
        var done: Set<UInt64> = []  // acknowledged or skipped since the last rewind (or before the position)
        var failed: Set<UInt64> = []
        var inFlight: [UInt64] = []
        var next: UInt64 = 1
        var lastPosition: UInt64 = 0
        var failures = 0
        func expected() -> UInt64 {
            var p = lastPosition
            while done.contains(p + 1) { p += 1 }
            return p
        }
        for _ in 0..<20_000 {
            if failed.isEmpty && inFlight.count < maxInFlight && random.next() % 3 != 0 {
                if random.next() % 5 == 0 {
                    acks.skipped(next)
                    done.insert(next)
                } else {
                    acks.published(next)
                    inFlight.append(next)
                }
                next += 1
            } else if !inFlight.isEmpty {
                let index = Int(random.next() % UInt64(inFlight.count))
                let seq = inFlight.remove(at: index)
                let fails = random.next() % 50 == 0
                do { let ok = acks.resolve(seq, failed: fails); #expect(ok) }
                if fails {
                    failed.insert(seq)
                    failures += 1
                } else {
                    done.insert(seq)
                }
            } else if !failed.isEmpty {
                // Everything resolved after a failure: read again from the position.
                acks.rewind()
                #expect(acks.isSettled)
                next = acks.position + 1
                done = done.filter { $0 <= acks.position }
                failed.removeAll()
            }
            let position = acks.position
            #expect(position == expected())
            #expect(position >= lastPosition)
            #expect(inFlight.allSatisfy { $0 > position })
            #expect(failed.allSatisfy { $0 > position })
            lastPosition = position
        }
        #expect(failures > 0)
        #expect(lastPosition > 1000)
    }
}

/// A small deterministic generator, so a failing order can be replayed.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
