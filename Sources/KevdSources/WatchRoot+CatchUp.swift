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
    /// An unreadable count counts as queued.
    public var everythingPublished: Bool { inotify.fd.queuedBytes == 0 && movePairer.isEmpty }
}

extension FanotifySource {
    /// The roots this backend watches (file catch-up diffs them after this backend's overflow).
    public var watchedSpecs: [WatchSpec] { roots.map(\.spec) }

    /// Every change the kernel queued so far is published: its queue is empty (FIONREAD; a read's records are
    /// published in the same turn), no move half waits for its partner (before 5.17) and no directory moved in
    /// waits to be listed, as the inotify source's.
    public var everythingPublished: Bool { fanotify.fd.queuedBytes == 0 && pendingMoveFrom == nil && listing.isEmpty }
}
