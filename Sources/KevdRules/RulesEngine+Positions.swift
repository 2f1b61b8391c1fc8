import KevdJournal

/// Rule positions: saved at most once a second, never past what the journal made durable, and at shutdown.
extension RulesEngine {
    func schedulePositionSave() {
        guard !saveScheduled else { return }
        saveScheduled = true
        schedule(at: Self.monotonicNow() + Self.positionSaveInterval, .savePositions)
    }

    /// Positions as they may be stored: never past what the journal has made durable, or an operating-system
    /// crash that cut the journal's tail would leave a rule past seqs that are then given to new events.
    func currentPositions() -> [(String, UInt64)] {
        let durable = context.journal.durableSeq
        var list = rules.map { ($0.spec.name, min($0.position, durable)) }
        for (name, seq) in storedPositions.sorted(by: { $0.key < $1.key }) { list.append((name, seq)) }
        return list
    }

    func savePositions() {
        let current = currentPositions()
        guard !current.elementsEqual(lastSaved, by: { $0 == $1 }) else { return }
        lastSaved = current
        positions.store(current)
    }

    /// Stores every position, synchronously: called once the loop has stopped. Running scripts are left to
    /// the parent-death signal (they get SIGTERM when kevd's main thread exits) and run again after a restart.
    public func stop() {
        positions.storeNowAndStop(currentPositions())
    }
}
