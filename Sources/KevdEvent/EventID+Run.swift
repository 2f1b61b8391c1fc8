/// Which daemon run made an id: every run draws a fresh random base, and an id is that base plus its event's seq
/// (`EventID.init(unixMilliseconds:seq:base:)`), so subtracting the seq gives the base back. Events of one run
/// share it, those of two runs do not (but with odds of 2^-74): the journal needs no run marker of its own, and
/// events a run journaled before its `kevd`/`started` (the start-up crawl, a `recovered` report) belong to it.
extension EventID {
    /// The random base this id was made from, given the seq it was made for.
    public func runBase(seq: UInt64) -> EventIDBase {
        EventIDBase(randA: (high & 0xFFF) &- UInt64(truncatingIfNeeded: seq >> 62), randB: (low & 0x3FFF_FFFF_FFFF_FFFF) &- seq)
    }
}
