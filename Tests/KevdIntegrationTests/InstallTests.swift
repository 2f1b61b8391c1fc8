import Foundation
import Glibc
import KevdTestSupport
import Testing

/// `scripts/install` into a temporary DESTDIR, with the test build's binaries (`--bindir-from`, so no release
/// build): the tree it installs, a second install that keeps a modified kevd.toml, and `--uninstall`. Always
/// staged: nothing outside the temporary directory is written, and no group is created.
@Suite("scripts/install", .serialized)
struct InstallTests {
    /// The checkout: the folder above the test binaries that holds Package.swift and scripts/install.
    static var repository: String? {
        var dir = TestBinaries.directory
        while !dir.isEmpty && dir != "/" {
            if FileManager.default.fileExists(atPath: dir + "/Package.swift")
                && FileManager.default.isExecutableFile(atPath: dir + "/scripts/install")
            {
                return dir
            }
            dir = (dir as NSString).deletingLastPathComponent
        }
        return nil
    }

    func install(_ repository: String, into destdir: String, _ extra: [String] = []) throws -> String {
        try run(
            [
                repository + "/scripts/install", "--destdir", destdir, "--prefix", "/usr/local",
                "--bindir-from", TestBinaries.directory, "--no-group",
            ] + extra)
    }

    func mode(_ path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    @Test("installs binaries, units, config, examples, completions and man pages; keeps a modified kevd.toml; uninstalls")
    func installTree() throws {
        let repository = try #require(Self.repository, "no checkout above \(TestBinaries.directory)")
        let tmp = try TemporaryDirectory()
        let root = tmp.file("root")
        let output = try install(repository, into: root)
        #expect(output.contains("systemctl enable --now kevd.socket kevd.service"))
        #expect(output.contains("groupadd --system kevd"), "a staged install prints the group command instead")

        let bin = root + "/usr/local/bin"
        let units = root + "/usr/local/lib/systemd/system"
        let share = root + "/usr/local/share"
        let etc = root + "/etc/kevd"
        // One multi-call binary: kevctl is a link to kevd, which runs kevctl's commands when called by that name.
        #expect(try mode(bin + "/kevd") == 0o755)
        #expect(FileManager.default.contentsEqual(atPath: bin + "/kevd", andPath: TestBinaries.directory + "/kevd"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: bin + "/kevctl") == "kevd")
        for unit in ["kevd.service", "kevd.socket"] { #expect(try mode(units + "/" + unit) == 0o644, "\(unit)") }
        let service = try String(contentsOfFile: units + "/kevd.service", encoding: .utf8)
        let execStart = service.split(separator: "\n").filter { $0.hasPrefix("ExecStart=") }
        #expect(execStart == ["ExecStart=/usr/local/bin/kevd --config /etc/kevd/kevd.toml"])
        let socket = try String(contentsOfFile: units + "/kevd.socket", encoding: .utf8)
        #expect(socket.contains("ListenStream=/run/kevd/kevd.sock"))

        #expect(try mode(etc) == 0o755)
        #expect(try mode(etc + "/kevd.toml") == 0o644)
        #expect(try mode(etc + "/rules.d") == 0o755)
        #expect(try FileManager.default.contentsOfDirectory(atPath: etc + "/rules.d").isEmpty, "examples are not active")
        let shipped = try String(contentsOfFile: repository + "/packaging/kevd.toml", encoding: .utf8)
        #expect(try String(contentsOfFile: etc + "/kevd.toml", encoding: .utf8) == shipped)

        let examples = share + "/kevd/examples/rules"
        let ruleFiles = try FileManager.default.contentsOfDirectory(atPath: repository + "/Rules").filter { $0.hasSuffix(".toml") }
        #expect(!ruleFiles.isEmpty)
        for file in ruleFiles + ["README.md"] { #expect(try mode(examples + "/" + file) == 0o644, "\(file)") }

        // The installed configuration passes kevd --check as shipped, with its rules directories pointed at the
        // staged rules.d (not the host's /etc/kevd/rules.d), first empty, then holding every example rule.
        let config = tmp.file("kevd.toml")
        let staged = shipped.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasPrefix("directories = ") ? "directories = [\"\(etc)/rules.d\"]" : String($0)
        }.joined(separator: "\n")
        #expect(staged != shipped, "packaging/kevd.toml has a [rules] directories line")
        try staged.write(toFile: config, atomically: true, encoding: .utf8)
        #expect(try run([bin + "/kevd", "--check", "--config", config]).contains("ok"))
        for file in ruleFiles {
            try FileManager.default.copyItem(atPath: examples + "/" + file, toPath: etc + "/rules.d/" + file)
        }
        let checked = try run([bin + "/kevd", "--check", "--config", config])
        #expect(checked.contains("\(ruleFiles.count) files"), "\(checked)")
        for file in ruleFiles { try FileManager.default.removeItem(atPath: etc + "/rules.d/" + file) }

        // Completions and man pages.
        let bash = try String(contentsOfFile: share + "/bash-completion/completions/kevctl", encoding: .utf8)
        #expect(bash.hasPrefix("#!/bin/bash") && bash.contains("complete ") && bash.contains("kevctl"))
        _ = try run(["/bin/bash", "-n", share + "/bash-completion/completions/kevctl"])
        #expect(exists(share + "/zsh/site-functions/_kevctl"))
        #expect(exists(share + "/fish/vendor_completions.d/kevctl.fish"))
        for page in ["kevd", "kevctl"] {
            let man = try String(contentsOfFile: share + "/man/man1/\(page).1", encoding: .utf8)
            #expect(man.hasPrefix(".TH \(page.uppercased()) 1"))
        }
        let kevctlMan = try String(contentsOfFile: share + "/man/man1/kevctl.1", encoding: .utf8)
        for section in ["KEVCTL JOURNAL", "KEVCTL SUBSCRIBE", "KEVCTL RULES CHECK"] {
            #expect(kevctlMan.contains(".SH \(section)"), "\(section)")
        }

        // A second install keeps the administrator's kevd.toml and puts the default beside it.
        let modified = shipped + "\n# changed by the administrator\n"
        try modified.write(toFile: etc + "/kevd.toml", atomically: true, encoding: .utf8)
        let again = try install(repository, into: root)
        #expect(again.contains("kevd.toml.new"))
        #expect(try String(contentsOfFile: etc + "/kevd.toml", encoding: .utf8) == modified)
        #expect(try String(contentsOfFile: etc + "/kevd.toml.new", encoding: .utf8) == shipped)

        // Uninstall removes what the install put there and keeps /etc/kevd.
        try run([repository + "/scripts/install", "--uninstall", "--destdir", root, "--prefix", "/usr/local"])
        for gone in [
            bin + "/kevd", bin + "/kevctl", units + "/kevd.service", units + "/kevd.socket",
            share + "/bash-completion/completions/kevctl", share + "/zsh/site-functions/_kevctl",
            share + "/fish/vendor_completions.d/kevctl.fish", share + "/man/man1/kevd.1", share + "/man/man1/kevctl.1",
            share + "/kevd",
        ] {
            #expect(!exists(gone), "\(gone) should be gone")
        }
        #expect(try String(contentsOfFile: etc + "/kevd.toml", encoding: .utf8) == modified)
        #expect(exists(etc + "/rules.d"))
    }

    @Test("PREFIX and DESTDIR from the environment; a prefix systemd does not read puts the units in /etc/systemd/system")
    func environmentPrefix() throws {
        let repository = try #require(Self.repository, "no checkout above \(TestBinaries.directory)")
        let tmp = try TemporaryDirectory()
        let root = tmp.file("root")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: repository + "/scripts/install")
        process.arguments = ["--bindir-from", TestBinaries.directory, "--no-group"]
        process.environment = ProcessInfo.processInfo.environment.merging(["DESTDIR": root, "PREFIX": "/opt/kevd"]) { $1 }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.runAlone()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(output)")
        #expect(exists(root + "/opt/kevd/bin/kevd"))
        #expect(exists(root + "/opt/kevd/share/bash-completion/completions/kevctl"))
        let service = try String(contentsOfFile: root + "/etc/systemd/system/kevd.service", encoding: .utf8)
        #expect(service.contains("\nExecStart=/opt/kevd/bin/kevd --config /etc/kevd/kevd.toml\n"))
        #expect(exists(root + "/etc/kevd/kevd.toml"))
    }
}
