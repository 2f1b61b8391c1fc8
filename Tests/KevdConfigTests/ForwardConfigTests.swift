import Testing

@testable import KevdConfig
import KevdSpec

@Suite("configuration: [[forward]]")
struct ForwardConfigTests: ConfigText {
    @Test("defaults: name nats, the default subject template, stream KEVD, one replica, a 2 minute window")
    func defaults() throws {
        let config = try parse("[[forward]]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\n")
        let spec = try #require(config.forwards.first)
        #expect(spec.name == "nats")
        #expect(spec.urls == ["nats://127.0.0.1:4222"])
        #expect(spec.subject.description == "kevd.{host}.{source}.{type}")
        #expect(spec.subject.streamSubject == "kevd.*.*.*")
        #expect(spec.stream == "KEVD" && spec.createStream && spec.replicas == 1)
        #expect(spec.duplicateWindowNanoseconds == 120_000_000_000)
        #expect(spec.filter.isEmpty)
    }

    @Test("every key is read; relative files resolve against the config's folder")
    func full() throws {
        let config = try parse(
            """
            [[forward]]
            name = "fleet"
            type = "nats"
            url = ["nats://a:4222", "nats://b:4222"]
            credentials = "kevd.creds"
            tls = true
            tls_ca = "/etc/ssl/ca.pem"
            subject = "fleet.{host}.{type}"
            filter = ["source=udev"]
            stream = "FLEET"
            create_stream = false
            replicas = 3
            duplicate_window = "10m"
            max_in_flight = 128
            ack_timeout = "2s"
            """)
        let spec = try #require(config.forwards.first)
        #expect(spec.name == "fleet" && spec.urls.count == 2)
        #expect(spec.credentials == "/etc/kevd/kevd.creds")
        #expect(spec.tls && spec.tlsCA == "/etc/ssl/ca.pem")
        #expect(spec.subject.parts == [.literal("fleet"), .host, .type])
        #expect(spec.filter == ["source=udev"])
        #expect(spec.stream == "FLEET" && !spec.createStream && spec.replicas == 3)
        #expect(spec.duplicateWindowNanoseconds == 600_000_000_000)
        #expect(spec.maxInFlight == 128 && spec.ackTimeoutNanoseconds == 2_000_000_000)
    }

    @Test("bad values are errors at their line and column")
    func errors() {
        let cases: [(String, Int, String)] = [
            ("[[forward]]\ntype = \"kafka\"\nurl = \"x\"\n", 2, "unknown forward type"),
            ("[[forward]]\ntype = \"nats\"\n", 1, "needs a 'url'"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nsubject = \"kevd.h{host}\"\n", 4, "whole part"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nsubject = \"kevd..x\"\n", 4, "empty part"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nsubject = \"kevd.>\"\n", 4, "'>'"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nfilter = [\"source~(\"]\n", 4, "filter term"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nname = \"../x\"\n", 4, "bad forward name"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nnkey = \"UABC\"\n", 4, "go together"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nreplicas = 7\n", 4, "from 1 to 5"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nstream = \"a.b\"\n", 4, "bad stream name"),
            ("[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\nbogus = 1\n", 4, "unknown key 'bogus'"),
            (
                "[[forward]]\ntype = \"nats\"\nurl = \"nats://x\"\n[[forward]]\ntype = \"nats\"\nurl = \"nats://y\"\n", 4,
                "duplicate forward name"
            ),
        ]
        for (text, line, message) in cases {
            let problem = error(text)
            #expect(problem?.line == line, "\(text)")
            #expect(problem?.message.contains(message) == true, "\(problem?.message ?? "no error") for \(text)")
        }
    }
}
