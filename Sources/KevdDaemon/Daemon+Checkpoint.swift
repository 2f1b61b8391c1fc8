import KevdEvent
import KevdJournal

/// The catch-ups' checkpoints (`CatchUpCheckpointer`): tracked from the first event of the run for each source
/// whose start-up fold will run, given the fold's earlier history when it is done, saved at each housekeeping
/// tick.
extension Daemon {
    func startCheckpointer() {
        let persistentTimers = config.timers.contains { timer in
            guard timer.persistent, case .cron = timer.schedule else { return false }
            return true
        }
        let devices = config.udev.enabled && config.udev.catchup
        guard persistentTimers || devices else { return }
        let checkpointer = CatchUpCheckpointer(stateDirectory: config.daemon.stateDir, inbox: loop.inbox, logger: logger)
        if persistentTimers { checkpointer.track(.timer, consumers: journal.consumers) }
        if devices { checkpointer.track(.udev, consumers: journal.consumers) }
        checkpointer.onSaveFailure = { [unowned self] failure in
            self.reportError(
                "cannot save a catch-up checkpoint; the next start reads the journal from the last one saved",
                error: failure, component: "catchup")
        }
        pipeline.add(sink: checkpointer)
        self.checkpointer = checkpointer
    }

    /// After the catch-ups started: a source whose fold does not run keeps no checkpoint this run.
    func untrackIdleCheckpoints() {
        if timerCatchUp == nil { checkpointer?.untrack(.timer) }
        if deviceCatchUp == nil { checkpointer?.untrack(.udev) }
    }

    /// On the loop, when a start-up fold of `source` is done: its damaged checkpoint files and the records
    /// retention deleted before it read them are reported (`kevd`/`error`, `kevd`/`gap` with key
    /// `catchup:SOURCE`), and the checkpointer gets the earlier history.
    func foldFinished(_ source: EventSource, outcome: JournalFold.Outcome?) {
        guard let outcome else {
            checkpointer?.untrack(source)
            return
        }
        let consumer = "catchup:" + source.name
        for problem in outcome.problems {
            journal.consumers.positionProblem(consumer, "stored catch-up checkpoint unreadable: \(problem); the previous copy or the whole journal was read instead")
        }
        if let lost = outcome.lost { journal.consumers.lost(consumer, from: lost.lowerBound, to: lost.upperBound) }
        checkpointer?.foldFinished(source, outcome: outcome)
    }

    /// `checkpoint` in `sources.timer_catchup`/`udev_catchup`: the seq the last saved checkpoint is complete up
    /// to (null before the first save).
    var checkpointStatus: JSONValue {
        checkpointer?.savedSeq.map { .uint($0) } ?? .null
    }
}
