import KevdEvent
import KevdKernel
import KevdReactor

/// `[[timer]] persistent = true`: when did each persistent timer last fire? The journal knows (event sourcing:
/// the last `timer`/`fired` event of that name, its `data.scheduled`), so kevd keeps no file of its own that
/// could disagree with it, and what a SIGKILL or a power cut took from the journal's tail is simply not a fire.
///
/// The fold reads the journal from its start on a helper thread (`kevd-timerfold`): a big journal takes seconds
/// to read, which the loop never waits for. Only the records of earlier runs count (`seq < beforeSeq`): this
/// run's live fires are not missed times. The result reaches the loop through its inbox.
final class TimerCatchUpFold {
    private var thread: WorkerThread?
    /// Set on the loop when the fold's result was applied: how many timers fired a catch-up (`status` shows it).
    var caughtUp: Int? = nil
    private let stopping = JournalFold.StopFlag()

    /// Each found timer's last scheduled time (unix seconds), and what the fold read besides.
    struct Found: Sendable {
        var lastFired: [String: Int64]
        var outcome: JournalFold.Outcome
    }

    /// Starts the fold for the timers `names`; `deliver` runs on the loop thread with what it found, or with an
    /// error text when the journal could not be read.
    init(journalDirectory: String, stateDirectory: String, names: Set<String>, beforeSeq: UInt64, inbox: LoopInbox,
         deliver: @escaping @Sendable (Result<Found, JournalFold.FoldError>) -> Void) throws
    {
        let worker = try WorkerThread(name: "kevd-timerfold") { [stopping] in
            let result = Self.fold(
                journalDirectory: journalDirectory, stateDirectory: stateDirectory, names: names, beforeSeq: beforeSeq,
                stopping: stopping)
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

    /// The last `data.scheduled` of a `timer`/`fired` event per name, among records before `beforeSeq`.
    static func fold(
        journalDirectory: String, stateDirectory: String?, names: Set<String>, beforeSeq: UInt64,
        stopping: JournalFold.StopFlag
    ) -> Result<Found, JournalFold.FoldError> {
        var last: [String: Int64] = [:]
        let outcome: JournalFold.Outcome
        do {
            outcome = try JournalFold.forEachEvent(
                of: .timer, in: journalDirectory, before: beforeSeq, stopping: stopping, checkpointsIn: stateDirectory
            ) { event in
                guard event.type == "fired", names.contains(event.key),
                    case .string(let text)? = event.data["scheduled"], let scheduled = WallTime(rfc3339: text)
                else { return }
                last[event.key] = scheduled.nanoseconds / 1_000_000_000
            }
        } catch {
            return .failure(JournalFold.FoldError(description: "\(error)"))
        }
        return .success(Found(lastFired: last, outcome: outcome))
    }
}
