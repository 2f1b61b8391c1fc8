import Glibc
import KevdSpec
import KevdKernel

/// Who gets a connection (issue 15, part 3): one local user must not be able to take every slot.
///
/// `max_clients` bounds the connections of everyone together. Of those, `reserved_clients` are kept for root and
/// kevd's own user (PostgreSQL's `superuser_reserved_connections`): an administrator can always connect to see
/// what is going on and stop it. Every other uid may hold at most `max_clients_per_uid` connections, so a few
/// users together still leave room for the rest. A refused client is told why (the reply names the limit) and
/// the refusal is a `kevd`/`limit` event like the other per-uid limits.
extension Server {
    struct AdmissionRefusal {
        let limit: Limit
        let configured: Int
        let value: Int
        let message: String
    }

    /// Why `connection` may not be admitted now, or nil when it may.
    func admissionRefusal(_ connection: Connection) -> AdmissionRefusal? {
        let uid = connection.credentials.uid
        return Self.admissionRefusal(
            uid: uid, total: connections.count, heldByUID: clientsByUID[uid, default: 0],
            exempt: isExemptFromPerUIDLimits(uid), settings: settings)
    }

    /// The decision alone: `total` connections open, `heldByUID` of them this uid's; `exempt`: root or kevd's
    /// own user.
    static func admissionRefusal(
        uid: UInt32, total: Int, heldByUID held: Int, exempt: Bool, settings: ServerSettings
    ) -> AdmissionRefusal? {
        if total >= settings.maxClients {
            return AdmissionRefusal(
                limit: .maxClients, configured: settings.maxClients, value: total,
                message: "too many clients (limit \(settings.maxClients), [server] max_clients); try again later")
        }
        guard !exempt else { return nil }
        let open = settings.maxClients - settings.reservedClients
        if total >= open {
            return AdmissionRefusal(
                limit: .maxClients, configured: open, value: total,
                message: "too many clients: the \(settings.reservedClients) free connections left are reserved for "
                    + "root and kevd's own user (limit \(settings.maxClients), [server] max_clients and "
                    + "reserved_clients); try again later")
        }
        if settings.maxClientsPerUID > 0 && held >= settings.maxClientsPerUID {
            return AdmissionRefusal(
                limit: .maxClientsPerUID, configured: settings.maxClientsPerUID, value: held,
                message: "too many connections: uid \(uid) holds \(held) (limit \(settings.maxClientsPerUID), "
                    + "[server] max_clients_per_uid); close one first")
        }
        return nil
    }

    /// Counts an admitted connection against its uid.
    func admitted(_ connection: Connection) {
        clientsByUID[connection.credentials.uid, default: 0] += 1
        firstRequestDeadlines.accepted(connection.id, server: self)
    }

    /// A connection went away: its uid holds one fewer.
    func released(_ connection: Connection) {
        let uid = connection.credentials.uid
        guard let held = clientsByUID[uid] else { return }
        if held <= 1 { clientsByUID.removeValue(forKey: uid) } else { clientsByUID[uid] = held - 1 }
    }
}
