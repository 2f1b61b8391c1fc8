import KevdDeviceEvents
import KevdEvent
import KevdKernel
import KevdReactor

/// `[udev] catchup = true` at start: on a helper thread (`kevd-devfold`), fold the journal's `udev` events of
/// earlier runs (`seq < beforeSeq`) into the devices kevd last knew, enumerate the devices present (/sys for the
/// `kernel` source, libudev's enumerate for the `udev` source, so that each has the properties its source's live
/// events carry), and hand the difference (`add` and `remove` devices) to the loop through its inbox. Reading a
/// long journal and a few thousand sysfs files never holds the loop.
///
/// After a receive buffer overflow, a repair does the same from the devices kevd's events have told so far
/// (`UdevSource.knownDevices`) instead of the journal: the events the kernel dropped become catch-up events.
final class DeviceCatchUpFold {
    /// What a fold or a repair found: the devices that changed, and (the start-up fold's) the journal's devices.
    struct Found: Sendable {
        var changes: [UdevMonitor.Device]
        var history: DeviceCatchUp?
        /// The start-up fold's: what it read besides the devices (the checkpointer's base, losses).
        var outcome: JournalFold.Outcome? = nil
    }
    typealias Delivery = @Sendable (Result<Found, JournalFold.FoldError>) -> Void

    private var thread: WorkerThread?
    private let stopping = JournalFold.StopFlag()
    private let source: UdevMonitor.Source
    private let filters: [UdevMonitor.Filter]
    /// Set on the loop when the start-up difference was published: how many events (`status` shows it).
    var published: Int? = nil
    /// Repairs after an overflow: whether one is being computed, whether another overflow came meanwhile (or
    /// before the start-up catch-up was applied), how many were applied and the events they published.
    var repairing = false
    var repairAgain = false
    var repairs = 0
    var repaired = 0

    init(journalDirectory: String, stateDirectory: String, source: UdevMonitor.Source, filters: [UdevMonitor.Filter],
         beforeSeq: UInt64, inbox: LoopInbox, deliver: @escaping Delivery) throws
    {
        self.source = source
        self.filters = filters
        let worker = try WorkerThread(name: "kevd-devfold") { [stopping] in
            let result = Self.fold(
                journalDirectory: journalDirectory, stateDirectory: stateDirectory, filters: filters,
                beforeSeq: beforeSeq, stopping: stopping, enumerate: { try Self.enumerate(source, $0) })
            guard !stopping.raised.load(ordering: .relaxed) else { return }
            inbox.post { deliver(result) }
        }
        thread = worker
    }

    static func enumerate(_ source: UdevMonitor.Source, _ filters: [UdevMonitor.Filter]) throws -> [UdevMonitor.Device] {
        switch source {
        case .kernel: SysfsDevices.enumerate(filters: filters)
        case .udev: try UdevDatabase.enumerate(filters: filters)
        }
    }

    /// On the loop: starts a repair on its own thread (`kevd-devrepair`), the enumeration against `known`.
    func repair(known: DeviceCatchUp, inbox: LoopInbox, deliver: @escaping Delivery) throws {
        // The previous thread (the start-up fold or the last repair) has posted its result, so it is ending: the
        // join is the few instructions it has left.
        thread?.join()
        repairing = true
        let source = source
        let filters = filters
        thread = try WorkerThread(name: "kevd-devrepair") { [stopping] in
            let result: Result<Found, JournalFold.FoldError>
            do {
                let present = try Self.enumerate(source, filters)
                result = .success(Found(changes: known.difference(present: present, filters: filters), history: nil))
            } catch {
                result = .failure(.init(description: "\(error)"))
            }
            guard !stopping.raised.load(ordering: .relaxed) else { return }
            inbox.post { deliver(result) }
        }
    }

    /// Stops reading (at the next record) and waits for the thread: for shutdown.
    func stop() {
        stopping.raised.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    /// The difference between the journal's devices and `enumerate`'s (the devices present now).
    static func fold(
        journalDirectory: String, stateDirectory: String?, filters: [UdevMonitor.Filter], beforeSeq: UInt64,
        stopping: JournalFold.StopFlag, enumerate: ([UdevMonitor.Filter]) throws -> [UdevMonitor.Device]
    ) -> Result<Found, JournalFold.FoldError> {
        var history = DeviceCatchUp()
        do {
            let outcome = try JournalFold.forEachEvent(
                of: .udev, in: journalDirectory, before: beforeSeq, stopping: stopping, checkpointsIn: stateDirectory
            ) { history.fold($0) }
            let present = try enumerate(filters)
            return .success(Found(
                changes: history.difference(present: present, filters: filters), history: history, outcome: outcome))
        } catch {
            return .failure(.init(description: "\(error)"))
        }
    }
}
