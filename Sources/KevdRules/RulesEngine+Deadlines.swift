import Glibc
import HeapModule
import KevdKernel

/// The rules' one timerfd: a heap of deadlines (timeouts, kill graces, debounces, retries, position saves),
/// the timer armed for the earliest and re-armed only when a deadline gets earlier.
extension RulesEngine {
    struct Deadline: Comparable {
        enum Action {
            case timeout(RuleRun)
            /// Watch a run's output pipes, and schedule its timeout (`RulesEngine+OutputWatch.swift`).
            case watchOutput(RuleRun)
            case kill(RuleRun)
            case debounce(RuleRuntime, String)
            case retry(RuleRuntime, String)
            case savePositions
        }

        let at: Int64
        /// Insertion order: equal times fire first-come first-served.
        let order: UInt64
        let action: Action

        static func < (a: Deadline, b: Deadline) -> Bool { (a.at, a.order) < (b.at, b.order) }
        static func == (a: Deadline, b: Deadline) -> Bool { a.at == b.at && a.order == b.order }
    }

    func schedule(at time: Int64, _ action: Deadline.Action) {
        deadlineOrder += 1
        deadlines.insert(Deadline(at: time, order: deadlineOrder, action: action))
    }

    func armTimer() {
        guard let first = deadlines.min, first.at < armedAt else { return }
        do {
            try timer.arm(atAbsolute: max(first.at, 1), cancelOnClockChange: false)
            armedAt = first.at
        } catch {
            context.logger.error("cannot arm the rules timer", metadata: ["error": "\(error)"])
        }
    }

    func fireDeadlines() {
        let now = Self.monotonicNow()
        while let first = deadlines.min, first.at <= now {
            _ = deadlines.removeMin()
            switch first.action {
            case .timeout(let run):
                guard !run.finished else { continue }
                run.timedOut = true
                // A run still starting (pid 0) gets the signal as soon as its pid arrives.
                if run.pid > 0 { Children.signalGroup(run.pid, SIGTERM) }
                schedule(at: now + run.rule.spec.killGraceNanoseconds, .kill(run))
            case .watchOutput(let run):
                outputWatchCameDue(run)
            case .kill(let run):
                guard !run.finished else { continue }
                run.killDue = true
                if run.pid > 0 { Children.signalGroup(run.pid, SIGKILL) }
            case .debounce(let rule, let key):
                guard let entry = rule.debouncing[key] else { continue }
                if entry.due > now {
                    schedule(at: entry.due, .debounce(rule, key))
                    continue
                }
                rule.debouncing[key] = nil
                if !rule.spec.catchUp && rule.isBusy(key: key) {
                    rule.counters.skipped += 1
                    rule.release(entry.job.heldSeq)
                } else {
                    rule.enqueue(entry.job)
                }
            case .retry(let rule, let key):
                guard let job = rule.retrying.removeValue(forKey: key) else { continue }
                if rule.active { rule.requeueFirst(job) } else { rule.release(job.heldSeq) }
            case .savePositions:
                saveScheduled = false
                savePositions()
            }
        }
    }
}
