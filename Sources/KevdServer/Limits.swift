import KevdEvent
import KevdKernel
import KevdReactor
import Logging

/// The limits that keep one local user from exhausting the daemon for everyone else, by the names the
/// configuration (`[server]`), the error replies (`"limit"`) and the `kevd`/`limit` events use.
enum Limit: String {
    case maxClients = "max_clients"
    case maxRequest = "max_request"
    case maxSubscriptionsPerUID = "max_subscriptions_per_uid"
    case emitRatePerUID = "emit_rate_per_uid"
    case maxClientsPerUID = "max_clients_per_uid"
    /// `configured` is the timeout in milliseconds, `value` the bytes the client had sent.
    case firstRequestTimeout = "first_request_timeout"
}

/// A token bucket: `rate` tokens a second, holding at most `burst`. Starts full, so a user's first burst is
/// never refused.
struct TokenBucket {
    let rate: Double
    let burst: Double
    private var tokens: Double
    private var updated: UInt64

    init(rate: Int, burst: Int, now: UInt64) {
        self.rate = Double(rate)
        self.burst = Double(max(burst, 1))
        tokens = self.burst
        updated = now
    }

    /// Takes a token if there is one.
    mutating func take(now: UInt64) -> Bool {
        refill(now: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Whether the bucket is back to full: it then carries no state worth keeping.
    mutating func isFull(now: UInt64) -> Bool {
        refill(now: now)
        return tokens >= burst
    }

    private mutating func refill(now: UInt64) {
        guard now > updated else { return }
        tokens = min(burst, tokens + Double(now - updated) * rate / 1e9)
        updated = now
    }
}

/// Publishes `kevd`/`limit` events, at most one per uid and limit every `interval`: a client that keeps
/// hitting a limit (a flood of emits, a reconnect loop) must not turn into a flood of kevd events. The next
/// event after a quiet interval carries how many refusals were not reported (`suppressed`).
struct LimitReports {
    /// How long after one report the same uid and limit are only counted.
    static let interval: UInt64 = 5_000_000_000

    private struct Key: Hashable {
        let uid: UInt32
        let limit: Limit
    }

    private var lastReported: [Key: (time: UInt64, suppressed: Int)] = [:]

    /// Reports a refusal (a `kevd`/`limit` event keyed by the limit's name, and a warning in the log), or only
    /// counts it when the same uid and limit was reported less than `interval` ago.
    mutating func refused(
        _ limit: Limit, uid: UInt32, pid: Int32, configured: Int, value: Int, message: String,
        pipeline: EventPipeline, logger: Logger
    ) {
        let now = Clock.monotonicNanoseconds()
        let key = Key(uid: uid, limit: limit)
        var suppressed = 0
        if let last = lastReported[key] {
            guard now >= last.time + Self.interval else {
                lastReported[key] = (last.time, last.suppressed + 1)
                return
            }
            suppressed = last.suppressed
        }
        forgetQuietUIDs(now: now)
        lastReported[key] = (now, 0)
        var data = EventData()
        data.append("message", message)
        data.append("uid", .int(Int64(uid)))
        data.append("pid", .int(Int64(pid)))
        data.append("limit", configured)
        data.append("value", value)
        data.append("suppressed", suppressed)
        logger.warning(
            "client refused: \(limit.rawValue)",
            metadata: ["uid": "\(uid)", "pid": "\(pid)", "limit": "\(configured)", "value": "\(value)",
                       "suppressed": "\(suppressed)"])
        pipeline.publishKevd("limit", component: limit.rawValue, data)
    }

    /// Bounded memory: entries whose interval has passed and that counted nothing carry no information.
    private mutating func forgetQuietUIDs(now: UInt64) {
        guard lastReported.count > 1024 else { return }
        lastReported = lastReported.filter { now < $0.value.time + Self.interval || $0.value.suppressed > 0 }
    }
}
