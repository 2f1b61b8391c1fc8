import Testing

@testable import KevdServer

@Suite("server: the idempotency table")
struct IdempotencyTableTests {
    @Test("a key is found with the first emit's seq and id")
    func duplicate() {
        var table = IdempotencyTable()
        table["1000:k"] = (seq: 7, id: "id-7", expires: 100)
        #expect(table["1000:k"]?.seq == 7)
        #expect(table["1000:k"]?.id == "id-7")
        #expect(table["1001:k"] == nil)
    }

    @Test("a small table keeps its keys, expired or not: the window is a minimum")
    func smallTableKeepsKeys() {
        var table = IdempotencyTable()
        for i in 0..<1024 { table["k\(i)"] = (seq: UInt64(i), id: "", expires: 10) }
        table.expire(now: 1_000)
        #expect(table.count == 1024)
        #expect(table["k0"] != nil)
    }

    @Test("past 1024 keys, the expired ones go and the live ones stay")
    func expiredGo() {
        var table = IdempotencyTable()
        for i in 0..<1000 { table["old\(i)"] = (seq: UInt64(i), id: "", expires: 10) }
        for i in 0..<100 { table["new\(i)"] = (seq: UInt64(2000 + i), id: "", expires: 5_000) }
        table.expire(now: 1_000)
        #expect(table.count == 100)
        #expect(table["old0"] == nil)
        #expect(table["new99"]?.seq == 2099)
    }

    @Test("a flood of live keys is cut to the 50,000 that expire last")
    func flood() {
        var table = IdempotencyTable()
        for i in 0..<100_001 { table["k\(i)"] = (seq: UInt64(i), id: "", expires: UInt64(1_000 + i)) }
        table.expire(now: 0)
        #expect(table.count == 50_000)
        #expect(table["k100000"] != nil)
        #expect(table["k50001"] != nil)
        #expect(table["k50000"] == nil)
        #expect(table["k0"] == nil)
    }
}
