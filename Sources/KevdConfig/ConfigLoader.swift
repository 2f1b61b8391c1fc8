import KevdKernel
import KevdSpec

/// Reads and validates a kevd configuration file.
///
/// Every problem is a `ConfigError` naming file:line:col. Unknown keys are errors (a typo must not silently
/// disable a watch). Relative paths are resolved against the config file's folder, so a config can travel with
/// the folder it describes.
public enum ConfigLoader {
    public static func load(file: String) throws -> Config {
        let absolute = PathText.absolute(file)
        let source: String
        do {
            source = String(decoding: try FileContents.read(absolute), as: UTF8.self)
        } catch {
            throw ConfigError(file: file, line: 0, column: 0, message: "cannot read: \(error)")
        }
        return try parse(source: source, file: absolute)
    }

    public static func parse(source: String, file: String) throws -> Config {
        let root = try TableReader.parse(source: source, file: file)
        return try TableReader(file: file, source: source).config(root)
    }
}

/// The configuration file's own tables; `[[watch]]` and `[[timer]]` are shared with rule files.
extension TableReader {
    func config(_ root: TOMLTable) throws -> Config {
        try rejectUnknownKeys(
            root, allowed: ["daemon", "watch", "timer", "udev", "journal", "server", "access", "rules", "forward", "journald",
                     "input", "acpi"],
            name: "")
        let daemon = try daemonSettings(root["daemon"].map { try table($0, "daemon") })
        var watches: [WatchSpec] = []
        for (i, item) in try arrayOfTables(root["watch"], "watch").enumerated() {
            watches.append(try watch(item, index: i))
        }
        var timers: [TimerSpec] = []
        for (i, item) in try arrayOfTables(root["timer"], "timer").enumerated() {
            let spec = try timer(item, index: i)
            if timers.contains(where: { $0.name == spec.name }) {
                throw problem("duplicate timer name '\(spec.name)'", table: "timer", index: i, key: "name")
            }
            timers.append(spec)
        }
        let udev = try root["udev"].map { try udevSpec(try table($0, "udev")) } ?? .disabled
        let journal = try root["journal"].map { try journalSettings(try table($0, "journal")) } ?? JournalSettings()
        var config = Config(file: file, daemon: daemon, watches: watches, timers: timers, udev: udev, journal: journal)
        if let server = root["server"] { config.server = try serverSettings(try table(server, "server")) }
        for (i, item) in try arrayOfTables(root["access"], "access").enumerated() {
            config.server.access.append(try accessRule(item, index: i))
        }
        if let rules = root["rules"] { config.rules = try rulesSettings(try table(rules, "rules")) }
        try inputTables(root, into: &config)
        if let journald = root["journald"] { config.journald = try journaldSettings(try table(journald, "journald")) }
        for (i, item) in try arrayOfTables(root["forward"], "forward").enumerated() {
            let spec = try forward(item, index: i)
            if config.forwards.contains(where: { $0.name == spec.name }) {
                throw problem("duplicate forward name '\(spec.name)'; each keeps its own position",
                              table: "forward", index: i, key: "name")
            }
            config.forwards.append(spec)
        }
        return config
    }

    func daemonSettings(_ t: TOMLTable?) throws -> DaemonSettings {
        var settings = DaemonSettings(
            stateDir: DaemonSettings.defaultStateDir, socket: DaemonSettings.defaultSocket, logLevel: "info")
        guard let t else { return settings }
        try rejectUnknownKeys(t, allowed: ["state_dir", "socket", "log_level", "log_format", "stats_interval"], name: "daemon")
        if let s = try string(t, "state_dir", table: "daemon") {
            settings.stateDir = try path(s, key: "state_dir", table: "daemon")
        }
        if let s = try string(t, "socket", table: "daemon") { settings.socket = try path(s, key: "socket", table: "daemon") }
        if let s = try string(t, "log_level", table: "daemon") {
            guard DaemonSettings.logLevels.contains(s) else {
                throw problem("unknown log_level '\(s)'; expected one of: \(DaemonSettings.logLevels.joined(separator: ", "))",
                            table: "daemon", key: "log_level")
            }
            settings.logLevel = s
        }
        if let s = try string(t, "log_format", table: "daemon") {
            guard DaemonSettings.logFormats.contains(s) else {
                throw problem("unknown log_format '\(s)'; expected auto, journald or plain", table: "daemon", key: "log_format")
            }
            settings.logFormat = s
        }
        if let ns = try duration(t, "stats_interval", table: "daemon") {
            // Below 100 ms the stats events would crowd the journal; "0" turns them off.
            guard ns == 0 || (ns >= 100_000_000 && ns <= 86_400_000_000_000) else {
                throw problem("'stats_interval' must be \"0\" (off) or between 100ms and 1d", table: "daemon", key: "stats_interval")
            }
            settings.statsIntervalNanoseconds = ns
        }
        return settings
    }

    func journalSettings(_ t: TOMLTable) throws -> JournalSettings {
        try rejectUnknownKeys(
            t, allowed: [
                "sync", "batch_interval", "segment_size", "max_bytes", "max_age", "max_bytes_hard", "min_free",
                "retention_interval",
            ], name: "journal")
        var settings = JournalSettings()
        if let s = try string(t, "sync", table: "journal") {
            guard let sync = JournalSettings.Sync(rawValue: s) else {
                throw problem("unknown sync policy '\(s)'; expected batch, always or none", table: "journal", key: "sync")
            }
            settings.sync = sync
        }
        if let ns = try duration(t, "batch_interval", table: "journal") {
            guard ns > 0, ns <= 10_000_000_000 else {
                throw problem("'batch_interval' must be between 1ns and 10s", table: "journal", key: "batch_interval")
            }
            settings.batchIntervalNanoseconds = ns
        }
        if let v = t["segment_size"] {
            let bytes = try size(v, key: "segment_size", table: "journal")
            guard bytes >= 4096, bytes <= Int64(1) << 40 else {
                throw problem("'segment_size' must be at least 4 KiB", table: "journal", key: "segment_size")
            }
            settings.segmentBytes = bytes
        }
        if let v = t["max_bytes"] {
            settings.maxBytes = try size(v, key: "max_bytes", table: "journal")
        }
        if let ns = try duration(t, "max_age", table: "journal") { settings.maxAgeNanoseconds = ns }
        try journalRetentionSettings(t, into: &settings)
        return settings
    }

    func serverSettings(_ t: TOMLTable) throws -> ServerSettings {
        try rejectUnknownKeys(
            t,
            allowed: [
                "group", "mode", "send_buffer", "max_request", "max_clients", "idempotency_window",
                "max_subscriptions_per_uid", "emit_rate_per_uid", "emit_burst_per_uid", "max_clients_per_uid",
                "reserved_clients", "first_request_timeout",
            ],
            name: "server")
        var settings = ServerSettings()
        if let group = try string(t, "group", table: "server") {
            guard let gid = Accounts.gid(group) else {
                throw problem("unknown group '\(group)'", table: "server", key: "group")
            }
            settings.group = gid
        }
        if let mode = try string(t, "mode", table: "server") {
            guard let bits = UInt32(mode, radix: 8), bits <= 0o777, bits & 0o600 == 0o600 else {
                throw problem("'mode' must be octal permission bits including 0600, like \"0660\"", table: "server", key: "mode")
            }
            settings.mode = bits
        }
        if let v = t["send_buffer"] {
            let bytes = try size(v, key: "send_buffer", table: "server")
            guard bytes >= 4096, bytes <= 1 << 30 else {
                throw problem("'send_buffer' must be between 4 KiB and 1 GiB", table: "server", key: "send_buffer")
            }
            settings.sendBuffer = Int(bytes)
        }
        if let v = t["max_request"] {
            let bytes = try size(v, key: "max_request", table: "server")
            guard bytes >= 1024, bytes <= 64 << 20 else {
                throw problem("'max_request' must be between 1 KiB and 64 MiB", table: "server", key: "max_request")
            }
            settings.maxRequest = Int(bytes)
        }
        if let v = t["max_clients"] {
            guard let n = v.int, n > 0, n <= 1_000_000 else {
                throw problem("'max_clients' must be a positive number", table: "server", key: "max_clients")
            }
            settings.maxClients = n
        }
        if let ns = try duration(t, "idempotency_window", table: "server") { settings.idempotencyWindowNanoseconds = ns }
        if let n = try int(t, "max_subscriptions_per_uid", in: 0...1_000_000, table: "server") {
            settings.maxSubscriptionsPerUID = n
        }
        if let n = try int(t, "emit_rate_per_uid", in: 0...100_000_000, table: "server") {
            settings.emitRatePerUID = n
            settings.emitBurstPerUID = max(1, 2 * n)  // Two seconds' worth, unless given.
        }
        if let n = try int(t, "emit_burst_per_uid", in: 1...100_000_000, table: "server") { settings.emitBurstPerUID = n }
        try admissionSettings(t, into: &settings)
        return settings
    }

    func rulesSettings(_ t: TOMLTable) throws -> RulesSettings {
        try rejectUnknownKeys(t, allowed: ["directories", "cascade_limit", "output_tail"], name: "rules")
        var settings = RulesSettings()
        if let directories = try strings(t, "directories", table: "rules") {
            settings.directories = try directories.map { try path($0, key: "directories", table: "rules") }
        }
        if let n = try int(t, "cascade_limit", in: 1...64, table: "rules") { settings.cascadeLimit = n }
        if let v = t["output_tail"] {
            let bytes = try size(v, key: "output_tail", table: "rules")
            guard bytes >= 256, bytes <= 1 << 20 else {
                throw problem("'output_tail' must be between 256 bytes and 1 MiB", table: "rules", key: "output_tail")
            }
            settings.outputTail = Int(bytes)
        }
        return settings
    }

    func accessRule(_ t: TOMLTable, index: Int) throws -> AccessRule {
        try rejectUnknownKeys(t, allowed: ["users", "groups", "emit", "sources"], name: "access", index: index)
        var rule = AccessRule()
        for user in try strings(t, "users", table: "access", index: index) ?? [] {
            guard let uid = Accounts.uid(user) else {
                throw problem("unknown user '\(user)'", table: "access", index: index, key: "users")
            }
            rule.uids.append(uid)
        }
        for group in try strings(t, "groups", table: "access", index: index) ?? [] {
            guard let gid = Accounts.gid(group) else {
                throw problem("unknown group '\(group)'", table: "access", index: index, key: "groups")
            }
            rule.gids.append(gid)
        }
        if rule.uids.isEmpty && rule.gids.isEmpty {
            throw problem("[[access]] needs 'users' or 'groups'", table: "access", index: index)
        }
        rule.emit = try bool(t, "emit", table: "access", index: index) ?? false
        if let sources = try strings(t, "sources", table: "access", index: index) {
            rule.sources = sources.contains("*") ? nil : sources
        } else {
            rule.sources = []
        }
        return rule
    }

    func udevSpec(_ t: TOMLTable) throws -> UdevSpec {
        try rejectUnknownKeys(t, allowed: ["enabled", "source", "subsystems", "receive_buffer", "catchup"], name: "udev")
        var spec = UdevSpec(enabled: true, source: .auto, matches: [], receiveBuffer: UdevSpec.defaultReceiveBuffer)
        if let enabled = try bool(t, "enabled", table: "udev") { spec.enabled = enabled }
        if let catchup = try bool(t, "catchup", table: "udev") { spec.catchup = catchup }
        if let s = try string(t, "source", table: "udev") {
            guard let source = UdevSpec.Source(rawValue: s) else {
                throw problem("unknown udev source '\(s)'; expected auto, udev or kernel", table: "udev", key: "source")
            }
            spec.source = source
        }
        for item in try strings(t, "subsystems", table: "udev") ?? [] {
            let parts = item.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let subsystem = parts.first, !subsystem.isEmpty, parts.count == 1 || !parts[1].isEmpty else {
                throw problem("bad subsystem '\(item)'; expected SUBSYSTEM or SUBSYSTEM:DEVTYPE", table: "udev", key: "subsystems")
            }
            spec.matches.append(.init(subsystem: String(subsystem), devtype: parts.count == 2 ? String(parts[1]) : nil))
        }
        if let v = t["receive_buffer"] {
            let bytes = try size(v, key: "receive_buffer", table: "udev")
            guard bytes > 0, bytes <= Int64(Int32.max) else {
                throw problem("'receive_buffer' must be between 1 byte and 2 GiB", table: "udev", key: "receive_buffer")
            }
            spec.receiveBuffer = Int(bytes)
        }
        return spec
    }
}
