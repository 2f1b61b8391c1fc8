import KevdKernel
import Synchronization

/// Frees libnats callback contexts once no callback can still use them: a grace period after their connection
/// was destroyed (or its attempt failed). Freed lazily, at the next connection attempt: an outage makes
/// attempts every few seconds, so what is retired is freed soon after its grace, and the number alive stays
/// bounded by the attempts of one grace period.
enum ContextRetirement {
    /// Past the ack wait, for the closed callback libnats's own thread delivers after a connection is destroyed.
    static let extraGraceNanoseconds: UInt64 = 5_000_000_000

    private struct Retired: @unchecked Sendable {
        // @unchecked: a retained `NatsPublisher.Context`, released only by `freeExpired` under the lock.
        let context: UnsafeMutableRawPointer
        let freeAt: UInt64
    }

    private static let retired = Mutex<[Retired]>([])
    private static let count = Atomic<Int>(0)

    static var live: Int { count.load(ordering: .relaxed) }
    static func created() { count.add(1, ordering: .relaxed) }
    static func freed() { count.subtract(1, ordering: .relaxed) }

    static func retire(_ context: UnsafeMutableRawPointer, graceNanoseconds: UInt64) {
        let freeAt = Clock.monotonicNanoseconds() &+ graceNanoseconds
        retired.withLock { $0.append(Retired(context: context, freeAt: freeAt)) }
    }

    /// Releases every retired context whose grace has passed.
    static func freeExpired() {
        let now = Clock.monotonicNanoseconds()
        let expired = retired.withLock { list -> [Retired] in
            let expired = list.filter { $0.freeAt <= now }
            list.removeAll { $0.freeAt <= now }
            return expired
        }
        for item in expired { Unmanaged<NatsPublisher.Context>.fromOpaque(item.context).release() }
    }
}
