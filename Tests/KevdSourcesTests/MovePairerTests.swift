import Testing

@testable import KevdSources

@Suite("inotify move pairing")
struct MovePairerTests {
    func departure(_ path: String, dir: Int32 = 1, isDirectory: Bool = false, root: Int = 0) -> MovePairer.Departure {
        let name = String(path.split(separator: "/").last ?? "")
        return MovePairer.Departure(
            fromPath: path, fromName: Array(name.utf8), fromDirWD: dir, fromNameText: name, isDirectory: isDirectory,
            roots: [root])
    }

    @Test("a moved_to pairs with the moved_from of its cookie, and the pair is then forgotten")
    func pairing() {
        var pairer = MovePairer()
        pairer.departed(cookie: 7, departure("/r/a"))
        pairer.departed(cookie: 9, departure("/r/b"))
        #expect(pairer.count == 2)
        // Looking up does not forget: every root that sees the arrival reports it.
        #expect(pairer.departure(cookie: 7)?.fromPath == "/r/a")
        #expect(pairer.departure(cookie: 7)?.fromPath == "/r/a")
        #expect(pairer.departure(cookie: 8) == nil)  // an arrival from outside the trees
        #expect(pairer.arrived(cookie: 7)?.fromPath == "/r/a")
        #expect(pairer.departure(cookie: 7) == nil)
        #expect(pairer.arrived(cookie: 7) == nil)
        // Only the unpaired one is left to report.
        let unpaired = pairer.takeUnpaired()
        #expect(unpaired.map(\.cookie) == [9])
        #expect(unpaired.map(\.departure.fromPath) == ["/r/b"])
        #expect(pairer.isEmpty)
    }

    @Test("unpaired halves expire in the order they left, once")
    func unpairedExpiry() {
        var pairer = MovePairer()
        for (cookie, path) in [(30, "/r/c"), (10, "/r/a"), (20, "/r/b")] {
            pairer.departed(cookie: UInt32(cookie), departure(path))
        }
        pairer.arrived(cookie: 10)
        let unpaired = pairer.takeUnpaired()
        #expect(unpaired.map(\.cookie) == [30, 20])
        #expect(unpaired.map(\.departure.fromPath) == ["/r/c", "/r/b"])
        #expect(pairer.isEmpty)
        #expect(pairer.takeUnpaired().isEmpty)
        // A cookie that left, arrived and left again (the kernel's counter wrapped) waits like a new one.
        pairer.departed(cookie: 10, departure("/r/d"))
        #expect(pairer.takeUnpaired().map(\.departure.fromPath) == ["/r/d"])
    }

    @Test("the same rename seen through a second root adds the root, and keeps the first departure")
    func secondRoot() {
        var pairer = MovePairer()
        pairer.departed(cookie: 5, departure("/r/sub/x", dir: 2, isDirectory: true, root: 0))
        pairer.departed(cookie: 5, departure("/r/sub/x", dir: 2, isDirectory: true, root: 1))
        pairer.departed(cookie: 5, departure("/r/sub/x", dir: 2, isDirectory: true, root: 0))
        #expect(pairer.count == 1)
        let waiting = pairer.departure(cookie: 5)
        #expect(waiting?.roots == [0, 1])
        #expect(waiting?.fromDirWD == 2 && waiting?.fromNameText == "x" && waiting?.isDirectory == true)
        #expect(waiting?.fromName == Array("x".utf8))
        let unpaired = pairer.takeUnpaired()
        #expect(unpaired.count == 1)
        #expect(unpaired.first?.departure.roots == [0, 1])
    }

    @Test("removeAll forgets every waiting half without reporting it")
    func removeAll() {
        var pairer = MovePairer()
        pairer.departed(cookie: 1, departure("/r/a"))
        pairer.departed(cookie: 2, departure("/r/b"))
        pairer.removeAll()
        #expect(pairer.isEmpty)
        #expect(pairer.departure(cookie: 1) == nil)
        #expect(pairer.takeUnpaired().isEmpty)
    }
}
