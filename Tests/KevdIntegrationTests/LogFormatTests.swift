import Foundation
import Glibc
import Testing

/// Log lines on stderr: with a `<N>` syslog priority and no timestamp when stderr is the journal, readable lines
/// with a timestamp otherwise.
@Suite("log format", .serialized)
struct LogFormatTests {
    static let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\nlog_level = \"info\"\n"
        + "[server]\nmax_clients = 1\n"

    /// Logs an info line (start-up) and a warning (a client refused by max_clients), then stops kevd and returns
    /// everything it wrote to stderr.
    static func logLines(_ daemon: DaemonProcess) throws -> [String] {
        let socket = daemon.directory.file("state/kevd.sock")
        let kept = try RawClient(socket)
        #expect(try kept.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        #expect(try RawClient(socket).line()["limit"] as? String == "max_clients")
        try daemon.waitFor("the refusal") { $0.isEvent("kevd", "limit", key: "max_clients") }
        #expect(daemon.stop() == 0)
        return daemon.finalStderr().split(separator: "\n").map(String.init)
    }

    @Test("stderr that is the journal (JOURNAL_STREAM names it): <N> priority prefixes, no timestamp")
    func journald() throws {
        let daemon = try DaemonProcess(config: Self.config, stderrIsJournal: true)
        let lines = try Self.logLines(daemon)
        #expect(lines.contains { $0.hasPrefix("<6>kevd started ") }, "\(lines)")
        let refused = lines.first { $0.hasPrefix("<4>client refused: max_clients") }
        #expect(refused != nil, "\(lines)")
        #expect(refused?.contains(" uid=\(getuid()) ") == true, "metadata as key=value: \(refused ?? "")")
        #expect(lines.allSatisfy { $0.hasPrefix("<") }, "\(lines)")
    }

    @Test("stderr that is not the journal: a timestamp and the level, no prefix; --log-format and log_format force one")
    func plain() throws {
        // JOURNAL_STREAM naming some other file (as when a wrapper redirected stderr) is not the journal.
        let daemon = try DaemonProcess(config: Self.config, environment: ["JOURNAL_STREAM": "1:1"])
        let lines = try Self.logLines(daemon)
        let started = lines.first { $0.contains("kevd started") }
        #expect(started?.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z info kevd: kevd started "#, options: .regularExpression) != nil,
                "\(lines)")
        #expect(lines.contains { $0.contains(" warning kevd: client refused: max_clients") }, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("<") }, "\(lines)")

        let forced = try DaemonProcess(config: Self.config, arguments: ["--log-format", "journald"])
        #expect(try Self.logLines(forced).contains { $0.hasPrefix("<4>client refused: max_clients") })
        // And log_format = "plain" keeps plain lines even on the journal.
        let configured = try DaemonProcess(
            config: Self.config.replacingOccurrences(of: "log_level", with: "log_format = \"plain\"\nlog_level"),
            stderrIsJournal: true)
        #expect(try !Self.logLines(configured).contains { $0.hasPrefix("<") })
    }
}
