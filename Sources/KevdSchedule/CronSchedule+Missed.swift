/// What a persistent cron timer missed while kevd was down (`[[timer]] persistent = true`).
extension CronSchedule {
    public struct Missed: Sendable, Equatable {
        /// How many of the schedule's times fell in the gap (at most `cap`).
        public let count: Int
        /// The latest of them (unix seconds): the catch-up fire's `scheduled`.
        public let latest: Int64
        /// True when counting stopped at the cap (`count` is then a lower bound).
        public let capped: Bool

        public init(count: Int, latest: Int64, capped: Bool) {
            self.count = count
            self.latest = latest
            self.capped = capped
        }
    }

    /// The schedule's times after `lastFired` and at or before `now` (unix seconds), or nil when there are none.
    /// Counting stops at `cap` (a every-minute timer stopped for a year has half a million): a bounded loop for
    /// start-up, and `capped` says so.
    public func missed(after lastFired: Int64, upTo now: Int64, timeZone: CronTimeZone, cap: Int = 10_000) -> Missed? {
        var count = 0
        var latest = lastFired
        var next = self.next(after: lastFired, timeZone: timeZone)
        while let instant = next, instant <= now {
            count += 1
            latest = instant
            if count >= cap {
                // Capped: the latest time is still found, by jumping to the last one before `now`.
                return Missed(count: count, latest: lastTime(atOrBefore: now, from: instant, timeZone: timeZone), capped: true)
            }
            next = self.next(after: instant, timeZone: timeZone)
        }
        return count > 0 ? Missed(count: count, latest: latest, capped: false) : nil
    }

    /// The last time at or before `now`, known to be at or after `from`: found by stepping back from `now` in
    /// widening steps until a time is found, so it does not count every time in between.
    private func lastTime(atOrBefore now: Int64, from: Int64, timeZone: CronTimeZone) -> Int64 {
        var back: Int64 = 60
        while now - back > from {
            if let t = next(after: now - back, timeZone: timeZone), t <= now {
                var latest = t
                while let n = next(after: latest, timeZone: timeZone), n <= now { latest = n }
                return latest
            }
            back *= 2
        }
        var latest = from
        while let n = next(after: latest, timeZone: timeZone), n <= now { latest = n }
        return latest
    }
}
