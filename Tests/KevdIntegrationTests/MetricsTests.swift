import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A config with a `[daemon] stats_interval`, a watch on `<dir>/w` and rules from `<dir>/rules`.
private func statsConfig(_ interval: String, extra: String = "") -> String {
    """
    [daemon]
    state_dir = "state"
    socket = "state/kevd.sock"
    log_level = "warning"
    stats_interval = "\(interval)"

    [[watch]]
    path = "w"

    [rules]
    directories = ["rules"]
    \(extra)
    """
}

/// A rule that runs `/bin/true` for every `emit`/`ping`.
private func writePingRule(_ dir: TemporaryDirectory) throws {
    try writeRuleFile(dir, "10-ping.toml", """
        [[rule]]
        name = "ping"
        match = ["source=emit", "type=ping"]
        run = ["/bin/true"]
        """)
}

private let knownSources = ["inotify", "udev", "timer", "signal", "emit", "kevd"]

extension Dictionary where Key == String, Value == Any {
    func number(_ name: String) -> Double? { (self.data[name] as? NSNumber)?.doubleValue }
}

/// The Prometheus text exposition format, strictly: every line is a `# HELP`, a `# TYPE` or a sample
/// `name{label="value",...} value`; a family's TYPE comes before its samples, once; every sample belongs to a
/// family with a TYPE (a counter's samples carry its name, `_total` included); values parse as doubles.
struct Exposition {
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct Malformed: Error, CustomStringConvertible {
        let description: String
    }

    var types: [String: String] = [:]
    var help: [String: String] = [:]
    var samples: [Sample] = []

    init(_ text: String) throws {
        guard text.hasSuffix("\n") else { throw Malformed(description: "the text does not end with a newline") }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            let line = String(line)
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let rest = line.dropFirst(7)
                guard let space = rest.firstIndex(of: " ") else { throw Malformed(description: "no text: \(line)") }
                let name = String(rest[..<space])
                let value = String(rest[rest.index(after: space)...])
                guard Self.isMetricName(name) else { throw Malformed(description: "bad metric name: \(line)") }
                if line.hasPrefix("# HELP ") {
                    guard help.updateValue(value, forKey: name) == nil else { throw Malformed(description: "second HELP: \(line)") }
                } else {
                    guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(value) else {
                        throw Malformed(description: "bad type: \(line)")
                    }
                    guard types.updateValue(value, forKey: name) == nil else { throw Malformed(description: "second TYPE: \(line)") }
                    guard !samples.contains(where: { $0.name == name }) else {
                        throw Malformed(description: "TYPE after its samples: \(line)")
                    }
                }
                continue
            }
            guard !line.hasPrefix("#"), !line.isEmpty else { throw Malformed(description: "unexpected line: '\(line)'") }
            let sample = try Self.sample(line)
            guard types[sample.name] != nil else { throw Malformed(description: "a sample without a TYPE: \(line)") }
            guard !samples.contains(where: { $0.name == sample.name && $0.labels == sample.labels }) else {
                throw Malformed(description: "a repeated sample: \(line)")
            }
            samples.append(sample)
        }
    }

    static func isMetricName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || first == ":" || first.properties.isAlphabetic,
            first.isASCII
        else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0 == ":" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
    }

    /// `name value` or `name{a="x",b="y"} value` (escapes `\\`, `\"`, `\n` in label values).
    static func sample(_ line: String) throws -> Sample {
        let chars = Array(line)
        var i = 0
        while i < chars.count, chars[i] != "{", chars[i] != " " { i += 1 }
        let name = String(chars[0..<i])
        guard isMetricName(name) else { throw Malformed(description: "bad metric name: \(line)") }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while i < chars.count, chars[i] != "}" {
                let start = i
                while i < chars.count, chars[i] != "=" { i += 1 }
                let label = String(chars[start..<i])
                guard isMetricName(label), !label.contains(":"), i + 1 < chars.count, chars[i + 1] == "\"" else {
                    throw Malformed(description: "bad label: \(line)")
                }
                i += 2
                var value = ""
                while i < chars.count, chars[i] != "\"" {
                    if chars[i] == "\\" {
                        i += 1
                        guard i < chars.count else { break }
                        switch chars[i] {
                        case "n": value.append("\n")
                        case "\\", "\"": value.append(chars[i])
                        default: throw Malformed(description: "bad escape: \(line)")
                        }
                    } else {
                        value.append(chars[i])
                    }
                    i += 1
                }
                guard i < chars.count else { throw Malformed(description: "unterminated label value: \(line)") }
                i += 1
                guard labels.updateValue(value, forKey: label) == nil else { throw Malformed(description: "repeated label: \(line)") }
                if i < chars.count, chars[i] == "," { i += 1 }
            }
            guard i < chars.count else { throw Malformed(description: "unterminated labels: \(line)") }
            i += 1
        }
        guard i < chars.count, chars[i] == " " else { throw Malformed(description: "no value: \(line)") }
        let text = String(chars[(i + 1)...])
        // An optional timestamp would follow a second space; kevctl writes none.
        guard let value = Double(text), !text.contains(" ") else { throw Malformed(description: "bad value: \(line)") }
        return Sample(name: name, labels: labels, value: value)
    }

    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

@Suite("stats and metrics", .serialized)
struct MetricsTests {
    @Test("a kevd/stats event counts exactly the events before it by source, and the rule runs, subscribers and syncs")
    func statsEventCounts() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try writePingRule(dir)
        let daemon = try DaemonProcess(config: statsConfig("200ms"), in: dir)
        let subscriber = try RawClient(daemon.directory.file("state/kevd.sock"))
        #expect(try subscriber.request(#"{"op":"subscribe","filter":["source=emit"]}"#)["ok"] as? Bool == true)
        for name in ["a", "b"] { try writeFile(dir.file("w/" + name)) }
        try daemon.waitFor("b written") { $0.isEvent("inotify", "close_write", key: dir.file("w/b")) }
        try emit(daemon, "ping", key: "k")
        try emit(daemon, "other", key: "k")
        let lastEmit = try emit(daemon, "other", key: "k")
        let done = try daemon.waitFor("the ping rule's run") { $0.isRule("succeeded", "ping") }
        let after = max(lastEmit, done.seq ?? 0)

        let stats = try daemon.waitFor("a stats event after the test's events") {
            $0.isEvent("kevd", "stats", key: "stats") && ($0.seq ?? 0) > after
        }
        let seq = try #require(stats.seq)
        let before = daemon.received.filter { ($0.seq ?? .max) < seq }
        var total = 0
        for source in knownSources {
            let counted = stats.int("events_" + source)
            #expect(counted == before.filter { $0.source == source }.count, "events_\(source)")
            total += counted ?? 0
        }
        // A fresh journal starts at seq 1: everything before the stats event is counted, under one source each.
        #expect(total == seq - 1)
        #expect(stats.int("events_emit") == 3)
        #expect(stats.int("rule_runs") == 1)
        #expect(stats.int("rule_failures") == 0)
        #expect(stats.int("rules_running") == 0)
        #expect(stats.int("subscribers") == 1)
        // A live subscriber is in step with the head, matching or not.
        #expect(stats.int("subscriber_max_lag") == 0)
        #expect(stats.int("overflows_inotify") == 0)
        #expect(stats.int("overflows_udev") == 0)
        #expect(stats.int("journal_segments") == 1)
        #expect((stats.int("journal_bytes") ?? 0) > 0)
        // Every emit reply waited for a sync, so at least one fdatasync was measured.
        #expect((stats.int("fsync_count") ?? 0) >= 1)
        #expect((stats.number("fsync_seconds_total") ?? -1) >= 0)
        #expect((stats.number("uptime_seconds") ?? 0) > 0)

        // Rates are the interval's events over its length: checked against the previous stats event's totals.
        let interval = try #require(stats.number("interval_seconds"))
        #expect(interval > 0)
        let previous = before.last { $0.isEvent("kevd", "stats") }
        for source in knownSources {
            let delta = (stats.int("events_" + source) ?? 0) - (previous?.int("events_" + source) ?? 0)
            let rate = try #require(stats.number("rate_" + source))
            #expect(abs(rate * interval - Double(delta)) < 1e-6 * max(1, Double(delta)), "rate_\(source)")
        }
        let windowSyncs = try #require(stats.int("fsync_interval_count"))
        let mean = try #require(stats.number("fsync_mean_seconds"))
        let longest = try #require(stats.number("fsync_max_seconds"))
        if windowSyncs == 0 {
            #expect(mean == 0 && longest == 0)
        } else {
            #expect(longest >= mean && mean >= 0)
        }
        // The interval had turns (events were published in it); none as long as the interval itself.
        let longestTurn = try #require(stats.number("loop_turn_max_seconds"))
        #expect(longestTurn > 0 && longestTurn < interval, "loop_turn_max_seconds \(longestTurn)")
        #expect(stats.int("log_lines_dropped") == 0)

        // status carries the same figures, under the same names.
        let status = try kevctl(["status", "--json", "--socket", dir.file("state/kevd.sock")])
        let reply = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let member = try #require(reply?["stats"] as? [String: Any])
        #expect(Set(member.keys) == Set(stats.data.keys))
        #expect((member["events_emit"] as? NSNumber)?.intValue == 3)
        #expect(daemon.stop() == 0)
    }

    @Test("kevctl metrics prints the same figures in the Prometheus text format, to stdout or atomically to a file")
    func kevctlMetrics() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        try writePingRule(dir)
        let daemon = try DaemonProcess(config: statsConfig("1m"), in: dir)
        let socket = dir.file("state/kevd.sock")
        let subscriber = try RawClient(socket)
        #expect(try subscriber.request(#"{"op":"subscribe"}"#)["ok"] as? Bool == true)
        for name in ["x", "y", "z"] { try writeFile(dir.file("w/" + name)) }
        try daemon.waitFor("z written") { $0.isEvent("inotify", "close_write", key: dir.file("w/z")) }
        try emit(daemon, "ping", key: "k")
        try emit(daemon, "ping", key: "k")
        _ = try daemon.waitForCount("two ping runs", count: 2) { $0.isRule("succeeded", "ping") }
        let inotifyEvents = daemon.received.filter { $0.source == "inotify" }.count

        let result = try kevctl(["metrics", "--socket", socket])
        #expect(result.status == 0, "\(result.stderr)")
        let metrics = try Exposition(result.stdout)
        #expect(metrics.value("kevd_events_total", ["source": "emit"]) == 2)
        #expect(metrics.value("kevd_events_total", ["source": "inotify"]) == Double(inotifyEvents))
        #expect(metrics.value("kevd_events_total", ["source": "udev"]) == 0)
        #expect((metrics.value("kevd_events_total", ["source": "kevd"]) ?? 0) >= 5)  // started, 2 × started/succeeded
        #expect(metrics.value("kevd_rule_runs_total") == 2)
        #expect(metrics.value("kevd_rule_failures_total") == 0)
        #expect(metrics.value("kevd_rule_scripts_running") == 0)
        #expect(metrics.value("kevd_subscribers") == 1)
        #expect(metrics.value("kevd_overflows_total", ["source": "inotify"]) == 0)
        #expect(metrics.value("kevd_overflows_total", ["source": "udev"]) == 0)
        #expect(metrics.value("kevd_journal_segments") == 1)
        #expect((metrics.value("kevd_journal_size_bytes") ?? 0) > 0)
        #expect((metrics.value("kevd_journal_fsyncs_total") ?? 0) >= 1)
        #expect(metrics.value("kevd_journal_fsync_seconds_total") != nil)
        #expect((metrics.value("kevd_uptime_seconds") ?? 0) > 0)
        // Turns ran since the start (the interval is a minute, so not reset): a real duration, far below a second.
        let longestTurn = try #require(metrics.value("kevd_loop_turn_max_seconds"))
        #expect(longestTurn > 0 && longestTurn < 1, "kevd_loop_turn_max_seconds \(longestTurn)")
        #expect(metrics.value("kevd_log_lines_dropped_total") == 0)
        // Prometheus conventions: counters end in _total; every family says what it is.
        for (name, type) in metrics.types {
            #expect((type == "counter") == name.hasSuffix("_total"), "\(name) is a \(type)")
            #expect(!(metrics.help[name] ?? "").isEmpty, "\(name) has no HELP")
        }

        // --output: the same text in the file, mode 0644, and no temporary file left beside it.
        try makeDirectory(dir.file("textfile"))
        let written = try kevctl(["metrics", "--socket", socket, "--output", dir.file("textfile/kevd.prom")])
        #expect(written.status == 0, "\(written.stderr)")
        #expect(written.stdout.isEmpty)
        let file = try Exposition(try String(contentsOfFile: dir.file("textfile/kevd.prom"), encoding: .utf8))
        #expect(file.value("kevd_events_total", ["source": "emit"]) == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("textfile")) == ["kevd.prom"])
        var st = stat()
        #expect(stat(dir.file("textfile/kevd.prom"), &st) == 0 && st.st_mode & 0o777 == 0o644)

        let nowhere = try kevctl(["metrics", "--socket", socket, "--output", dir.file("missing/kevd.prom")])
        #expect(nowhere.status == 1)
        #expect(nowhere.stderr.contains("kevctl: --output: cannot create"), "\(nowhere.stderr)")
        #expect(daemon.stop() == 0)
    }

    @Test("stats_interval = \"0\" publishes no stats; a HUP reload turns them on and off again")
    func disabledAndReloaded() throws {
        let dir = try TemporaryDirectory()
        try makeDirectory(dir.file("w"))
        let timer = "\n[[timer]]\nname = \"tick\"\nevery = \"300ms\"\n"
        let daemon = try DaemonProcess(config: statsConfig("0", extra: timer), in: dir)
        let isStats: ([String: Any]) -> Bool = { $0.isEvent("kevd", "stats") }
        let isTick: ([String: Any]) -> Bool = { $0.isEvent("timer", "fired", key: "tick") }
        // Three ticks take 600 ms or more: long enough for three 200 ms intervals, had any been armed.
        _ = try daemon.waitForCount("three ticks", count: 3, isTick)
        #expect(!daemon.received.contains(where: isStats))

        try statsConfig("200ms", extra: timer).write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let on = try daemon.waitFor("reloaded with 200ms") { $0.isEvent("kevd", "reloaded", key: "config") }
        try daemon.waitFor("a stats event after the reload") {
            isStats($0) && ($0.seq ?? 0) > (on.seq ?? .max)
        }

        try statsConfig("0", extra: timer).write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let off = try daemon.waitFor("reloaded with 0") {
            $0.isEvent("kevd", "reloaded", key: "config") && ($0.seq ?? 0) > (on.seq ?? .max)
        }
        let offSeq = try #require(off.seq)
        _ = try daemon.waitForCount("three ticks after turning stats off", count: 3) { isTick($0) && ($0.seq ?? 0) > offSeq }
        #expect(!daemon.received.contains { isStats($0) && ($0.seq ?? 0) > offSeq })
        #expect(daemon.stop() == 0)
    }

    @Test("a bad stats_interval names file, line and column, and exits 2")
    func badInterval() throws {
        for (value, message) in [
            ("\"10ms\"", "'stats_interval' must be \"0\" (off) or between 100ms and 1d"),
            ("\"2d\"", "'stats_interval' must be \"0\" (off) or between 100ms and 1d"),
            ("\"soon\"", "bad duration 'soon'"),
            ("60", "'stats_interval' must be a string"),
        ] {
            let result = try ConfigErrorTests().check("[daemon]\nstate_dir = \"s\"\n\n  stats_interval = \(value)\n")
            #expect(result.status == 2)
            #expect(result.stderr.contains("FILE:4:3: \(message)"), "\(result.stderr)")
        }
    }
}
