import Foundation
import Glibc
import KevdTestSupport
import Testing

/// Log lines never make the loop wait: stderr is written by a thread of its own through a bounded queue, and
/// what does not fit is dropped, counted, and said once stderr flows again.
@Suite("log queue", .serialized)
struct LogQueueTests {
    static let config = "[daemon]\nstate_dir = \"state\"\nsocket = \"state/kevd.sock\"\nlog_level = \"info\"\n"
    static let cause = "01a2080d-6fe8-7439-8963-e56c7bd2e211"

    @Test("stderr a pipe nobody reads: kevd still answers and publishes; reading it then shows the drop notice, and every line is accounted for")
    func unreadStderr() throws {
        let dir = try TemporaryDirectory()
        let fifo = dir.file("stderr.fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        // The read end, opened first (so kevd's open for writing does not wait) and never read until the end.
        let reader = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        #expect(reader >= 0)
        defer { close(reader) }
        // The smallest pipe (one page): a few dozen lines fill it.
        #expect(fcntl(reader, 1031 /* F_SETPIPE_SZ, which Glibc leaves out (_GNU_SOURCE) */, 4096) >= 0)
        let daemon = try DaemonProcess(
            config: Self.config, in: dir, launcher: ["/bin/sh", "-c", "exec \"$0\" \"$@\" 2>'\(fifo)'"])
        let socket = dir.file("state/kevd.sock")

        // Each emit from too deep a rule chain is refused with a warning log line (about 130 bytes) and a
        // kevd/error event: 4,000 of them are twice what the pipe and the log queue (256 KiB) hold together.
        let refusals = 4000
        let client = try RawClient(socket)
        for i in 0..<refusals {
            let reply = try client.request(
                #"{"op":"emit","type":"deep","key":"k\#(i)","cause":"\#(Self.cause)","depth":99}"#)
            guard reply["ok"] as? Bool == false else {
                Issue.record("emit \(i) was not refused: \(reply)")
                break
            }
        }
        _ = try daemon.waitForCount("every refusal published", count: refusals) {
            $0.isEvent("kevd", "error", key: "rules") && $0.data["reason"] as? String == "cascade_limit"
        }
        let status = try client.request(#"{"op":"status"}"#)
        #expect(status["ok"] as? Bool == true)
        let dropped = try #require(((status["stats"] as? [String: Any])?["log_lines_dropped"] as? NSNumber)?.intValue)
        #expect(dropped > 0, "the pipe and the queue should have overflowed")

        // Now read: the queued lines come out, and where lines were lost a notice says how many, in the log's
        // own format. Every refusal is either a line that arrived or one the notices count.
        var text = Data()
        var noticed = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = Date().addingTimeInterval(30)
        while noticed < dropped && Date() < deadline {
            var ready = pollfd(fd: reader, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, 200)
            let n = read(reader, &buffer, buffer.count)
            if n > 0 { text.append(buffer, count: n) }
            noticed = Self.noticedDrops(text)
        }
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
        #expect(noticed == dropped, "the notices count what status counted")
        let notice = lines.first { $0.contains("log lines dropped") }
        #expect(notice?.range(of: #"^\d{4}-\d\d-\d\dT[0-9:.]+Z warning kevd: log lines dropped: stderr was not keeping up log\.dropped=\d+$"#,
                              options: .regularExpression) != nil, "\(notice ?? "no notice")")
        let arrived = lines.filter { $0.contains("emit refused: cascade limit") }.count
        #expect(arrived + dropped == refusals, "\(arrived) lines arrived, \(dropped) dropped, \(refusals) logged")
        #expect(lines.contains { $0.contains("kevd started") }, "lines before the overflow are kept")

        // And the loop is still answering, with stderr flowing again.
        #expect(try client.request(#"{"op":"status"}"#)["ok"] as? Bool == true)
        #expect(daemon.stop() == 0)
    }

    /// The sum of `log.dropped=N` over the notices in `text`.
    static func noticedDrops(_ text: Data) -> Int {
        String(decoding: text, as: UTF8.self).split(separator: "\n").reduce(0) { sum, line in
            guard line.contains("log lines dropped"), let range = line.range(of: "log.dropped=") else { return sum }
            return sum + (Int(line[range.upperBound...]) ?? 0)
        }
    }
}
