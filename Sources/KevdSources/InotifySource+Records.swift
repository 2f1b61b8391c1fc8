import KevdEvent
import KevdKernel

/// One inotify record to the roles its watch serves: tree, file root or a path still waited for.
extension InotifySource {
    func handle(_ record: InotifyRecord) {
        let mask = record.mask
        if mask.contains(.queueOverflow) {
            handleOverflow()
            return
        }
        guard let watched = table.entry(record.wd) else { return }  // a watch removed while events were queued
        if mask.contains(.ignored) {
            watchVanished(wd: record.wd)
            return
        }
        let isDirectory = mask.contains(.isDirectory)
        // The first role inline; nested roots alone have more (read after, as the role list may change meanwhile).
        if let role = WatchRole(packed: watched.firstRole) { handle(record, role: role, isDirectory: isDirectory) }
        if watched.hasMoreRoles {
            for role in table.moreRoles(of: record.wd) { handle(record, role: role, isDirectory: isDirectory) }
        }
        if mask.contains(.movedTo) { movePairer.arrived(cookie: record.cookie) }
    }

    private func handle(_ record: InotifyRecord, role: WatchRole, isDirectory: Bool) {
        let mask = record.mask
        switch role {
        case .tree(let root):
            // A watch removed by an earlier role's handling (a root moved away) has no path any more.
            guard let dirPath = table.path(of: record.wd) else { return }
            handleTree(record, in: dirPath, root: root, isDirectory: isDirectory)
        case .file(let root):
            handleFileRoot(record, root: root)
        case .waiting(let root):
            if record.name.isEmpty {
                if mask.contains(.deleteSelf) || mask.contains(.moveSelf) { establish(root: root, announce: true) }
            } else if mask.contains(.create) || mask.contains(.movedTo) {
                establish(root: root, announce: true)
            }
        }
    }

    private func handleTree(_ record: InotifyRecord, in dirPath: String, root index: Int, isDirectory: Bool) {
        let mask = record.mask
        let root = roots[index]
        if record.name.isEmpty {
            // Events on the directory itself. Only the root's own are news: a subdirectory's deletion was already
            // reported by its parent as `delete`.
            guard dirPath == root.spec.path else { return }
            if mask.contains(.deleteSelf) {
                emit(.deleteSelf, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            } else if mask.contains(.unmount) {
                emit(.unmount, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            } else if mask.contains(.moveSelf) {
                establish(root: index, announce: true)
            } else if mask.contains(.attrib) {
                emit(.attrib, root: index, path: dirPath, nameBytes: nil, isDirectory: true)
            }
            return
        }
        let name = ByteText(record.name)
        let path = Self.join(dirPath, name.string)
        if isExcluded(path: path, name: name.string, root: root) { return }

        if mask.contains(.create) {
            if !synthesized.isEmpty && synthesized.remove(path) != nil { return }
            emit(.create, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
            if isDirectory && root.spec.recursive {
                watchNewDirectory(path, parent: record.wd, name: name.string, root: index)
            }
        } else if mask.contains(.closeWrite) {
            emit(.closeWrite, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.modify) {
            emit(.modify, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.attrib) {
            emit(.attrib, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.delete) {
            if !synthesized.isEmpty { synthesized.remove(path) }
            emit(.delete, root: index, path: path, nameBytes: record.name, name: name, isDirectory: isDirectory)
        } else if mask.contains(.movedFrom) {
            if !synthesized.isEmpty { synthesized.remove(path) }
            movedFrom(record, path: path, name: name.string, root: index, isDirectory: isDirectory)
        } else if mask.contains(.movedTo) {
            movedTo(record, path: path, name: name.string, root: index, isDirectory: isDirectory)
        }
    }

    private func handleFileRoot(_ record: InotifyRecord, root index: Int) {
        let mask = record.mask
        let path = roots[index].spec.path
        if mask.contains(.closeWrite) {
            emit(.closeWrite, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.modify) {
            emit(.modify, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.attrib) {
            emit(.attrib, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.deleteSelf) {
            emit(.deleteSelf, root: index, path: path, nameBytes: nil, isDirectory: false)
        } else if mask.contains(.moveSelf) {
            // Editors save by renaming a new file over the old one: wait for the path again.
            establish(root: index, announce: true)
        }
    }
}
