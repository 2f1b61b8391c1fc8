import KevdEvent
import KevdJournal
import KevdKernel
import KevdReactor
import Synchronization

/// `[[timer]] persistent = true`: when did each persistent timer last fire? The journal knows (event sourcing:
/// the last `timer`/`fired` event of that name, its `data.scheduled`), so kevd keeps no file of its own that
/// could disagree with it, and what a SIGKILL or a power cut took from the journal's tail is simply not a fire.
///
/// The fold reads the journal from its start on a helper thread (`kevd-timerfold`): a big journal takes seconds
/// to read, which the loop never waits for. Only the records of earlier runs count (`seq < beforeSeq`): this
/// run's live fires are not missed times. The result reaches the loop through its inbox.
final class TimerCatchUpFold {
    /// Set by `stop` on the loop thread, read by the fold's thread at every record.
    final class StopFlag: Sendable {
        let raised = Atomic<Bool>(false)
    }
    private var thread: WorkerThread?
    /// Set on the loop when the fold's result was applied: how many timers fired a catch-up (`status` shows it).
    var caughtUp: Int? = nil
    private let stopping = StopFlag()

    /// Starts the fold for the timers `names`; `deliver` runs on the loop thread with each found timer's last
    /// scheduled time (unix seconds), or with an error text when the journal could not be read.
    init(journalDirectory: String, names: Set<String>, beforeSeq: UInt64, inbox: LoopInbox,
         deliver: @escaping @Sendable (Result<[String: Int64], FoldError>) -> Void) throws
    {
        let worker = try WorkerThread(name: "kevd-timerfold") { [stopping] in
            let result = Self.fold(journalDirectory: journalDirectory, names: names, beforeSeq: beforeSeq, stopping: stopping)
            guard !stopping.raised.load(ordering: .relaxed) else { return }
            inbox.post { deliver(result) }
        }
        thread = worker
    }

    struct FoldError: Error, Sendable { let description: String }

    /// Stops reading (at the next record) and waits for the thread: for shutdown.
    func stop() {
        stopping.raised.store(true, ordering: .relaxed)
        thread?.join()
        thread = nil
    }

    /// The last `data.scheduled` of a `timer`/`fired` event per name, among records before `beforeSeq`.
    static func fold(journalDirectory: String, names: Set<String>, beforeSeq: UInt64, stopping: StopFlag)
        -> Result<[String: Int64], FoldError>
    {
        var last: [String: Int64] = [:]
        do {
            let reader = try JournalReader(directory: journalDirectory)
            let source: [UInt8] = Array(#""source":"timer""#.utf8)
            while let record = try reader.next() {
                if record.seq >= beforeSeq || stopping.raised.load(ordering: .relaxed) { break }
                // Most records are not a timer's: a byte search first, a decode only for the few that are.
                guard record.payloadContains(source), let event = try? Event(jsonLine: record.payload),
                    event.source == .timer, event.type == "fired", names.contains(event.key),
                    case .string(let text)? = event.data["scheduled"], let scheduled = WallTime(rfc3339: text)
                else { continue }
                last[event.key] = scheduled.nanoseconds / 1_000_000_000
            }
        } catch {
            return .failure(FoldError(description: "\(error)"))
        }
        return .success(last)
    }
}
