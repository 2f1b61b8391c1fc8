import Testing

@testable import KevdConfig

@Suite("configuration: per-uid limits, log format, journald mirror")
struct LimitsConfigTests: ConfigText {
    @Test("per-uid limits: defaults, 0 for unlimited, a burst of two seconds' worth unless given")
    func perUIDLimits() throws {
        let defaults = try parse("").server
        #expect(defaults.maxSubscriptionsPerUID == 64)
        #expect(defaults.emitRatePerUID == 1000 && defaults.emitBurstPerUID == 2000)
        let rate = try parse("[server]\nemit_rate_per_uid = 50\n").server
        #expect(rate.emitRatePerUID == 50 && rate.emitBurstPerUID == 100)
        let both = try parse("[server]\nemit_burst_per_uid = 7\nemit_rate_per_uid = 3\nmax_subscriptions_per_uid = 0\n").server
        #expect(both.emitRatePerUID == 3 && both.emitBurstPerUID == 7 && both.maxSubscriptionsPerUID == 0)
        #expect(try parse("[server]\nemit_rate_per_uid = 0\n").server.emitRatePerUID == 0)
        #expect(error("[server]\nemit_rate_per_uid = -1\n")?.description.contains("emit_rate_per_uid") == true)
        #expect(error("[server]\nemit_burst_per_uid = 0\n")?.description.contains("emit_burst_per_uid") == true)
        #expect(error("[server]\nmax_subscriptions_per_uid = \"many\"\n")?.description.contains("max_subscriptions_per_uid") == true)
    }

    @Test("log_format: auto by default, journald or plain; anything else is an error")
    func logFormat() throws {
        #expect(try parse("").daemon.logFormat == "auto")
        #expect(try parse("[daemon]\nlog_format = \"journald\"\n").daemon.logFormat == "journald")
        #expect(error("[daemon]\nlog_format = \"json\"\n")?.description.contains("unknown log_format 'json'") == true)
    }

    @Test("[journald]: mirror off by default; a bad filter term is an error at its line")
    func journaldMirror() throws {
        #expect(try parse("").journald == JournaldSettings())
        let on = try parse("[journald]\nmirror = true\nfilter = [\"source=udev\", \"type=add\"]\n").journald
        #expect(on.mirror && on.filter == ["source=udev", "type=add"])
        #expect(error("[journald]\nmirror = true\nfilter = [\"colour=red\"]\n")?.description.contains(":3:") == true)
        #expect(error("[journald]\nmirrored = true\n")?.description.contains("mirrored") == true)
    }
}
