import ArgumentParser

@main
struct Kevctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kevctl",
        abstract: "The kevd client: subscribe, wait, emit, status, journal, rules.",
        discussion: "Subcommands arrive with the journal, socket and rules features.",
        version: "0.1.0")
}
