/// What a watched directory (or file) is to the inotify source. One inode can play several roles: roots may nest,
/// and a waiting root's ancestor may also be inside another root's tree.
enum WatchRole: Equatable {
    /// Inside root `root`'s tree (the root directory itself or, when recursive, anything below it).
    case tree(root: Int)
    /// The root `root` itself, which is a file rather than a directory.
    case file(root: Int)
    /// The nearest existing ancestor of root `root`, which does not exist yet.
    case waiting(root: Int)

    var root: Int {
        switch self {
        case .tree(let root), .file(let root), .waiting(let root): return root
        }
    }

    /// The same role for another root index.
    func with(root: Int) -> WatchRole {
        switch self {
        case .tree: return .tree(root: root)
        case .file: return .file(root: root)
        case .waiting: return .waiting(root: root)
        }
    }

    /// Kind in the top two bits, root below: an entry's first role in 4 bytes instead of an array.
    var packed: UInt32 {
        switch self {
        case .tree(let root): return 1 << 30 | UInt32(root)
        case .file(let root): return 2 << 30 | UInt32(root)
        case .waiting(let root): return 3 << 30 | UInt32(root)
        }
    }

    init?(packed: UInt32) {
        let root = Int(packed & (1 << 30 - 1))
        switch packed >> 30 {
        case 1: self = .tree(root: root)
        case 2: self = .file(root: root)
        case 3: self = .waiting(root: root)
        default: return nil
        }
    }
}

/// The inotify source's watches, by watch descriptor: where each one's directory is, its roles, and the crawl
/// generation that last confirmed it.
///
/// Compact because a tree of 100,000 directories is 100,000 entries: an entry stores its parent's watch and its
/// own name component (a Swift small string, inline up to 15 bytes) rather than a full path, and its first role
/// packed into 4 bytes (more roles, which only nested roots give, live in a side table). That took kevd's RSS
/// with 100,000 watches from 54 MiB to 18.8 MiB (README, "Benchmarks"). It also makes renaming a directory
/// rename its whole subtree in one step: descendants name their parent, not its path. Paths are built by
/// walking up, and the last few are cached: consecutive events mostly come from the same few directories.
struct WatchTable {
    struct Entry {
        /// The parent directory's watch; `noParent` when `name` is a whole path (a root, a waiting ancestor).
        var parent: Int32
        /// The crawl generation that last confirmed this watch (see `InotifySource.rescan`).
        var generation: UInt32
        /// The first role (`WatchRole.packed`), 0 for none; `hasMoreRoles` says the side table has the rest.
        var firstRole: UInt32
        var hasMoreRoles: Bool
        var name: String
    }

    static let noParent: Int32 = -1
    /// Deeper chains than this are a cycle (a bind mount seen inside itself), not a path.
    static let maxDepth = 4096

    private var entries = WatchPages()
    private var moreRoles: [Int32: [WatchRole]] = [:]
    /// Bumped whenever an existing entry's path may have changed (moved, re-parented, removed): cached paths
    /// made before are stale.
    private var layout: UInt64 = 1
    private var cache = [CachedPath](repeating: CachedPath(), count: WatchTable.cacheSize)
    private var nameScratch: [String] = []

    struct CachedPath {
        var wd: Int32 = 0
        var layout: UInt64 = 0
        var path = ""
    }

    static let cacheSize = 64

    var count: Int { entries.count }
    var isEmpty: Bool { entries.count == 0 }

    func contains(_ wd: Int32) -> Bool { entries[wd] != nil }

    /// The entry of `wd`, if it is watched: what every event looks up first.
    func entry(_ wd: Int32) -> Entry? { entries[wd] }

    // MARK: Roles

    func roles(of wd: Int32) -> [WatchRole] {
        guard let entry = entries[wd] else { return [] }
        return roles(of: wd, entry)
    }

    /// Every role of `entry` (whose descriptor is `wd`), in order.
    func roles(of wd: Int32, _ entry: Entry) -> [WatchRole] {
        guard let first = WatchRole(packed: entry.firstRole) else { return [] }
        return entry.hasMoreRoles ? [first] + (moreRoles[wd] ?? []) : [first]
    }

    /// The roles beyond the first (nested roots only); empty for almost every entry.
    func moreRoles(of wd: Int32) -> [WatchRole] { moreRoles[wd] ?? [] }

    mutating func setRoles(_ wd: Int32, _ roles: [WatchRole]) {
        guard var entry = entries[wd] else { return }
        entry.firstRole = roles.first?.packed ?? 0
        entry.hasMoreRoles = roles.count > 1
        entries[wd] = entry
        if roles.count > 1 { moreRoles[wd] = Array(roles.dropFirst()) } else { moreRoles.removeValue(forKey: wd) }
    }

    func hasRole(_ wd: Int32, _ role: WatchRole) -> Bool {
        guard let entry = entries[wd] else { return false }
        if entry.firstRole == role.packed { return true }
        return entry.hasMoreRoles && moreRoles[wd]?.contains(role) == true
    }

    /// Applies `transform` to every role of every entry (nil drops the role). Entries left without a role stay:
    /// `withoutRoles` finds them.
    mutating func mapRoles(_ transform: (WatchRole) -> WatchRole?) {
        // Changes are collected first: writing to `entries` while iterating it would copy the whole table.
        var changed: [(Int32, [WatchRole])] = []
        entries.forEach { wd, entry in
            if entry.hasMoreRoles {
                let old = roles(of: wd, entry)
                let new = old.compactMap(transform)
                if new != old { changed.append((wd, new)) }
            } else if let role = WatchRole(packed: entry.firstRole) {
                let new = transform(role)
                if new != role { changed.append((wd, new.map { [$0] } ?? [])) }
            }
        }
        for (wd, roles) in changed { setRoles(wd, roles) }
    }

    func withoutRoles() -> [Int32] {
        var out: [Int32] = []
        entries.forEach { wd, entry in if entry.firstRole == 0 { out.append(wd) } }
        return out
    }

    // MARK: Adding and moving

    /// Records the watch `wd` at `parent`/`name` (`path` is that place as a whole path) with `role`, confirmed in
    /// `generation`. An entry first confirmed in this generation replaces its roles (a rescan rebuilds them; until
    /// then the old ones go on serving events); otherwise the role is added. Returns whether the entry already
    /// had `role` in this generation (a directory some crawl already listed).
    @discardableResult
    mutating func confirm(
        _ wd: Int32, parent: Int32, name: String, path: String, role: WatchRole, generation: UInt32
    ) -> Bool {
        var parent = parent
        var name = name
        // A parent below `wd` itself would make a cycle: this place is then stored as a whole path.
        if parent != Self.noParent && (parent == wd || isAncestor(wd, of: parent)) {
            parent = Self.noParent
            name = path
        }
        guard var entry = entries[wd] else {
            entries[wd] = Entry(parent: parent, generation: generation, firstRole: role.packed, hasMoreRoles: false, name: name)
            return false
        }
        if entry.parent != parent || entry.name != name {
            entry.parent = parent
            entry.name = name
            layout &+= 1
        }
        if entry.generation != generation {
            entry.generation = generation
            entry.firstRole = role.packed
            entry.hasMoreRoles = false
            moreRoles.removeValue(forKey: wd)
            entries[wd] = entry
            return false
        }
        entries[wd] = entry
        if hasRole(wd, role) { return true }
        setRoles(wd, roles(of: wd) + [role])
        return false
    }

    /// Moves `wd` to `parent`/`name`: its whole subtree follows.
    mutating func move(_ wd: Int32, toParent parent: Int32, name: String, path: String) {
        guard var entry = entries[wd] else { return }
        if parent != Self.noParent && (parent == wd || isAncestor(wd, of: parent)) {
            entry.parent = Self.noParent
            entry.name = path
        } else {
            entry.parent = parent
            entry.name = name
        }
        entries[wd] = entry
        layout &+= 1
    }

    @discardableResult
    mutating func remove(_ wd: Int32) -> Entry? {
        guard let entry = entries.remove(wd) else { return nil }
        if entry.hasMoreRoles { moreRoles.removeValue(forKey: wd) }
        layout &+= 1
        return entry
    }

    // MARK: Finding

    /// The watch of the directory `name` inside the watch `parent`, if any. A scan: only directory moves need it.
    func child(of parent: Int32, named name: String) -> Int32? {
        var found: Int32?
        entries.forEach { wd, entry in
            if found == nil && entry.parent == parent && entry.name == name { found = wd }
        }
        return found
    }

    /// Whether `ancestor` is on `wd`'s chain of parents (not `wd` itself).
    func isAncestor(_ ancestor: Int32, of wd: Int32) -> Bool {
        var current = wd
        for _ in 0..<Self.maxDepth {
            guard let entry = entries[current], entry.parent != Self.noParent else { return false }
            if entry.parent == ancestor { return true }
            current = entry.parent
        }
        return false
    }

    /// `wd` and every watch below it. A scan with a memo: only moves out of the trees need it.
    func subtree(of wd: Int32) -> [Int32] {
        guard entries[wd] != nil else { return [] }
        var inside: [Int32: Bool] = [wd: true]
        var out: [Int32] = [wd]
        var chain: [Int32] = []
        var all: [Int32] = []
        entries.forEach { wd, _ in all.append(wd) }
        for start in all where inside[start] == nil {
            chain.removeAll(keepingCapacity: true)
            var current = start
            var verdict = false
            while chain.count < Self.maxDepth {
                if let known = inside[current] {
                    verdict = known
                    break
                }
                chain.append(current)
                guard let entry = entries[current], entry.parent != Self.noParent else { break }
                current = entry.parent
            }
            for wd in chain { inside[wd] = verdict }
            if verdict { out += chain }
        }
        return out
    }

    /// Watches last confirmed in a generation other than `generation`.
    func notConfirmed(in generation: UInt32) -> [Int32] {
        var out: [Int32] = []
        entries.forEach { wd, entry in if entry.generation != generation { out.append(wd) } }
        return out
    }

    // MARK: Paths

    /// The whole path of `wd`, or nil when it is not watched. A chain broken by a removed parent (a subtree being
    /// torn down) yields the part that is known.
    mutating func path(of wd: Int32) -> String? {
        let slot = Int(UInt32(bitPattern: wd)) % Self.cacheSize
        if cache[slot].wd == wd && cache[slot].layout == layout { return cache[slot].path }
        guard let path = buildPath(of: wd) else { return nil }
        cache[slot] = CachedPath(wd: wd, layout: layout, path: path)
        return path
    }

    private mutating func buildPath(of wd: Int32) -> String? {
        guard var entry = entries[wd] else { return nil }
        if entry.parent == Self.noParent { return entry.name }
        nameScratch.removeAll(keepingCapacity: true)
        nameScratch.append(entry.name)
        while entry.parent != Self.noParent, nameScratch.count < Self.maxDepth {
            let parent = entry.parent
            // The parent's path may be cached already (a crawl lists siblings one after another).
            let slot = Int(UInt32(bitPattern: parent)) % Self.cacheSize
            if cache[slot].wd == parent && cache[slot].layout == layout {
                nameScratch.append(cache[slot].path)
                break
            }
            guard let next = entries[parent] else { break }
            entry = next
            nameScratch.append(entry.name)
        }
        var length = nameScratch.count - 1
        for name in nameScratch { length += name.utf8.count }
        var out = ""
        out.reserveCapacity(length)
        for (i, name) in nameScratch.reversed().enumerated() {
            if i > 0 && !(out.utf8.last == UInt8(ascii: "/")) { out += "/" }
            out += name
        }
        return out
    }
}

/// Entries by watch descriptor in pages of 1,024 slots, made when first used and freed when emptied.
///
/// The kernel hands out descriptors in increasing order (`idr_alloc_cyclic`), so a tree's watches fill whole
/// pages: 32 bytes a watch, where a dictionary took 60 to 70 (its buckets at most three quarters full, and
/// doubling). Descriptors of deleted directories are not reused until the counter wraps; their pages are freed
/// once empty, so churn does not grow the table.
struct WatchPages {
    static let pageShift: Int32 = 10
    static let pageSize = 1 << 10

    struct Page {
        var slots: [WatchTable.Entry?]
        var used = 0
    }

    private var pages: [Int32: Page] = [:]
    private(set) var count = 0

    subscript(wd: Int32) -> WatchTable.Entry? {
        get {
            guard wd >= 0, let page = pages[wd >> Self.pageShift] else { return nil }
            return page.slots[Int(wd) & (Self.pageSize - 1)]
        }
        set {
            guard wd >= 0 else { return }
            let key = wd >> Self.pageShift
            let slot = Int(wd) & (Self.pageSize - 1)
            if pages[key] == nil {
                guard newValue != nil else { return }
                pages[key] = Page(slots: Array(repeating: nil, count: Self.pageSize))
            }
            // In place: the dictionary's modify accessor does not copy the page.
            let had = pages[key]!.slots[slot] != nil
            pages[key]!.slots[slot] = newValue
            switch (had, newValue != nil) {
            case (false, true):
                pages[key]!.used += 1
                count += 1
            case (true, false):
                pages[key]!.used -= 1
                count -= 1
                if pages[key]!.used == 0 { pages.removeValue(forKey: key) }
            default:
                break
            }
        }
    }

    mutating func remove(_ wd: Int32) -> WatchTable.Entry? {
        guard let entry = self[wd] else { return nil }
        self[wd] = nil
        return entry
    }

    func forEach(_ body: (Int32, WatchTable.Entry) -> Void) {
        for (key, page) in pages {
            let base = key << Self.pageShift
            for i in 0..<Self.pageSize {
                if let entry = page.slots[i] { body(base | Int32(i), entry) }
            }
        }
    }
}
