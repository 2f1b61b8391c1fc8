import KevdSchedule
import KevdSpec

/// Walks parsed TOML tables, checking names and types as it goes; every problem is a `ConfigError` located by
/// the `TOMLLocator`. Shared by the configuration file and the rule files, which declare `[[watch]]` and
/// `[[timer]]` tables the same way.
struct TableReader {
    let file: String
    let locator: TOMLLocator
    /// Relative paths resolve against this: the folder of the file being read.
    let baseDir: String

    init(file: String, source: String) {
        self.file = file
        locator = TOMLLocator(source: source)
        baseDir = PathText.directory(of: file)
    }

    /// Parses `source`, turning toml++'s syntax error into a located `ConfigError`.
    static func parse(source: String, file: String) throws -> TOMLTable {
        // toml++ skips a leading byte order mark, so the checks below must look past it too: `\u{FEFF}[#` once
        // reached toml++'s assertion (found by fuzzing) because the header check did not see the `[`.
        let text = source.utf8.starts(with: [0xEF, 0xBB, 0xBF]) ? String(decoding: source.utf8.dropFirst(3), as: UTF8.self) : source
        if let at = TOMLLocator.unparsableHeader(in: text) {
            throw ConfigError(
                file: file, line: at.line, column: at.column,
                message: "a table header needs a key after '[' (a letter, digit, '_', '-' or a quoted key)")
        }
        if let at = TOMLLocator.unparsableArrayElement(in: text) {
            throw ConfigError(file: file, line: at.line, column: at.column, message: "expected an array element or ']', found '}'")
        }
        do {
            return try TOMLTable(parsing: source)
        } catch {
            throw ConfigError(file: file, line: error.line, column: error.column, message: error.message)
        }
    }

    func problem(_ message: String, table: String, index: Int = 0, key: String? = nil) -> ConfigError {
        let p = locator.position(table: table, index: index, key: key)
        return ConfigError(file: file, line: p.line, column: p.column, message: message)
    }

    /// One problem per key of `table` that is not in `allowed`.
    func unknownKeys(_ table: TOMLTable, allowed: [String], name: String, index: Int = 0) -> [ConfigError] {
        table.keys.filter { !allowed.contains($0) }.map { key in
            let scope = name.isEmpty ? "at the top level" : "in [\(name)]"
            return problem("unknown key '\(key)' \(scope); expected one of: \(allowed.joined(separator: ", "))",
                           table: name, index: index, key: key)
        }
    }

    func rejectUnknownKeys(_ table: TOMLTable, allowed: [String], name: String, index: Int = 0) throws {
        if let first = unknownKeys(table, allowed: allowed, name: name, index: index).first { throw first }
    }

    func table(_ value: TOMLValue, _ name: String) throws -> TOMLTable {
        guard let t = value.table else { throw problem("'\(name)' must be a table: [\(name)]", table: "", key: name) }
        return t
    }

    func arrayOfTables(_ value: TOMLValue?, _ name: String) throws -> [TOMLTable] {
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

    /// An integer within `range`; the message names the range.
    func int(_ t: TOMLTable, _ key: String, in range: ClosedRange<Int>, table name: String, index: Int = 0) throws -> Int? {
        guard let v = t[key] else { return nil }
        guard let n = v.int, range.contains(n) else {
            throw problem("'\(key)' must be a whole number from \(range.lowerBound) to \(range.upperBound)",
                          table: name, index: index, key: key)
        }
        return n
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

    func size(_ value: TOMLValue, key: String, table name: String, index: Int = 0) throws -> Int64 {
        if let n = value.int { return Int64(n) }
        guard let text = value.string else {
            throw problem("'\(key)' must be a size like \"16M\" or a number of bytes", table: name, index: index, key: key)
        }
        do {
            return try ByteSizeText.parseBytes(text)
        } catch {
            throw problem("bad size '\(text)': \(error.message)", table: name, index: index, key: key)
        }
    }

    func duration(_ t: TOMLTable, _ key: String, table name: String, index: Int = 0) throws -> Int64? {
        guard let text = try string(t, key, table: name, index: index) else { return nil }
        do {
            return try DurationText.parseNanoseconds(text)
        } catch {
            throw problem("bad duration '\(text)': \(error.message)", table: name, index: index, key: key)
        }
    }

    func watch(_ t: TOMLTable, index: Int) throws -> WatchSpec {
        try rejectUnknownKeys(t, allowed: ["path", "recursive", "events", "exclude", "backend", "catchup"], name: "watch", index: index)
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
        var backend = WatchBackend.auto
        if let name = try string(t, "backend", table: "watch", index: index) {
            guard let known = WatchBackend(rawValue: name) else {
                let names = WatchBackend.allCases.map(\.rawValue).joined(separator: ", ")
                throw problem("unknown backend '\(name)'; expected one of: \(names)", table: "watch", index: index, key: "backend")
            }
            backend = known
        }
        return WatchSpec(
            path: try path(p, key: "path", table: "watch", index: index),
            recursive: try bool(t, "recursive", table: "watch", index: index) ?? false,
            events: events, exclude: exclude, backend: backend,
            catchup: try bool(t, "catchup", table: "watch", index: index) ?? true)
    }

    func timer(_ t: TOMLTable, index: Int) throws -> TimerSpec {
        try rejectUnknownKeys(t, allowed: ["name", "every", "cron", "persistent"], name: "timer", index: index)
        guard let name = try string(t, "name", table: "timer", index: index), !name.isEmpty else {
            throw problem("[[timer]] needs a non-empty 'name'", table: "timer", index: index)
        }
        let every = try string(t, "every", table: "timer", index: index)
        let cron = try string(t, "cron", table: "timer", index: index)
        let persistent = try bool(t, "persistent", table: "timer", index: index) ?? false
        // A monotonic `every` timer has no calendar times to have missed: only cron times can be caught up.
        if persistent && every != nil {
            throw problem(
                "timer '\(name)': 'persistent' applies to cron timers only (an 'every' timer has no times to miss)",
                table: "timer", index: index, key: "persistent")
        }
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
                return TimerSpec(
                    name: name, schedule: .cron(try CronSchedule(parsing: cron), expression: cron), persistent: persistent)
            } catch {
                throw problem("bad cron expression '\(cron)': \(error.description)", table: "timer", index: index, key: "cron")
            }
        case (nil, nil):
            throw problem("timer '\(name)' needs 'every' or 'cron'", table: "timer", index: index)
        case (_?, _?):
            throw problem("timer '\(name)' has both 'every' and 'cron'; choose one", table: "timer", index: index, key: "cron")
        }
    }
}
