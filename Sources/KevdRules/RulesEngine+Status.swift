import KevdEvent
import KevdJournal

/// What `status`, `kevctl rules list` and `kevd`/`stats` show of the rules.
extension RulesEngine {
    /// For kevd's stats: runs started and failed attempts summed over the active rules (a rule dropped by a
    /// reload takes its counts with it), and the scripts running now, of any rule.
    public var totals: (runs: Int, failed: Int, running: Int) {
        let runs = rules.reduce(0) { $0 + $1.counters.runs }
        let failed = rules.reduce(0) { $0 + $1.counters.failed }
        return (runs, failed, self.runs.count + spawning.starting.count)
    }

    /// The active rules for `status` and `kevctl rules list`.
    public func statusRules() -> [JSONValue] {
        let last = context.pipeline.nextSeq - 1
        return rules.map { rule in
            let position = rule.position
            return .object([
                ("name", .string(rule.spec.name)),
                ("file", .string(rule.spec.file)),
                ("line", .int(Int64(rule.spec.line))),
                ("runs", .int(Int64(rule.counters.runs))),
                ("succeeded", .int(Int64(rule.counters.succeeded))),
                ("failed", .int(Int64(rule.counters.failed))),
                ("dead", .int(Int64(rule.counters.dead))),
                ("skipped", .int(Int64(rule.counters.skipped))),
                ("refused", .int(Int64(rule.counters.refused))),
                ("running", .int(Int64(rule.running))),
                ("pending", .int(Int64(rule.backlog))),
                ("position", .uint(position)),
                ("lag", .uint(last > position ? last - position : 0)),
                ("catching_up", .bool(rule.catchUp != nil)),
                ("lost", .uint(context.journal.consumers.lostCount("rule:" + rule.spec.name))),
            ])
        }
    }
}
