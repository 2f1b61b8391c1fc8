import Testing

@testable import KevdConfig
import KevdSpec

/// Inputs `scripts/fuzz` found (Fuzz/), kept as regression cases: each must be a located error, not an abort.
@Suite("Reliability: fuzz regressions (TOML)")
struct ReliabilityFuzzTOMLRegressionTests: ConfigText {
    /// The rules fuzz target's input (trimmed to where it goes wrong): toml++ asserted on the `^` after `[`,
    /// aborting `kevctl rules check`, or kevd itself when it read or reloaded the file.
    static let caretHeader = """
        [^[rule]]
        name = "sh-array"
        match = []
        shell = true
        run = ["cp \\"$1\\" \\"${HOME}/backup\\" && { echo done; }", "{key}", "--"]
        """

    @Test("a table header without a key is an error at its place", arguments: [
        (caretHeader, 1, 2), ("[@]", 1, 2), ("[ !x]", 1, 3), ("[[ ^]]", 1, 4), ("a = 1\n  [", 2, 4),
        ("[daemon]\n[\u{e9}]", 2, 2), ("\u{FEFF}[# a comment, not a key", 1, 2),
    ] as [(String, Int, Int)])
    func headerWithoutKey(_ text: String, _ line: Int, _ column: Int) throws {
        let found = try #require(self.error(text))
        #expect(found.line == line && found.column == column, "\(found)")
        #expect(found.message.hasPrefix("a table header needs a key after '['"), "\(found)")
    }

    @Test("a '[' inside a multi-line string or array is not a header")
    func bracketsInValues() throws {
        let source = """
            [[rule]]
            name = "shell"
            match = []
            shell = true
            run = \"\"\"
            [ ! -e /tmp/x ] && echo missing
            [^ this is text
            \"\"\"

            [[rule]]
            name = "nested"
            match = [
              "key~^/srv/",
            [
            ]
            ]
            run = ["true"]
            """
        #expect(TOMLLocator.unparsableHeader(in: source) == nil)
        #expect(TOMLLocator.unparsableHeader(in: "[daemon]\n[ \"quoted key\" ]\n[[watch]]\n[ a . b ]\n[]") == nil)
    }
}

@Suite("Reliability: fuzz regressions (TOML arrays)")
struct ReliabilityFuzzTOMLArrayRegressionTests: ConfigText {
    /// The rules fuzz target's second finding: a `}` where an array expects an element made toml++ assert.
    @Test("a '}' as an array element is an error at its place", arguments: [
        ("a = [1, }]", 1, 9), ("a = [[}]]", 1, 7), ("[daemon]\nx = {b = [}]}", 2, 11), ("a = [\n  # c\n  }\n]", 3, 3),
    ] as [(String, Int, Int)])
    func braceInArray(_ text: String, _ line: Int, _ column: Int) throws {
        let found = try #require(self.error(text))
        #expect(found.line == line && found.column == column, "\(found)")
        #expect(found.message == "expected an array element or ']', found '}'", "\(found)")
    }

    @Test("braces in strings, comments, headers and inline tables are not array elements")
    func bracesElsewhere() {
        let source = """
            [[rule]]  # [}
            name = "a}"
            match = ["key=}", 'x}', \"\"\"
            }\"\"\", { a = 1 }]
            run = [
              # }
              "{key}",
            ]
            ["quoted}key"]
            t = { a = [1, 2], b = { c = [] } }
            """
        #expect(TOMLLocator.unparsableArrayElement(in: source) == nil)
    }
}
