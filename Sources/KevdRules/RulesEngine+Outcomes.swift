import Glibc
import KevdSpec
import KevdEvent
import KevdKernel

/// Runs ending: reaping, the `rule.succeeded`/`rule.failed`/`rule.dead` events, retries with backoff.
extension RulesEngine {
    /// Reaps every exited child (the daemon calls this on SIGCHLD). Processes the script left behind in its
    /// process group get SIGTERM (SIGKILL after a timeout) first, while the zombie still reserves the group's
    /// number.
    public func childrenExited() {
        while let (pid, status) = Children.nextExited() {
            // An exit no run claims may be a run whose pid is still on its way from the spawner: reaped later.
            if runs[pid] == nil && !mayReapUnclaimed(pid) { return }
            if let run = runs[pid] {
                // A run that timed out was already sent SIGTERM, group and all: what is left ignored it, and the
                // kill grace would never come for it once the leader is gone.
                Children.signalGroup(pid, run.timedOut ? SIGKILL : SIGTERM)
            }
            Children.reap(pid)
            guard let run = runs.removeValue(forKey: pid) else { continue }
            finish(run, status)
        }
        spawning.unclaimed = nil
    }

    func finish(_ run: RuleRun, _ status: ChildStatus) {
        readOutput(run, isStderr: false, toEnd: true)
        readOutput(run, isStderr: true, toEnd: true)
        run.finished = true
        let rule = run.rule
        rule.running -= 1
        var data = EventData()
        data.append("pid", Int(run.pid))
        switch status {
        case .exited(let code): data.append("exit_status", Int(code))
        case .signaled(let signal, _): data.append("signal", SignalFD.name(of: signal))
        }
        let elapsed = Self.monotonicNow() - run.started
        data.append("duration_ms", .double(Double(elapsed / 1000) / 1000))
        if run.timedOut { data.append("timed_out", true) }
        data.append("stdout", run.stdoutTail.text)
        data.append("stderr", run.stderrTail.text)
        if status == .exited(0) && !run.timedOut {
            rule.counters.succeeded += 1
            publish("succeeded", rule, run.job, depth: run.depth, data, causeID: run.causeID)
            done(rule, run.job)
        } else {
            if run.timedOut {
                let seconds = Double(rule.spec.timeoutNanoseconds / 1_000_000) / 1000
                data.append("error", "timed out after \(seconds)s")
            } else {
                data.append("error", status.description)
            }
            attemptFailed(rule, run.job, depth: run.depth, data, retryable: true)
        }
    }

    /// A failed attempt: retry after a backoff while retries remain (the key stays busy, so later events for
    /// it wait), else a dead letter.
    func attemptFailed(_ rule: RuleRuntime, _ job: Job, depth: Int, _ report: EventData, retryable: Bool) {
        rule.counters.failed += 1
        var data = report
        let willRetry = retryable && rule.active && job.attempt <= rule.spec.retries
        data.append("will_retry", willRetry)
        var delay: Int64 = 0
        if willRetry {
            let doublings = min(job.attempt - 1, 40)
            delay = min(rule.spec.backoffNanoseconds.multipliedReportingOverflow(by: 1 << doublings).partialValue, RuleSpec.maxBackoff)
            if delay <= 0 { delay = RuleSpec.maxBackoff }
            data.append("retry_in_ms", .int(delay / 1_000_000))
        }
        publish("failed", rule, job, depth: depth, data)
        if willRetry {
            var next = job
            next.attempt += 1
            rule.retrying[job.event.key] = next
            schedule(at: Self.monotonicNow() + delay, .retry(rule, job.event.key))
            return
        }
        rule.counters.dead += 1
        var dead = EventData()
        dead.append("attempts", job.attempt)
        if case .string(let error)? = report["error"] { dead.append("error", error) }
        publish("dead", rule, job, depth: depth, dead)
        done(rule, job)
    }

    func done(_ rule: RuleRuntime, _ job: Job) {
        rule.release(job.heldSeq)
        rule.keyFreed(job.event.key)
    }

    /// `rule.<type>`, key the rule's name, with what ties it to its trigger first.
    func publish(_ type: String, _ rule: RuleRuntime, _ job: Job, depth: Int, _ extra: EventData, causeID: String? = nil) {
        var data = EventData(capacity: 8 + extra.count)
        data.append("rule", rule.spec.name)
        data.append("cause", causeID ?? job.event.id.string)
        data.append("cause_seq", .int(Int64(clamping: job.event.seq)))
        data.append("cause_key", job.event.key)
        data.append("attempt", job.attempt)
        data.append("depth", depth)
        if job.events > 1 { data.append("debounced_events", job.events) }
        for field in extra { data.append(field.name, field.value) }
        context.pipeline.publish(EventDraft(source: .kevd, type: "rule." + type, key: rule.spec.name, data: data))
    }

    func reportError(_ message: String, _ error: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        context.logger.error("\(message)", metadata: ["error": "\(error)"])
        context.pipeline.publishKevd("error", component: "rules", data)
    }
}
