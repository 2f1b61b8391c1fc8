import Foundation
import Glibc
import KevdTestSupport
import Testing

@testable import KevdConfig
import KevdSpec

/// A temporary directory tree for rule files, removed with the last reference.
final class Sandbox {
    let root: String

    init() {
        root = try! makeTemporaryDirectory(prefix: "kevd-rules")
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    /// `relative` under the sandbox, created with its parents.
    @discardableResult
    func directory(_ relative: String) -> String {
        let path = root + "/" + relative
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Writes `text` to `relative` and sets `mode` exactly (the umask does not get a say).
    @discardableResult
    func write(_ relative: String, _ text: String, mode: mode_t = 0o644) -> String {
        let path = root + "/" + relative
        directory(String(relative.split(separator: "/").dropLast().joined(separator: "/")))
        try! text.write(toFile: path, atomically: false, encoding: .utf8)
        chmod(path, mode)
        return path
    }

    @discardableResult
    func symlink(_ relative: String, to target: String) -> String {
        let path = root + "/" + relative
        directory(String(relative.split(separator: "/").dropLast().joined(separator: "/")))
        Glibc.symlink(target, path)
        return path
    }
}

/// A rule that passes every check, named `name`, in TOML.
func rule(_ name: String, _ extra: String = "") -> String {
    "[[rule]]\nname = \"\(name)\"\nmatch = []\nrun = [\"true\"]\n" + extra
}

@Suite("rule files")
struct RuleLoaderTests {
    let sandbox = Sandbox()

    /// Loads `files` (TOML texts by file name) from one directory, returning the set and the messages.
    func load(
        _ files: [String: String], baseTimers: [String] = [], options: RuleLoader.Options = .init()
    ) -> (RuleSet, [String]) {
        for (name, text) in files { sandbox.write("rules.d/" + name, text) }
        let (set, errors) = RuleLoader.load(
            directories: [sandbox.root + "/rules.d"], baseTimers: baseTimers, options: options)
        return (set, errors.map(\.description))
    }

    /// The messages for one rule file holding `text`, with its path replaced by `F`.
    func errors(_ text: String, options: RuleLoader.Options = .init()) -> [String] {
        let (_, errors) = load(["r.toml": text], options: options)
        return errors.map { $0.replacingOccurrences(of: sandbox.root + "/rules.d/r.toml", with: "F") }
    }

    @Test("a file name in an earlier directory overrides the same name in later ones")
    func precedence() {
        sandbox.write("etc/a.toml", rule("a-etc"))
        sandbox.write("lib/a.toml", rule("a-lib"))
        sandbox.write("lib/b.toml", rule("b-lib"))
        let (set, errors) = RuleLoader.load(directories: [sandbox.root + "/etc", sandbox.root + "/lib"])
        #expect(errors.isEmpty)
        #expect(set.rules.map(\.name) == ["a-etc", "b-lib"])
        #expect(set.files == [
            .init(name: "a.toml", path: sandbox.root + "/etc/a.toml"),
            .init(name: "b.toml", path: sandbox.root + "/lib/b.toml"),
        ])
        #expect(set.rules[0].file == sandbox.root + "/etc/a.toml" && set.rules[0].line == 1)
    }

    @Test("a symlink to /dev/null masks the name; a mask in a later directory is overridden like any file")
    func masking() {
        sandbox.symlink("etc/b.toml", to: "/dev/null")
        sandbox.write("lib/b.toml", rule("b"))
        sandbox.write("etc/c.toml", rule("c"))
        sandbox.symlink("lib/c.toml", to: "/dev/null")
        let (set, errors) = RuleLoader.load(directories: [sandbox.root + "/etc", sandbox.root + "/lib"])
        #expect(errors.isEmpty)
        #expect(set.masked == [.init(name: "b.toml", path: sandbox.root + "/etc/b.toml")])
        #expect(set.rules.map(\.name) == ["c"])
    }

    @Test("files are read in byte order of their names across directories; other entries are not rule files")
    func order() {
        sandbox.write("etc/20-x.toml", rule("x"))
        sandbox.write("lib/10-y.toml", rule("y"))
        sandbox.write("run/30-z.toml", rule("z"))
        sandbox.write("lib/a.toml", rule("lower"))
        sandbox.write("lib/B.toml", rule("upper"))
        sandbox.write("etc/.hidden.toml", "this is not TOML")
        sandbox.write("etc/notes.txt", "this is not TOML")
        sandbox.directory("etc/sub.toml")
        sandbox.write("etc/sub.toml/inner.toml", "this is not TOML")
        sandbox.symlink("run/linked.toml", to: sandbox.root + "/lib/10-y.toml.target")
        sandbox.write("lib/10-y.toml.target", rule("linked"))
        let directories = ["etc", "missing", "run", "lib"].map { sandbox.root + "/" + $0 }
        let (set, errors) = RuleLoader.load(directories: directories)
        #expect(errors.isEmpty)
        #expect(set.files.map(\.name) == ["10-y.toml", "20-x.toml", "30-z.toml", "B.toml", "a.toml", "linked.toml"])
        #expect(set.rules.map(\.name) == ["y", "x", "z", "upper", "lower", "linked"])
    }

    @Test("a rule directory that is not a directory is an error")
    func notADirectory() {
        let path = sandbox.write("plain", "")
        let (_, errors) = RuleLoader.load(directories: [path])
        #expect(errors.map(\.description) == ["\(path): cannot read the rule directory: Not a directory"])
    }

    @Test("a group- or world-writable rule file is refused")
    func writable() {
        let path = sandbox.write("rules.d/w.toml", rule("w"), mode: 0o664)
        let (set, errors) = RuleLoader.load(directories: [sandbox.root + "/rules.d"])
        #expect(errors.map(\.description) == [
            "\(path): rule file is writable by group or others (mode 0664); refusing it, like cron and sudo do"
        ])
        #expect(set.rules.isEmpty && set.files.isEmpty)
        chmod(path, 0o602)
        #expect(RuleLoader.load(files: [path]).1.first?.message.contains("(mode 0602)") == true)
        let unchecked = RuleLoader.load(files: [path], options: .init(checkPermissions: false))
        #expect(unchecked.1.isEmpty && unchecked.0.rules.map(\.name) == ["w"])
    }

    @Test("a rule file not owned by root is refused when root ownership is required",
          .enabled(if: geteuid() == 0, "needs root to chown the file to another user"))
    func owner() {
        let path = sandbox.write("rules.d/o.toml", rule("o"))
        chown(path, 65534, 65534)
        let (_, errors) = RuleLoader.load(files: [path], options: .init(requireRootOwner: true))
        #expect(errors.map(\.description) == [
            "\(path): rule file is owned by uid 65534, not root; refusing it, like cron and sudo do (its owner could make kevd run anything as root)"
        ])
        #expect(RuleLoader.load(files: [path], options: .init(requireRootOwner: false)).1.isEmpty)
    }

    @Test("only regular files are read, symlinks followed")
    func notRegular() {
        sandbox.directory("other")
        let fifo = sandbox.root + "/other/f.toml"
        mkfifo(fifo, 0o644)
        let link = sandbox.symlink("rules.d/f.toml", to: fifo)
        let (_, errors) = RuleLoader.load(directories: [sandbox.root + "/rules.d"])
        #expect(errors.map(\.description) == ["\(link): rule file is not a regular file; refusing it"])
        #expect(RuleLoader.load(files: ["/dev/null"]).1.map(\.description)
            == ["/dev/null: rule file is not a regular file; refusing it"])
        let dangling = sandbox.symlink("other/d.toml", to: sandbox.root + "/nowhere")
        #expect(RuleLoader.load(files: [dangling]).1.map(\.description)
            == ["\(dangling): cannot open: No such file or directory"])
    }

    @Test("every [[rule]] field, and the defaults")
    func fields() throws {
        let (set, errors) = load([
            "r.toml": """
                [[rule]]
                name = "everything"
                match = ["source=inotify", "data.path~\\\\.jpg$"]
                run = ["cp", "{key}", "/backup/{data.name}"]
                user = "nobody"
                timeout = "30s"
                kill_grace = "2s"
                concurrency = 4
                debounce = "500ms"
                max_wait = "10s"
                retries = 3
                backoff = "2s"
                catch_up = false

                [[rule]]
                name = "defaults"
                match = []
                run = ["/bin/true"]

                [[rule]]
                name = "group-only"
                match = []
                run = ["true"]
                user = 0
                group = "65534"
                """
        ], options: .init(runningAsRoot: true))
        #expect(errors.isEmpty)
        let full = try #require(set.rules.first)
        #expect(full.line == 1)
        #expect(full.match == ["source=inotify", "data.path~\\.jpg$"])
        #expect(full.run.map(\.description) == ["cp", "{key}", "/backup/{data.name}"])
        #expect(full.program.hasSuffix("/cp") && access(full.program, X_OK) == 0)
        #expect(!full.shell)
        #expect(full.user == 65534 && full.group == 65534 && full.groups.contains(65534))
        #expect(full.timeoutNanoseconds == 30_000_000_000 && full.killGraceNanoseconds == 2_000_000_000)
        #expect(full.concurrency == 4 && full.retries == 3 && !full.catchUp)
        #expect(full.debounceNanoseconds == 500_000_000 && full.maxWaitNanoseconds == 10_000_000_000)
        #expect(full.backoffNanoseconds == 2_000_000_000)

        let expected = RuleSpec(
            name: "defaults", file: sandbox.root + "/rules.d/r.toml", line: 15, match: [],
            run: [RunArgument(parts: [.literal("/bin/true")])], program: "/bin/true")
        #expect(set.rules[1] == expected)
        #expect(expected.timeoutNanoseconds == 60_000_000_000 && expected.killGraceNanoseconds == 5_000_000_000 && expected.backoffNanoseconds == 1_000_000_000)
        #expect(expected.concurrency == 1 && expected.catchUp && expected.user == nil && expected.groups.isEmpty)

        let groupOnly = set.rules[2]
        #expect(groupOnly.user == 0 && groupOnly.group == 65534)
    }

    @Test("bad values name the key's place and say what is expected")
    func badValues() {
        func one(_ extra: String) -> String? {
            let list = errors(rule("r", extra))
            #expect(list.count == 1, "\(list)")
            return list.first
        }
        #expect(one("concurrency = 0\n") == "F:5:1: 'concurrency' must be a whole number from 1 to 1024")
        #expect(one("retries = 101\n") == "F:5:1: 'retries' must be a whole number from 0 to 100")
        #expect(one("timeout = \"0s\"\n") == "F:5:1: 'timeout' must be longer than zero")
        #expect(one("timeout = \"soon\"\n")?.hasPrefix("F:5:1: bad duration 'soon': ") == true)
        #expect(one("backoff = \"2h\"\n") == "F:5:1: 'backoff' must be longer than zero and at most 1h")
        #expect(one("max_wait = \"1s\"\n")
            == "F:5:1: 'max_wait' caps a debounce: it needs a 'debounce' longer than zero")
        #expect(one("debounce = \"2s\"\nmax_wait = \"1s\"\n") == "F:6:1: 'max_wait' must not be shorter than 'debounce'")
        #expect(one("shell = \"yes\"\n") == "F:5:1: 'shell' must be true or false")
        #expect(one("user = \"no-such-user-here\"\n") == "F:5:1: unknown user 'no-such-user-here'")
        #expect(one("group = \"no-such-group-here\"\n") == "F:5:1: unknown group 'no-such-group-here'")
        #expect(one("user = 4000000\n") == "F:5:1: user 4000000 has no passwd entry, so no primary group: set 'group' too")
        #expect(one("user = true\n") == "F:5:1: 'user' must be a name or a number")

        #expect(errors("[[rule]]\nmatch = []\nrun = [\"true\"]\n") == ["F:1:1: [[rule]] needs a 'name'"])
        #expect(errors("[[rule]]\nname = \"n\"\nrun = [\"true\"]\n")
            == ["F:1:1: rule 'n' needs 'match' (match = [] runs it for every event)"])
        #expect(errors("[[rule]]\nname = \"n\"\nmatch = []\n") == ["F:1:1: rule 'n' needs 'run'"])
        #expect(errors("[[rule]]\nname = \"n\"\nmatch = [\"sauce=x\"]\nrun = [\"true\"]\n")
            == ["F:3:1: filter term 'sauce=x': unknown field 'sauce' (expected source, type, key, id, seq or data.NAME)"])
        let badName = "F:2:1: rule name '%@' must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        for name in [".hidden", "a/b", "", String(repeating: "x", count: 65), "café"] {
            #expect(errors(rule(name)) == [badName.replacingOccurrences(of: "%@", with: name)])
        }
        #expect(errors(rule(String(repeating: "x", count: 64))).isEmpty)
        #expect(errors(rule("v1.2_backup-daily")).isEmpty)
    }

    @Test("'user' and 'group' need root unless they are kevd's own")
    func identity() {
        let notRoot = RuleLoader.Options(runningAsRoot: false)
        #expect(errors(rule("r", "user = \"nobody\"\n"), options: notRoot) == ["F:5:1: 'user' needs kevd to run as root"])
        #expect(errors(rule("r", "group = 65534\n"), options: notRoot) == ["F:5:1: 'group' needs kevd to run as root"])
        let own = "user = \(geteuid())\ngroup = \(getegid())\n"
        #expect(errors(rule("r", own), options: notRoot).isEmpty)
    }

    @Test("placeholders and brace escapes in run elements")
    func placeholders() throws {
        func parts(_ text: String) throws -> [RunArgument.Part] { try RuleLoader.runArgument(text).parts }
        #expect(try parts("plain") == [.literal("plain")])
        #expect(try parts("") == [])
        #expect(try parts("a{key}b") == [.literal("a"), .field(.key), .literal("b")])
        #expect(try parts("{seq}{id}{time}{source}{type}{rule}")
            == [.field(.seq), .field(.id), .field(.time), .field(.source), .field(.type), .field(.rule)])
        #expect(try parts("{data.ID_SERIAL}") == [.field(.data("ID_SERIAL"))])
        #expect(try parts("{data.odd name{x}") == [.field(.data("odd name{x"))])
        #expect(try parts("{{key}}") == [.literal("{key}")])
        #expect(try parts("x{{{key}}}y") == [.literal("x{"), .field(.key), .literal("}y")])
        #expect(try RuleLoader.runArgument("a{{b}}{key}").description == "a{{b}}{key}")

        func failure(_ text: String) -> String? {
            do {
                _ = try RuleLoader.runArgument(text)
                return nil
            } catch {
                return error.message
            }
        }
        #expect(failure("{kye}")
            == "unknown placeholder '{kye}' (expected {seq}, {id}, {time}, {source}, {type}, {key}, {rule} or {data.NAME}; {{ and }} for literal braces)")
        #expect(failure("a{key") == "unclosed '{' (write {{ for a literal brace)")
        #expect(failure("a}b") == "lone '}' (write }} for a literal brace)")
        #expect(failure("{}")?.hasPrefix("unknown placeholder '{}'") == true)
        #expect(failure("{data.}") == "'{data.}' needs a field name: {data.NAME}")

        let list = errors("# a comment\n[[rule]]\nname = \"p\"\nmatch = []\n  run = [\"echo\", \"{key}\", \"{kye}\"]\n")
        #expect(list == [
            "F:5:3: run[2] '{kye}': unknown placeholder '{kye}' (expected {seq}, {id}, {time}, {source}, {type}, {key}, {rule} or {data.NAME}; {{ and }} for literal braces)"
        ])
        #expect(errors(rule("p").replacingOccurrences(of: "[\"true\"]", with: "[\"echo\", \"x}\"]"))
            == ["F:4:1: run[1] 'x}': lone '}' (write }} for a literal brace)"])
    }

    @Test("shell = true: the script is passed verbatim, without placeholders; its arguments may have them")
    func shell() throws {
        let (set, errors) = load([
            "s.toml": """
                [[rule]]
                name = "sh-array"
                match = []
                shell = true
                run = ["cp \\"$1\\" \\"${HOME}/backup\\" && { echo done; }", "{key}", "--"]

                [[rule]]
                name = "sh-string"
                match = []
                shell = true
                run = "echo \\"$KEVD_KEY\\""
                """
        ])
        #expect(errors.isEmpty)
        let array = try #require(set.rules.first)
        #expect(array.shell && array.program == "/bin/sh")
        #expect(array.run.map(\.parts) == [
            [.literal("/bin/sh")], [.literal("-c")], [.literal("cp \"$1\" \"${HOME}/backup\" && { echo done; }")],
            [.literal("kevd-sh-array")], [.field(.key)], [.literal("--")],
        ])
        #expect(set.rules[1].run.map(\.description) == ["/bin/sh", "-c", "echo \"$KEVD_KEY\"", "kevd-sh-string"])

        let refused = "placeholders in a shell script would be interpreted by the shell: use \"$KEVD_KEY\" / \"$KEVD_DATA_<NAME>\" or pass them as arguments after the script"
        #expect(self.errors(rule("s", "shell = true\n").replacingOccurrences(of: "[\"true\"]", with: "\"rm {key}\""))
            == ["F:4:1: " + refused])
        #expect(self.errors(rule("s", "shell = true\n").replacingOccurrences(of: "[\"true\"]", with: "[\"echo {data.X}\", \"a\"]"))
            == ["F:4:1: " + refused])
        #expect(self.errors(rule("s").replacingOccurrences(of: "[\"true\"]", with: "\"echo hi\""))
            == ["F:4:1: 'run' must be an array: the program, then one string per argument (a single string is a script, for shell = true)"])
        #expect(self.errors(rule("s").replacingOccurrences(of: "[\"true\"]", with: "[]")) == ["F:4:1: 'run' must not be empty"])
    }

    @Test("the program must exist and be executable: absolute, or a bare name in the fixed PATH")
    func programs() throws {
        let plain = sandbox.write("bin/plain", "#!/bin/sh\n", mode: 0o644)
        let tool = sandbox.write("bin/tool", "#!/bin/sh\n", mode: 0o755)
        func with(_ run: String) -> [String] {
            self.errors(rule("p").replacingOccurrences(of: "[\"true\"]", with: run))
        }
        #expect(with("[\"/nonexistent/prog\"]") == ["F:4:1: program '/nonexistent/prog' does not exist"])
        #expect(with("[\"\(plain)\"]") == ["F:4:1: program '\(plain)' is not executable"])
        #expect(with("[\"\(sandbox.root)/bin\"]") == ["F:4:1: program '\(sandbox.root)/bin' is not a regular file"])
        #expect(with("[\"kevd-no-such-program\"]") == ["F:4:1: program 'kevd-no-such-program' not found in \(RuleLoader.fixedPATH)"])
        #expect(with("[\"bin/tool\"]")
            == ["F:4:1: program 'bin/tool' must be an absolute path, or a bare name to look up in \(RuleLoader.fixedPATH)"])
        #expect(with("[\"{data.prog}\", \"x\"]")
            == ["F:4:1: the program (run[0] '{data.prog}') must not contain placeholders; the arguments after it may"])
        #expect(with("[\"\"]") == ["F:4:1: the program (run[0]) is empty"])

        let (set, errors) = load(["ok.toml": rule("bare").replacingOccurrences(of: "true", with: "sh") + rule("abs").replacingOccurrences(of: "\"true\"", with: "\"\(tool)\", \"{seq}\"")])
        #expect(errors.filter { $0.contains("ok.toml") }.isEmpty)
        let bare = try #require(set.rules.first { $0.name == "bare" })
        #expect(bare.program.hasSuffix("/sh") && bare.run.map(\.description) == ["sh"])
        #expect(set.rules.first { $0.name == "abs" }?.program == tool)
    }

    @Test("unknown keys are refused at their place, at the top level and in each table")
    func unknownKeys() {
        #expect(errors(rule("r", "timout = \"5s\"\n")) == [
            "F:5:1: unknown key 'timout' in [rule]; expected one of: name, match, run, shell, user, group, timeout, kill_grace, concurrency, debounce, max_wait, retries, backoff, catch_up, no_new_privs"
        ])
        #expect(errors(rule("r") + "\n[rules]\nx = 1\n") == [
            "F:6:1: unknown key 'rules' at the top level; expected one of: rule, watch, timer"
        ])
        #expect(errors("[[watch]]\npath = \"/srv\"\nrecursve = true\n") == [
            "F:3:1: unknown key 'recursve' in [watch]; expected one of: path, recursive, events, exclude, backend, catchup"
        ])
        #expect(errors("[rule]\nname = \"r\"\n") == ["F:1:1: 'rule' must be an array of tables: [[rule]]"])
    }

    @Test("rule names are unique across all files; the message names both places")
    func duplicateNames() {
        let (set, errors) = load([
            "10-a.toml": rule("dup"),
            "20-b.toml": "# second\n\n" + rule("other") + "\n" + rule("dup"),
        ])
        let dir = sandbox.root + "/rules.d"
        #expect(errors == ["\(dir)/20-b.toml:9:1: duplicate rule name 'dup'; it is also defined at \(dir)/10-a.toml:1"])
        #expect(set.rules.map(\.name) == ["dup", "other"])
    }

    @Test("[[watch]] and [[timer]] in rule files: paths against the file's folder, timer names unique")
    func watchesAndTimers() {
        let (set, errors) = load(
            [
                "a.toml": "[[watch]]\npath = \"drop\"\nrecursive = true\n\n[[timer]]\nname = \"hourly\"\nevery = \"1h\"\n",
                "b.toml": "[[timer]]\nname = \"heartbeat\"\nevery = \"1s\"\n\n[[timer]]\nname = \"hourly\"\ncron = \"0 * * * *\"\n",
            ], baseTimers: ["heartbeat"])
        let dir = sandbox.root + "/rules.d"
        #expect(set.watches == [WatchSpec(path: dir + "/drop", recursive: true, events: Set(FileEventType.allCases), exclude: [])])
        #expect(set.timers.map(\.name) == ["hourly"])
        #expect(errors == [
            "\(dir)/b.toml:2:1: duplicate timer name 'heartbeat'; it is also declared in the configuration file",
            "\(dir)/b.toml:6:1: duplicate timer name 'hourly'; it is also declared in \(dir)/a.toml:5",
        ])
    }

    @Test("one load reports every problem: per file, per table; the good parts still load")
    func manyProblems() {
        sandbox.write("rules.d/1-syntax.toml", rule("s") + "oops = = 1\n")
        sandbox.write("rules.d/2-open.toml", rule("o"), mode: 0o666)
        sandbox.write("rules.d/3-mixed.toml",
            "bogus = 1\n" + rule("bad-match").replacingOccurrences(of: "[]", with: "[\"type\", \"type~(\"]") + rule("good")
                + rule("bad-run").replacingOccurrences(of: "true", with: "{seq}")
                + "[[watch]]\nrecursive = true\n"
                + "[[timer]]\nname = \"t\"\n")
        let (set, errors) = RuleLoader.load(directories: [sandbox.root + "/rules.d"])
        let dir = sandbox.root + "/rules.d"
        #expect(errors.count == 7, "\(errors)")
        #expect(errors.map(\.file) == [dir + "/1-syntax.toml", dir + "/2-open.toml"] + Array(repeating: dir + "/3-mixed.toml", count: 5))
        #expect(errors[0].line == 5)
        #expect(errors.dropFirst(2).map(\.line) == [1, 4, 13, 14, 16])
        #expect(errors[3].message.hasPrefix("filter term 'type~(': bad regex: "))
        #expect(set.rules.map(\.name) == ["good"])
        #expect(set.files.map(\.name) == ["3-mixed.toml"])
    }

    @Test("load(files:) reads exactly the files given, in that order")
    func explicitFiles() {
        let b = sandbox.write("x/b.toml", rule("b"))
        let a = sandbox.write("y/a.toml", rule("a"))
        let (set, errors) = RuleLoader.load(files: [b, a])
        #expect(errors.isEmpty)
        #expect(set.rules.map(\.name) == ["b", "a"])
        #expect(set.files == [.init(name: "b.toml", path: b), .init(name: "a.toml", path: a)])
    }
}
