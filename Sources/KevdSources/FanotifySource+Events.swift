import Glibc
import KevdEvent
import KevdKernel
import KevdSpec

/// fanotify records to the inotify source's events.
///
/// fanotify merges an event into a queued one for the same directory and name, so one record may carry several
/// types (a file created, written and closed before kevd reads is one record of CREATE|MODIFY|CLOSE_WRITE). They
/// are reported in the order they must have happened: create, modify, attrib, close_write, delete, except that a
/// record with both DELETE and CREATE whose name exists now was deleted and made again (delete first).
extension FanotifySource {
    func handle(_ record: FanotifyRecord) {
        let mask = record.mask
        if mask.contains(.queueOverflow) {
            handleOverflow()
            return
        }
        let isDirectory = mask.contains(.onDirectory)
        if !renameEvents && pairMove(record) { return }
        if mask.contains(.rename), let oldDirectory = record.oldDirectory, let oldName = record.oldName,
            let newDirectory = record.newDirectory, let newName = record.newName
        {
            renamed(
                from: (oldDirectory, oldName), to: (newDirectory, newName), isDirectory: isDirectory, pid: record.pid)
        }
        guard let handle = record.directory, let nameBytes = record.name,
            mask.rawValue & ~(Fanotify.Mask.rename.rawValue | Fanotify.Mask.onDirectory.rawValue) != 0,
            let directory = directory(handle), !directory.roots.isEmpty
        else { return }
        if nameBytes.count == 1 && nameBytes[0] == UInt8(ascii: ".") {
            // An event on a directory itself (a directory's attrib is reported on it, not on its parent).
            if mask.contains(.attrib) { directoryAttrib(directory, pid: record.pid) }
            return
        }
        let name = ByteText(nameBytes)
        let path = InotifySource.join(directory.path, name.string)
        if isDirectory && mask.contains(.create) { rememberNewDirectory(at: path, fsid: handle.fsid) }
        // DELETE|CREATE in one record: created then deleted, or deleted and made again. The kernel merges only
        // events of one inode when it reports the child's handle (`object`), and an inode is never made after its
        // own delete, so such a record is create then delete with no look at the disk. Without a handle, whether
        // the name exists now tells. (On a loaded machine that `stat` cost a file burst 13 % of kevd's CPU,
        // mostly asleep on the directory's lock the writer held.) The one case the rule gets wrong: a hard link
        // removed and made again before kevd read either, reported as create then delete.
        let recreated = mask.contains(.delete) && mask.contains(.create) && record.object == nil
            && FileKind.of(path) != .missing
        // The record's types in the order they happened (a fixed table, not an array per record).
        for index in directory.roots {
            for step in Self.typeOrder {
                guard mask.contains(step.mask), step.recreated == nil || step.recreated == recreated else { continue }
                emit(step.type, root: index, directory: directory.path, path: path, nameBytes: nameBytes, name: name,
                    isDirectory: isDirectory, pid: record.pid)
            }
            // A directory moved in from outside (an unpaired FAN_MOVED_TO: kernels before 5.17).
            if isDirectory && mask.contains(.movedTo) && path != roots[index].spec.path
                && inside(path, directory: directory.path, root: roots[index])
            {
                announceMovedIn(path, root: index)
            }
        }
    }

    /// The order a merged record's types are reported in; a delete comes first when the name was deleted and
    /// made again (`recreated`), last otherwise.
    static let typeOrder: [(mask: Fanotify.Mask, type: FileEventType, recreated: Bool?)] = [
        (.delete, .delete, true), (.movedFrom, .movedFrom, nil), (.create, .create, nil), (.movedTo, .movedTo, nil),
        (.modify, .modify, nil), (.attrib, .attrib, nil), (.closeWrite, .closeWrite, nil), (.delete, .delete, false),
    ]

    /// One event for root `index`, shaped as the inotify source shapes it: the root's own entry in its parent is
    /// the root itself (created, deleted: `delete_self`), a file root sees only its own name.
    func emit(
        _ type: FileEventType, root index: Int, directory: String, path: String, nameBytes: UnsafeBufferPointer<UInt8>,
        name: ByteText, isDirectory: Bool, pid: Int32, synthetic: Bool = false
    ) {
        let root = roots[index]
        var type = type
        var nameBytes: UnsafeBufferPointer<UInt8>? = nameBytes
        if path == root.spec.path {
            switch type {
            case .create, .movedTo: type = .create
            case .delete, .movedFrom: type = .deleteSelf
            case .attrib, .modify, .closeWrite: break
            default: return
            }
            nameBytes = nil
        } else if directory != root.spec.path && !(root.spec.recursive && Self.isBelow(directory, root.spec.path)) {
            // An entry of the parent of a root (a file root, or a directory root's siblings), or deeper than a
            // non-recursive root reaches. A file root is never a directory's path, so only its own name passes.
            return
        }
        guard root.events & type.bit != 0 else { return }
        if nameBytes != nil, root.excludes(path: path, name: name.string) { return }
        if !synthetic && type == .create && !synthesized.isEmpty && synthesized.remove(path) != nil {
            return  // Reported already by the listing of a directory moved in (FanotifySource+MovedIn.swift).
        }
        if !synthetic && listingActive && (type == .create || type == .movedTo) { reportedWhileListing.insert(path) }
        var data = root.baseData(path: path, nameBytes: nameBytes, name: name, isDirectory: isDirectory)
        if synthetic { data.append("synthetic", true) }
        if pid > 0 { data.append("pid", Int(pid)) }
        pipeline.publish(source: .inotify, type: type.rawValue, key: path, data: data)
    }

    private func directoryAttrib(_ directory: DirectoryEntry, pid: Int32) {
        for index in directory.roots {
            let root = roots[index]
            let path = directory.path
            // The directory must be the root or inside its tree (its parent's roots are not its own).
            guard path == root.spec.path || (Self.isBelow(path, root.spec.path)
                && (root.spec.recursive || PathText.directory(of: path) == root.spec.path))
            else { continue }
            guard root.events & FileEventType.attrib.bit != 0 else { continue }
            let name = InotifySource.Root.lastComponent(path)
            if path != root.spec.path, root.excludes(path: path, name: name) { continue }
            var data = root.baseData(path: path, nameBytes: nil, isDirectory: true)
            if pid > 0 { data.append("pid", Int(pid)) }
            pipeline.publish(source: .inotify, type: "attrib", key: path, data: data)
        }
    }

    /// `FAN_RENAME`: both ends in one record. Inside a root at both ends it is `moved`; at one end only,
    /// `moved_from` or `moved_to`, as inotify reports a rename across a tree's edge.
    private func renamed(
        from: (KernelFileHandle, UnsafeBufferPointer<UInt8>), to: (KernelFileHandle, UnsafeBufferPointer<UInt8>),
        isDirectory: Bool, pid: Int32
    ) {
        renamed(from: (directory(from.0), from.1), to: (directory(to.0), to.1, to.0.fsid), isDirectory: isDirectory,
            pid: pid)
    }

    /// A rename with both ends known: from `FAN_RENAME`, or a `FAN_MOVED_FROM` paired with the `FAN_MOVED_TO`
    /// that followed it (FanotifySource+Moves.swift). A directory is `nil` when it is not known (gone).
    func renamed(
        from: (DirectoryEntry?, UnsafeBufferPointer<UInt8>), to: (DirectoryEntry?, UnsafeBufferPointer<UInt8>, UInt64),
        isDirectory: Bool, pid: Int32
    ) {
        let oldDirectory = from.0
        let newDirectory = to.0
        let oldName = ByteText(from.1)
        let newName = ByteText(to.1)
        let oldPath = oldDirectory.map { InotifySource.join($0.path, oldName.string) }
        let newPath = newDirectory.map { InotifySource.join($0.path, newName.string) }
        // Paths below a renamed directory change before anything else is read.
        if isDirectory, let oldPath, let newPath { directoryMoved(from: oldPath, to: newPath) }
        if isDirectory, let newPath { rememberNewDirectory(at: newPath, fsid: to.2) }
        cookie &+= 1
        for (index, root) in roots.enumerated() {
            let fromInside = oldPath.map { inside($0, directory: oldDirectory!.path, root: root) } ?? false
            let toInside = newPath.map { inside($0, directory: newDirectory!.path, root: root) } ?? false
            switch (fromInside, toInside) {
            case (true, true):
                guard root.events & FileEventType.moved.bit != 0, let oldPath, let newPath else { continue }
                var data = root.baseData(path: newPath, nameBytes: to.1, name: newName, isDirectory: isDirectory)
                data.append("from", oldPath)
                data.append("to", newPath)
                data.append("cookie", Int(cookie))
                if pid > 0 { data.append("pid", Int(pid)) }
                pipeline.publish(source: .inotify, type: "moved", key: newPath, data: data)
            case (true, false):
                guard let oldPath else { continue }
                edgeMove(.movedFrom, root: index, path: oldPath, nameBytes: from.1, name: oldName,
                    isDirectory: isDirectory, pid: pid)
            case (false, true):
                guard let newPath else { continue }
                edgeMove(.movedTo, root: index, path: newPath, nameBytes: to.1, name: newName,
                    isDirectory: isDirectory, pid: pid)
                // Its contents as synthetic creates; not for the root itself renamed into place (as inotify).
                if isDirectory && newPath != root.spec.path { announceMovedIn(newPath, root: index) }
            case (false, false):
                continue
            }
        }
    }

    func edgeMove(
        _ type: FileEventType, root index: Int, path: String, nameBytes: UnsafeBufferPointer<UInt8>, name: ByteText,
        isDirectory: Bool, pid: Int32
    ) {
        let root = roots[index]
        if path == root.spec.path {
            // The root itself renamed away or into place: inotify reports the root's loss and return this way.
            let selfType: FileEventType = type == .movedTo ? .create : .deleteSelf
            guard root.events & selfType.bit != 0 else { return }
            var data = root.baseData(path: path, nameBytes: nil, isDirectory: isDirectory)
            if pid > 0 { data.append("pid", Int(pid)) }
            pipeline.publish(source: .inotify, type: selfType.rawValue, key: path, data: data)
            return
        }
        guard root.events & type.bit != 0 else { return }
        var data = root.baseData(path: path, nameBytes: nameBytes, name: name, isDirectory: isDirectory)
        data.append("cookie", Int(cookie))
        if pid > 0 { data.append("pid", Int(pid)) }
        pipeline.publish(source: .inotify, type: type.rawValue, key: path, data: data)
    }

    /// Whether the entry `path` of `directory` is reported by `root` (not excluded; the root itself counts).
    func inside(_ path: String, directory: String, root: Root) -> Bool {
        let rootPath = root.spec.path
        if path == rootPath { return true }
        guard directory == rootPath || (root.spec.recursive && Self.isBelow(directory, rootPath)) else { return false }
        return !root.excludes(path: path, name: InotifySource.Root.lastComponent(path))
    }

    /// `FAN_Q_OVERFLOW`: events were lost. Reported per root as the inotify source reports its overflow; the
    /// directory cache is dropped (nothing else is kept that could be stale; a catch-up diff is the catch-up
    /// issue's).
    func handleOverflow() {
        overflowCount += 1
        for root in roots { pipeline.publish(root.overflowDraft(overflows: overflowCount)) }
        logger.warning("fanotify queue overflowed", metadata: ["fanotify.marks": "\(markedDevices.count)"])
        onOverflow?()
        directories.removeAll(keepingCapacity: true)
    }
}
