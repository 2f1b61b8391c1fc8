import KevdEvent
import KevdSpec

extension TableReader {
    func forward(_ t: TOMLTable, index: Int) throws -> ForwardSpec {
        try rejectUnknownKeys(
            t,
            allowed: [
                "name", "type", "url", "credentials", "nkey", "nkey_seed", "tls", "tls_ca", "tls_cert", "tls_key",
                "subject", "filter", "stream", "create_stream", "replicas", "duplicate_window", "max_in_flight",
                "ack_timeout",
            ], name: "forward", index: index)
        guard let type = try string(t, "type", table: "forward", index: index) else {
            throw problem("[[forward]] needs a 'type' (\"nats\")", table: "forward", index: index)
        }
        guard type == "nats" else {
            throw problem("unknown forward type '\(type)'; expected nats", table: "forward", index: index, key: "type")
        }
        let name = try string(t, "name", table: "forward", index: index) ?? "nats"
        guard PositionName.isValid(name) else {
            throw problem(
                "bad forward name '\(name)': letters, digits, '.', '_', '-', at most 64, not starting with a dot",
                table: "forward", index: index, key: "name")
        }
        let urls: [String]
        if let v = t["url"], let one = v.string {
            urls = [one]
        } else {
            urls = try strings(t, "url", table: "forward", index: index) ?? []
        }
        guard !urls.isEmpty else {
            throw problem("[[forward]] needs a 'url': a server URL or an array of them", table: "forward", index: index)
        }
        for url in urls where url.isEmpty || url.contains(" ") {
            throw problem("bad server URL '\(url)'", table: "forward", index: index, key: "url")
        }
        let subjectText = try string(t, "subject", table: "forward", index: index) ?? SubjectTemplate.defaultText
        let subject: SubjectTemplate
        do {
            subject = try SubjectTemplate(subjectText)
        } catch {
            throw problem("bad subject '\(subjectText)': \(error.message)", table: "forward", index: index, key: "subject")
        }
        var spec = ForwardSpec(name: name, urls: urls, subject: subject)
        func file(_ key: String) throws -> String? {
            try string(t, key, table: "forward", index: index).map { try path($0, key: key, table: "forward", index: index) }
        }
        spec.credentials = try file("credentials")
        spec.nkey = try string(t, "nkey", table: "forward", index: index)
        spec.nkeySeed = try file("nkey_seed")
        if spec.credentials != nil && (spec.nkey != nil || spec.nkeySeed != nil) {
            throw problem("'credentials' and 'nkey' are exclusive; choose one", table: "forward", index: index, key: "nkey")
        }
        if (spec.nkey == nil) != (spec.nkeySeed == nil) {
            throw problem("'nkey' (the public key) and 'nkey_seed' (its seed file) go together",
                          table: "forward", index: index, key: spec.nkey == nil ? "nkey_seed" : "nkey")
        }
        spec.tls = try bool(t, "tls", table: "forward", index: index) ?? false
        spec.tlsCA = try file("tls_ca")
        spec.tlsCert = try file("tls_cert")
        spec.tlsKey = try file("tls_key")
        if (spec.tlsCert == nil) != (spec.tlsKey == nil) {
            throw problem("'tls_cert' and 'tls_key' go together", table: "forward", index: index,
                          key: spec.tlsCert == nil ? "tls_key" : "tls_cert")
        }
        if let terms = try strings(t, "filter", table: "forward", index: index) {
            do {
                _ = try EventFilter(terms: terms)
            } catch {
                throw problem("\(error)", table: "forward", index: index, key: "filter")
            }
            spec.filter = terms
        }
        if let stream = try string(t, "stream", table: "forward", index: index) {
            // JetStream stream names: no whitespace, '.', '*', '>', path separators.
            guard !stream.isEmpty, stream.utf8.count <= 255,
                stream.utf8.allSatisfy({ SubjectTemplate.isLiteralByte($0) && !"*>/\\".utf8.contains($0) })
            else {
                throw problem("bad stream name '\(stream)': no spaces, '.', '*', '>', '/' or '\\'",
                              table: "forward", index: index, key: "stream")
            }
            spec.stream = stream
        }
        spec.createStream = try bool(t, "create_stream", table: "forward", index: index) ?? true
        if let n = try int(t, "replicas", in: 1...5, table: "forward", index: index) { spec.replicas = n }
        if let ns = try duration(t, "duplicate_window", table: "forward", index: index) {
            guard ns >= 1_000_000_000 else {
                throw problem("'duplicate_window' must be at least 1s", table: "forward", index: index, key: "duplicate_window")
            }
            spec.duplicateWindowNanoseconds = ns
        }
        if let n = try int(t, "max_in_flight", in: 1...65536, table: "forward", index: index) { spec.maxInFlight = n }
        if let ns = try duration(t, "ack_timeout", table: "forward", index: index) {
            guard ns >= 10_000_000, ns <= 600_000_000_000 else {
                throw problem("'ack_timeout' must be between 10ms and 10m", table: "forward", index: index, key: "ack_timeout")
            }
            spec.ackTimeoutNanoseconds = ns
        }
        return spec
    }
}
