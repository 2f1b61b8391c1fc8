import KevdEvent
import KevdKernel

/// Moves on kernels without `FAN_RENAME` (before 5.17): a rename is a `FAN_MOVED_FROM` record and then a
/// `FAN_MOVED_TO` record, queued one after the other by the renaming thread, with no cookie to join them. A
/// `FAN_MOVED_FROM` is held until the next record: a `FAN_MOVED_TO` of the same process completes it into one
/// `moved` (or `moved_from`/`moved_to` at a tree's edge, as with `FAN_RENAME`); anything else, or no record within
/// `moveGraceNanoseconds` (a read can end between the halves), reports it alone. Another process's rename
/// queued between the two halves would part them: each half is then reported alone, as inotify reports a move
/// across its trees' edge.
extension FanotifySource {
    static let moveGraceNanoseconds: Int64 = 2_000_000

    struct PendingMoveFrom {
        /// The directory as it was when the half was read (it may be renamed by the time the partner comes).
        let directory: DirectoryEntry?
        let name: [UInt8]
        let isDirectory: Bool
        let pid: Int32
    }

    /// Pairs `record` with a held `FAN_MOVED_FROM`, or holds it; returns whether the record is handled.
    func pairMove(_ record: FanotifyRecord) -> Bool {
        let mask = record.mask
        let others: Fanotify.Mask = [.create, .delete, .modify, .attrib, .closeWrite]
        if let pending = pendingMoveFrom {
            pendingMoveFrom = nil
            if mask.contains(.movedTo), !mask.contains(.movedFrom), mask.isDisjoint(with: others),
                record.pid == pending.pid, mask.contains(.onDirectory) == pending.isDirectory,
                let handle = record.directory, let name = record.name
            {
                let to = directory(handle)
                pending.name.withUnsafeBufferPointer {
                    renamed(from: (pending.directory, $0), to: (to, name, handle.fsid), isDirectory: pending.isDirectory,
                        pid: pending.pid)
                }
                return true
            }
            reportAlone(pending)
        }
        guard mask.contains(.movedFrom), mask.subtracting([.movedFrom, .onDirectory]).isEmpty,
            let handle = record.directory, let name = record.name
        else { return false }
        pendingMoveFrom = PendingMoveFrom(
            directory: directory(handle), name: Array(name), isDirectory: mask.contains(.onDirectory), pid: record.pid)
        return true
    }

    /// After a read: a half still held waits a little for its partner.
    func armMoveTimerIfHolding() {
        guard pendingMoveFrom != nil, !moveTimerArmed else { return }
        do {
            try moveTimer.arm(delay: Self.moveGraceNanoseconds, interval: 0)
            moveTimerArmed = true
        } catch {
            flushPendingMove()  // No timer: report it now rather than never.
        }
    }

    /// The grace period is over: read what came meanwhile (the partner, perhaps), then report a half still held.
    func moveTimerFired() {
        moveTimerArmed = false
        drain()
        if !pacer.behind { flushPendingMove() } else { armMoveTimerIfHolding() }
    }

    func flushPendingMove() {
        guard let pending = pendingMoveFrom else { return }
        pendingMoveFrom = nil
        reportAlone(pending)
    }

    /// A `FAN_MOVED_FROM` with no partner: the entry left the trees (`moved_from`, or the root's `delete_self`).
    private func reportAlone(_ pending: PendingMoveFrom) {
        guard let directory = pending.directory, !directory.roots.isEmpty else { return }
        cookie &+= 1
        pending.name.withUnsafeBufferPointer { nameBytes in
            let name = ByteText(nameBytes)
            let path = InotifySource.join(directory.path, name.string)
            for (index, root) in roots.enumerated() where inside(path, directory: directory.path, root: root) {
                edgeMove(.movedFrom, root: index, path: path, nameBytes: nameBytes, name: name,
                    isDirectory: pending.isDirectory, pid: pending.pid)
            }
        }
    }
}
