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
}

extension FanotifySource {
    /// The roots this backend watches (file catch-up diffs them after this backend's overflow).
    public var watchedSpecs: [WatchSpec] { roots.map(\.spec) }
}
