import KevdConfig
import KevdFuzzSupport

/// A rule file, through the loader kevd and `kevctl rules check` use: TOML, then the semantic checks of every
/// `[[rule]]`, `[[watch]]` and `[[timer]]`. Any input is a set of rules or a list of errors, never a crash.
/// (The file is written to tmpfs: the loader's entry point reads a file, as it checks its owner and mode.)
let path = Fuzz.scratchDirectory("rules") + "/50-fuzz.toml"
let options = RuleLoader.Options(requireRootOwner: false, checkPermissions: false, runningAsRoot: true)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRules(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    Fuzz.write(UnsafeRawBufferPointer(start: start, count: count), to: path)
    let (set, errors) = RuleLoader.load(files: [path], options: options)
    for error in errors {
        Fuzz.check(!error.description.isEmpty, "an empty error")
    }
    _ = set
    return 0
}

@_cdecl("FuzzRules_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzRules)
}
