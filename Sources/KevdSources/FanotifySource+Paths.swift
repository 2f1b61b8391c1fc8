import KevdKernel
import KevdSpec

/// Directory handles to paths: fanotify names a directory by its file handle, kevd's events by its path.
///
/// A handle is resolved once (`open_by_handle_at` through a mount fd of its file system, then the fd's
/// /proc/self/fd link) and cached with the roots the directory is inside, so an event outside every root costs one
/// dictionary lookup. A directory created while watched is cached at once (by `name_to_handle_at`, while it
/// surely exists), so events inside it can be placed even after it is gone (`rm -rf` deletes the contents first,
/// but kevd reads the events later). A directory rename rewrites the cached paths of the directory and everything
/// below it, so an event inside a renamed directory reports its new path.
extension FanotifySource {
    struct DirectoryEntry {
        var path: String
        /// Indices of the roots whose trees hold this directory's entries (empty: outside, dropped).
        var roots: [Int]
    }

    /// Past this many cached directories the cache starts again (a deleted directory's entry is never used
    /// again, so churn would otherwise grow it).
    static let directoryCacheLimit = 200_000

    func directory(_ handle: KernelFileHandle) -> DirectoryEntry? {
        if let last = lastDirectory, last.handle == handle { return last.entry }
        if let known = directories[handle] {
            lastDirectory = (handle, known)
            return known
        }
        guard let known = mounts[handle.fsid] else { return nil }
        // Usually one mount. With several (a bind mount below a root), the first path inside a root wins; a
        // directory no mount names inside a root is remembered under the first path found, as outside.
        var outside: String?
        var retry = false
        for (mount, path) in known {
            // The path must still lead to that mount (unmounted meanwhile: the next mount-table change drops it).
            guard let opened = Self.openMount(path), opened.mount == mount else {
                retry = true
                continue
            }
            switch handle.location(mountFD: opened.fd.rawValue) {
            case .path(let path):
                if !rootsHolding(directory: path).isEmpty { return remember(handle, path: path) }
                if outside == nil { outside = path }
            case .gone:
                // Deleted before its event was read: it can never be resolved again, so it is remembered as
                // outside every root, and the next events in it (a busy build's temporary directories elsewhere
                // on the file system) cost one lookup.
                let entry = DirectoryEntry(path: "", roots: [])
                directories[handle] = entry
                return entry
            case .unknown:
                retry = true
            case .unreachable:
                continue
            }
        }
        if retry { return nil }  // Not remembered: the next event in it tries again.
        if let outside { return remember(handle, path: outside) }
        // No mount kevd holds reaches it (a part of the file system mounted only outside the roots): outside.
        let entry = DirectoryEntry(path: "", roots: [])
        directories[handle] = entry
        return entry
    }

    @discardableResult
    func remember(_ handle: KernelFileHandle, path: String) -> DirectoryEntry {
        if directories.count >= Self.directoryCacheLimit { directories.removeAll(keepingCapacity: true) }
        let entry = DirectoryEntry(path: path, roots: rootsHolding(directory: path))
        directories[handle] = entry
        return entry
    }

    /// A directory appeared at `path`: its handle is taken now, while it exists.
    func rememberNewDirectory(at path: String, fsid: UInt64) {
        guard let handle = KernelFileHandle.of(path: path, fsid: fsid) else { return }
        remember(handle, path: path)
    }

    /// The roots whose trees report entries of the directory at `path`: a root whose path is the directory, or
    /// (recursive) an ancestor of it. A file root's events are those of its parent directory with its name.
    func rootsHolding(directory path: String) -> [Int] {
        var out: [Int] = []
        for (index, root) in roots.enumerated() {
            let rootPath = root.spec.path
            if path == rootPath || PathText.directory(of: rootPath) == path {
                out.append(index)  // The root's own entries, or the root itself as an entry of its parent.
            } else if root.spec.recursive && Self.isBelow(path, rootPath) {
                out.append(index)
            }
        }
        return out
    }

    static func isBelow(_ path: String, _ ancestor: String) -> Bool {
        if ancestor == "/" { return path.hasPrefix("/") && path != "/" }
        let p = path.utf8
        let a = ancestor.utf8
        guard p.count > a.count, p.starts(with: a) else { return false }
        return p[p.index(p.startIndex, offsetBy: a.count)] == UInt8(ascii: "/")
    }

    /// A directory moved from `from` to `to`: it and every cached directory below it have new paths (and
    /// perhaps other roots).
    func directoryMoved(from: String, to: String) {
        var changed: [(KernelFileHandle, String)] = []
        for (handle, entry) in directories where entry.path == from || Self.isBelow(entry.path, from) {
            changed.append((handle, to + String(decoding: entry.path.utf8.dropFirst(from.utf8.count), as: UTF8.self)))
        }
        for (handle, path) in changed {
            directories[handle] = DirectoryEntry(path: path, roots: rootsHolding(directory: path))
        }
    }
}
