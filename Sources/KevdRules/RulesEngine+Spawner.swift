import Glibc
import KevdEvent
import KevdKernel
import KevdSpec

/// Starting runs off the loop thread.
///
/// The loop prepares a run (argv, environment, credentials, its output pipes, its timeout) and submits it to the
/// `RuleSpawner` thread, which does the vfork and exec and reports the pid back through the loop's inbox. The loop
/// keeps owning everything else: the run's state, output pipes, timeouts, and reaping through SIGCHLD.
///
/// The races this settles:
/// - A child can exit (and its SIGCHLD arrive) before its pid reaches the loop. An exited child no run claims is
///   left unreaped while starts are in flight, and looked at again when their outcomes arrive; only once every
///   start in flight when it was first seen has reported is it taken for an orphan (a script's grandchild kevd
///   reaps as subreaper) and reaped. Its zombie keeps its pid and process group reserved meanwhile.
/// - A timeout or its kill can come due before the pid is known: the run is marked, and the signal goes to the
///   group when the pid arrives.
/// - The child's ends of its pipes belong to the spawner until the child has exec'd (see `SpawnOrder`); the child
///   itself inherits nothing but 0-2 (`kevd_spawn` closes every other fd before exec).
extension RulesEngine {
    struct Spawning {
        /// The last order token submitted, and the last whose outcome came back (the spawner keeps their order).
        var submitted: UInt64 = 0
        var reported: UInt64 = 0
        var starting: [UInt64: RuleRun] = [:]
        /// An exited child no run claims, seen while starts were in flight, and the last token submitted then.
        var unclaimed: (pid: Int32, submittedThen: UInt64)? = nil
    }

    /// Lets the spawner's notification reach the engine without keeping it alive.
    final class WeakEngine: @unchecked Sendable {
        // @unchecked: set once at start-up, then read only on the loop thread (inside inbox work).
        weak var engine: RulesEngine?
    }

    func start(_ rule: RuleRuntime, _ job: Job) {
        let spec = rule.spec
        let depth = Self.depth(of: job.event) + 1
        let arguments: [String]
        do {
            arguments = try RunCommand.arguments(spec, for: job.event)
        } catch {
            // No attempt can fill it: fail for good.
            var data = EventData()
            data.append("error", error.description)
            return attemptFailed(rule, job, depth: depth, data, retryable: false)
        }
        let fixed = rule.fixedEnvironment ?? RunCommand.FixedEnvironment(spec, socket: context.socketPath)
        rule.fixedEnvironment = fixed
        let eventID = job.event.id.string
        let environment = RunCommand.environment(
            fixed, for: job.event, eventID: eventID, depth: depth, attempt: job.attempt)
        var request = SpawnRequest(path: spec.program, arguments: arguments, environment: environment)
        if spec.user != nil || spec.group != nil, geteuid() == 0 {
            request.credentials = .init(uid: spec.user ?? 0, gid: spec.group ?? 0, groups: spec.groups)
        }
        request.noNewPrivileges = spec.noNewPrivileges
        let output: (read: OwnedFD, write: OwnedFD)
        let errors: (read: OwnedFD, write: OwnedFD)
        do {
            output = try Pipes.make()
            errors = try Pipes.make()
        } catch {
            var data = EventData()
            data.append("error", "\(error)")
            return attemptFailed(rule, job, depth: depth, data, retryable: true)
        }
        spawning.submitted += 1
        let token = spawning.submitted
        let now = Self.monotonicNow()
        let run = RuleRun(
            rule: rule, job: job, token: token, started: now, depth: depth, stdout: output.read, stderr: errors.read,
            tail: settings.outputTail)
        run.causeID = eventID
        spawning.starting[token] = run
        // Counted as running from now: the rule's concurrency covers starts in flight.
        rule.running += 1
        // The output pipes are watched only if the run outlives a short delay; its timeout is scheduled then too
        // (`RulesEngine+OutputWatch.swift`).
        scheduleOutputWatch(run)
        spawner.submit(
            SpawnOrder(token: token, request: request, stdin: job.line, stdoutWrite: output.write, stderrWrite: errors.write))
    }

    /// The spawner reported (loop thread, through the inbox): runs get their pids, failed starts fail.
    func spawnsReported() {
        for outcome in spawner.takeOutcomes() {
            spawning.reported = outcome.token
            guard let run = spawning.starting.removeValue(forKey: outcome.token) else { continue }
            switch outcome.result {
            case .started(let pid):
                started(run, pid: pid)
            case .failed(let error):
                run.finished = true
                closeOutput(run, isStderr: false)
                closeOutput(run, isStderr: true)
                run.rule.running -= 1
                var data = EventData()
                data.append("error", error)
                attemptFailed(run.rule, run.job, depth: run.depth, data, retryable: true)
            }
        }
        // An exit seen before its pid came: reap it now that the run is known.
        if spawning.unclaimed != nil { childrenExited() }
        // The `rule.started` events go out at this turn's end, and its `dispatch()` fills the slots failed starts
        // freed.
    }

    private func started(_ run: RuleRun, pid: Int32) {
        run.pid = pid
        runs[pid] = run
        run.rule.counters.runs += 1
        // Its timeout (or the kill after it) came due while it was starting.
        if run.killDue {
            Children.signalGroup(pid, SIGKILL)
        } else if run.timedOut {
            Children.signalGroup(pid, SIGTERM)
        }
        var data = EventData()
        data.append("pid", Int(pid))
        publish("started", run.rule, run.job, depth: run.depth, data, causeID: run.causeID)
    }

    /// Whether an exited child that no run claims may be reaped now: yes when no start is in flight, or once
    /// every start in flight when it was first seen has reported (then it is not a run's); otherwise it waits,
    /// and so does the reaping of every child after it (`waitid` keeps returning it first), until the spawner
    /// reports: at most the rest of its batch of starts (`RuleSpawner.reportBatch`).
    func mayReapUnclaimed(_ pid: Int32) -> Bool {
        if spawning.reported >= spawning.submitted { return true }
        if let unclaimed = spawning.unclaimed, unclaimed.pid == pid {
            return spawning.reported >= unclaimed.submittedThen
        }
        spawning.unclaimed = (pid, spawning.submitted)
        return false
    }
}

extension RuleSpawner {
    /// The engine's spawner: its outcomes are taken on the loop thread, one inbox post per batch.
    static func forEngine(_ engine: RulesEngine) throws -> RuleSpawner {
        let weak = RulesEngine.WeakEngine()
        weak.engine = engine
        let inbox = engine.context.loop.inbox
        return try RuleSpawner(notify: { inbox.post { weak.engine?.spawnsReported() } })
    }
}
