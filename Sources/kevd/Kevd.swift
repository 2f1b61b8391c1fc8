import ArgumentParser
import Glibc
import KevdConfig
import KevdDaemon
import KevdSpec
import Logging

struct Kevd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kevd",
        abstract: "The kernel-event bridge daemon: inotify, udev, timers and signals as one stream of events.",
        discussion: """
            Runs in the foreground. TERM or INT stop it cleanly (exit 0); HUP reloads the configuration \
            (a bad file keeps the running one and is reported as a kevd/error event).

            Exit codes: 0 stopped cleanly, 1 runtime failure, 2 configuration error.
            """)

    @Option(name: .shortAndLong, help: "The configuration file (TOML).")
    var config: String = "/etc/kevd/kevd.toml"

    @Flag(help: "Also write every event to stdout, one JSON object per line.")
    var stdout = false

    @Flag(help: "Check the configuration and the rule files, print problems as file:line:col: message, and exit.")
    var check = false

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical); overrides the config.")
    var logLevel: String?

    @Option(
        help: """
            Log format: auto (journald when stderr is the journal, else plain), journald (a <N> syslog priority \
            prefix, no timestamp) or plain (a timestamp); overrides the config.
            """)
    var logFormat: StderrLogHandler.Format?

    func validate() throws {
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
    }

    func run() throws {
        // Before anything can start a thread: threads inherit the mask, and a signal must reach only the signalfd.
        try Daemon.prepareSignals()

        let loaded: Config
        do {
            loaded = try ConfigLoader.load(file: config)
        } catch {
            FileHandleStderr.write("kevd: \(error)\n")
            throw ExitCode(2)
        }
        if check {
            // The rule files too: the daemon would start without their bad parts, which `--check` must not hide.
            let (rules, problems) = RuleLoader.load(
                directories: loaded.rules.directories, baseTimers: loaded.timers.map(\.name))
            for problem in problems { FileHandleStderr.write("kevd: \(problem)\n") }
            guard problems.isEmpty else { throw ExitCode(2) }
            print("\(loaded.file): ok (\(rules.rules.count) rules in \(rules.files.count) files)")
            return
        }
        let level = Logger.Level(rawValue: logLevel ?? loaded.daemon.logLevel) ?? .info
        let format = logFormat ?? StderrLogHandler.Format(rawValue: loaded.daemon.logFormat) ?? .auto
        let journald = StderrLogHandler.resolve(format, journalStream: getenv("JOURNAL_STREAM").map { String(cString: $0) })
        do {
            try StderrLogHandler.startWriter(label: "kevd", journald: journald)
        } catch {
            // Not fatal: log lines are then written directly, and a blocked stderr can hold the loop up.
            FileHandleStderr.write("kevd: cannot start the log writer thread; logging directly: \(error)\n")
        }
        // At exit, whatever way: the last lines ("kevd failed", "kevd stopped") out before the process ends.
        defer { StderrWriter.shared.flush(timeoutMilliseconds: 2000) }
        LoggingSystem.bootstrap { label in
            StderrLogHandler(label: label, level: level, journald: journald)
        }
        let logger = Logger(label: "kevd")
        let code: Int32
        do {
            let daemon = try Daemon(config: loaded, options: .init(configFile: config, writeStdout: stdout), logger: logger)
            code = try daemon.run()
        } catch {
            logger.critical("kevd failed", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        if code != 0 { throw ExitCode(code) }
    }
}

extension StderrLogHandler.Format: ExpressibleByArgument {}

enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
