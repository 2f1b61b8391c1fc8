import KevdEvent
import KevdKernel
import KevdReactor
import KevdSchedule
import KevdSpec
import Logging

/// Named `[[timer]]`s, one timerfd each.
///
/// `every` timers run on CLOCK_MONOTONIC with a kernel interval, so the kernel counts overruns for us: a read
/// that returns n expirations is one `fired` event with `overruns = n - 1`. `cron` timers arm an absolute
/// CLOCK_REALTIME deadline with `TFD_TIMER_CANCEL_ON_SET`: when the wall clock is set, the read fails with
/// ECANCELED and the deadline is computed again from the new time, so a clock jump neither fires a timer early
/// nor leaves it waiting for a time that has passed.
public final class TimerSource {
    final class Armed {
        let spec: TimerSpec
        let fd: TimerFD
        /// every: the monotonic time of expiry number zero. cron: the wall time of the next expiry (seconds).
        var origin: Int64 = 0
        var expirations: Int64 = 0
        var nextCron: Int64? = nil
        /// cron: the wall time (seconds) the first arming counted from; the live timer fires only for times after
        /// it, so a persistent timer's catch-up counts the missed times up to it and the two never overlap.
        var firstArmedAfter: Int64? = nil

        init(spec: TimerSpec, fd: TimerFD) {
            self.spec = spec
            self.fd = fd
        }
    }

    let loop: EventLoop
    let pipeline: EventPipeline
    let logger: Logger
    private(set) var timers: [String: Armed] = [:]

    public init(loop: EventLoop, pipeline: EventPipeline, logger: Logger) {
        self.loop = loop
        self.pipeline = pipeline
        self.logger = logger
    }

    deinit {
        for timer in timers.values { loop.unregister(fd: timer.fd.fd.rawValue) }
    }

    public var names: [String] { timers.keys.sorted() }

    /// Replaces the configured timers; an unchanged timer keeps running on its schedule.
    public func configure(_ specs: [TimerSpec]) throws {
        let wanted = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0) })
        for (name, armed) in timers where wanted[name] != armed.spec {
            loop.unregister(fd: armed.fd.fd.rawValue)
            timers.removeValue(forKey: name)
        }
        for spec in specs where timers[spec.name] == nil {
            let armed = Armed(spec: spec, fd: try TimerFD(clock: spec.isCron ? .realtime : .monotonic))
            try arm(armed)
            try loop.register(fd: armed.fd.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
                self.fire(armed)
            }
            timers[spec.name] = armed
        }
    }

    private func arm(_ armed: Armed) throws {
        switch armed.spec.schedule {
        case .every(let interval):
            armed.origin = Int64(Clock.monotonicNanoseconds())
            armed.expirations = 0
            try armed.fd.arm(delay: interval, interval: interval)
        case .cron(let schedule, _):
            let now = Clock.realtimeNanoseconds() / 1_000_000_000
            if armed.firstArmedAfter == nil { armed.firstArmedAfter = now }
            armed.nextCron = schedule.next(after: now, timeZone: .local)
            if let next = armed.nextCron {
                try armed.fd.arm(atAbsolute: next * 1_000_000_000, cancelOnClockChange: true)
            } else {
                logger.warning("cron timer never fires", metadata: ["timer.name": "\(armed.spec.name)"])
                try armed.fd.disarm()
            }
        }
    }

    private func fire(_ armed: Armed) {
        let expiry: TimerFD.Expiry
        do {
            expiry = try armed.fd.read()
        } catch {
            logger.error("timer read failed", metadata: ["timer.name": "\(armed.spec.name)", "error": "\(error)"])
            return
        }
        switch (expiry, armed.spec.schedule) {
        case (.none, _):
            return
        case (.clockChanged, _):
            logger.info("wall clock changed; re-arming", metadata: ["timer.name": "\(armed.spec.name)"])
            rearm(armed)
        case (.expired(let count), .every(let interval)):
            armed.expirations += Int64(count)
            let scheduledMono = armed.origin + armed.expirations * interval
            publish(armed, scheduledWall: wallTime(ofMonotonic: scheduledMono), overruns: Int(count) - 1)
        case (.expired, .cron(let schedule, _)):
            let planned = armed.nextCron ?? 0
            let now = Clock.realtimeNanoseconds() / 1_000_000_000
            // Instants that passed while the daemon was stopped or the loop was held count as overruns.
            var overruns = 0
            var next = schedule.next(after: planned, timeZone: .local)
            while let n = next, n <= now, overruns < 10_000 {
                overruns += 1
                next = schedule.next(after: n, timeZone: .local)
            }
            let latest = overruns > 0 ? (lastInstant(schedule, from: planned, count: overruns) ?? planned) : planned
            publish(armed, scheduledWall: latest * 1_000_000_000, overruns: overruns)
            armed.nextCron = next
            if let next {
                do {
                    try armed.fd.arm(atAbsolute: next * 1_000_000_000, cancelOnClockChange: true)
                } catch {
                    logger.error("cannot arm timer", metadata: ["timer.name": "\(armed.spec.name)", "error": "\(error)"])
                }
            }
        }
    }

    private func lastInstant(_ schedule: CronSchedule, from start: Int64, count: Int) -> Int64? {
        var t: Int64? = start
        for _ in 0..<count { t = t.flatMap { schedule.next(after: $0, timeZone: .local) } }
        return t
    }

    private func rearm(_ armed: Armed) {
        do {
            try arm(armed)
        } catch {
            logger.error("cannot arm timer", metadata: ["timer.name": "\(armed.spec.name)", "error": "\(error)"])
        }
    }

    private func wallTime(ofMonotonic mono: Int64) -> Int64 {
        Clock.realtimeNanoseconds() - (Int64(Clock.monotonicNanoseconds()) - mono)
    }

    private func publish(_ armed: Armed, scheduledWall: Int64, overruns: Int) {
        var data = EventData()
        data.append("scheduled", WallTime(nanoseconds: scheduledWall).rfc3339)
        data.append("overruns", overruns)
        switch armed.spec.schedule {
        case .every(let ns): data.append("every", DurationText.format(nanoseconds: ns))
        case .cron(_, let expression): data.append("cron", expression)
        }
        pipeline.publish(EventDraft(source: .timer, type: "fired", key: armed.spec.name, data: data))
    }
}

extension TimerSpec {
    var isCron: Bool {
        if case .cron = schedule { return true }
        return false
    }
}
