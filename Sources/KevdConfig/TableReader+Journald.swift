import KevdEvent
import KevdSpec

extension TableReader {
    func journaldSettings(_ t: TOMLTable) throws -> JournaldSettings {
        try rejectUnknownKeys(t, allowed: ["mirror", "filter"], name: "journald")
        var settings = JournaldSettings()
        settings.mirror = try bool(t, "mirror", table: "journald") ?? false
        if let terms = try strings(t, "filter", table: "journald") {
            do {
                _ = try EventFilter(terms: terms)
            } catch {
                throw problem("\(error)", table: "journald", key: "filter")
            }
            settings.filter = terms
        }
        return settings
    }
}
