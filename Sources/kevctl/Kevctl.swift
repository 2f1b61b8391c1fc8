import ArgumentParser

struct Kevctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kevctl",
        abstract: "The kevd client.",
        discussion: """
            Filters (FILTER) use one syntax everywhere: field=glob, field!=glob, field~regex, or a bare field \
            for "present"; fields are source, type, key, id, seq and data.NAME; several terms must all match. \
            Rules (kevctl rules) use the same terms in their match lists.
            """,
        version: "0.1.0",
        subcommands: [
            JournalCommand.self, SubscribeCommand.self, WaitCommand.self, EmitCommand.self, StatusCommand.self,
            RulesCommand.self, MetricsCommand.self,
        ])
}
