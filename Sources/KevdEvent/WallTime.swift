/// A wall-clock instant: nanoseconds since the Unix epoch, UTC.
public struct WallTime: Sendable, Hashable, Comparable {
    public let nanoseconds: Int64
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func < (a: WallTime, b: WallTime) -> Bool { a.nanoseconds < b.nanoseconds }
}
