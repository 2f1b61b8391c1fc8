/// Pairs `IN_MOVED_FROM` with `IN_MOVED_TO` by their cookie, so one rename becomes one `moved` event.
///
/// The kernel queues both halves inside `rename(2)`, but a read can end between them: a departure waits here
/// until its arrival is read, or until the source's grace timer gives up on it (the file left the watched
/// trees) and `takeUnpaired` hands it back to be reported alone. Pure bookkeeping: no I/O, no clock.
struct MovePairer {
    /// The `moved_from` half: what a lone `moved_from` event reports, and what finds a moved directory's watch.
    struct Departure: Equatable {
        let fromPath: String
        let fromName: [UInt8]
        /// The watch of the directory it left, and its name there as text: a moved directory's own watch is found
        /// by these (`WatchTable.child`).
        let fromDirWD: Int32
        let fromNameText: String
        let isDirectory: Bool
        /// The roots that saw it leave (nested or overlapping roots see the same rename once each).
        var roots: [Int]
    }

    /// How long an unpaired half waits for its partner: the halves are queued within one `rename(2)`, so a few
    /// milliseconds only cover a read that ended between them.
    static let graceNanoseconds: Int64 = 2_000_000

    private var departures: [UInt32: Departure] = [:]
    /// Cookies in the order they left, so unpaired halves are reported in the order they happened.
    private var order: [UInt32] = []

    var isEmpty: Bool { departures.isEmpty }
    var count: Int { departures.count }

    /// A `moved_from` seen through `departure.roots[0]`. The same cookie again (a second root that also contains
    /// the source directory) adds that root to the waiting departure instead of replacing it.
    mutating func departed(cookie: UInt32, _ departure: Departure) {
        if var waiting = departures[cookie] {
            for root in departure.roots where !waiting.roots.contains(root) { waiting.roots.append(root) }
            departures[cookie] = waiting
            return
        }
        departures[cookie] = departure
        order.append(cookie)
    }

    /// The departure a `moved_to` with this cookie pairs with, if it is still waiting. Does not forget it: every
    /// root that sees the arrival reports it, and `arrived` forgets it after the last.
    func departure(cookie: UInt32) -> Departure? { departures[cookie] }

    /// The arrival has been handled by every root that saw it: the pair is complete.
    @discardableResult
    mutating func arrived(cookie: UInt32) -> Departure? {
        guard let departure = departures.removeValue(forKey: cookie) else { return nil }
        order.removeAll { $0 == cookie }
        return departure
    }

    /// Every departure still waiting, in the order they left, and forgets them: their partners never came.
    mutating func takeUnpaired() -> [(cookie: UInt32, departure: Departure)] {
        var unpaired: [(cookie: UInt32, departure: Departure)] = []
        unpaired.reserveCapacity(departures.count)
        for cookie in order {
            if let departure = departures.removeValue(forKey: cookie) { unpaired.append((cookie, departure)) }
        }
        order.removeAll()
        return unpaired
    }

    /// Forgets everything (a rescan re-lists the trees, so no half is worth reporting).
    mutating func removeAll() {
        departures.removeAll()
        order.removeAll()
    }
}
