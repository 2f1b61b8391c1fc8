import Glibc
import KevdKernel

/// The per-uid `[server]` limits applied to requests (the connection limits are in Server+Admission.swift):
/// refusing with the limit named, the emit rate, subscriptions held.
extension Server {
    /// Answers a request refused by one of the `[server]` limits, naming it, and reports it as a `kevd`/`limit`
    /// event (at most one per uid and limit every few seconds: a flood of refusals is counted, not repeated).
    func refuse(_ c: Connection, _ limit: Limit, configured: Int, value: Int, _ message: String) {
        c.reply(.object([("ok", .bool(false)), ("error", .string(message)), ("limit", .string(limit.rawValue))]))
        limitReports.refused(
            limit, uid: c.credentials.uid, pid: c.credentials.pid, configured: configured, value: value,
            message: message, pipeline: context.pipeline, logger: context.logger)
        dirty.insert(c.id)
    }

    /// Root and kevd's own user are not held to the per-uid limits: they may stop or replace the daemon
    /// anyway, so a limit would protect nothing from them, and the rule scripts and tools they run (which emit
    /// as they do) must not be throttled like an untrusted local user.
    func isExemptFromPerUIDLimits(_ uid: UInt32) -> Bool { uid == 0 || uid == geteuid() }

    /// `[server] emit_rate_per_uid`: takes a token from the uid's bucket; false when it has none left.
    func mayEmitNow(_ c: Connection) -> Bool {
        let uid = c.credentials.uid
        guard settings.emitRatePerUID > 0, !isExemptFromPerUIDLimits(uid) else { return true }
        let now = Clock.monotonicNanoseconds()
        if emitBuckets.count > 1024 {
            // Bounded memory: a full bucket is the same as no bucket.
            emitBuckets = emitBuckets.filter { var bucket = $0.value; return !bucket.isFull(now: now) }
        }
        var bucket = emitBuckets[uid] ?? TokenBucket(rate: settings.emitRatePerUID, burst: settings.emitBurstPerUID, now: now)
        let allowed = bucket.take(now: now)
        emitBuckets[uid] = bucket
        return allowed
    }

    /// `[server] max_subscriptions_per_uid`: how many connections of this uid hold a subscription, if it is
    /// limited and at the limit.
    func subscriptionsOverLimit(_ c: Connection) -> Int? {
        let uid = c.credentials.uid
        guard settings.maxSubscriptionsPerUID > 0, !isExemptFromPerUIDLimits(uid) else { return nil }
        let held = connections.values.reduce(0) { $0 + ($1.subscription != nil && $1.credentials.uid == uid ? 1 : 0) }
        return held >= settings.maxSubscriptionsPerUID ? held : nil
    }
}
