import KevdEvent
import KevdJournal
import KevdKernel

extension RulesEngine {
    /// How much journal reading the catching-up rules may do in one loop turn, together. Whichever limit comes
    /// first ends the slice, and the rules read on next turn: the loop answers clients, timers and signals in
    /// between, however long the journal and however cold the disk under it.
    ///
    /// - records: the decoding and matching work;
    /// - bytes: what a turn may have to read from disk (the reader fetches 256 KiB at a time, so a turn reads
    ///   at most one such chunk beyond the limit);
    /// - time: everything else (a slow disk, matches that become jobs), checked every few records.
    struct CatchUpSlice {
        static let maxRecords = 8192
        static let maxBytes = 1 << 20
        static let maxNanoseconds: Int64 = 2_000_000
        /// Records between two looks at the clock.
        static let clockEvery = 64

        private let deadline: Int64
        private var records = 0
        private var bytes = 0
        private var outOfTime = false

        init(now: Int64) { deadline = now + Self.maxNanoseconds }

        var hasRoom: Bool { records < Self.maxRecords && bytes < Self.maxBytes && !outOfTime }

        /// Counts one record read (skipped or matched, it was read).
        mutating func spend(recordBytes: Int) {
            records += 1
            bytes += recordBytes + 32  // The record header and padding, roughly.
            if records % Self.clockEvery == 0 && RulesEngine.monotonicNow() >= deadline { outOfTime = true }
        }

        /// Where a catch-up from `seq` starts reading: the first record of the segment holding `seq`, so the
        /// records before `seq` are skipped in slices by `catchUp()`. (`JournalReader.seek(.seq)` would skip them
        /// inside one `next()` call: up to a whole segment read on the loop in one go.) Before the first segment
        /// (retention deleted it), `seq` itself, so the reader reports where the journal now starts.
        static func seekTarget(for seq: UInt64, in directory: String) -> UInt64 {
            guard let segments = try? JournalDirectory.segments(in: directory),
                let holding = segments.last(where: { $0.firstSeq <= seq })
            else { return seq }
            return holding.firstSeq
        }
    }
}

/// Catching up from the journal: a rule reads its matches from the journal (after a restart, or past its
/// in-memory backlog) in bounded slices per turn, until it reaches the live stream.
extension RulesEngine {
    /// Why a rule reads its matches from the journal (logged as `reason`).
    enum CatchUpReason: String {
        /// Its stored position is behind the journal's end at start-up (`catch_up`).
        case restart
        /// Its in-memory backlog reached `maxBacklog`.
        case backlog
    }

    func startCatchUp(_ rule: RuleRuntime, from seq: UInt64, reason: CatchUpReason) {
        do {
            let reader = try JournalReader(directory: context.journal.directory)
            reader.onProblem = { [logger = context.logger, name = rule.spec.name] problem in
                logger.error("damaged journal record skipped", metadata: ["rule": "\(name)", "problem": "\(problem)"])
            }
            try reader.seek(.seq(CatchUpSlice.seekTarget(for: seq, in: context.journal.directory)))
            rule.catchUp = reader
            rule.catchUpNext = seq
            if let startsAt = reader.startsAt { reportRetentionGap(rule, from: seq, to: startsAt) }
            context.logger.info("rule reads its matches from the journal", metadata: [
                "rule": "\(rule.spec.name)", "from_seq": "\(seq)", "reason": "\(reason.rawValue)",
            ])
            requestTurn()
        } catch {
            context.logger.error("cannot read the journal", metadata: ["rule": "\(rule.spec.name)", "error": "\(error)"])
            reportError("rule '\(rule.spec.name)' cannot read the journal from seq \(seq); those events are not run", "\(error)")
        }
    }

    func reportRetentionGap(_ rule: RuleRuntime, from: UInt64, to: UInt64) {
        // A journaled `kevd`/`gap` with key `rule:NAME`, published from the loop's inbox (RulesEngine+Retention).
        context.journal.consumers.lost("rule:" + rule.spec.name, from: from, to: to - 1)
    }

    /// Reads on for catching-up rules while they have room; a rule that reaches the journal's end takes events
    /// live again.
    func catchUp() {
        // One slice of reading per turn, shared by the rules (the one after last turn's first goes first): a long
        // catch-up, or a cold disk under it, never holds the loop longer than that.
        var slice = CatchUpSlice(now: Self.monotonicNow())
        for i in rules.indices {
            let rule = rules[(firstRule + 1 + i) % rules.count]
            guard let reader = rule.catchUp else { continue }
            var drained = false
            while rule.backlog < Self.maxBacklog / 2 && slice.hasRoom {
                let record: JournalReader.Record?
                do {
                    record = try reader.next()
                } catch {
                    reportError("rule '\(rule.spec.name)' stopped reading the journal at seq \(rule.catchUpNext)", "\(error)")
                    rule.catchUp = nil
                    break
                }
                guard let record else {
                    drained = true
                    break
                }
                slice.spend(recordBytes: record.payload.count)
                guard record.seq >= rule.catchUpNext else { continue }
                if record.seq > rule.catchUpNext { reportRetentionGap(rule, from: rule.catchUpNext, to: record.seq) }
                rule.catchUpNext = record.seq + 1
                rule.seen = record.seq
                let quick = rule.filter.matches(line: record.payload)
                if quick == false { continue }
                guard let event = try? Event(jsonLine: record.payload) else {
                    context.logger.error("unreadable journal record skipped", metadata: ["rule": "\(rule.spec.name)", "seq": "\(record.seq)"])
                    continue
                }
                if quick == nil && !rule.filter.matches(event) { continue }
                matched(rule, event, record.payload)
            }
            guard rule.catchUp != nil else { continue }
            if drained && rule.catchUpNext >= context.pipeline.nextSeq {
                rule.catchUp = nil
                context.logger.info("rule caught up", metadata: ["rule": "\(rule.spec.name)", "seq": "\(rule.seen)"])
            } else if drained && context.journal.lastError != nil && rule.catchUpNext > context.journal.writtenSeq {
                // The journal cannot write what the rule needs next: nothing to read until it can, and the turn
                // whose write succeeds dispatches (asking for turns now would spin the loop for the whole failure).
            } else if rule.backlog < Self.maxBacklog / 2 {
                // More to read (or events of this turn not yet written): come back next turn, even if idle.
                requestTurn()
            }
        }
    }

    /// More to do next turn (catching up, starts past this turn's share): the loop comes back without waiting.
    func requestTurn() {
        context.loop.requestTurn()
    }
}
