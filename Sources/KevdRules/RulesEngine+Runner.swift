import KevdJournal
import KevdKernel
import KevdReactor

/// Starting runs: the turn-end dispatch (a few starts per turn, rules taking turns at going first) and the
/// runs' output pipes, read without blocking the loop. The spawn itself is `RulesEngine+Spawner.swift`.
extension RulesEngine {
    /// A turn-end step (the daemon adds it with `EventPipeline.addTurnEndStep`), after the turn's events went
    /// out: read on for catching-up rules, start what may start (a few per turn), arm the timer. What it
    /// publishes (`rule.started`) is written out by the same turn. Returns whether it published anything.
    @discardableResult
    public func dispatch() -> Bool {
        let before = context.pipeline.nextSeq
        catchUp()
        // A start costs the loop only its pipes, strings and bookkeeping (the spawner thread waits in vfork), but
        // a burst of them would still hold every subscriber's next event: a few per turn, then the loop looks at
        // its fds again and comes back for the rest.
        var starts = 0
        // Only events the journal has written start runs (docs/RULES.md): while it cannot write (disk full), the
        // runs wait in their queues, and the turn that writes their events starts them.
        let written = context.journal.writtenSeq
        // Rules take turns at going first, so a busy rule cannot keep the others from ever starting.
        firstRule = rules.isEmpty ? 0 : (firstRule + 1) % rules.count
        for i in rules.indices {
            let rule = rules[(firstRule + i) % rules.count]
            guard rule.active else { continue }
            while starts < Self.startsPerTurn, let job = rule.nextStartable(writtenThrough: written) {
                start(rule, job)
                starts += 1
            }
        }
        if starts == Self.startsPerTurn && rules.contains(where: { $0.active && $0.hasStartable(writtenThrough: written) }) {
            requestTurn()
        }
        if !rules.isEmpty { schedulePositionSave() }
        armTimer()
        return context.pipeline.nextSeq != before
    }

    func watchOutput(_ run: RuleRun, _ fd: OwnedFD, isStderr: Bool) {
        do {
            try context.loop.register(fd: fd.rawValue, events: .readable, priority: .clients) { [unowned self] _ in
                self.readOutput(run, isStderr: isStderr, toEnd: false)
            }
        } catch {
            // Unwatched, it is still read when the run ends; a script that fills the pipe first stalls until
            // its timeout. Registration fails only when epoll is out of memory.
            context.logger.error("cannot watch a script's output", metadata: ["error": "\(error)"])
        }
    }

    /// Reads what a run's stdout or stderr has. `toEnd`: the run has exited, take everything left and close.
    func readOutput(_ run: RuleRun, isStderr: Bool, toEnd: Bool) {
        guard let fd = isStderr ? run.stderr : run.stdout else { return }
        var reads = 0
        // A bounded number of reads per wakeup: a script printing without pause must not hold the loop.
        while toEnd || reads < 16 {
            reads += 1
            let n: Int?
            do {
                n = try Pipes.readAvailable(fd.rawValue, into: scratch)
            } catch {
                n = 0
            }
            guard let n else { break }
            if n == 0 {
                closeOutput(run, isStderr: isStderr)
                return
            }
            let chunk = UnsafeRawBufferPointer(rebasing: scratch[..<n])
            if isStderr { run.stderrTail.append(chunk) } else { run.stdoutTail.append(chunk) }
        }
        if toEnd { closeOutput(run, isStderr: isStderr) }
    }

    func closeOutput(_ run: RuleRun, isStderr: Bool) {
        guard let fd = isStderr ? run.stderr : run.stdout else { return }
        context.loop.unregister(fd: fd.rawValue)
        fd.close()
        if isStderr { run.stderr = nil } else { run.stdout = nil }
    }
}
