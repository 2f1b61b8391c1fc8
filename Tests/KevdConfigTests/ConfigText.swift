import Testing

@testable import KevdConfig
import KevdSpec

/// Config suites parse TOML text as if it were /etc/kevd/kevd.toml and look at the one error it gives.
protocol ConfigText {}

extension ConfigText {
    func parse(_ text: String) throws -> Config {
        try ConfigLoader.parse(source: text, file: "/etc/kevd/kevd.toml")
    }

    /// The ConfigError `text` gives, or nil when it parses (another kind of error is a test failure).
    func error(_ text: String) -> ConfigError? {
        do {
            _ = try parse(text)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            Issue.record("unexpected error type: \(error)")
            return nil
        }
    }
}
