/// The `[journald]` table: an optional copy of kevd's events in the systemd journal (read at start).
public struct JournaldSettings: Sendable, Equatable {
    /// Off by default: kevd's own journal is the record; the mirror is for people who read `journalctl`.
    public var mirror = false
    /// Filter terms (README, "Filters"), all of which an event must match to be mirrored; empty: every event.
    public var filter: [String] = []
    public init() {}
}
