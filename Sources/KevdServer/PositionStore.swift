import Glibc
import KevdKernel
import Synchronization

/// Named subscriptions' acknowledged positions, one small file each under `<state_dir>/subscriptions/`.
///
/// A position is written as a whole file (`.tmp`, `fsync`, `rename`, `fsync` of the directory) on a helper
/// thread, so the loop never waits for the disk; completion comes back through `done` (to be posted to the
/// loop's inbox).
final class PositionStore: @unchecked Sendable {
    // @unchecked: `jobs` and `stopping` are the only shared state and are behind Mutexes; `directory`, `wakeup` and
    // `done` are immutable; `thread` is set in init and joined in `stop`, both on the owner's (the loop's) thread.
    let directory: String
    private let jobs = Mutex<[(name: String, seq: UInt64, token: UInt64)]>([])
    private let wakeup: EventFD
    private let done: @Sendable (UInt64, Bool) -> Void
    private var thread: WorkerThread? = nil
    private let stopping = Mutex(false)

    init(directory: String, done: @escaping @Sendable (_ token: UInt64, _ ok: Bool) -> Void) throws {
        self.directory = directory
        self.done = done
        wakeup = try EventFD(blocking: true)
        if mkdir(directory, 0o750) != 0 && errno != EEXIST {
            throw SyscallError(call: "mkdir(\(directory))", errno: .init(rawValue: errno))
        }
        thread = try WorkerThread(name: "kevd-subpos") { [self] in run() }
    }

    /// The stored position of `name` (the last acknowledged seq), or nil. A small read, at subscribe time.
    func load(_ name: String) -> UInt64? {
        // A missing file is "no position yet"; the file is written whole (tmp + rename), so never half.
        guard let bytes = try? FileContents.read(directory + "/" + name) else { return nil }
        return UInt64(String(decoding: bytes.filter { $0 > 0x20 }, as: UTF8.self))
    }

    func store(_ name: String, seq: UInt64, token: UInt64) {
        jobs.withLock { $0.append((name, seq, token)) }
        wakeup.signal()
    }

    func stop() {
        stopping.withLock { $0 = true }
        wakeup.signal()
        thread?.join()
    }

    private func run() {
        while true {
            _ = try? wakeup.drain()  // Blocks until there is work.
            let batch = jobs.withLock { jobs in
                let batch = jobs
                jobs.removeAll()
                return batch
            }
            for job in batch { done(job.token, persist(job.name, job.seq)) }
            if stopping.withLock({ $0 }) { return }
        }
    }

    private func persist(_ name: String, _ seq: UInt64) -> Bool {
        FileContents.replace(directory + "/" + name, with: Array("\(seq)\n".utf8))
    }
}
