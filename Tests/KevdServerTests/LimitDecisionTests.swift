import KevdSpec
import Testing

@testable import KevdServer

@Suite("server: admission and rate decisions")
struct LimitDecisionTests {
    static func settings(maxClients: Int = 10, reserved: Int = 2, perUID: Int = 3) -> ServerSettings {
        var s = ServerSettings()
        s.maxClients = maxClients
        s.reservedClients = reserved
        s.maxClientsPerUID = perUID
        return s
    }

    static func refusal(total: Int, held: Int, exempt: Bool = false, _ s: ServerSettings = settings())
        -> Server.AdmissionRefusal?
    {
        Server.admissionRefusal(uid: 1000, total: total, heldByUID: held, exempt: exempt, settings: s)
    }

    @Test("max_clients refuses everyone, root too, once every slot is taken")
    func full() {
        let r = Self.refusal(total: 10, held: 0, exempt: true)
        #expect(r?.limit == .maxClients)
        #expect(r?.value == 10)
        #expect(r?.configured == 10)
    }

    @Test("the reserved slots are for root and kevd's own user only")
    func reserved() {
        let r = Self.refusal(total: 8, held: 0)
        #expect(r?.limit == .maxClients)
        #expect(r?.configured == 8)
        #expect(r?.message.contains("reserved") == true)
        #expect(Self.refusal(total: 8, held: 0, exempt: true) == nil)
        #expect(Self.refusal(total: 9, held: 0, exempt: true) == nil)
        #expect(Self.refusal(total: 7, held: 0) == nil)
    }

    @Test("max_clients_per_uid counts the uid's own connections; 0 is unlimited; the exempt are not held to it")
    func perUID() {
        #expect(Self.refusal(total: 3, held: 2) == nil)
        let r = Self.refusal(total: 3, held: 3)
        #expect(r?.limit == .maxClientsPerUID)
        #expect(r?.value == 3)
        #expect(r?.message.contains("uid 1000 holds 3") == true)
        #expect(Self.refusal(total: 3, held: 3, exempt: true) == nil)
        #expect(Self.refusal(total: 5, held: 5, Self.settings(perUID: 0)) == nil)
    }

    @Test("the emit rate: a full burst, then refusals, then the rate refills it up to the burst")
    func tokenBucket() {
        let second: UInt64 = 1_000_000_000
        var bucket = TokenBucket(rate: 10, burst: 5, now: 0)
        for _ in 0..<5 { do { let ok = bucket.take(now: 0); #expect(ok) } }
        do { let ok = bucket.take(now: 0); #expect(!ok) }
        do { let ok = bucket.take(now: second / 20); #expect(!ok) }  // half a token
        do { let ok = bucket.take(now: second / 10); #expect(ok) }  // one token after 100 ms at 10/s
        do { let ok = bucket.take(now: second / 10); #expect(!ok) }
        do { let ok = bucket.isFull(now: second / 10); #expect(!ok) }
        do { let ok = bucket.isFull(now: 100 * second); #expect(ok) }
        var taken = 0
        while bucket.take(now: 100 * second) { taken += 1 }
        #expect(taken == 5)  // capped at the burst, however long it rested
    }
}
