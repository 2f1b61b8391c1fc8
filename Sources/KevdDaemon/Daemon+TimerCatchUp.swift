import KevdEvent
import KevdSources

/// `[[timer]] persistent = true` at start: fold the journal (off the loop) into each persistent timer's last
/// fire, then let the timer source fire the missed ones once.
extension Daemon {
    /// After the first `apply`: the timers are armed, so each knows from which time its live schedule runs.
    func startTimerCatchUp() throws {
        guard let timers else { return }
        let names = timers.persistentNames
        guard !names.isEmpty else { return }
        // Weak and unchecked: the closure runs on the loop thread (through the inbox), where the daemon lives.
        nonisolated(unsafe) weak let daemon = self
        timerCatchUp = try TimerCatchUpFold(
            journalDirectory: journal.directory, stateDirectory: config.daemon.stateDir, names: names,
            beforeSeq: journal.recovery.nextSeq, inbox: loop.inbox
        ) { result in
            guard let daemon else { return }
            switch result {
            case .success(let found):
                daemon.foldFinished(.timer, outcome: found.outcome)
                daemon.timerCatchUp?.caughtUp = daemon.timers?.catchUp(lastFired: found.lastFired) ?? 0
            case .failure(let error):
                daemon.foldFinished(.timer, outcome: nil)
                daemon.reportError(
                    "cannot read the journal for the persistent timers' last fires; nothing is caught up",
                    error: error.description, component: "timer")
                daemon.timerCatchUp?.caughtUp = 0
            }
        }
    }
}

extension Daemon {
    /// `sources.timer_catchup` in `status`: null without persistent timers; else whether the start-up fold is
    /// done and how many timers it fired.
    func timerCatchUpStatus() -> JSONValue {
        guard let timerCatchUp else { return .null }
        return .object([
            ("done", .bool(timerCatchUp.caughtUp != nil)), ("caught_up", .int(Int64(timerCatchUp.caughtUp ?? 0))),
            ("checkpoint", checkpointStatus),
        ])
    }
}
