import Foundation
import KevdTestSupport
import Testing

/// kevd is one binary for both commands, and an installation makes kevctl a link to it (scripts/install): called
/// as kevctl it must be kevctl in everything a user sees, and under its own name still the daemon.
@Suite("multi-call kevd")
struct MultiCallTests {
    /// Runs `executable` with `arguments`: its exit status and what it wrote to stdout and stderr.
    private func run(_ executable: String, _ arguments: [String], in dir: TemporaryDirectory) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let out = dir.file("stdout"), err = dir.file("stderr")
        FileManager.default.createFile(atPath: out, contents: nil)
        FileManager.default.createFile(atPath: err, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: err)
        try process.runAlone()
        process.waitUntilExit()
        return (process.terminationStatus, try String(contentsOfFile: out, encoding: .utf8),
                try String(contentsOfFile: err, encoding: .utf8))
    }

    @Test("kevd linked as kevctl answers exactly as kevctl: help, version, a rule check with an error")
    func linkedAsKevctl() throws {
        let dir = try TemporaryDirectory()
        let link = dir.file("kevctl")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: TestBinaries.kevd)
        let rule = dir.file("50-bad.toml")
        try "[[rule]]\nname = \"x\"\nmatch = []\nrun = [\"/bin/true\"]\n  recursiv = 1\n".write(
            toFile: rule, atomically: true, encoding: .utf8)
        chmod(rule, 0o644)
        for arguments in [["--help"], ["--version"], ["rules", "check", rule], ["subscribe", "--help"]] {
            let linked = try run(link, arguments, in: dir)
            let alone = try run(TestBinaries.kevctl, arguments, in: dir)
            #expect(linked.status == alone.status, "\(arguments)")
            #expect(linked.stdout == alone.stdout, "\(arguments)")
            #expect(linked.stderr == alone.stderr, "\(arguments)")
        }
        let checked = try run(link, ["rules", "check", rule], in: dir)
        #expect(checked.status != 0 && checked.stdout.contains("50-bad.toml:5:3: unknown key 'recursiv' in [rule]"))
    }

    @Test("under its own name (or any other) it is the daemon")
    func ownName() throws {
        let dir = try TemporaryDirectory()
        let renamed = dir.file("kevd-copy")
        try FileManager.default.createSymbolicLink(atPath: renamed, withDestinationPath: TestBinaries.kevd)
        for executable in [TestBinaries.kevd, renamed] {
            let help = try run(executable, ["--help"], in: dir)
            #expect(help.status == 0 && help.stdout.contains("USAGE: kevd ") && help.stdout.contains("--check"))
        }
    }
}
