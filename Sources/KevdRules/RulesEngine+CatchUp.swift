import KevdJournal

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
