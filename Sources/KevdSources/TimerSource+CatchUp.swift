import KevdEvent
import KevdKernel
import KevdSchedule
import KevdSpec

/// `[[timer]] persistent = true`: a cron timer whose times passed while kevd was down fires once at start, as
/// systemd's `Persistent=`, with `data.catchup = true` and `data.missed` (how many times were missed).
///
/// When it last fired is folded from the journal (off the loop, by the daemon) and handed here; a timer with
/// no fire in the journal (its first run, or retention removed its history) has nothing to catch up, as a
/// systemd timer without its stamp file.
extension TimerSource {
    /// The persistent cron timers now armed, by name.
    public var persistentNames: Set<String> {
        Set(timers.values.filter { $0.spec.persistent && $0.spec.isCron }.map(\.spec.name))
    }

    /// On the loop: `lastFired` is each persistent timer's last scheduled time (unix seconds) in earlier runs.
    /// Publishes one catch-up `fired` per timer that missed at least one time between then and its arming in
    /// this run (the live timer takes the times after that). Returns how many fired.
    @discardableResult
    public func catchUp(lastFired: [String: Int64]) -> Int {
        var fired = 0
        for name in names {
            guard let armed = timers[name], armed.spec.persistent, case .cron(let schedule, let expression) = armed.spec.schedule,
                let last = lastFired[name], let armedAfter = armed.firstArmedAfter,
                let missed = schedule.missed(after: last, upTo: armedAfter, timeZone: .local)
            else { continue }
            var data = EventData()
            data.append("scheduled", WallTime(nanoseconds: missed.latest * 1_000_000_000).rfc3339)
            data.append("overruns", 0)
            data.append("cron", expression)
            data.append("catchup", true)
            data.append("missed", missed.count)
            if missed.capped { data.append("missed_capped", true) }
            data.append("last_fired", WallTime(nanoseconds: last * 1_000_000_000).rfc3339)
            pipeline.publish(EventDraft(source: .timer, type: "fired", key: name, data: data))
            logger.info("persistent timer caught up", metadata: ["timer.name": "\(name)", "timer.missed": "\(missed.count)"])
            fired += 1
        }
        return fired
    }
}
