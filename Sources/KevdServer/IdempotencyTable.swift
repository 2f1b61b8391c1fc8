/// Emits already accepted by `idempotency_key` (scoped by uid), so a client that retries after a lost reply gets
/// the first event's seq and id back (`"duplicate": true`) instead of a second event.
///
/// A key is remembered at least `[server] idempotency_window` after its emit. Memory is bounded: past 1024 keys,
/// expired ones go when the next keyed emit comes; if a flood of distinct keys still fills the table past
/// 100,000, only the 50,000 that expire last are kept.
struct IdempotencyTable {
    typealias Entry = (seq: UInt64, id: String, expires: UInt64)

    private var entries: [String: Entry] = [:]

    var count: Int { entries.count }

    subscript(key: String) -> Entry? {
        get { entries[key] }
        set { entries[key] = newValue }
    }

    mutating func expire(now: UInt64) {
        // Bounded memory: expired keys go; if a flood of distinct keys fills the table, the oldest go first.
        guard entries.count > 1024 else { return }
        entries = entries.filter { $0.value.expires > now }
        if entries.count > 100_000 {
            let keep = entries.sorted { $0.value.expires > $1.value.expires }.prefix(50_000)
            entries = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }
}
