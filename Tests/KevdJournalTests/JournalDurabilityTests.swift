import Foundation
import Glibc
import KevdEvent
import KevdKernel
import Testing

@testable import KevdJournal

/// Records what the journal tells its durability observers.
final class DurabilityRecorder: JournalDurabilityObserver {
    var seen: [UInt64] = []
    func durableAdvanced(_ seq: UInt64) { seen.append(seq) }
}

/// The journal advances its own durable position on its owner's thread and tells every observer through one
/// interface, whatever the sync policy.
@Suite("journal durability observers")
struct JournalDurabilityTests {
    @Test("sync = none: the write itself makes the events durable and tells the observers, once per advance")
    func noneTellsFromTheWrite() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.sync = .none
        let journal = try f.open(options)
        let a = DurabilityRecorder()
        let b = DurabilityRecorder()
        journal.addDurabilityObserver(a)
        journal.addDurabilityObserver(b)
        f.write(journal, count: 5)
        #expect(a.seen.last == 5)
        #expect(b.seen == a.seen)
        let told = a.seen.count
        journal.writePending()  // Nothing new: nobody is told again.
        #expect(a.seen.count == told)
        journal.close()
    }

    @Test("sync = batch: the flusher wakes the owner through the journal's eventfd; the owner applies the report")
    func batchTellsThroughTheEventFD() throws {
        let f = try JournalFixture()
        var options = Journal.Options()
        options.batchIntervalNanoseconds = 1_000_000
        let journal = try f.open(options)
        let observer = DurabilityRecorder()
        journal.addDurabilityObserver(observer)
        var released: DurabilityRecorder? = DurabilityRecorder()
        journal.addDurabilityObserver(released!)
        released = nil  // Held weakly: a released observer is simply not told.
        f.write(journal, count: 50)
        #expect(observer.seen.isEmpty, "the flusher never calls observers itself")
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        while journal.durableSeq < 50 && Clock.monotonicNanoseconds() < deadline {
            // What the loop does: wait for the eventfd, then apply.
            var pfd = pollfd(fd: journal.flusherReports.fd.rawValue, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, 1000)
            journal.applyFlusherReports()
        }
        #expect(journal.durableSeq == 50)
        #expect(observer.seen.last == 50)
        #expect(observer.seen == observer.seen.sorted(), "in increasing order")
        journal.close()
    }
}
