import Glibc
import KevdEvent
import KevdJournal
import KevdKernel

/// How much journal a turn may read for catching-up subscribers (issue 15, part 4).
///
/// Catch-up reads run on the loop thread, and a cold journal is a disk read: without a bound, one turn could
/// replay megabytes for each of many subscribers (up to half of a large `send_buffer` each) while signals,
/// timers, the watchdog and every other client wait. Each turn gives every catching-up subscriber at most
/// `bytesPerSubscriber`, all of them together at most `bytesPerTurn` and `slice` of time; what is left waits for
/// the next turn, a few microseconds later, with the subscribers served least recently going first.
struct CatchUpBudget {
    static let bytesPerSubscriber = 256 * 1024
    static let bytesPerTurn = 1024 * 1024
    static let slice: UInt64 = 2_000_000
    /// Records between two looks at the clock (a vDSO call, but not free).
    static let recordsPerClockCheck = 32

    let started: UInt64
    var bytesLeft = Self.bytesPerTurn
    private(set) var spent = false

    init(now: UInt64) { started = now }

    /// Counts a record's bytes (its header too: that is what the reader read); false once the turn's share is
    /// used up.
    mutating func take(_ bytes: Int) -> Bool {
        bytesLeft -= bytes + JournalFormat.recordHeaderSize
        if bytesLeft <= 0 { spent = true }
        return !spent
    }

    mutating func checkClock() -> Bool {
        if Clock.monotonicNanoseconds() &- started >= Self.slice { spent = true }
        return !spent
    }
}

/// Records a catching-up subscriber could not use: damaged in the journal (the reader reported a problem and
/// skipped to the next record that checks out), or whole but not an event line kevd can decode. Each is named
/// to the subscriber as a `gap` and to everyone as a `kevd`/`error` event (key `journal`) and a log line, once
/// per run of consecutive bad records; the subscriber goes on with the next good record.
struct JournalDamageReport {
    var subscriber: UInt64
    var from: UInt64
    var to: UInt64
    var records: Int
    var reason: String
    var problems: [JournalReader.Problem]
}

extension Server {
    /// The order in which this turn's dirty connections are served: catching-up subscribers that were served
    /// least recently first, so the turn's budget rotates among them.
    func catchUpOrder(_ ids: Set<UInt64>) -> [UInt64] {
        var catchingUp: [(turn: UInt64, id: UInt64)] = []
        var others: [UInt64] = []
        others.reserveCapacity(ids.count)
        for id in ids {
            if let sub = connections[id]?.subscription, sub.mode == .journal {
                catchingUp.append((sub.lastCatchUpTurn, id))
            } else {
                others.append(id)
            }
        }
        guard !catchingUp.isEmpty else { return others }
        catchingUp.sort { $0.turn != $1.turn ? $0.turn < $1.turn : $0.id < $1.id }
        return catchingUp.map(\.id) + others
    }

    /// Feeds a journal-mode subscriber from the journal until its buffer is half full, the journal is read, or
    /// this turn's catch-up budget is spent.
    func pump(_ c: Connection, _ sub: Connection.Subscription, budget: inout CatchUpBudget) {
        guard let reader = sub.reader else { return }
        guard !budget.spent else {
            dirty.insert(c.id)  // Its turn comes next time.
            return
        }
        catchUpTurns += 1
        sub.lastCatchUpTurn = catchUpTurns
        var records = 0
        var bytes = 0
        var damage: JournalDamageReport? = nil
        while c.output.count < settings.sendBuffer / 2 && records < 8192 && bytes < CatchUpBudget.bytesPerSubscriber {
            if records % CatchUpBudget.recordsPerClockCheck == CatchUpBudget.recordsPerClockCheck - 1
                && !budget.checkClock()
            {
                break
            }
            let record: JournalReader.Record?
            do {
                record = try reader.next()
            } catch {
                c.replyError("cannot read the journal: \(error)")
                c.closing = true
                return
            }
            guard let record else {
                sub.drained = true
                break
            }
            // Taken only with a record: damage just before the end of what is written is told with the record
            // that follows it, whenever that comes.
            let problems = newProblems(reader, sub)
            records += 1
            bytes += record.payload.count
            let inBudget = budget.take(record.payload.count)
            if record.seq < sub.next {
                if !inBudget { break }
                continue
            }
            if record.seq > sub.next {
                if problems.isEmpty {
                    gap(c, sub, to: record.seq)
                } else {
                    // What is missing was damaged, not deleted: the reader skipped it to reach this record.
                    noteDamage(
                        &damage, c, sub, from: sub.next, to: record.seq - 1, records: problems.count,
                        reason: "damaged in the journal: " + problems.map(\.description).joined(separator: "; "),
                        problems: problems)
                }
            }
            sub.next = record.seq + 1
            guard Self.isEventLine(record) else {
                noteDamage(
                    &damage, c, sub, from: record.seq, to: record.seq, records: 1,
                    reason: "record \(record.seq) in the journal is not an event line kevd can decode", problems: [])
                if !inBudget { break }
                continue
            }
            if let report = damage {
                reportDamage(report)
                damage = nil
            }
            if let filter = sub.filter {
                if let quick = filter.matches(line: record.payload) {
                    guard quick else {
                        if !inBudget { break }
                        continue
                    }
                } else {
                    do {
                        guard filter.matches(try Event(jsonLine: record.payload)) else {
                            if !inBudget { break }
                            continue
                        }
                    } catch {
                        noteDamage(
                            &damage, c, sub, from: record.seq, to: record.seq, records: 1,
                            reason: "record \(record.seq) in the journal cannot be decoded: \(error)", problems: [])
                        if !inBudget { break }
                        continue
                    }
                }
            }
            c.output.append(record.payload)
            if !inBudget { break }
        }
        if let report = damage { reportDamage(report) }
        if sub.drained && sub.next >= context.pipeline.nextSeq {
            sub.mode = .live
            sub.reader = nil
        } else if !sub.drained {
            dirty.insert(c.id)
        }
    }

    /// Problems the reader found since this subscriber last looked (it keeps them all).
    private func newProblems(_ reader: JournalReader, _ sub: Connection.Subscription) -> [JournalReader.Problem] {
        let all = reader.problems
        // A fresh reader (a subscriber that fell behind again) starts its own list.
        if sub.problemsSeen > all.count || sub.problemsReader != ObjectIdentifier(reader) {
            sub.problemsSeen = 0
            sub.problemsReader = ObjectIdentifier(reader)
        }
        guard all.count > sub.problemsSeen else { return [] }
        defer { sub.problemsSeen = all.count }
        return Array(all[sub.problemsSeen...])
    }

    /// A payload the subscriber can be sent as one line: the fixed header `JSONLineEncoder` writes, with the
    /// record's own seq, ending in `}` and its newline and holding no other newline. A line kevd did not lay out
    /// itself (another writer's, an escaped key) is decoded in full instead.
    static func isEventLine(_ record: JournalReader.Record) -> Bool {
        let line = record.payload
        guard line.count >= 3, line[line.count - 1] == 0x0A, line[line.count - 2] == UInt8(ascii: "}") else {
            return false
        }
        // At least 3 bytes (checked above), so there is a base address.
        if memchr(line.baseAddress!, 0x0A, line.count - 1) != nil { return false }
        if let header = EventLineHeader(line) { return header.seq == record.seq }
        do {
            return try Event(jsonLine: line).seq == record.seq
        } catch {
            return false
        }
    }

    /// Tells the subscriber which seqs it will not get (a `gap` line with the reason) and adds them to the run of
    /// damage being collected for the report.
    private func noteDamage(
        _ damage: inout JournalDamageReport?, _ c: Connection, _ sub: Connection.Subscription, from: UInt64,
        to: UInt64, records: Int, reason: String, problems: [JournalReader.Problem]
    ) {
        var line: [UInt8] = []
        JSONValue.object([("gap", .object([("from", .uint(from)), ("to", .uint(to))])), ("reason", .string(reason))])
            .appendJSON(to: &line)
        line.append(UInt8(ascii: "\n"))
        line.withUnsafeBytes { c.output.append($0) }
        if var run = damage, run.to + 1 == from {
            run.to = to
            run.records += records
            run.problems += problems
            damage = run
            return
        }
        if let run = damage { reportDamage(run) }
        damage = JournalDamageReport(
            subscriber: c.id, from: from, to: to, records: records, reason: reason, problems: problems)
    }

    /// Queues the report for the end of the turn (publishing while subscribers are being fed would feed them
    /// too), unless the same damage was reported lately: every subscriber replaying the journal meets it.
    private func reportDamage(_ report: JournalDamageReport) {
        let key = report.problems.first.map { "\($0.segment)@\($0.offset)" } ?? "seq \(report.from)"
        if reportedDamage.count >= 4096 { reportedDamage.removeAll() }
        guard reportedDamage.insert(key).inserted else { return }
        pendingDamageReports.append(report)
    }

    /// Publishes the damage found this turn: a `kevd`/`error` event (key `journal`) and an error log line each.
    func publishDamageReports() {
        guard !pendingDamageReports.isEmpty else { return }
        let reports = pendingDamageReports
        pendingDamageReports.removeAll()
        for report in reports {
            var data = EventData()
            data.append("message", "journal records skipped while a subscriber caught up: \(report.reason)")
            data.append("reason", report.problems.isEmpty ? "undecodable" : "damaged")
            data.append("from", .int(Int64(report.from)))
            data.append("to", .int(Int64(report.to)))
            data.append("records", report.records)
            data.append("subscriber", .int(Int64(report.subscriber)))
            if let first = report.problems.first {
                data.append("segment", first.segment)
                data.append("offset", first.offset)
            }
            context.logger.error(
                "journal records skipped while a subscriber caught up",
                metadata: [
                    "from": "\(report.from)", "to": "\(report.to)", "records": "\(report.records)",
                    "subscriber.id": "\(report.subscriber)", "reason": "\(report.reason)",
                ])
            context.pipeline.publishKevd("error", component: "journal", data)
        }
    }
}
