import Glibc
import KevdSpec

/// What file catch-up (KevdDaemon's FileCatchUp) shares with the live file backends: a root's `exclude` globs,
/// applied to the catch-up's scan exactly as to live events.
public struct WatchExclusion: Sendable {
    private let root: InotifySource.Root

    public init(_ spec: WatchSpec) { root = InotifySource.Root(spec: spec) }

    /// Whether `path` (inside the root; `name` its last component) is excluded, or lies below an excluded directory.
    public func excludes(path: String, name: String) -> Bool { root.excludes(path: path, name: name) }
}

extension InotifySource {
    /// The roots this backend watches (file catch-up diffs them after this backend's overflow).
    public var watchedSpecs: [WatchSpec] { roots.map(\.spec) }

    /// Every change the kernel queued so far is published: its queue is empty (FIONREAD) and no move half waits
    /// for its partner. A snapshot refresh scanned before this held takes in only changes already journaled.
    public var everythingPublished: Bool { queuedBytes(inotify.fd.rawValue) == 0 && movePairer.isEmpty }
}

extension FanotifySource {
    /// The roots this backend watches (file catch-up diffs them after this backend's overflow).
    public var watchedSpecs: [WatchSpec] { roots.map(\.spec) }

    /// Every change the kernel queued so far is published (its queue is empty, FIONREAD; a read's records are
    /// published in the same turn).
    public var everythingPublished: Bool { queuedBytes(fanotify.fd.rawValue) == 0 }
}

/// The bytes of events queued in an inotify or fanotify fd (both answer FIONREAD); unknown counts as queued.
private func queuedBytes(_ fd: Int32) -> Int {
    var bytes: Int32 = 0
    guard ioctl(fd, UInt(FIONREAD), &bytes) == 0 else { return 1 }
    return Int(bytes)
}
