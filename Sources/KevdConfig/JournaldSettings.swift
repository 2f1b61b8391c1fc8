import KevdEvent

/// The `[journald]` table: an optional copy of kevd's events in the systemd journal (read at start).
public struct JournaldSettings: Sendable, Equatable {
    /// Off by default: kevd's own journal is the record; the mirror is for people who read `journalctl`.
    public var mirror = false
    /// Filter terms (README, "Filters"), all of which an event must match to be mirrored; empty: every event.
    public var filter: [String] = []
    public init() {}
}

extension TableReader {
    func journaldSettings(_ t: TOMLTable) throws -> JournaldSettings {
        try rejectUnknownKeys(t, allowed: ["mirror", "filter"], name: "journald")
        var settings = JournaldSettings()
        settings.mirror = try bool(t, "mirror", table: "journald") ?? false
        if let terms = try strings(t, "filter", table: "journald") {
            do {
                _ = try EventFilter(terms: terms)
            } catch {
                throw problem("\(error)", table: "journald", key: "filter")
            }
            settings.filter = terms
        }
        return settings
    }
}
