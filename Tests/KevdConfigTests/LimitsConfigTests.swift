import Testing

@testable import KevdConfig
import KevdSpec

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

@Suite("configuration: connection admission ([server] max_clients_per_uid, reserved_clients, first_request_timeout)")
struct AdmissionConfigTests: ConfigText {
    @Test("defaults: 128 connections per uid, 8 reserved for root and kevd, 10 s for the first request")
    func defaults() throws {
        let server = try parse("").server
        #expect(server.maxClientsPerUID == 128 && server.maxClientsPerUID < server.maxClients)
        #expect(server.reservedClients == 8)
        #expect(server.firstRequestTimeoutNanoseconds == 10_000_000_000)
    }

    @Test("values are read; 0 turns the per-uid limit, the reserve and the deadline off")
    func values() throws {
        let server = try parse(
            "[server]\nmax_clients = 40\nmax_clients_per_uid = 5\nreserved_clients = 3\nfirst_request_timeout = \"1500ms\"\n"
        ).server
        #expect(server.maxClients == 40 && server.maxClientsPerUID == 5 && server.reservedClients == 3)
        #expect(server.firstRequestTimeoutNanoseconds == 1_500_000_000)
        let off = try parse("[server]\nmax_clients_per_uid = 0\nreserved_clients = 0\nfirst_request_timeout = \"0\"\n").server
        #expect(off.maxClientsPerUID == 0 && off.reservedClients == 0 && off.firstRequestTimeoutNanoseconds == 0)
    }

    @Test("a small max_clients without reserved_clients keeps half for other users")
    func smallMaxClients() throws {
        let server = try parse("[server]\nmax_clients = 4\n").server
        #expect(server.reservedClients == 2)
        #expect(try parse("[server]\nmax_clients = 1\n").server.reservedClients == 0)
    }

    @Test("errors name the key at its line and column")
    func errors() throws {
        let reserve = error("[server]\nmax_clients = 10\nreserved_clients = 10\n")
        #expect(reserve?.description.contains("reserved_clients") == true)
        #expect(reserve?.description.contains("/etc/kevd/kevd.toml:3:1") == true)
        // The order of the keys does not matter.
        #expect(error("[server]\nreserved_clients = 12\nmax_clients = 10\n")?.description.contains(":2:1") == true)
        let negative = error("[server]\n\nmax_clients_per_uid = -1\n")
        #expect(negative?.description.contains("/etc/kevd/kevd.toml:3:1") == true)
        #expect(negative?.description.contains("'max_clients_per_uid' must be a whole number") == true)
        let short = error("[server]\nfirst_request_timeout = \"10ms\"\n")
        #expect(short?.description.contains("'first_request_timeout' must be") == true)
        #expect(short?.description.contains(":2:1") == true)
        #expect(error("[server]\nfirst_request_timeout = \"soon\"\n")?.description.contains("bad duration 'soon'") == true)
        #expect(error("[server]\nfirst_request_timeout = 10\n")?.description.contains("first_request_timeout") == true)
    }
}
