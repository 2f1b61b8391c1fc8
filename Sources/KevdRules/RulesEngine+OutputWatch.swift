/// Watching a run's output pipes only once it has run for a while.
///
/// Most runs are short: a script that exits within a few milliseconds has its output read once, to the end, when
/// it is reaped (`finish`), and registering its two pipes with epoll (and taking them out again, and dispatching
/// their hang-ups) would be four `epoll_ctl`s and two handler calls per run for nothing. So a run's pipes are
/// registered only when it is still running `outputWatchDelay` after its start. Until then, a script that prints
/// more than a pipe holds (64 KiB) waits in `write` for at most that delay; nothing is lost either way.
///
/// The run's timeout is scheduled at the same moment (at its start + the rule's timeout, as before), so the deadline
/// heap holds one entry per run while it starts, not a timeout per finished run until the timeout would have come
/// due. Watch deadlines are rounded up to a coarse grid, so one timer expiry serves every run started in the same
/// slot instead of one per run.
extension RulesEngine {
    /// How long a run goes unwatched.
    static let outputWatchDelay: Int64 = 50_000_000
    /// The grid watch deadlines are rounded up to (2^24 ns, about 16.8 ms).
    static let outputWatchGrid: Int64 = 1 << 24

    func scheduleOutputWatch(_ run: RuleRun) {
        let watchAt = ((run.started + Self.outputWatchDelay) | (Self.outputWatchGrid - 1)) + 1
        let timeoutAt = run.started + run.rule.spec.timeoutNanoseconds
        if timeoutAt <= watchAt {
            // A timeout shorter than the delay keeps its exact time.
            schedule(at: timeoutAt, .timeout(run))
            run.timeoutScheduled = true
        }
        schedule(at: watchAt, .watchOutput(run))
    }

    func outputWatchCameDue(_ run: RuleRun) {
        guard !run.finished else { return }
        if !run.timeoutScheduled {
            schedule(at: run.started + run.rule.spec.timeoutNanoseconds, .timeout(run))
            run.timeoutScheduled = true
        }
        guard !run.outputWatched else { return }
        run.outputWatched = true
        if let fd = run.stdout { watchOutput(run, fd, isStderr: false) }
        if let fd = run.stderr { watchOutput(run, fd, isStderr: true) }
        // What the script wrote meanwhile is read at the next turn (the pipes are level-triggered).
    }
}
