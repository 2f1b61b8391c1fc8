import KevdEvent
import KevdKernel

/// Move pairing: `IN_MOVED_FROM`/`IN_MOVED_TO` with one cookie become one `moved` event (MovePairer keeps the
/// halves); a half whose partner never came is reported alone after the grace timer.
extension InotifySource {
    func armMoveTimer() {
        do {
            try moveTimer.arm(delay: Self.moveGraceNanoseconds, interval: 0)
            moveTimerArmed = true
        } catch {
            flushPendingMoves()  // No timer: report unpaired halves now rather than never.
        }
    }


    func movedFrom(_ record: InotifyRecord, path: String, name: String, root: Int, isDirectory: Bool) {
        // The same rename seen through a second root that also contains the source directory adds that root.
        movePairer.departed(
            cookie: record.cookie,
            MovePairer.Departure(
                fromPath: path, fromName: Array(record.name), fromDirWD: record.wd, fromNameText: name,
                isDirectory: isDirectory, roots: [root]))
    }

    func movedTo(_ record: InotifyRecord, path: String, name: String, root index: Int, isDirectory: Bool) {
        let root = roots[index]
        if let pending = movePairer.departure(cookie: record.cookie) {
            // The moved directory's watch, if it has one, now lives at the destination (its subtree follows).
            var followed = false
            if isDirectory, let wd = table.child(of: pending.fromDirWD, named: pending.fromNameText) {
                table.move(wd, toParent: record.wd, name: name, path: path)
                followed = true
            } else if isDirectory, table.child(of: record.wd, named: name) != nil {
                followed = true  // A second root's view of the same rename: moved already.
            }
            // Report once per root that saw the destination.
            if wants(.moved, root: index) {
                var data = baseData(root: index, path: path, nameBytes: record.name, isDirectory: isDirectory)
                data.append("from", pending.fromPath)
                data.append("to", path)
                data.append("cookie", Int(record.cookie))
                pipeline.publish(EventDraft(source: .inotify, type: "moved", key: path, data: data))
            }
            // `handle` forgets the pending half after every role of this record has seen it.
            if isDirectory && root.spec.recursive && !followed {
                watchNewDirectory(path, parent: record.wd, name: name, root: index)
            }
            return
        }
        if wants(.movedTo, root: index) {
            var data = baseData(root: index, path: path, nameBytes: record.name, isDirectory: isDirectory)
            data.append("cookie", Int(record.cookie))
            pipeline.publish(EventDraft(source: .inotify, type: "moved_to", key: path, data: data))
        }
        // A directory moved in from outside: watch it and report what it holds.
        if isDirectory && root.spec.recursive { watchNewDirectory(path, parent: record.wd, name: name, root: index) }
    }

    /// Reports moves whose partner never came: the file left the watched trees (or came from outside them).
    func flushPendingMoves() {
        for (cookie, pending) in movePairer.takeUnpaired() {
            for root in pending.roots where wants(.movedFrom, root: root) {
                var data = baseData(
                    root: root, path: pending.fromPath, nameBytes: pending.fromName, isDirectory: pending.isDirectory)
                data.append("cookie", Int(cookie))
                pipeline.publish(EventDraft(source: .inotify, type: "moved_from", key: pending.fromPath, data: data))
            }
            if pending.isDirectory { removeSubtree(parent: pending.fromDirWD, name: pending.fromNameText) }
        }
    }
}
