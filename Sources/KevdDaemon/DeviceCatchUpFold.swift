import KevdDeviceEvents
import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor

/// `[udev] catchup = true` at start: on a helper thread (`kevd-devfold`), fold the journal's `udev` events of
/// earlier runs (`seq < beforeSeq`) into the devices kevd last knew, enumerate the devices present (/sys for the
/// `kernel` source, libudev's enumerate for the `udev` source, so that each has the properties its source's live
/// events carry), and hand the difference (`add` and `remove` devices) to the loop through its inbox. Reading a
/// long journal and a few thousand sysfs files never holds the loop.
final class DeviceCatchUpFold {
    private var thread: WorkerThread?
    private let stopping = TimerCatchUpFold.StopFlag()
    /// Set on the loop when the difference was published: how many events (`status` shows it).
    var published: Int? = nil

    init(journalDirectory: String, source: UdevMonitor.Source, filters: [UdevMonitor.Filter], beforeSeq: UInt64,
         inbox: LoopInbox, deliver: @escaping @Sendable (Result<[UdevMonitor.Device], TimerCatchUpFold.FoldError>) -> Void) throws
    {
        let worker = try WorkerThread(name: "kevd-devfold") { [stopping] in
            let result = Self.fold(
                journalDirectory: journalDirectory, filters: filters, beforeSeq: beforeSeq, stopping: stopping,
                enumerate: { filters in
                    switch source {
                    case .kernel: SysfsDevices.enumerate(filters: filters)
                    case .udev: try UdevDatabase.enumerate(filters: filters)
                    }
                })
            guard !stopping.raised.load(ordering: .relaxed) else { return }
            inbox.post { deliver(result) }
        }
        thread = worker
    }

    /// Stops reading (at the next record) and waits for the thread: for shutdown.
    func stop() {
        stopping.raised.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    /// The difference between the journal's devices and `enumerate`'s (the devices present now).
    static func fold(
        journalDirectory: String, filters: [UdevMonitor.Filter], beforeSeq: UInt64, stopping: TimerCatchUpFold.StopFlag,
        enumerate: ([UdevMonitor.Filter]) throws -> [UdevMonitor.Device]
    ) -> Result<[UdevMonitor.Device], TimerCatchUpFold.FoldError> {
        var history = DeviceCatchUp()
        do {
            let reader = try JournalReader(directory: journalDirectory)
            let source: [UInt8] = Array(#""source":"udev""#.utf8)
            while let record = try reader.next() {
                if record.seq >= beforeSeq || stopping.raised.load(ordering: .relaxed) { break }
                guard TimerCatchUpFold.contains(record.payload, source), let event = try? Event(jsonLine: record.payload)
                else { continue }
                history.fold(event)
            }
            let present = try enumerate(filters)
            return .success(history.difference(present: present, filters: filters))
        } catch {
            return .failure(.init(description: "\(error)"))
        }
    }
}
