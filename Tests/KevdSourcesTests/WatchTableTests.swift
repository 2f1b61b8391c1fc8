import Testing

@testable import KevdSources

@Suite("inotify watch table")
struct WatchTableTests {
    /// /r (1) with /r/a (2), /r/a/b (3), /r/c (4).
    func sample() -> WatchTable {
        var table = WatchTable()
        table.confirm(1, parent: WatchTable.noParent, name: "/r", path: "/r", role: .tree(root: 0), generation: 0)
        table.confirm(2, parent: 1, name: "a", path: "/r/a", role: .tree(root: 0), generation: 0)
        table.confirm(3, parent: 2, name: "b", path: "/r/a/b", role: .tree(root: 0), generation: 0)
        table.confirm(4, parent: 1, name: "c", path: "/r/c", role: .tree(root: 0), generation: 0)
        return table
    }

    @Test("paths are built from the parents' names, and a move renames the whole subtree")
    func pathsAndMoves() {
        var table = sample()
        var path = table.path(of: 3)
        #expect(path == "/r/a/b")
        path = table.path(of: 4)
        #expect(path == "/r/c")
        #expect(table.child(of: 1, named: "a") == 2)
        table.move(2, toParent: 4, name: "z", path: "/r/c/z")
        path = table.path(of: 2)
        #expect(path == "/r/c/z")
        path = table.path(of: 3)
        #expect(path == "/r/c/z/b")  // the cached old path is not used
        #expect(Set(table.subtree(of: 4)) == [4, 2, 3])
        // A move that would make a cycle stores the whole path instead.
        table.move(4, toParent: 3, name: "c", path: "/elsewhere/c")
        path = table.path(of: 4)
        #expect(path == "/elsewhere/c")
        path = table.path(of: 3)
        #expect(path == "/elsewhere/c/z/b")
    }

    @Test("roles: the first inline, more in the side table; a new generation replaces them")
    func roles() {
        var table = sample()
        #expect(table.roles(of: 2) == [.tree(root: 0)])
        let listedAgain = table.confirm(2, parent: 1, name: "a", path: "/r/a", role: .tree(root: 0), generation: 0)
        #expect(listedAgain)
        let listedAsWaiting = table.confirm(2, parent: 1, name: "a", path: "/r/a", role: .waiting(root: 1), generation: 0)
        #expect(!listedAsWaiting)
        #expect(table.roles(of: 2) == [.tree(root: 0), .waiting(root: 1)])
        #expect(table.entry(2)?.hasMoreRoles == true)
        table.mapRoles { $0.root == 1 ? nil : $0 }
        #expect(table.roles(of: 2) == [.tree(root: 0)])
        // First confirmation in a new generation: roles rebuilt, the others not confirmed.
        let listedInNewGeneration = table.confirm(2, parent: 1, name: "a", path: "/r/a", role: .tree(root: 3), generation: 1)
        #expect(!listedInNewGeneration)
        #expect(table.roles(of: 2) == [.tree(root: 3)])
        #expect(Set(table.notConfirmed(in: 1)) == [1, 3, 4])
        table.mapRoles { $0.root == 0 ? nil : $0 }
        #expect(Set(table.withoutRoles()) == [1, 3, 4])
    }

    @Test("removing entries frees their pages; descriptors far apart live in separate pages")
    func pages() {
        var table = WatchTable()
        for wd in Int32(1)...3000 {
            table.confirm(wd, parent: WatchTable.noParent, name: "/d\(wd)", path: "/d\(wd)", role: .tree(root: 0), generation: 0)
        }
        table.confirm(1_000_000, parent: 5, name: "far", path: "/d5/far", role: .tree(root: 0), generation: 0)
        #expect(table.count == 3001)
        var path = table.path(of: 1_000_000)
        #expect(path == "/d5/far")
        for wd in Int32(1)...3000 { table.remove(wd) }
        #expect(table.count == 1)
        #expect(table.entry(1) == nil)
        path = table.path(of: 1_000_000)
        #expect(path == "far")  // the parent is gone: what is known
        #expect(MemoryLayout<WatchTable.Entry?>.stride == 32)
    }

    @Test("insert, remove and re-add: a removed watch has no path, its children keep what is known, a reused descriptor gets its new path")
    func insertRemoveReuse() {
        var table = sample()
        #expect(table.count == 4)
        #expect(table.contains(3))
        #expect(table.isAncestor(1, of: 3) && table.isAncestor(2, of: 3) && !table.isAncestor(3, of: 1))
        var path = table.path(of: 2)
        #expect(path == "/r/a")
        #expect(table.remove(2)?.name == "a")
        #expect(table.remove(2) == nil)
        #expect(!table.contains(2))
        path = table.path(of: 2)
        #expect(path == nil)
        path = table.path(of: 3)
        #expect(path == "b")  // its parent is gone: the part that is known
        #expect(table.child(of: 1, named: "a") == nil)
        // The source removes a vanished directory's subtree with it (`removeSubtree`).
        table.remove(3)
        // The same descriptor number again, somewhere else: the cached "/r/a" must not come back.
        table.confirm(2, parent: 4, name: "new", path: "/r/c/new", role: .tree(root: 0), generation: 0)
        path = table.path(of: 2)
        #expect(path == "/r/c/new")
        #expect(table.child(of: 4, named: "new") == 2)
        #expect(Set(table.subtree(of: 4)) == [4, 2])
    }

    @Test("rename within a directory: the path and the child lookup follow the new name")
    func renameInPlace() {
        var table = sample()
        var path = table.path(of: 3)
        #expect(path == "/r/a/b")
        table.move(2, toParent: 1, name: "renamed", path: "/r/renamed")
        #expect(table.child(of: 1, named: "a") == nil)
        #expect(table.child(of: 1, named: "renamed") == 2)
        path = table.path(of: 3)
        #expect(path == "/r/renamed/b")
        // A move of a descriptor the table does not hold changes nothing.
        table.move(99, toParent: 1, name: "x", path: "/r/x")
        #expect(table.count == 4 && table.child(of: 1, named: "x") == nil)
    }

    @Test("paths under the root directory have one slash")
    func rootDirectory() {
        var table = WatchTable()
        table.confirm(1, parent: WatchTable.noParent, name: "/", path: "/", role: .tree(root: 0), generation: 0)
        table.confirm(2, parent: 1, name: "etc", path: "/etc", role: .tree(root: 0), generation: 0)
        table.confirm(3, parent: 2, name: "kevd", path: "/etc/kevd", role: .tree(root: 0), generation: 0)
        var path = table.path(of: 1)
        #expect(path == "/")
        path = table.path(of: 3)
        #expect(path == "/etc/kevd")
    }
}
