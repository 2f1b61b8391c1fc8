import Glibc
import KevdKernel
import KevdSchedule
import TOMLKit

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
        let root: TOMLTable
        do {
            root = try TOMLTable(string: source)
        } catch let error as TOMLParseError {
            throw ConfigError(
                file: file, line: error.source.begin.line, column: error.source.begin.column,
                message: error.description)
        }
        var reader = TableReader(file: file, locator: TOMLLocator(source: source), baseDir: PathText.directory(of: file))
        return try reader.config(root)
    }
}

/// Walks the parsed tables, checking names and types as it goes.
private struct TableReader {
    let file: String
    let locator: TOMLLocator
    let baseDir: String

    func problem(_ message: String, table: String, index: Int = 0, key: String? = nil) -> ConfigError {
        let p = locator.position(table: table, index: index, key: key)
        return ConfigError(file: file, line: p.line, column: p.column, message: message)
    }

    func rejectUnknownKeys(_ table: TOMLTable, allowed: [String], name: String, index: Int = 0) throws {
        for key in table.keys where !allowed.contains(key) {
            let scope = name.isEmpty ? "at the top level" : "in [\(name)]"
            throw problem("unknown key '\(key)' \(scope); expected one of: \(allowed.joined(separator: ", "))",
                        table: name, index: index, key: key)
        }
    }

    mutating func config(_ root: TOMLTable) throws -> Config {
        try rejectUnknownKeys(root, allowed: ["daemon", "watch", "timer", "udev", "journal", "server", "access"], name: "")
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
        return config
    }

    func table(_ value: TOMLValueConvertible, _ name: String) throws -> TOMLTable {
        guard let t = value.table else { throw problem("'\(name)' must be a table: [\(name)]", table: "", key: name) }
        return t
    }

    func arrayOfTables(_ value: TOMLValueConvertible?, _ name: String) throws -> [TOMLTable] {
        guard let value else { return [] }
        guard let array = value.array else {
            throw problem("'\(name)' must be an array of tables: [[\(name)]]", table: name)
        }
        return try array.map { element in
            guard let t = element.table else {
                throw problem("'\(name)' must be an array of tables: [[\(name)]]", table: name)
            }
            return t
        }
    }

    func string(_ t: TOMLTable, _ key: String, table name: String, index: Int = 0) throws -> String? {
        guard let v = t[key] else { return nil }
        guard let s = v.string else { throw problem("'\(key)' must be a string", table: name, index: index, key: key) }
        return s
    }

    func bool(_ t: TOMLTable, _ key: String, table name: String, index: Int = 0) throws -> Bool? {
        guard let v = t[key] else { return nil }
        guard let b = v.bool else { throw problem("'\(key)' must be true or false", table: name, index: index, key: key) }
        return b
    }

    func strings(_ t: TOMLTable, _ key: String, table name: String, index: Int = 0) throws -> [String]? {
        guard let v = t[key] else { return nil }
        guard let array = v.array else {
            throw problem("'\(key)' must be an array of strings", table: name, index: index, key: key)
        }
        return try array.map { element in
            guard let s = element.string else {
                throw problem("'\(key)' must be an array of strings", table: name, index: index, key: key)
            }
            return s
        }
    }

    func path(_ text: String, key: String, table name: String, index: Int = 0) throws -> String {
        guard !text.isEmpty else { throw problem("'\(key)' must not be empty", table: name, index: index, key: key) }
        guard !text.utf8.contains(0) else {
            throw problem("'\(key)' must not contain a NUL byte", table: name, index: index, key: key)
        }
        return PathText.resolve(text, against: baseDir)
    }

    func daemonSettings(_ t: TOMLTable?) throws -> DaemonSettings {
        var settings = DaemonSettings(
            stateDir: DaemonSettings.defaultStateDir, socket: DaemonSettings.defaultSocket,
            rulesDir: DaemonSettings.defaultRulesDir, logLevel: "info")
        guard let t else { return settings }
        try rejectUnknownKeys(t, allowed: ["state_dir", "socket", "rules_dir", "log_level"], name: "daemon")
        if let s = try string(t, "state_dir", table: "daemon") {
            settings.stateDir = try path(s, key: "state_dir", table: "daemon")
        }
        if let s = try string(t, "socket", table: "daemon") { settings.socket = try path(s, key: "socket", table: "daemon") }
        if let s = try string(t, "rules_dir", table: "daemon") {
            settings.rulesDir = try path(s, key: "rules_dir", table: "daemon")
        }
        if let s = try string(t, "log_level", table: "daemon") {
            guard DaemonSettings.logLevels.contains(s) else {
                throw problem("unknown log_level '\(s)'; expected one of: \(DaemonSettings.logLevels.joined(separator: ", "))",
                            table: "daemon", key: "log_level")
            }
            settings.logLevel = s
        }
        return settings
    }

    func watch(_ t: TOMLTable, index: Int) throws -> WatchSpec {
        try rejectUnknownKeys(t, allowed: ["path", "recursive", "events", "exclude"], name: "watch", index: index)
        guard let p = try string(t, "path", table: "watch", index: index) else {
            throw problem("[[watch]] needs a 'path'", table: "watch", index: index)
        }
        var events = Set(FileEventType.allCases)
        if let names = try strings(t, "events", table: "watch", index: index) {
            events = []
            for name in names {
                guard let type = FileEventType(rawValue: name) else {
                    let known = FileEventType.allCases.map(\.rawValue).joined(separator: ", ")
                    throw problem("unknown event type '\(name)'; expected one of: \(known)",
                                table: "watch", index: index, key: "events")
                }
                events.insert(type)
            }
        }
        let exclude = try strings(t, "exclude", table: "watch", index: index) ?? []
        for glob in exclude where glob.isEmpty {
            throw problem("'exclude' globs must not be empty", table: "watch", index: index, key: "exclude")
        }
        return WatchSpec(
            path: try path(p, key: "path", table: "watch", index: index),
            recursive: try bool(t, "recursive", table: "watch", index: index) ?? false,
            events: events, exclude: exclude)
    }

    func timer(_ t: TOMLTable, index: Int) throws -> TimerSpec {
        try rejectUnknownKeys(t, allowed: ["name", "every", "cron"], name: "timer", index: index)
        guard let name = try string(t, "name", table: "timer", index: index), !name.isEmpty else {
            throw problem("[[timer]] needs a non-empty 'name'", table: "timer", index: index)
        }
        let every = try string(t, "every", table: "timer", index: index)
        let cron = try string(t, "cron", table: "timer", index: index)
        switch (every, cron) {
        case (let every?, nil):
            let ns: Int64
            do {
                ns = try DurationText.parseNanoseconds(every)
            } catch {
                throw problem("bad duration '\(every)': \(error.message)", table: "timer", index: index, key: "every")
            }
            guard ns > 0 else { throw problem("'every' must be longer than zero", table: "timer", index: index, key: "every") }
            return TimerSpec(name: name, schedule: .every(nanoseconds: ns))
        case (nil, let cron?):
            do {
                return TimerSpec(name: name, schedule: .cron(try CronSchedule(parsing: cron), expression: cron))
            } catch {
                throw problem("bad cron expression '\(cron)': \(error.description)", table: "timer", index: index, key: "cron")
            }
        case (nil, nil):
            throw problem("timer '\(name)' needs 'every' or 'cron'", table: "timer", index: index)
        case (_?, _?):
            throw problem("timer '\(name)' has both 'every' and 'cron'; choose one", table: "timer", index: index, key: "cron")
        }
    }

    func size(_ value: TOMLValueConvertible, key: String, table name: String) throws -> Int64 {
        if let n = value.int { return Int64(n) }
        guard let text = value.string else {
            throw problem("'\(key)' must be a size like \"16M\" or a number of bytes", table: name, key: key)
        }
        do {
            return try ByteSizeText.parseBytes(text)
        } catch {
            throw problem("bad size '\(text)': \(error.message)", table: name, key: key)
        }
    }

    func duration(_ t: TOMLTable, _ key: String, table name: String) throws -> Int64? {
        guard let text = try string(t, key, table: name) else { return nil }
        do {
            return try DurationText.parseNanoseconds(text)
        } catch {
            throw problem("bad duration '\(text)': \(error.message)", table: name, key: key)
        }
    }

    func journalSettings(_ t: TOMLTable) throws -> JournalSettings {
        try rejectUnknownKeys(
            t, allowed: ["sync", "batch_interval", "segment_size", "max_bytes", "max_age"], name: "journal")
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
        return settings
    }

    func serverSettings(_ t: TOMLTable) throws -> ServerSettings {
        try rejectUnknownKeys(
            t, allowed: ["group", "mode", "send_buffer", "max_request", "max_clients", "idempotency_window"],
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
        try rejectUnknownKeys(t, allowed: ["enabled", "source", "subsystems", "receive_buffer"], name: "udev")
        var spec = UdevSpec(enabled: true, source: .auto, matches: [], receiveBuffer: UdevSpec.defaultReceiveBuffer)
        if let enabled = try bool(t, "enabled", table: "udev") { spec.enabled = enabled }
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
