import Glibc
import KevdEvent
import KevdSources
import KevdSpec

/// `[[watch]] catchup = true`: what changed in a watched tree while kevd was not reading it, as a difference
/// between a snapshot of the tree (kept in `state_dir/catchup/`) and the tree on disk.
///
/// Everything here runs on the catch-up's helper thread (FileCatchUpRunner), never on the loop: the scan's
/// `readdir`/`fstatat`, the snapshot's reads and writes and the journal fold.
///
/// Why a snapshot plus the journal, and what a SIGKILL costs: the snapshot is written after each scan (at start,
/// after an overflow, and by a refresh when events were journaled since the last one), tagged with the journal
/// seq the scan started at. Every change after that seq was journaled as a live event (the scan starts once the
/// watches are armed, and an overflow runs a new scan). At start, the tree on disk is compared with the
/// snapshot; the journal's `inotify` events from the snapshot's seq on say which paths the live stream already
/// reported gone, and those are not reported again. A path the live stream reported present (created, written)
/// after the snapshot cannot be told apart from one changed again while kevd was down (a live event carries no
/// size or mtime), so it is reported, marked `catchup`: a duplicate is possible, a miss is not.
enum FileCatchUp {
    /// One entry's state, as the snapshot keeps it (46 bytes on disk plus the relative path).
    struct State: Sendable, Equatable {
        var inode: UInt64
        var size: Int64
        var mtime: Int64
        var ctime: Int64
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32

        var isDirectory: Bool { mode & S_IFMT == S_IFDIR }

        init(_ st: stat) {
            inode = UInt64(st.st_ino)
            size = Int64(st.st_size)
            mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            ctime = Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec)
            mode = st.st_mode
            uid = st.st_uid
            gid = st.st_gid
        }

        init(inode: UInt64, size: Int64, mtime: Int64, ctime: Int64, mode: UInt32, uid: UInt32, gid: UInt32) {
            self.inode = inode
            self.size = size
            self.mtime = mtime
            self.ctime = ctime
            self.mode = mode
            self.uid = uid
            self.gid = gid
        }

        /// Content changed: size or mtime (a directory's are its entries', reported by their own events).
        func contentDiffers(_ other: State) -> Bool {
            !isDirectory && (size != other.size || mtime != other.mtime)
        }

        /// Only metadata changed: mode, owner, or (files) ctime.
        func metadataDiffers(_ other: State) -> Bool {
            mode != other.mode || uid != other.uid || gid != other.gid || (!isDirectory && ctime != other.ctime)
        }
    }

    /// One entry: its path relative to the root ("" is the root itself, for a root that is a file).
    struct Entry: Sendable {
        var path: String
        var state: State
    }

    struct Snapshot: Sendable {
        var root: String
        /// The journal seq the scan started at: events from it on may not be reflected in `entries`.
        var seq: UInt64
        /// In scan order: a directory before what it holds.
        var entries: [Entry]
    }

    struct Change: Sendable, Equatable {
        enum Kind: Sendable, Equatable {
            case create, modify, attrib, delete
            case moved(from: String)
        }
        var kind: Kind
        var path: String
        var isDirectory: Bool
    }

    // MARK: Scan

    /// The tree under `spec.path` as it is now, `exclude` applied as to live events; empty when the root does
    /// not exist. Stops early (returning what it has) when `stopping` says so.
    static func scan(_ spec: WatchSpec, exclusion: WatchExclusion, stopping: JournalFold.StopFlag) -> [Entry] {
        var st = stat()
        guard lstat(spec.path, &st) == 0 else { return [] }
        guard st.st_mode & S_IFMT == S_IFDIR else { return [Entry(path: "", state: State(st))] }
        var entries: [Entry] = []
        var pending: [String] = [""]
        while let relative = pending.popLast() {
            if stopping.raised.load(ordering: .relaxed) { break }
            let directory = join(spec.path, relative)
            guard let handle = opendir(directory) else { continue }
            let fd = dirfd(handle)
            var found: [String] = []
            while let dirent = readdir(handle) {
                let name = withUnsafeBytes(of: dirent.pointee.d_name) { raw -> String in
                    let bytes = raw.bindMemory(to: UInt8.self)
                    let length = strnlen(raw.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
                    return String(decoding: UnsafeBufferPointer(rebasing: bytes[0..<length]), as: UTF8.self)
                }
                if name == "." || name == ".." { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                if exclusion.excludes(path: join(spec.path, path), name: name) { continue }
                var entry = stat()
                guard fstatat(fd, name, &entry, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                let state = State(entry)
                entries.append(Entry(path: path, state: state))
                if state.isDirectory && spec.recursive { found.append(path) }
            }
            closedir(handle)
            // Reversed onto the stack, so directories are listed in the order they were found.
            pending.append(contentsOf: found.reversed())
        }
        return entries
    }

    static func join(_ root: String, _ relative: String) -> String {
        if relative.isEmpty { return root }
        return root == "/" ? "/" + relative : root + "/" + relative
    }

    // MARK: Diff

    /// What turns `old` into `new`: deletes first (what a directory held before the directory), then, in scan
    /// order, moves, creates (a directory before what it holds), modifies and attribute changes. `goneLive`:
    /// paths the live stream already reported gone since the snapshot (not reported again while still gone).
    static func diff(old: [Entry], new: [Entry], goneLive: Set<String> = []) -> [Change] {
        var known: [String: State] = [:]
        known.reserveCapacity(old.count)
        for entry in old { known[entry.path] = entry.state }
        var changes: [Change] = []
        var created: [Entry] = []
        var ordered: [(Int, Change?)] = []  // index into `new` order: a change, or nil for a candidate create
        for entry in new {
            guard let before = known.removeValue(forKey: entry.path) else {
                created.append(entry)
                ordered.append((created.count - 1, nil))
                continue
            }
            if before.isDirectory != entry.state.isDirectory {
                changes.append(Change(kind: .delete, path: entry.path, isDirectory: before.isDirectory))
                created.append(entry)
                ordered.append((created.count - 1, nil))
            } else if before.inode != entry.state.inode || entry.state.contentDiffers(before) {
                ordered.append((-1, Change(kind: .modify, path: entry.path, isDirectory: entry.state.isDirectory)))
            } else if entry.state.metadataDiffers(before) {
                ordered.append((-1, Change(kind: .attrib, path: entry.path, isDirectory: entry.state.isDirectory)))
            }
        }
        // What is left of `known` is gone from its path: deleted, or moved to a new one. A move keeps the inode,
        // the size and the mtime (a file deleted and another made with a reused inode number rarely keeps both).
        var goneByInode: [UInt64: String] = [:]
        for (path, state) in known { goneByInode[state.inode] = path }
        /// Directories that moved: new path -> old path, so what they hold moves with them silently.
        var movedDirectories: [String: String] = [:]
        var pairs: [Int: Change] = [:]
        for (index, entry) in created.enumerated() {
            guard let from = goneByInode[entry.state.inode], let before = known[from],
                before.isDirectory == entry.state.isDirectory, before.size == entry.state.size || before.isDirectory,
                before.mtime == entry.state.mtime || before.isDirectory
            else { continue }
            goneByInode[entry.state.inode] = nil
            known[from] = nil
            let parent = parentPath(entry.path)
            let impliedFrom = movedDirectories[parent].map { $0.isEmpty ? lastComponent(entry.path) : $0 + "/" + lastComponent(entry.path) }
            if entry.state.isDirectory { movedDirectories[entry.path] = from }
            if impliedFrom == from {
                // Moved with its directory: only a change of its own is reported.
                if entry.state.contentDiffers(before) {
                    pairs[index] = Change(kind: .modify, path: entry.path, isDirectory: entry.state.isDirectory)
                } else if entry.state.mode != before.mode || entry.state.uid != before.uid || entry.state.gid != before.gid {
                    pairs[index] = Change(kind: .attrib, path: entry.path, isDirectory: entry.state.isDirectory)
                } else {
                    pairs[index] = Change(kind: .attrib, path: "", isDirectory: false)  // nothing (filtered below)
                }
            } else {
                pairs[index] = Change(kind: .moved(from: from), path: entry.path, isDirectory: entry.state.isDirectory)
            }
        }
        // Deletes: longest path first within a subtree (reverse lexical order puts "a/b" before "a").
        for path in known.keys.sorted(by: >) where !goneLive.contains(path) {
            changes.append(Change(kind: .delete, path: path, isDirectory: known[path]!.isDirectory))
        }
        for (index, change) in ordered {
            if let change {
                changes.append(change)
            } else if let pair = pairs[index] {
                if !pair.path.isEmpty || pair.kind != .attrib { changes.append(pair) }
            } else {
                changes.append(Change(kind: .create, path: created[index].path, isDirectory: created[index].state.isDirectory))
            }
        }
        return changes
    }

    static func parentPath(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[..<slash])
    }

    static func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    // MARK: Events

    /// `changes` as the `inotify` events a live stream would have carried, with `data.catchup = true`, keeping
    /// only the types the root reports (`events`; a move whose type is not reported becomes delete + create).
    static func drafts(_ changes: [Change], spec: WatchSpec) -> [EventDraft] {
        var drafts: [EventDraft] = []
        drafts.reserveCapacity(changes.count)
        func add(_ type: FileEventType, _ relative: String, isDirectory: Bool, from: String? = nil) {
            guard spec.events.contains(type) else { return }
            let path = join(spec.path, relative)
            var data = EventData(capacity: 8)
            if let from {
                data.append("from", join(spec.path, from))
                data.append("to", path)
            }
            data.append("path", path)
            data.append("name", relative.isEmpty ? lastComponent(spec.path) : lastComponent(relative))
            data.append("watch", spec.path)
            data.append("dir", isDirectory)
            data.append("catchup", true)
            drafts.append(EventDraft(source: .inotify, type: type.rawValue, key: path, data: data))
        }
        for change in changes {
            switch change.kind {
            case .create: add(.create, change.path, isDirectory: change.isDirectory)
            case .modify: add(.modify, change.path, isDirectory: change.isDirectory)
            case .attrib: add(.attrib, change.path, isDirectory: change.isDirectory)
            case .delete: add(.delete, change.path, isDirectory: change.isDirectory)
            case .moved(let from):
                if spec.events.contains(.moved) {
                    add(.moved, change.path, isDirectory: change.isDirectory, from: from)
                } else {
                    add(.delete, from, isDirectory: change.isDirectory)
                    add(.create, change.path, isDirectory: change.isDirectory)
                }
            }
        }
        return drafts
    }

    /// Folds one journaled `inotify` event of `root` into the paths (relative) the live stream last reported
    /// gone: `delete`, `moved_from`, a `moved`'s `from` say gone; anything else about a path says present.
    static func fold(_ event: Event, root: String, into gone: inout Set<String>) {
        func relative(_ path: String) -> String? {
            if path == root { return "" }
            let prefix = root == "/" ? "/" : root + "/"
            return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : nil
        }
        guard let path = relative(event.key) else { return }
        switch event.type {
        case "delete", "moved_from", "delete_self": gone.insert(path)
        case "overflow", "unmount": break
        case "moved":
            if case .string(let from)? = event.data["from"], let old = relative(from) { gone.insert(old) }
            gone.remove(path)
        default: gone.remove(path)
        }
    }
}
