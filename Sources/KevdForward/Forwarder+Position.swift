import Glibc
import KevdJournal
import KevdKernel

/// The position file (`STATE/forward/NAME`): the forwarder's acknowledged prefix (AcknowledgedPrefix.swift),
/// stored as a whole file, synced, every `storeIntervalNanoseconds` at most, and read back at start.
extension Forwarder {
    func storePosition(force: Bool) {
        let now = Clock.monotonicNanoseconds()
        guard force || now &- lastStore >= Self.storeIntervalNanoseconds else { return }
        let (position, stored) = state.withLock { ($0.acks.position, $0.snapshot.stored) }
        guard position != stored else { return }
        lastStore = now
        if PositionFile.save(positionFile, Array("\(position)\n".utf8)) {
            state.withLock { $0.snapshot.stored = position }
        } else {
            let why = String(cString: strerror(errno))
            record(error: "cannot store the position in \(positionFile): \(why)", phase: nil)
        }
    }

    /// The stored position, from the file or its backup (`PositionFile`). A file that cannot be read or is
    /// damaged is reported as a `kevd`/`error`; with its backup unreadable too, the forwarder starts at the
    /// oldest record kept, as a new one does: events are published again (JetStream's duplicate window
    /// collapses the recent ones), none is skipped.
    static func loadPosition(_ path: String, reportingTo consumers: JournalConsumers, as name: String) -> UInt64 {
        let loaded = PositionFile.load(path) { bytes -> UInt64? in
            guard bytes.last == UInt8(ascii: "\n") else { return nil }
            return UInt64(String(decoding: bytes.dropLast(), as: UTF8.self))
        }
        if let problem = loaded.problem {
            let resolution = loaded.value.map { "resuming after seq \($0)" }
                ?? "publishing again from the oldest record kept (duplicates, not gaps)"
            consumers.positionProblem(name, "stored position of \(name) unreadable: \(problem); \(resolution)")
        }
        return loaded.value ?? 0
    }
}
