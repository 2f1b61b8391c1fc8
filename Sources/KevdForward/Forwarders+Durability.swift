import KevdJournal

/// Forwarders read the journal no further than it is durable: they hear of it through `durableAdvanced(_:)`
/// (Forwarders.swift), on the loop thread, and pass it to their threads.
extension Forwarders: JournalDurabilityObserver {}
