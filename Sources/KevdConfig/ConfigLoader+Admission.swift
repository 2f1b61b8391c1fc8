import KevdSpec

/// `[server]` keys that decide who gets a connection: `max_clients_per_uid`, `reserved_clients` and
/// `first_request_timeout` (docs/PROTOCOL.md, "Limits").
extension TableReader {
    func admissionSettings(_ t: TOMLTable, into settings: inout ServerSettings) throws {
        if let n = try int(t, "max_clients_per_uid", in: 0...1_000_000, table: "server") {
            settings.maxClientsPerUID = n
        }
        if let n = try int(t, "reserved_clients", in: 0...1_000_000, table: "server") {
            settings.reservedClients = n
        }
        if let ns = try duration(t, "first_request_timeout", table: "server") {
            // Under 100 ms a client on a loaded machine could lose its connection before it writes; "0" turns the
            // deadline off.
            guard ns == 0 || (ns >= 100_000_000 && ns <= 3_600_000_000_000) else {
                throw problem(
                    "'first_request_timeout' must be \"0\" (off) or between 100ms and 1h", table: "server",
                    key: "first_request_timeout")
            }
            settings.firstRequestTimeoutNanoseconds = ns
        }
        // The reserve must leave other users something, or nobody but root could ever connect. Checked after
        // both keys are read, whichever order they come in; the default reserve shrinks to fit a small
        // max_clients that was given without one.
        if t["reserved_clients"] == nil {
            settings.reservedClients = min(settings.reservedClients, settings.maxClients / 2)
        }
        guard settings.reservedClients < settings.maxClients else {
            throw problem(
                "'reserved_clients' (\(settings.reservedClients)) must be less than max_clients "
                    + "(\(settings.maxClients)): the rest is what other users may hold",
                table: "server", key: "reserved_clients")
        }
    }
}
