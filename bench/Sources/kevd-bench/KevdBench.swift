import ArgumentParser
import Logging

/// `kevd-bench`: measurements of kevd's parts, each against a ceiling the same run measures. Benchmarks never
/// assert timings: they print a table, write JSON to `bench/results/` and exit 0.
@main
struct KevdBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kevd-bench",
        abstract: "kevd benchmarks (not shipped).",
        subcommands: [JournalBench.self, SubscriberBench.self, RulesBench.self, ForwardBench.self])

    /// Log lines go to stderr so that they never mix with the table on stdout.
    static func bootstrapLogging() {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
    }
}
