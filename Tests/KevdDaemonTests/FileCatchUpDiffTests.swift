import Glibc
import KevdEvent
import KevdTestSupport
import Testing

@testable import KevdDaemon

/// The file catch-up's diff and snapshot file, on hand-made entries (the integration tests run it on real trees).
@Suite("daemon: file catch-up's diff and snapshot")
struct FileCatchUpDiffTests {
    typealias Entry = FileCatchUp.Entry

    static func file(_ path: String, inode: UInt64, size: Int64 = 1, mtime: Int64 = 10, mode: UInt32 = 0o100644) -> Entry {
        Entry(path: path, state: .init(inode: inode, size: size, mtime: mtime, ctime: mtime, mode: mode, uid: 0, gid: 0))
    }

    static func directory(_ path: String, inode: UInt64, mtime: Int64 = 10) -> Entry {
        Entry(path: path, state: .init(inode: inode, size: 4096, mtime: mtime, ctime: mtime, mode: 0o040755, uid: 0, gid: 0))
    }

    static func describe(_ changes: [FileCatchUp.Change]) -> [String] {
        changes.map { change in
            switch change.kind {
            case .create: "create \(change.path)"
            case .modify: "modify \(change.path)"
            case .attrib: "attrib \(change.path)"
            case .delete: "delete \(change.path)"
            case .moved(let from): "moved \(from) \(change.path)"
            }
        }
    }

    @Test("a moved directory is one move; what it holds moves silently, unless it changed itself")
    func movedDirectory() {
        let old = [
            Self.directory("a", inode: 1), Self.file("a/x", inode: 2), Self.file("a/y", inode: 3),
            Self.directory("a/sub", inode: 4), Self.file("a/sub/z", inode: 5),
        ]
        let new = [
            Self.directory("b", inode: 1, mtime: 20), Self.file("b/x", inode: 2),
            Self.file("b/y", inode: 3, mode: 0o100600), Self.directory("b/sub", inode: 4), Self.file("b/sub/z", inode: 5),
        ]
        #expect(Self.describe(FileCatchUp.diff(old: old, new: new)) == ["moved a b", "attrib b/y"])
    }

    @Test("an inode number reused by a new file with another size or mtime is a delete and a create, not a move")
    func reusedInode() {
        let old = [Self.file("gone", inode: 7, size: 5, mtime: 10)]
        let new = [Self.file("new", inode: 7, size: 9, mtime: 30)]
        #expect(Self.describe(FileCatchUp.diff(old: old, new: new)) == ["delete gone", "create new"])
    }

    @Test("a file replaced by a directory of the same name: delete, then create")
    func typeChange() {
        let old = [Self.file("n", inode: 1)]
        let new = [Self.directory("n", inode: 2), Self.file("n/inner", inode: 3)]
        #expect(Self.describe(FileCatchUp.diff(old: old, new: new)) == ["delete n", "create n", "create n/inner"])
    }

    @Test("a removed tree: what a directory held is deleted before the directory; a live delete is not repeated")
    func removedTree() {
        let old = [Self.directory("d", inode: 1), Self.file("d/f", inode: 2), Self.file("e", inode: 3)]
        #expect(Self.describe(FileCatchUp.diff(old: old, new: [])) == ["delete e", "delete d/f", "delete d"])
        #expect(Self.describe(FileCatchUp.diff(old: old, new: [], goneLive: ["e"])) == ["delete d/f", "delete d"])
    }

    @Test("a directory the live stream or a rescan already reported made is not created again; a file is (its writes may be lost)")
    func createdLive() throws {
        let new = [Self.directory("n", inode: 1), Self.file("n/f", inode: 2), Self.directory("m", inode: 3)]
        #expect(Self.describe(FileCatchUp.diff(old: [], new: new, createdLive: ["n", "n/f"])) == ["create n/f", "create m"])
        // The fold: a synthetic create of a directory, then a later delete and a moved-in directory.
        var gone: Set<String> = []
        var created: Set<String> = []
        func fold(_ type: String, _ key: String, dir: Bool, extra: [(String, EventValue)] = []) {
            var data = EventData()
            data.append("dir", .bool(dir))
            for (name, value) in extra { data.append(name, value) }
            let event = Event(seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .inotify,
                              type: type, key: "/srv/in/" + key, data: data)
            FileCatchUp.fold(event, root: "/srv/in", into: &gone, createdDirectories: &created)
        }
        fold("create", "n", dir: true, extra: [("synthetic", .bool(true))])
        fold("create", "n/f", dir: false)
        fold("create", "gone", dir: true)
        fold("delete", "gone", dir: true)
        fold("moved", "to", dir: true, extra: [("from", .string("/srv/in/n"))])
        #expect(created == ["to"])
        #expect(gone == ["gone", "n"])
    }

    @Test("the snapshot file: written and read back the same; damage is an error, another root's is none")
    func snapshotRoundTrip() throws {
        let dir = try TemporaryDirectory()
        let path = FileCatchUp.snapshotPath(directory: dir.path, root: "/srv/in")
        let entries = [Self.directory("d", inode: 1), Self.file("d/naïve name", inode: 2, size: 1 << 40, mtime: -5)]
        try FileCatchUp.write(.init(root: "/srv/in", seq: 42, entries: entries), to: path)
        let read = try #require(try FileCatchUp.read(path, root: "/srv/in"))
        #expect(read.seq == 42 && read.entries.map(\.path) == entries.map(\.path))
        #expect(read.entries.map(\.state) == entries.map(\.state))
        #expect(try FileCatchUp.read(path, root: "/srv/other") == nil)
        #expect(try FileCatchUp.read(dir.file("absent.snap"), root: "/srv/in") == nil)
        #expect(truncate(path, 60) == 0)
        #expect(throws: FileCatchUp.SnapshotError.self) { try FileCatchUp.read(path, root: "/srv/in") }
    }
}
