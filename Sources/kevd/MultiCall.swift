import KevctlCommands

/// One binary for kevd and kevctl: called as `kevctl` (a link to it, as installed), it runs kevctl's commands;
/// under any other name it is the daemon. Both statically linked would each carry the Swift runtime and
/// FoundationEssentials (through swift-argument-parser), about 16 MB apiece; together they are one of that size.
@main
enum MultiCall {
    static func main() {
        let name = CommandLine.arguments.first?.split(separator: "/").last ?? ""
        if name == "kevctl" { KevctlEntry.main() } else { Kevd.main() }
    }
}
