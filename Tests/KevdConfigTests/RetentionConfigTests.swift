import Testing

@testable import KevdConfig
import KevdSpec

@Suite("configuration: journal retention")
struct RetentionConfigTests: ConfigText {
    @Test("max_bytes_hard defaults to twice max_bytes, none without max_bytes; retention_interval to 60s")
    func defaults() throws {
        #expect(try parse("[journal]\nmax_bytes = \"1M\"\n").journal.effectiveMaxBytesHard == 2 << 20)
        #expect(try parse("[journal]\nmax_age = \"1d\"\n").journal.effectiveMaxBytesHard == 0)
        #expect(try parse("").journal.retentionIntervalNanoseconds == 60_000_000_000)
        #expect(try parse("").journal.minFreeBytes == 64 << 20)
        #expect(try parse("[journal]\nmin_free = 0\n").journal.minFreeBytes == 0)
        let set = try parse("[journal]\nmax_bytes = \"1M\"\nmax_bytes_hard = \"5M\"\nretention_interval = \"10s\"\n").journal
        #expect(set.effectiveMaxBytesHard == 5 << 20 && set.retentionIntervalNanoseconds == 10_000_000_000)
        #expect(try parse("[journal]\nmax_bytes = \"1M\"\nmax_bytes_hard = 0\n").journal.effectiveMaxBytesHard == 0)
    }

    @Test("a hard ceiling under max_bytes and an interval out of range are errors at their line and column")
    func errors() throws {
        #expect(error("[journal]\nmax_bytes = \"2M\"\nmax_bytes_hard = \"1M\"\n")?.description
            == "/etc/kevd/kevd.toml:3:1: 'max_bytes_hard' (1048576) must be at least 'max_bytes' (2097152), or 0 for no ceiling")
        #expect(error("[journal]\nmax_bytes_hard = \"1M\"\n")?.description
            == "/etc/kevd/kevd.toml:2:1: 'max_bytes_hard' needs 'max_bytes' or 'max_age': without them retention does not run")
        #expect(error("[journal]\nretention_interval = \"10ms\"\n")?.description
            == "/etc/kevd/kevd.toml:2:1: 'retention_interval' must be between 1s and 1d")
    }
}
