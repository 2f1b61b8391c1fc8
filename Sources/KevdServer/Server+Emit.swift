import KevdEvent
import KevdKernel
import KevdReactor

/// `emit`: validation, permission, the emit rate, the cascade limit and the idempotency window; the reply waits
/// until the event is durable (Server+DurableReplies.swift).
extension Server {
    func emit(_ c: Connection, _ value: JSONValue, _ object: [(String, JSONValue)]) {
        if let bad = unknownFields(object, allowed: ["op", "type", "key", "data", "idempotency_key", "cause", "depth"]) {
            return c.replyError(bad)
        }
        guard permissions(c.credentials).emit else {
            return c.replyError("permission denied: uid \(c.credentials.uid) may not emit")
        }
        let request: EmitRequest
        switch EmitRequest.parse(value, uid: c.credentials.uid) {
        case .success(let parsed): request = parsed
        case .failure(let error): return c.replyError(error.message)
        }
        var data = request.data
        // Before the cascade check, so that a flood of refused deep emits (each reported) is held to the rate too.
        guard mayEmitNow(c) else {
            return refuse(
                c, .emitRatePerUID, configured: settings.emitRatePerUID, value: settings.emitBurstPerUID,
                "emit rate limit: uid \(c.credentials.uid) may emit \(settings.emitRatePerUID) events a second "
                    + "(burst \(settings.emitBurstPerUID), [server] emit_rate_per_uid); refused, try again later")
        }
        if let cause = request.cause, let depth = request.cascadeDepth {
            guard depth <= Int64(context.cascadeLimit) else {
                return refuseCascade(c, cause: cause, depth: depth)
            }
        }
        let now = Clock.monotonicNanoseconds()
        if let idempotencyKey = request.idempotencyKey {
            idempotency.expire(now: now)
            if let first = idempotency[idempotencyKey] {
                let reply = JSONValue.object([
                    ("ok", .bool(true)), ("op", .string("emit")), ("seq", .uint(first.seq)), ("id", .string(first.id)),
                    ("duplicate", .bool(true)),
                ])
                return replyWhenDurable(c, seq: first.seq, reply: reply)
            }
        }
        if let failure = context.journal.lastError {
            // Disk full (or EIO): an emit accepted now could not be acknowledged until space returns, and would
            // pile up in memory. Refused instead, with the reason; the connection stays usable, and emits accepted
            // before the failure get their `ok` once they are written.
            return c.replyError("the journal cannot be written (\(failure)); emit not accepted, try again later")
        }
        data.append("_uid", .int(Int64(c.credentials.uid)))
        data.append("_gid", .int(Int64(c.credentials.gid)))
        data.append("_pid", .int(Int64(c.credentials.pid)))
        if let cause = request.cause, let depth = request.cascadeDepth {
            data.append("_cause", .string(cause))
            data.append("_depth", .int(depth))
        }
        let event = context.pipeline.publish(
            EventDraft(source: EventSource("emit"), type: request.type, key: request.key, data: data))
        let id = event.id.string
        if let idempotencyKey = request.idempotencyKey {
            idempotency[idempotencyKey] = (event.seq, id, now + UInt64(settings.idempotencyWindowNanoseconds))
        }
        let reply = JSONValue.object([("ok", .bool(true)), ("op", .string("emit")), ("seq", .uint(event.seq)), ("id", .string(id))])
        replyWhenDurable(c, seq: event.seq, reply: reply)
    }

    /// Refuses an emit from too deep in a chain of rule runs, and says so in the journal as well as to the
    /// client: the client is usually a rule's script, whose stderr nobody may be reading.
    func refuseCascade(_ c: Connection, cause: String, depth: Int64) {
        let message =
            "cascade limit: this emit is \(depth) rule runs deep (limit \(context.cascadeLimit), [rules] cascade_limit); refused"
        var data = EventData()
        data.append("message", message)
        data.append("reason", "cascade_limit")
        data.append("cause", cause)
        data.append("depth", .int(depth))
        data.append("uid", .int(Int64(c.credentials.uid)))
        data.append("pid", .int(Int64(c.credentials.pid)))
        context.logger.warning(
            "emit refused: cascade limit",
            metadata: ["cause": "\(cause)", "depth": "\(depth)", "pid": "\(c.credentials.pid)"])
        context.pipeline.publishKevd("error", component: "rules", data)
        c.replyError(message)
    }

}
