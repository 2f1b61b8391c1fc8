import Testing

@testable import KevdConfig
import KevdSpec

@Suite("configuration")
struct ConfigLoaderTests: ConfigText {
    @Test("defaults: system paths, no watches, no timers, udev off")
    func defaults() throws {
        let config = try parse("")
        #expect(config.daemon.stateDir == "/var/lib/kevd")
        #expect(config.daemon.socket == "/run/kevd/kevd.sock")
        #expect(config.watches.isEmpty && config.timers.isEmpty)
        #expect(config.udev.enabled == false)
    }

    @Test("relative paths resolve against the config file's folder")
    func relativePaths() throws {
        let config = try parse("[daemon]\nstate_dir = \"state\"\n[[watch]]\npath = \"../srv/./drop/\"\n")
        #expect(config.daemon.stateDir == "/etc/kevd/state")
        #expect(config.watches.first?.path == "/etc/srv/drop")
    }

    @Test("watch, timer and udev tables are read with their types")
    func fullConfig() throws {
        let config = try parse(
            """
            [[watch]]
            path = "/srv"
            recursive = true
            events = ["create", "close_write", "moved"]
            exclude = ["*.tmp", "cache/*"]

            [[timer]]
            name = "nightly"
            cron = "0 3 * * *"
            persistent = true

            [[timer]]
            name = "fast"
            every = "1h30m"

            [udev]
            source = "kernel"
            subsystems = ["block:disk", "net"]
            receive_buffer = "4M"
            """)
        let watch = try #require(config.watches.first)
        #expect(watch.recursive)
        #expect(watch.events == [.create, .closeWrite, .moved])
        #expect(watch.exclude == ["*.tmp", "cache/*"])
        #expect(config.timers.map(\.name) == ["nightly", "fast"])
        #expect(config.timers[1].schedule == .every(nanoseconds: 5_400_000_000_000))
        #expect(config.timers[0].persistent && !config.timers[1].persistent)
        #expect(config.udev.enabled && config.udev.source == .kernel)
        #expect(config.udev.matches == [.init(subsystem: "block", devtype: "disk"), .init(subsystem: "net", devtype: nil)])
        #expect(config.udev.receiveBuffer == 4 * 1024 * 1024)
        #expect(config.udev.catchup)
        #expect(try !parse("[udev]\ncatchup = false\n").udev.catchup)
        #expect(watch.catchup)
        #expect(try parse("[[watch]]\npath = \"/a\"\ncatchup = false\n").watches.first?.catchup == false)
    }

    @Test("unknown keys, bad types and bad values name file, line and column")
    func locatedErrors() {
        #expect(error("[daemon]\nsocket = \"/s\"\nsokcet = \"/t\"\n")?.description
            == "/etc/kevd/kevd.toml:3:1: unknown key 'sokcet' in [daemon]; expected one of: state_dir, socket, log_level, log_format, stats_interval")
        let e = error("[[watch]]\npath = \"/a\"\n\n[[watch]]\npath = \"/b\"\n    events = [\"create\",\n      \"explode\"]\n")
        #expect(e?.line == 6 && e?.column == 5)
        #expect(e?.message.contains("unknown event type 'explode'") == true)
        #expect(error("[[watch]]\nrecursive = true\n")?.message == "[[watch]] needs a 'path'")
        #expect(error("[[timer]]\nname = \"t\"\nevery = \"1s\"\ncron = \"* * * * *\"\n")?.line == 4)
        #expect(error("[[timer]]\nname = \"t\"\ncron = \"61 * * * *\"\n")?.line == 3)
        // Only cron times can be missed: `persistent` on an `every` timer is refused where it is written.
        let persistentEvery = error("[[timer]]\nname = \"t\"\nevery = \"1s\"\npersistent = true\n")
        #expect(persistentEvery?.line == 4 && persistentEvery?.message.contains("cron timers only") == true)
        #expect(error("[[timer]]\nname = \"t\"\ncron = \"* * * * *\"\npersistent = \"yes\"\n")?.line == 4)
        // `[[watch]] catchup` is true or false, refused where it is written otherwise.
        let catchup = error("[[watch]]\npath = \"/a\"\ncatchup = \"yes\"\n")
        #expect(catchup?.line == 3 && catchup?.column == 1 && catchup?.message == "'catchup' must be true or false")
        #expect(error("[udev]\nsource = \"systemd\"\n")?.line == 2)
        #expect(error("[udev]\nreceive_buffer = \"lots\"\n")?.line == 2)
        #expect(error("[daemon]\nlog_level = \"loud\"\n")?.line == 2)
        #expect(error("[[timer]]\nname = \"a\"\nevery = \"1s\"\n[[timer]]\nname = \"a\"\nevery = \"2s\"\n")?.line == 5)
        #expect(error("daemon = 3\n")?.line == 1)
    }

    @Test("[rules]: directories against the config file's folder, cascade limit, output tail")
    func rulesTable() throws {
        #expect(try parse("").rules == RulesSettings())
        #expect(RulesSettings().directories == ["/etc/kevd/rules.d", "/run/kevd/rules.d", "/usr/lib/kevd/rules.d"])
        let rules = try parse("[rules]\ndirectories = [\"rules.d\", \"/usr/lib/kevd/rules.d\"]\ncascade_limit = 3\noutput_tail = \"16K\"\n").rules
        #expect(rules.directories == ["/etc/kevd/rules.d", "/usr/lib/kevd/rules.d"])
        #expect(rules.cascadeLimit == 3 && rules.outputTail == 16 * 1024)
        #expect(try parse("[rules]\ndirectories = []\noutput_tail = 256\n").rules.outputTail == 256)
        #expect(try parse("[rules]\ndirectories = []\n").rules.directories.isEmpty)
    }

    @Test("[rules] errors")
    func rulesErrors() {
        #expect(error("[rules]\ncascade_limit = 0\n")?.description
            == "/etc/kevd/kevd.toml:2:1: 'cascade_limit' must be a whole number from 1 to 64")
        #expect(error("[rules]\ncascade_limit = 65\n")?.line == 2)
        #expect(error("[rules]\noutput_tail = \"2M\"\n")?.description
            == "/etc/kevd/kevd.toml:2:1: 'output_tail' must be between 256 bytes and 1 MiB")
        #expect(error("[rules]\noutput_tail = 255\n")?.line == 2)
        #expect(error("[rules]\noutput_tail = \"lots\"\n")?.message.hasPrefix("bad size 'lots': ") == true)
        #expect(error("[rules]\ndirectories = \"/etc/kevd/rules.d\"\n")?.message == "'directories' must be an array of strings")
        #expect(error("[rules]\ndirectories = [\"\"]\n")?.message == "'directories' must not be empty")
        #expect(error("[rules]\ndirectory = []\n")?.description
            == "/etc/kevd/kevd.toml:2:1: unknown key 'directory' in [rules]; expected one of: directories, cascade_limit, output_tail")
        #expect(error("[daemon]\nrules_dir = \"/etc/kevd/rules.d\"\n")?.message.hasPrefix("unknown key 'rules_dir' in [daemon]") == true)
        #expect(error("\n[rulez]\n")?.description
            == "/etc/kevd/kevd.toml:2:1: unknown key 'rulez' at the top level; expected one of: daemon, watch, timer, udev, journal, server, access, rules, forward, journald, input, acpi")
    }

    @Test("TOML syntax errors keep toml++'s position")
    func syntax() {
        let e = error("[daemon]\nstate_dir = = \"x\"\n")
        #expect(e?.line == 2)
        #expect((e?.column ?? 0) > 0)
    }

    @Test("the locator ignores keys inside multi-line strings and follows multi-line arrays")
    func locator() {
        let source = """
            [a]
            text = \"\"\"
            fake = 1
            \"\"\"
            list = [
              1,
              2 ]
            real = 2
            """
        let locator = TOMLLocator(source: source)
        #expect(locator.position(table: "a", key: "real") == .init(line: 8, column: 1))
        #expect(locator.position(table: "a", key: "fake") == .init(line: 1, column: 1))
    }
}
