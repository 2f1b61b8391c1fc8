import KevdSpec

extension TableReader {
    /// `[journal] max_bytes_hard`, `min_free` and `retention_interval` (docs/JOURNAL.md, "Retention").
    func journalRetentionSettings(_ t: TOMLTable, into settings: inout JournalSettings) throws {
        if let v = t["max_bytes_hard"] {
            let hard = try size(v, key: "max_bytes_hard", table: "journal")
            guard hard == 0 || settings.maxBytes == 0 || hard >= settings.maxBytes else {
                throw problem(
                    "'max_bytes_hard' (\(hard)) must be at least 'max_bytes' (\(settings.maxBytes)), or 0 for no ceiling",
                    table: "journal", key: "max_bytes_hard")
            }
            guard settings.maxBytes > 0 || settings.maxAgeNanoseconds > 0 else {
                throw problem(
                    "'max_bytes_hard' needs 'max_bytes' or 'max_age': without them retention does not run",
                    table: "journal", key: "max_bytes_hard")
            }
            settings.maxBytesHard = hard
        }
        if let v = t["min_free"] { settings.minFreeBytes = try size(v, key: "min_free", table: "journal") }
        if let ns = try duration(t, "retention_interval", table: "journal") {
            guard ns >= 1_000_000_000, ns <= 86_400_000_000_000 else {
                throw problem("'retention_interval' must be between 1s and 1d", table: "journal", key: "retention_interval")
            }
            settings.retentionIntervalNanoseconds = ns
        }
    }
}
