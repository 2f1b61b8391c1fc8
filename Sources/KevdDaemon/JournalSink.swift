import KevdEvent
import KevdJournal
import KevdReactor

/// Puts every event in the journal; registered first, so an event is in the page cache before any other sink
/// (subscribers, rules, stdout) writes it anywhere.
final class JournalSink: EventSink {
    let journal: Journal

    init(journal: Journal) { self.journal = journal }

    func consume(_ event: Event, line: UnsafeRawBufferPointer) { journal.append(event, line: line) }
    func endOfTurn() { journal.writePending() }
}
