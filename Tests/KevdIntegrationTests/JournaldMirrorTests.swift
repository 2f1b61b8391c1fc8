import Foundation
import Glibc
import KevdTestSupport
import Testing

/// A stand-in for journald: a datagram socket the test binds, which kevd finds at `/run/systemd/journal/socket`
/// because it runs in a private mount namespace with a fresh `/run` and this directory bound there. The host's
/// journal is never touched.
final class FakeJournald {
    let directory: TemporaryDirectory
    let fd: Int32

    init() throws {
        directory = try TemporaryDirectory()
        let path = directory.file("socket")
        fd = try UnixSocket.bindDatagram(path)
        chmod(path, 0o666)
    }

    deinit { close(fd) }

    /// Runs kevd with this socket as the journal's: a private mount namespace, a tmpfs on /run, this directory
    /// bound on /run/systemd/journal; `sh` then execs kevd, so the pid stays kevd's.
    var launcher: [String] {
        [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            #"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && mount --bind "$0" /run/systemd/journal && exec "$@""#,
            directory.path,
        ]
    }

    /// The next entry, parsed from journald's native protocol: `KEY=value\n`, or `KEY\n`, a little-endian
    /// 64-bit length, the value's bytes and `\n` for values that hold a newline or binary data.
    func entry(timeout: Double = 10) throws -> [String: String] {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else {
            throw DaemonProcess.Timeout(what: "a journal entry", seen: 0, stderr: "")
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return try Self.parse(Array(buffer[0..<n]))
    }

    struct Malformed: Error {}

    static func parse(_ bytes: [UInt8]) throws -> [String: String] {
        var fields: [String: String] = [:]
        var i = 0
        while i < bytes.count {
            guard let end = bytes[i...].firstIndex(where: { $0 == 0x0A || $0 == UInt8(ascii: "=") }) else { throw Malformed() }
            let name = String(decoding: bytes[i..<end], as: UTF8.self)
            if bytes[end] == UInt8(ascii: "=") {
                guard let newline = bytes[end...].firstIndex(of: 0x0A) else { throw Malformed() }
                fields[name] = String(decoding: bytes[(end + 1)..<newline], as: UTF8.self)
                i = newline + 1
            } else {
                guard end + 9 <= bytes.count else { throw Malformed() }
                var size = 0
                for k in 0..<8 { size |= Int(bytes[end + 1 + k]) << (8 * k) }
                let start = end + 9
                guard start + size < bytes.count, bytes[start + size] == 0x0A else { throw Malformed() }
                fields[name] = String(decoding: bytes[start..<(start + size)], as: UTF8.self)
                i = start + size + 1
            }
        }
        return fields
    }
}

@Suite("journald mirror", .enabled(if: Root.shouldRun, Root.reason), .serialized)
struct JournaldMirrorTests {
    @Test("a file event is mirrored as a structured entry; the filter keeps kevd's own events out")
    func fileEventMirrored() throws {
        try Root.check()
        let journald = try FakeJournald()
        let config = """
            [daemon]
            state_dir = "state"
            socket = "state/kevd.sock"
            [[watch]]
            path = "watched"
            events = ["create"]
            [journald]
            mirror = true
            filter = ["source=inotify"]
            """
        let directory = try TemporaryDirectory()
        mkdir(directory.file("watched"), 0o755)
        let daemon = try DaemonProcess(config: config, in: directory, launcher: journald.launcher)
        let path = directory.file("watched/hello")
        close(open(path, O_CREAT | O_WRONLY, 0o644))  // In place: FileManager would create a temporary and rename it.
        let event = try daemon.waitFor("create hello") { $0.isEvent("inotify", "create", key: path) }
        let entry = try journald.entry()
        #expect(entry["MESSAGE"] == "inotify create \(path)")
        #expect(entry["MESSAGE_ID"] == "334e16b1a3354156b57dd69a1dc33d70")
        #expect(entry["PRIORITY"] == "6")
        #expect(entry["SYSLOG_IDENTIFIER"] == "kevd")
        #expect(entry["KEVD_SEQ"] == event.seq.map { "\($0)" })
        #expect(entry["KEVD_ID"] == event["id"] as? String)
        #expect(entry["KEVD_SOURCE"] == "inotify")
        #expect(entry["KEVD_TYPE"] == "create")
        #expect(entry["KEVD_KEY"] == path)
        let line = try JSONSerialization.jsonObject(with: Data((entry["KEVD_DATA"] ?? "").utf8)) as? [String: Any]
        #expect(line?.seq == event.seq)
        #expect(line?.key == path)
        #expect(daemon.stop() == 0)
        // kevd/started and kevd/stopping did not pass the filter: nothing else arrived.
        var p = pollfd(fd: journald.fd, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 0) == 0, "only the matching event was mirrored")
    }
}
