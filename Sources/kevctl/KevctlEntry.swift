/// kevctl's entry point, public for the two binaries that run it: the `kevctl` executable and the multi-call
/// `kevd` when it is called as kevctl.
public enum KevctlEntry {
    public static func main() { Kevctl.main(BootArgument.normalized(Array(CommandLine.arguments.dropFirst()))) }
}
