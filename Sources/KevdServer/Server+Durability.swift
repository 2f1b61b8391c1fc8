import KevdJournal

/// The server hears of the journal's durable position through `durableAdvanced(_:)` (Server.swift): replies
/// that wait for durability (`emit` with `durable`, stored positions) are released then.
extension Server: JournalDurabilityObserver {}
