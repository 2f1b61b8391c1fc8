import KevdJournal

extension Server {
    /// A named subscription's position is stored, so a gap in what it reads is a loss of a consumer's, like a
    /// forwarder's or a rule's: besides the `gap` line the client reads, a journaled `kevd`/`gap` with key
    /// `subscription:NAME` (published from the loop's inbox, not from inside this sink) and a count in
    /// `status`'s `retention.lost`. An anonymous subscription has only the line.
    func reportNamedGap(_ sub: Connection.Subscription, to startsAt: UInt64) {
        guard let name = sub.name, startsAt > sub.next else { return }
        context.journal.consumers.lost("subscription:" + name, from: sub.next, to: startsAt - 1)
    }
}
