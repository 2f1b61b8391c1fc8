import KevdEvent
import KevdKernel
import KevdSpec

/// The watch table's upkeep: roots watched as far as they exist, new directories watched, vanished and moved-away
/// subtrees forgotten (the table itself is WatchTable).
extension InotifySource {
    /// Makes root `index` watched as far as it exists: the root itself (and its tree), or else its nearest
    /// existing ancestor. With `announce`, a root that now exists is reported as created, and its contents as
    /// synthetic creates.
    func establish(root index: Int, announce: Bool) {
        let spec = roots[index].spec
        // Forget where this root waited before; the walk below finds where it is now.
        table.mapRoles { $0 == .waiting(root: index) ? nil : $0 }
        switch FileKind.of(spec.path) {
        case .directory:
            // The kernel gives an inode's existing watch back: the cheapest way to ask whether it is watched. Should
            // this add fail, `watchDirectory` below fails the same way and reports it.
            let existing = try? inotify.addWatch(path: spec.path, mask: Self.watchMask)
            if let existing, table.hasRole(existing, .tree(root: index)) { break }
            if announce { emit(.create, root: index, path: spec.path, nameBytes: nil, isDirectory: true) }
            watchDirectory(
                spec.path, parent: WatchTable.noParent, name: spec.path, root: index, recurse: spec.recursive,
                announce: announce)
        case .other:
            let existing = try? inotify.addWatch(path: spec.path, mask: Self.watchMask)
            if let existing, table.hasRole(existing, .file(root: index)) { break }
            if announce { emit(.create, root: index, path: spec.path, nameBytes: nil, isDirectory: false) }
            addWatch(spec.path, parent: WatchTable.noParent, name: spec.path, role: .file(root: index))
        case .missing:
            var ancestor = PathText.directory(of: spec.path)
            while FileKind.of(ancestor) != .directory && ancestor != "/" { ancestor = PathText.directory(of: ancestor) }
            addWatch(ancestor, parent: WatchTable.noParent, name: ancestor, role: .waiting(root: index))
            // The ancestor may have gained the next component between the lstat and the watch.
            if FileKind.of(spec.path) != .missing || nextComponentExists(of: spec.path, below: ancestor) {
                establish(root: index, announce: announce)
            }
        }
        removeWatchesWithoutRoles()
    }

    private func nextComponentExists(of target: String, below ancestor: String) -> Bool {
        let rest = target.dropFirst(ancestor == "/" ? 1 : ancestor.count + 1)
        guard let next = rest.split(separator: "/").first else { return false }
        let child = ancestor == "/" ? "/" + next : ancestor + "/" + next
        return FileKind.of(child) == .directory
    }

    /// A directory appeared in a recursive tree: watch it first, then list it, so nothing created in between is
    /// missed. What the listing finds is reported as synthetic creates.
    func watchNewDirectory(_ path: String, parent: Int32, name: String, root: Int) {
        watchDirectory(path, parent: parent, name: name, root: root, recurse: true, announce: true)
    }

    /// Watches one directory and lists it (when recursive or announcing): its entries are reported (with
    /// `announce`), and its subdirectories go on the crawl stack. A directory some crawl already listed in this
    /// generation is not listed again, so its contents are never announced twice.
    func watchDirectory(_ path: String, parent: Int32, name: String, root index: Int, recurse: Bool, announce: Bool) {
        let known = crawl.rescanning ? nil : true
        let wasWatched = known ?? inotifyWatchKnown(path: path)
        guard let (wd, listed) = addWatch(path, parent: parent, name: name, role: .tree(root: index)) else { return }
        var announce = announce
        if !wasWatched && !announce && parent != WatchTable.noParent {
            // A rescan found a directory kevd did not watch: it appeared (or moved in) while events were lost.
            // It is reported, with its contents, as synthetic creates, as any directory that appears is.
            announce = true
            synthesized.insert(path)
            let nameBytes = Array(name.utf8)
            emit(.create, root: index, path: path, nameBytes: nameBytes, isDirectory: true, synthetic: true)
        }
        guard recurse || announce, !listed else { return }
        let entries: [DirectoryListing.Entry]
        do {
            entries = try DirectoryListing.entries(of: path)
        } catch {
            return  // Gone again already: its deletion is queued and will be reported.
        }
        crawl.listed += 1
        let root = roots[index]
        var subdirectories: [CrawlItem] = []
        for entry in entries {
            let name = ByteText(entry.name)
            let child = Self.join(path, name.string)
            if isExcluded(path: child, name: name.string, root: root) { continue }
            let isDirectory = entry.isDirectory ?? (FileKind.of(child) == .directory)
            if announce {
                synthesized.insert(child)
                emit(.create, root: index, path: child, nameBytes: entry.name, isDirectory: isDirectory, synthetic: true)
            }
            if isDirectory && root.spec.recursive {
                subdirectories.append(CrawlItem(parent: wd, name: name.string, root: root, announce: announce))
            }
        }
        guard !subdirectories.isEmpty else { return }
        startCrawl()
        // Reversed, so the stacks pop them in listing order.
        if let prefetcher {
            crawl.inFlight += subdirectories.count
            prefetcher.submit(subdirectories.reversed().map { .init(path: Self.join(path, $0.name), item: $0) })
        } else {
            crawl.stack.append(contentsOf: subdirectories.reversed())
        }
    }

    /// Whether the directory at `path` is in the watch table already (a rescan asks, before confirming it). The
    /// kernel gives an inode's existing watch back, so this adds a watch that `addWatch` then records.
    private func inotifyWatchKnown(path: String) -> Bool {
        guard let wd = try? inotify.addWatch(path: path, mask: Self.watchMask) else { return true }  // addWatch reports
        return table.contains(wd)
    }

    /// Adds (or confirms) the watch on `path`, which is `name` inside the watch `parent`. Returns its descriptor
    /// and whether it already had `role` in this generation (a directory a crawl already listed), or nil when it
    /// cannot be watched (reported, unless it simply vanished).
    @discardableResult
    func addWatch(_ path: String, parent: Int32, name: String, role: Role) -> (wd: Int32, listed: Bool)? {
        let wd: Int32
        do {
            wd = try inotify.addWatch(path: path, mask: Self.watchMask)
        } catch let error as SyscallError {
            switch error.errno {
            case .noSpace:
                reportWatchLimit(path: path)
            case .noSuchFileOrDirectory, .notDirectory, .tooManySymbolicLinkLevels:
                break  // Vanished since it was seen; its removal is (or was) reported by its parent.
            default:
                reportError("cannot watch a path", error: error, path: path)
            }
            return nil
        } catch {
            return nil
        }
        watchLimitReported = false
        let listed = table.confirm(wd, parent: parent, name: name, path: path, role: role, generation: generation)
        return (wd, listed)
    }

    /// The kernel dropped a watch (IN_IGNORED: deleted, unmounted, or removed by us).
    func watchVanished(wd: Int32) {
        guard table.contains(wd) else { return }
        let path = table.path(of: wd) ?? ""
        let roles = table.roles(of: wd)
        table.remove(wd)
        for role in roles {
            switch role {
            case .tree(let root) where path == roots[root].spec.path:
                establish(root: root, announce: true)
            case .file(let root), .waiting(let root):
                establish(root: root, announce: true)
            case .tree:
                break
            }
        }
    }

    /// Stops watching the directory `name` of the watch `parent` and everything below it: it left every watched
    /// tree.
    func removeSubtree(parent: Int32, name: String) {
        guard let top = table.child(of: parent, named: name) else { return }
        // Paths first: removing a directory breaks its descendants' chains.
        let members = table.subtree(of: top).map { ($0, table.path(of: $0) ?? "") }
        for (wd, path) in members {
            // Only tree roles go: the same inode may be another root's waiting point or a root itself.
            let remaining = table.roles(of: wd).filter { role in
                if case .tree(let r) = role { return roots[r].spec.path == path }
                return true
            }
            if remaining.isEmpty {
                table.remove(wd)
                inotify.removeWatch(wd)
            } else {
                table.setRoles(wd, remaining)
                table.move(wd, toParent: WatchTable.noParent, name: path, path: path)
            }
        }
    }

    func removeWatchesWithoutRoles() {
        // Not while a crawl runs on roots that are being re-established: their watches regain roles as the crawl
        // reaches them (a rescan keeps the old roles meanwhile; `finishCrawl` cleans up).
        for wd in table.withoutRoles() {
            table.remove(wd)
            inotify.removeWatch(wd)
        }
    }
}
