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

    /// One entry: its path relative to the root ("" is the root itself, for a root that is a file). `raw`: the
    /// path's bytes when they are not valid UTF-8 (`path` then has U+FFFD in their place), for `path_base64`.
    struct Entry: Sendable {
        var path: String
        var state: State
        var raw: [UInt8]? = nil
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
        /// The path's bytes when they are not valid UTF-8.
        var raw: [UInt8]? = nil
    }

    // MARK: Scan

    /// The tree under `spec.path` as it is now, `exclude` applied as to live events; empty when the root does
    /// not exist. Stops early (returning what it has) when `stopping` says so.
    static func scan(_ spec: WatchSpec, exclusion: WatchExclusion, stopping: JournalFold.StopFlag) -> [Entry] {
        var st = stat()
        guard lstat(spec.path, &st) == 0 else { return [] }
        guard st.st_mode & S_IFMT == S_IFDIR else { return [Entry(path: "", state: State(st))] }
        var entries: [Entry] = []
        /// Directories still to list: the relative path, and its bytes when they are not valid UTF-8.
        var pending: [(String, [UInt8]?)] = [("", nil)]
        while let (relative, relativeRaw) = pending.popLast() {
            if stopping.raised.load(ordering: .relaxed) { break }
            // A directory whose path is not UTF-8 is opened by its bytes.
            let opened: OpaquePointer?
            if let relativeRaw {
                let bytes = join(spec.path, relativeRaw) + [0]
                opened = bytes.withUnsafeBufferPointer { buffer in
                    buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { opendir($0) }
                }
            } else {
                opened = opendir(join(spec.path, relative))
            }
            guard let handle = opened else { continue }
            let fd = dirfd(handle)
            var found: [(String, [UInt8]?)] = []
            var listed = 0
            while let dirent = readdir(handle) {
                // A huge directory does not hold a shutdown for the whole of its listing.
                listed += 1
                if listed % 4096 == 0 && stopping.raised.load(ordering: .relaxed) { break }
                var entry = stat()
                // The name's own bytes go to fstatat: its text may have U+FFFD for bytes that are not UTF-8.
                let (text, nameBytes, statted) = withUnsafeBytes(of: dirent.pointee.d_name) {
                    raw -> (ByteText, [UInt8], Bool) in
                    let bytes = raw.bindMemory(to: UInt8.self)
                    let cName = raw.baseAddress!.assumingMemoryBound(to: CChar.self)
                    let length = strnlen(cName, bytes.count)
                    let name = UnsafeBufferPointer(rebasing: bytes[0..<length])
                    let text = ByteText(name)
                    let dots = length <= 2 && name.allSatisfy { $0 == UInt8(ascii: ".") }
                    let statted = !dots && fstatat(fd, cName, &entry, AT_SYMLINK_NOFOLLOW) == 0
                    return (text, text.isLossless ? [] : Array(name), statted)
                }
                let name = text.string
                if name == "." || name == ".." { continue }
                let path = relative.isEmpty ? name : relative + "/" + name
                var raw: [UInt8]? = nil
                if relativeRaw != nil || !text.isLossless {
                    raw = relativeRaw ?? Array(relative.utf8)
                    if !raw!.isEmpty { raw!.append(UInt8(ascii: "/")) }
                    raw!.append(contentsOf: text.isLossless ? Array(name.utf8) : nameBytes)
                }
                if exclusion.excludes(path: join(spec.path, path), name: name) { continue }
                guard statted else { continue }  // gone since the listing
                let state = State(entry)
                entries.append(Entry(path: path, state: state, raw: raw))
                if state.isDirectory && spec.recursive { found.append((path, raw)) }
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

    /// `join` for a (non-empty) relative path given by its bytes, when they are not valid UTF-8.
    static func join(_ root: String, _ relative: [UInt8]) -> [UInt8] {
        Array(root.utf8) + (root == "/" ? [] : [UInt8(ascii: "/")]) + relative
    }

    // MARK: Diff

    /// What turns `old` into `new`: deletes first (what a directory held before the directory), then, in scan
    /// order, moves, creates (a directory before what it holds), modifies and attribute changes. `goneLive`:
    /// paths the live stream already reported gone since the snapshot (not reported again while still gone).
    /// `createdLive`: directories the live stream (or an overflow's rescan, as synthetic creates) already reported
    /// made since the snapshot: a directory's create says all there is of it (what it holds are entries of their
    /// own), so a directory still there is not reported again. A file's is, since what was written to it after
    /// its create may be among the events lost.
    static func diff(old: [Entry], new: [Entry], goneLive: Set<String> = [], createdLive: Set<String> = []) -> [Change] {
        var known: [String: State] = [:]
        known.reserveCapacity(old.count)
        var knownRaw: [String: [UInt8]] = [:]
        for entry in old {
            known[entry.path] = entry.state
            if let raw = entry.raw { knownRaw[entry.path] = raw }
        }
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
                changes.append(Change(kind: .delete, path: entry.path, isDirectory: before.isDirectory, raw: entry.raw))
                created.append(entry)
                ordered.append((created.count - 1, nil))
            } else if before.inode != entry.state.inode || entry.state.contentDiffers(before) {
                ordered.append((-1, Change(kind: .modify, path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw)))
            } else if entry.state.metadataDiffers(before) {
                ordered.append((-1, Change(kind: .attrib, path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw)))
            }
        }
        // What is left of `known` is gone from its path: deleted, or moved to a new one. A move keeps the inode,
        // the size and the mtime (a file deleted and another made with a reused inode number rarely keeps both).
        var goneByInode: [UInt64: String] = [:]
        for (path, state) in known { goneByInode[state.inode] = path }
        /// Directories that moved: new path -> old path, so what they hold moves with them silently.
        var movedDirectories: [String: String] = [:]
        var pairs: [Int: Change] = [:]
        /// Entries that moved with their directory and changed nothing of their own: the directory's move says it.
        var movedSilently: Set<Int> = []
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
                    pairs[index] = Change(kind: .modify, path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw)
                } else if entry.state.mode != before.mode || entry.state.uid != before.uid || entry.state.gid != before.gid {
                    pairs[index] = Change(kind: .attrib, path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw)
                } else {
                    movedSilently.insert(index)
                }
            } else {
                pairs[index] = Change(
                    kind: .moved(from: from), path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw)
            }
        }
        // Deletes: longest path first within a subtree (reverse lexical order puts "a/b" before "a").
        for path in known.keys.sorted(by: >) where !goneLive.contains(path) {
            changes.append(Change(kind: .delete, path: path, isDirectory: known[path]!.isDirectory, raw: knownRaw[path]))
        }
        for (index, change) in ordered {
            if let change {
                changes.append(change)
            } else if let pair = pairs[index] {
                changes.append(pair)
            } else if !movedSilently.contains(index) {
                let entry = created[index]
                if entry.state.isDirectory && createdLive.contains(entry.path) { continue }
                changes.append(Change(kind: .create, path: entry.path, isDirectory: entry.state.isDirectory, raw: entry.raw))
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
        func add(_ type: FileEventType, _ relative: String, isDirectory: Bool, raw: [UInt8]?, from: String? = nil) {
            guard spec.events.contains(type) else { return }
            let path = join(spec.path, relative)
            var data = EventData(capacity: 10)
            if let from {
                data.append("from", join(spec.path, from))
                data.append("to", path)
            }
            data.append("path", path)
            // As live events: a name that is not UTF-8 also comes as base64 of its bytes, and so does its path.
            if let raw {
                data.append("path_base64", Base64.encode(join(spec.path, raw)))
            }
            data.append("name", relative.isEmpty ? lastComponent(spec.path) : lastComponent(relative))
            if let raw {
                let name = raw.lastIndex(of: UInt8(ascii: "/")).map { Array(raw[($0 + 1)...]) } ?? raw
                if !ByteText(name).isLossless { data.append("name_base64", Base64.encode(name)) }
            }
            data.append("watch", spec.path)
            data.append("dir", isDirectory)
            data.append("catchup", true)
            drafts.append(EventDraft(source: .inotify, type: type.rawValue, key: path, data: data))
        }
        for change in changes {
            switch change.kind {
            case .create: add(.create, change.path, isDirectory: change.isDirectory, raw: change.raw)
            case .modify: add(.modify, change.path, isDirectory: change.isDirectory, raw: change.raw)
            case .attrib: add(.attrib, change.path, isDirectory: change.isDirectory, raw: change.raw)
            case .delete: add(.delete, change.path, isDirectory: change.isDirectory, raw: change.raw)
            case .moved(let from):
                if spec.events.contains(.moved) {
                    add(.moved, change.path, isDirectory: change.isDirectory, raw: change.raw, from: from)
                } else {
                    add(.delete, from, isDirectory: change.isDirectory, raw: nil)
                    add(.create, change.path, isDirectory: change.isDirectory, raw: change.raw)
                }
            }
        }
        return drafts
    }

    /// Folds one journaled `inotify` event of `root` into the paths (relative) the live stream last reported
    /// gone: `delete`, `moved_from`, a `moved`'s `from` say gone; anything else about a path says present. And
    /// into the directories it last reported made (`create`, `moved_to`, a `moved`'s `to`, with `dir`).
    static func fold(_ event: Event, root: String, into gone: inout Set<String>, createdDirectories: inout Set<String>) {
        func relative(_ path: String) -> String? {
            if path == root { return "" }
            let prefix = root == "/" ? "/" : root + "/"
            return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : nil
        }
        guard let path = relative(event.key) else { return }
        let isDirectory: Bool
        if case .bool(true)? = event.data["dir"] { isDirectory = true } else { isDirectory = false }
        switch event.type {
        case "delete", "moved_from", "delete_self":
            gone.insert(path)
            createdDirectories.remove(path)
        case "overflow", "unmount": break
        case "moved":
            if case .string(let from)? = event.data["from"], let old = relative(from) {
                gone.insert(old)
                createdDirectories.remove(old)
            }
            gone.remove(path)
            if isDirectory { createdDirectories.insert(path) }
        case "create", "moved_to":
            gone.remove(path)
            if isDirectory { createdDirectories.insert(path) }
        default: gone.remove(path)
        }
    }
}
