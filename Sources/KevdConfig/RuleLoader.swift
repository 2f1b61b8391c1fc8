import Glibc
import KevdEvent
import KevdSpec

/// Reads the rule files: every `*.toml` in the rule directories, each declaring `[[rule]]`s and, like the
/// configuration file, `[[watch]]`es and `[[timer]]`s.
///
/// Directories come highest priority first, as in systemd and udev: a file name in an earlier directory
/// overrides the same name in later ones, and a symlink to /dev/null masks it. The surviving files are read in
/// byte order of their names, whichever directory they come from: the order of rules (`10-usb.toml` before
/// `50-backup.toml`) follows from the names alone.
///
/// A rule file decides what kevd runs, usually as root, so it is held to what cron and sudo ask of theirs: a
/// regular file, not writable by group or others, owned by root when kevd runs as root.
///
/// Loading never stops at the first problem: a reload should list everything wrong at once. Each problem is a
/// `ConfigError` (file:line:col); a bad table is skipped and the next one checked. The `RuleSet` returned holds
/// the good parts, but callers treat any error as "this set is invalid" and keep the one they run.
public enum RuleLoader {
    /// The PATH bare program names are looked up in, here and by the engine: fixed, so what a rule runs does
    /// not depend on the environment kevd was started from.
    public static let fixedPATH = RuleSpec.fixedPATH

    public struct Options: Sendable {
        /// Refuse rule files not owned by root: their owner decides what kevd runs, as root.
        public var requireRootOwner: Bool
        /// Refuse rule files writable by group or others.
        public var checkPermissions: Bool
        /// Whether rules may name another `user` or `group`: only root can switch to them.
        public var runningAsRoot: Bool

        public init(
            requireRootOwner: Bool = geteuid() == 0, checkPermissions: Bool = true, runningAsRoot: Bool = geteuid() == 0
        ) {
            self.requireRootOwner = requireRootOwner
            self.checkPermissions = checkPermissions
            self.runningAsRoot = runningAsRoot
        }
    }

    /// Loads the rule files of `directories` (highest priority first; relative ones against the current
    /// directory). A missing directory holds no rules; one that cannot be read is an error, since its rules
    /// would silently be missing. `baseTimers` are the configuration file's timer names, which rule files
    /// may not declare again.
    public static func load(
        directories: [String], baseTimers: [String] = [], options: Options = Options()
    ) -> (RuleSet, [ConfigError]) {
        var errors: [ConfigError] = []
        var winners: [String: String] = [:]
        for directory in directories.map(PathText.absolute) {
            do {
                for name in try ruleFileNames(in: directory) where winners[name] == nil {
                    winners[name] = PathText.resolve(name, against: directory)
                }
            } catch {
                errors.append(error)
            }
        }
        var files: [RuleSet.File] = []
        var masked: [RuleSet.File] = []
        for (name, path) in winners.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            if isMask(path) {
                masked.append(RuleSet.File(name: name, path: path))
            } else {
                files.append(RuleSet.File(name: name, path: path))
            }
        }
        var set = RuleSet()
        set.masked = masked
        read(files, into: &set, baseTimers: baseTimers, options: options, errors: &errors)
        return (set, errors)
    }

    /// Loads exactly `files`, in the order given (`kevctl rules check FILE…`): no overriding, no masking.
    public static func load(
        files: [String], baseTimers: [String] = [], options: Options = Options()
    ) -> (RuleSet, [ConfigError]) {
        let list = files.map { file in
            let path = PathText.absolute(file)
            return RuleSet.File(name: String(path.split(separator: "/").last ?? ""), path: path)
        }
        var set = RuleSet()
        var errors: [ConfigError] = []
        read(list, into: &set, baseTimers: baseTimers, options: options, errors: &errors)
        return (set, errors)
    }

    /// The `*.toml` names in `directory` that are regular files or symlinks (dotfiles, other names and
    /// subdirectories are not rule files); none when the directory does not exist.
    static func ruleFileNames(in directory: String) throws(ConfigError) -> [String] {
        guard let dir = opendir(directory) else {
            if errno == ENOENT { return [] }
            throw ConfigError(
                file: directory, line: 0, column: 0, message: "cannot read the rule directory: \(errnoText())")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) {
                    String(cString: $0)
                }
            }
            guard !name.hasPrefix("."), name.hasSuffix(".toml") else { continue }
            var st = stat()
            guard lstat(PathText.resolve(name, against: directory), &st) == 0 else { continue }  // gone meanwhile
            let type = st.st_mode & S_IFMT
            if type == S_IFREG || type == S_IFLNK { names.append(name) }
        }
        return names
    }

    /// Whether `path` is a symlink to /dev/null, as written or once resolved.
    static func isMask(_ path: String) -> Bool {
        var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &target, target.count - 1)
        guard count >= 0 else { return false }
        if String(decoding: target[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "/dev/null" { return true }
        guard let resolved = realpath(path, nil) else { return false }
        defer { free(resolved) }
        return String(cString: resolved) == "/dev/null"
    }

    /// Reads each file and adds its good tables to `set`, checking names across all of them.
    private static func read(
        _ files: [RuleSet.File], into set: inout RuleSet, baseTimers: [String], options: Options,
        errors: inout [ConfigError]
    ) {
        // Where each name was first declared, for the message about the second.
        var ruleSites: [String: String] = [:]
        var timerSites = Dictionary(baseTimers.map { ($0, "the configuration file") }, uniquingKeysWith: { a, _ in a })

        for file in files {
            /// Runs one step, keeping its problem instead of stopping: one bad table must not hide the next one's.
            func collect<T>(_ body: () throws -> T) -> T? {
                do {
                    return try body()
                } catch {
                    // Only ConfigErrors are thrown here; anything else would still reach the user, at the file.
                    errors.append(
                        error as? ConfigError ?? ConfigError(file: file.path, line: 0, column: 0, message: "\(error)"))
                    return nil
                }
            }

            guard let source = collect({ try contents(of: file.path, options: options) }),
                let root = collect({ try TableReader.parse(source: source, file: file.path) })
            else { continue }
            set.files.append(file)
            let reader = TableReader(file: file.path, source: source)
            errors += reader.unknownKeys(root, allowed: ["rule", "watch", "timer"], name: "")

            let ruleTables = collect({ try reader.arrayOfTables(root["rule"], "rule") }) ?? []
            for (i, table) in ruleTables.enumerated() {
                guard let rule = collect({ try reader.rule(table, index: i, options: options) }) else { continue }
                if let first = ruleSites[rule.name] {
                    errors.append(reader.problem(
                        "duplicate rule name '\(rule.name)'; it is also defined at \(first)",
                        table: "rule", index: i, key: "name"))
                    continue
                }
                ruleSites[rule.name] = "\(rule.file):\(rule.line)"
                set.rules.append(rule)
            }
            let watchTables = collect({ try reader.arrayOfTables(root["watch"], "watch") }) ?? []
            for (i, table) in watchTables.enumerated() {
                if let watch = collect({ try reader.watch(table, index: i) }) { set.watches.append(watch) }
            }
            let timerTables = collect({ try reader.arrayOfTables(root["timer"], "timer") }) ?? []
            for (i, table) in timerTables.enumerated() {
                guard let timer = collect({ try reader.timer(table, index: i) }) else { continue }
                if let first = timerSites[timer.name] {
                    errors.append(reader.problem(
                        "duplicate timer name '\(timer.name)'; it is also declared in \(first)",
                        table: "timer", index: i, key: "name"))
                    continue
                }
                timerSites[timer.name] = "\(file.path):\(reader.locator.position(table: "timer", index: i).line)"
                set.timers.append(timer)
            }
        }
    }

    /// The text of a rule file, once the opened file (symlinks followed) passes the checks cron and sudo make.
    /// Checking the descriptor rather than the path leaves no gap for the file to be swapped in between.
    static func contents(of path: String, options: Options) throws(ConfigError) -> String {
        func refuse(_ message: String) -> ConfigError { ConfigError(file: path, line: 0, column: 0, message: message) }
        // O_NONBLOCK: a FIFO planted under the name must be refused below, not block the loader.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw refuse("cannot open: \(errnoText())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw refuse("cannot stat: \(errnoText())") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw refuse("rule file is not a regular file; refusing it") }
        let mode = st.st_mode & 0o7777
        if options.checkPermissions && mode & 0o022 != 0 {
            let octal = String(mode, radix: 8)
            let padded = String(repeating: "0", count: max(0, 4 - octal.count)) + octal
            throw refuse("rule file is writable by group or others (mode \(padded)); refusing it, like cron and sudo do")
        }
        if options.requireRootOwner && st.st_uid != 0 {
            throw refuse(
                "rule file is owned by uid \(st.st_uid), not root; refusing it, like cron and sudo do "
                    + "(its owner could make kevd run anything as root)")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Glibc.read(fd, &chunk, chunk.count)
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw refuse("cannot read: \(errnoText())")
            }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    /// Why a `run` element or program is unusable; the caller adds which element.
    struct TextError: Error {
        let message: String
    }

    /// Parses one `run` element into literal text and placeholders. `{{` and `}}` stand for literal braces;
    /// any other brace must belong to a known placeholder, so a typo (`{kye}`) is an error, not a literal.
    static func runArgument(_ text: String) throws(TextError) -> RunArgument {
        let scalars = Array(text.unicodeScalars)
        var parts: [RunArgument.Part] = []
        var literal = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            let doubled = i + 1 < scalars.count && scalars[i + 1] == c
            if (c == "{" || c == "}") && doubled {
                literal.append(c)
                i += 2
            } else if c == "}" {
                throw TextError(message: "lone '}' (write }} for a literal brace)")
            } else if c == "{" {
                guard let close = scalars[(i + 1)...].firstIndex(of: "}") else {
                    throw TextError(message: "unclosed '{' (write {{ for a literal brace)")
                }
                let name = String(String.UnicodeScalarView(scalars[(i + 1)..<close]))
                guard let field = placeholderField(name) else {
                    if name == "data." { throw TextError(message: "'{data.}' needs a field name: {data.NAME}") }
                    throw TextError(
                        message: "unknown placeholder '{\(name)}' (expected {seq}, {id}, {time}, {source}, {type}, "
                            + "{key}, {rule} or {data.NAME}; {{ and }} for literal braces)")
                }
                if !literal.isEmpty { parts.append(.literal(String(literal))) }
                literal = String.UnicodeScalarView()
                parts.append(.field(field))
                i = close + 1
            } else {
                literal.append(c)
                i += 1
            }
        }
        if !literal.isEmpty { parts.append(.literal(String(literal))) }
        return RunArgument(parts: parts)
    }

    /// The field a placeholder's name (between the braces) stands for; nil when it names none.
    static func placeholderField(_ name: String) -> PlaceholderField? {
        switch name {
        case "seq": return .seq
        case "id": return .id
        case "time": return .time
        case "source": return .source
        case "type": return .type
        case "key": return .key
        case "rule": return .rule
        case _ where name.hasPrefix("data.") && name.count > 5: return .data(String(name.dropFirst(5)))
        default: return nil
        }
    }

    /// Whether a shell script holds something that reads as a placeholder. The script is passed verbatim
    /// (shell text is full of braces: `${VAR}`, `{ …; }`), so only the known names are looked for.
    static func containsPlaceholder(_ script: String) -> Bool {
        var rest = Substring(script)
        while let open = rest.firstIndex(of: "{") {
            rest = rest[rest.index(after: open)...]
            if let close = rest.firstIndex(of: "}"), placeholderField(String(rest[..<close])) != nil { return true }
        }
        return false
    }

    /// The file `program` (run[0]) runs: an absolute path as it is, a bare name looked up in `fixedPATH`.
    /// Checked now so a typo fails the load, not every run.
    static func resolveProgram(_ program: String) throws(TextError) -> String {
        guard !program.isEmpty else { throw TextError(message: "the program (run[0]) is empty") }
        if program.hasPrefix("/") {
            var st = stat()
            guard stat(program, &st) == 0 else { throw TextError(message: "program '\(program)' does not exist") }
            guard st.st_mode & S_IFMT == S_IFREG else {
                throw TextError(message: "program '\(program)' is not a regular file")
            }
            guard access(program, X_OK) == 0 else { throw TextError(message: "program '\(program)' is not executable") }
            return program
        }
        guard !program.contains("/") else {
            throw TextError(
                message: "program '\(program)' must be an absolute path, or a bare name to look up in \(fixedPATH)")
        }
        for directory in fixedPATH.split(separator: ":") {
            let candidate = directory + "/" + program
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw TextError(message: "program '\(program)' not found in \(fixedPATH)")
    }
}

/// The `[[rule]]` table.
extension TableReader {
    static let ruleKeys = [
        "name", "match", "run", "shell", "user", "group", "timeout", "kill_grace", "concurrency", "debounce",
        "max_wait", "retries", "backoff", "catch_up", "no_new_privs",
    ]

    func rule(_ t: TOMLTable, index i: Int, options: RuleLoader.Options) throws -> RuleSpec {
        func fail(_ message: String, _ key: String? = nil) -> ConfigError {
            problem(message, table: "rule", index: i, key: key)
        }
        try rejectUnknownKeys(t, allowed: Self.ruleKeys, name: "rule", index: i)
        guard let name = try string(t, "name", table: "rule", index: i) else { throw fail("[[rule]] needs a 'name'") }
        guard PositionName.isValid(name) else {
            throw fail("rule name '\(name)' must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'", "name")
        }
        // Required even though empty is allowed: a rule that runs for every event must say so.
        guard let match = try strings(t, "match", table: "rule", index: i) else {
            throw fail("rule '\(name)' needs 'match' (match = [] runs it for every event)")
        }
        for term in match {
            do {
                _ = try FilterTerm(term)
            } catch {
                throw fail(error.description, "match")
            }
        }
        let shell = try bool(t, "shell", table: "rule", index: i) ?? false
        let (program, run) = try command(t, name: name, shell: shell, index: i)
        var spec = RuleSpec(
            name: name, file: file, line: locator.position(table: "rule", index: i).line, match: match, run: run,
            program: program)
        spec.shell = shell
        try identity(t, into: &spec, index: i, options: options)

        if let ns = try duration(t, "timeout", table: "rule", index: i) {
            guard ns > 0 else { throw fail("'timeout' must be longer than zero", "timeout") }
            spec.timeoutNanoseconds = ns
        }
        if let ns = try duration(t, "kill_grace", table: "rule", index: i) { spec.killGraceNanoseconds = ns }
        if let n = try int(t, "concurrency", in: 1...1024, table: "rule", index: i) { spec.concurrency = n }
        if let ns = try duration(t, "debounce", table: "rule", index: i) { spec.debounceNanoseconds = ns }
        if let ns = try duration(t, "max_wait", table: "rule", index: i) {
            guard spec.debounceNanoseconds > 0 else {
                throw fail("'max_wait' caps a debounce: it needs a 'debounce' longer than zero", "max_wait")
            }
            guard ns >= spec.debounceNanoseconds else {
                throw fail("'max_wait' must not be shorter than 'debounce'", "max_wait")
            }
            spec.maxWaitNanoseconds = ns
        }
        if let n = try int(t, "retries", in: 0...100, table: "rule", index: i) { spec.retries = n }
        if let ns = try duration(t, "backoff", table: "rule", index: i) {
            // Longer would be cut to the cap anyway, which the file should not pretend otherwise.
            guard ns > 0, ns <= RuleSpec.maxBackoff else {
                throw fail("'backoff' must be longer than zero and at most 1h", "backoff")
            }
            spec.backoffNanoseconds = ns
        }
        if let b = try bool(t, "catch_up", table: "rule", index: i) { spec.catchUp = b }
        if let b = try bool(t, "no_new_privs", table: "rule", index: i) { spec.noNewPrivileges = b }
        return spec
    }

    /// `run` (with `shell`) as the program to exec and its whole argv.
    private func command(
        _ t: TOMLTable, name: String, shell: Bool, index i: Int
    ) throws -> (program: String, run: [RunArgument]) {
        func fail(_ message: String) -> ConfigError { problem(message, table: "rule", index: i, key: "run") }
        guard let value = t["run"] else { throw problem("rule '\(name)' needs 'run'", table: "rule", index: i) }
        let elements: [String]
        if let script = value.string {
            guard shell else {
                throw fail(
                    "'run' must be an array: the program, then one string per argument "
                        + "(a single string is a script, for shell = true)")
            }
            elements = [script]
        } else {
            elements = try strings(t, "run", table: "rule", index: i) ?? []
        }
        guard !elements.isEmpty else { throw fail("'run' must not be empty") }
        if let k = elements.firstIndex(where: { $0.utf8.contains(0) }) {
            throw fail("run[\(k)] must not contain a NUL byte")
        }

        // Element k of `run`, placeholders parsed; the message names it.
        func argument(_ k: Int) throws -> RunArgument {
            do {
                return try RuleLoader.runArgument(elements[k])
            } catch {
                throw fail("run[\(k)] '\(elements[k])': \(error.message)")
            }
        }

        if shell {
            let script = elements[0]
            guard !script.isEmpty else { throw fail("the script (run[0]) is empty") }
            guard !RuleLoader.containsPlaceholder(script) else {
                throw fail(
                    "placeholders in a shell script would be interpreted by the shell: use \"$KEVD_KEY\" / "
                        + "\"$KEVD_DATA_<NAME>\" or pass them as arguments after the script")
            }
            let fixed = ["/bin/sh", "-c", script, "kevd-" + name].map { RunArgument(parts: [.literal($0)]) }
            return ("/bin/sh", fixed + (try (1..<elements.count).map(argument)))
        }
        let run = try elements.indices.map(argument)
        var program = ""
        for part in run[0].parts {
            guard case .literal(let text) = part else {
                throw fail("the program (run[0] '\(elements[0])') must not contain placeholders; the arguments after it may")
            }
            program += text
        }
        do {
            return (try RuleLoader.resolveProgram(program), run)
        } catch {
            throw fail(error.message)
        }
    }

    /// `user` and `group` as ids, the supplementary groups with them, and whether kevd can switch to them.
    private func identity(_ t: TOMLTable, into spec: inout RuleSpec, index i: Int, options: RuleLoader.Options) throws {
        func fail(_ message: String, _ key: String) -> ConfigError { problem(message, table: "rule", index: i, key: key) }
        let userText = try account(t, "user", index: i)
        let groupText = try account(t, "group", index: i)
        var userName: String? = nil
        if let userText {
            if let entry = Accounts.user(userText) {
                spec.user = entry.uid
                spec.group = entry.gid
                userName = entry.name
            } else if let uid = UInt32(userText) {
                guard groupText != nil else {
                    throw fail("user \(uid) has no passwd entry, so no primary group: set 'group' too", "user")
                }
                spec.user = uid
            } else {
                throw fail("unknown user '\(userText)'", "user")
            }
        }
        if let groupText {
            guard let gid = Accounts.gid(groupText) else { throw fail("unknown group '\(groupText)'", "group") }
            spec.group = gid
        }
        // (uid_t)-1 tells setresuid "leave it unchanged": it would silently keep root.
        if spec.user == UInt32.max { throw fail("'user' must not be \(UInt32.max)", "user") }
        if spec.group == UInt32.max { throw fail("'group' must not be \(UInt32.max)", "group") }
        if let userName, let gid = spec.group { spec.groups = Accounts.groupList(user: userName, gid: gid) }
        if !options.runningAsRoot {
            if let uid = spec.user, uid != geteuid() { throw fail("'user' needs kevd to run as root", "user") }
            if let gid = spec.group, gid != getegid() {
                throw fail("'group' needs kevd to run as root", groupText != nil ? "group" : "user")
            }
        }
    }

    /// A user or group: a name, or an id as a number or numeric string.
    private func account(_ t: TOMLTable, _ key: String, index i: Int) throws -> String? {
        guard let v = t[key] else { return nil }
        if let n = v.int, n >= 0, n <= Int(UInt32.max) { return String(n) }
        guard let s = v.string, !s.isEmpty else {
            throw problem("'\(key)' must be a name or a number", table: "rule", index: i, key: key)
        }
        return s
    }
}
