import Glibc
import KevdJournal
import KevdKernel
import Synchronization

/// Every rule's journal position, in one small file: `<state_dir>/rules/positions`, a line `NAME SEQ` per rule.
///
/// A rule's position is the seq through which every matching event has been run to an end (succeeded, dead,
/// or skipped by the rule's own settings). After a restart a rule reads on from there, so what was interrupted
/// or still queued runs again: at least once. The file is replaced whole (`.tmp`, `fsync`, `rename`, `fsync`
/// of the folder) on a helper thread, so the loop never waits for the disk; only the newest snapshot asked for
/// is written, however many came in the meantime.
final class RulePositions: @unchecked Sendable {
    // @unchecked: `pending` and `stopping` are behind Mutexes; `file` and `directory` are immutable.
    let directory: String
    let file: String
    private let pending = Mutex<[UInt8]?>(nil)
    private let stopping = Mutex(false)
    private let wakeup: EventFD
    private var thread: WorkerThread? = nil
    private let failed: @Sendable (String) -> Void

    /// `failed` is called on the helper thread with a message when a write fails.
    init(stateDirectory: String, failed: @escaping @Sendable (String) -> Void) throws {
        directory = stateDirectory + "/rules"
        file = directory + "/positions"
        self.failed = failed
        try Directories.make(directory, mode: 0o750)
        wakeup = try EventFD(blocking: true)
        thread = try WorkerThread(name: "kevd-rulepos") { [self] in run() }
    }

    /// The stored positions, from the file or its backup (`PositionFile`; RulePositions+Load.swift).
    func load(reportingTo consumers: JournalConsumers) -> [String: UInt64] {
        Self.load(file, reportingTo: consumers)
    }

    static func encode(_ positions: [(String, UInt64)]) -> [UInt8] {
        var text = ""
        for (name, seq) in positions { text += "\(name) \(seq)\n" }
        return Array(text.utf8)
    }

    /// Queues a snapshot for the helper thread; an older one not yet written is replaced.
    func store(_ positions: [(String, UInt64)]) {
        pending.withLock { $0 = Self.encode(positions) }
        wakeup.signal()
    }

    /// Writes `positions` now, on the calling thread, after the helper has stopped: the last word at shutdown.
    func storeNowAndStop(_ positions: [(String, UInt64)]) {
        stopping.withLock { $0 = true }
        wakeup.signal()
        thread?.join()
        if !persist(Self.encode(positions)) { failed("cannot write \(file): \(String(cString: strerror(errno)))") }
    }

    private func run() {
        // A full disk fails every write until space returns: reported once, not once per snapshot. Nothing is
        // lost meanwhile: each snapshot holds every rule's position, so the next one (or the one written at
        // shutdown) retries them all.
        var reported: String? = nil
        while true {
            _ = try? wakeup.drain()  // Blocks until there is work.
            if stopping.withLock({ $0 }) { return }
            guard let bytes = pending.withLock({ value -> [UInt8]? in
                defer { value = nil }
                return value
            }) else { continue }
            if persist(bytes) {
                reported = nil
            } else {
                let message = "cannot write \(file): \(String(cString: strerror(errno)))"
                if reported != message { failed(message) }
                reported = message
            }
        }
    }

    private func persist(_ bytes: [UInt8]) -> Bool { PositionFile.save(file, bytes) }
}
