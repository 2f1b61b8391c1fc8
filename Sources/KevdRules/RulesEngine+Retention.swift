import KevdJournal
import KevdKernel

extension RulesEngine {
    /// Tells retention what the rules still need: the seq after the lowest position, as stored or as it is
    /// now (whichever is lower: a restart reads from the stored one). Retention spares it below the hard
    /// ceiling; past it, a catching-up rule that finds the hole reports a `kevd`/`gap` (`reportRetentionGap`).
    /// Positions of rules no longer configured, and of rules with `catch_up = false`, are not counted.
    func registerWithRetention() {
        context.journal.consumers.register { [weak self] in self?.lowestNeeded }
    }

    private var lowestNeeded: UInt64? {
        var saved: [String: UInt64] = [:]
        for (name, seq) in lastSaved { saved[name] = seq }
        // A rule with `catch_up = false` never reads the journal (it starts at the end after a restart, and
        // skips rather than queues): it needs nothing kept.
        return rules.filter { $0.spec.catchUp }.map { rule in min(rule.position, saved[rule.spec.name] ?? rule.position) + 1 }.min()
    }
}

extension RulePositions {
    /// Reads the positions file (`NAME SEQ` lines, written whole), else its previous copy. A file that cannot
    /// be read or does not parse is reported as a `kevd`/`error` (key `rules`): with the previous copy the
    /// rules run again what they ran in the last second at most; with neither, each rule starts at the
    /// journal's end like a new one, and the report says so.
    static func load(_ file: String, reportingTo consumers: JournalConsumers) -> [String: UInt64] {
        let loaded = PositionFile.load(file) { bytes -> [String: UInt64]? in
            guard bytes.isEmpty || bytes.last == UInt8(ascii: "\n") else { return nil }
            var positions: [String: UInt64] = [:]
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: false)
                guard fields.count == 2, let seq = UInt64(fields[1]), !fields[0].isEmpty else { return nil }
                positions[String(fields[0])] = seq
            }
            return positions
        }
        if let problem = loaded.problem {
            let resolution = loaded.fromBackup
                ? "rules resume from the previous copy (events of the last save interval may run again)"
                : "rules start at the journal's end like new ones: events since their last stored positions are not run"
            consumers.positionProblem("rules", "stored rule positions unreadable: \(problem); \(resolution)")
        }
        return loaded.value ?? [:]
    }
}
