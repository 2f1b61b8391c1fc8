import Glibc
import KevdSpec

/// Who may do what (`[[access]]`), decided from the peer's SO_PEERCRED credentials (`Connection.credentials`).
extension Server {
    struct Permissions: Equatable {
        var emit: Bool
        /// nil: every source.
        var sources: Set<String>?
        var any: Bool { emit || sources == nil || !(sources?.isEmpty ?? true) }

        /// Root and `ownUID` (kevd's own user) may do everything. Without `[[access]]` rules, members of the
        /// socket's group (primary or supplementary) may too, and nobody else anything; with rules, what every
        /// rule naming the uid or one of its groups allows, together.
        init(for creds: Connection.Credentials, access: [AccessRule], socketGroup: UInt32, ownUID: UInt32) {
            if creds.uid == 0 || creds.uid == ownUID {
                self.init(emit: true, sources: nil)
                return
            }
            let groups = [creds.gid] + creds.groups
            if access.isEmpty {
                let member = groups.contains(socketGroup)
                self.init(emit: member, sources: member ? nil : [])
                return
            }
            var result = Permissions(emit: false, sources: [])
            for rule in access where rule.uids.contains(creds.uid) || rule.gids.contains(where: groups.contains) {
                result.emit = result.emit || rule.emit
                if let sources = rule.sources {
                    result.sources = result.sources.map { $0.union(sources) }
                } else {
                    result.sources = nil
                }
            }
            self = result
        }

        init(emit: Bool, sources: Set<String>?) {
            self.emit = emit
            self.sources = sources
        }

        /// The filter term that restricts a subscription to `allowed` sources: one more term, so both delivery
        /// paths (live and journal) apply it the same way. Source names are matched whole and literally.
        static func sourceTerm(_ allowed: Set<String>) -> String {
            "source~^(" + allowed.sorted().map { regexEscaped($0) }.joined(separator: "|") + ")$"
        }

        private static func regexEscaped(_ text: String) -> String {
            var out = ""
            for ch in text {
                if "\\^$.|?*+()[]{}".contains(ch) { out.append("\\") }
                out.append(ch)
            }
            return out
        }
    }

    func permissions(_ creds: Connection.Credentials) -> Permissions {
        Permissions(for: creds, access: settings.access, socketGroup: socketGroup, ownUID: geteuid())
    }
}
