import Testing

@testable import KevdConfig
import KevdSpec

/// The TOML layer (toml++ behind CKevdTOML): every shape TOML allows for a setting reads the same, a value of
/// the wrong TOML type is a located error, and input toml++ refuses is a located syntax error, never an abort.
@Suite("configuration: TOML shapes")
struct TOMLShapesTests: ConfigText {
    @Test("inline tables, arrays of inline tables and dotted keys read like headers")
    func equivalentShapes() throws {
        let headers = try parse("[daemon]\nlog_level = \"debug\"\n[[watch]]\npath = \"/srv\"\n[[watch]]\npath = \"/tmp\"\n")
        let inline = try parse("daemon = { log_level = \"debug\" }\nwatch = [{ path = \"/srv\" }, { path = \"/tmp\" }]\n")
        let dotted = try parse("daemon.log_level = \"debug\"\n[[watch]]\npath = \"/srv\"\n[[watch]]\npath = \"/tmp\"\n")
        #expect(headers == inline)
        #expect(headers == dotted)
        #expect(headers.daemon.logLevel == "debug")
        #expect(headers.watches.map(\.path) == ["/srv", "/tmp"])
    }

    @Test("strings in every TOML form, with escapes and non-ASCII text")
    func strings() throws {
        let config = try parse(
            """
            [[watch]]
            path = "/srv/caf\\u00e9/\\"q\\""
            exclude = ['C:\\temp\\*', \"\"\"
            multi
            line\"\"\", '''raw 'quoted' '''] # comment
            """)
        #expect(config.watches.first?.path == "/srv/café/\"q\"")
        #expect(config.watches.first?.exclude == ["C:\\temp\\*", "multi\nline", "raw 'quoted' "])
    }

    @Test("integers in hex, octal, binary and with underscores; sizes as numbers")
    func integers() throws {
        let config = try parse("[server]\nmax_clients = 0x10\nsend_buffer = 1_048_576\n[rules]\ncascade_limit = 0o10\n")
        #expect(config.server.maxClients == 16)
        #expect(config.server.sendBuffer == 1_048_576)
        #expect(config.rules.cascadeLimit == 8)
    }

    @Test("a value of the wrong TOML type is an error at its key", arguments: [
        ("[daemon]\nstate_dir = 1979-05-27\n", 2, 1, "'state_dir' must be a string"),
        ("[daemon]\n\n  socket = 07:32:00\n", 3, 3, "'socket' must be a string"),
        ("[server]\nmax_clients = 10.0\n", 2, 1, "'max_clients' must be a positive number"),
        ("[udev]\nenabled = \"yes\"\n", 2, 1, "'enabled' must be true or false"),
        ("[[watch]]\npath = \"/srv\"\nexclude = [\"a\", 1]\n", 3, 1, "'exclude' must be an array of strings"),
        ("daemon = 1\n", 1, 1, "'daemon' must be a table: [daemon]"),
        ("[watch]\npath = \"/srv\"\n", 1, 1, "'watch' must be an array of tables: [[watch]]"),
    ] as [(String, Int, Int, String)])
    func wrongType(_ text: String, _ line: Int, _ column: Int, _ message: String) throws {
        let found = try #require(self.error(text))
        #expect(found.line == line && found.column == column && found.message == message, "\(found)")
    }

    @Test("what toml++ refuses is a syntax error on its line", arguments: [
        ("[daemon]\nstate_dir = = \"x\"\n", 2),
        ("a = 1\na = 2\n", 2),
        ("[daemon]\n[daemon]\n", 2),
        ("x = 99999999999999999999\n", 1),
        ("a = " + String(repeating: "[", count: 2000), 1),
    ] as [(String, Int)])
    func refused(_ text: String, _ line: Int) throws {
        let found = try #require(self.error(text))
        // The column is toml++'s (where it stopped reading, which its versions may move); the line is the user's.
        #expect(found.line == line && found.column > 0 && !found.message.isEmpty, "\(found)")
    }

    @Test("a NUL byte is refused where it stands, not taken for the end of the file")
    func nulByte() throws {
        for (text, line) in [("a = \"x\u{0}\"\n", 1), ("a = 1\n\u{0}\nb = 2\n", 2), ("a = 1 \u{0}", 1)] {
            let found = self.error(text)
            let shown = found.map { "\($0)".split(separator: "\u{0}", omittingEmptySubsequences: false).joined(separator: "\\0") } ?? "parsed"
            #expect(found?.line == line && (found?.column ?? 0) > 0, "\(shown)")
        }
    }
}
