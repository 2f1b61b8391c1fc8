import Foundation
import Glibc

/// A port nothing listens on now, from the kernel's ephemeral range.
public func freePort() -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int32(UInt16(bigEndian: address.sin_port))
}

/// A nats-server with JetStream on loopback, storing in `store`; `start` again after `kill` reuses port and store.
public final class NatsServer: @unchecked Sendable {
    public let name: String
    public let port: Int32
    public let store: String
    public let cluster: (port: Int32, routes: [Int32])?
    private var process: Process?

    public static let binary = "/usr/sbin/nats-server"

    public init(name: String, store: String, cluster: (port: Int32, routes: [Int32])? = nil) throws {
        self.name = name
        self.store = store
        self.cluster = cluster
        port = freePort()
        try? FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
    }

    public var url: String { "nats://127.0.0.1:\(port)" }

    /// Starts it and waits until it accepts connections.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        var arguments = ["-a", "127.0.0.1", "-p", "\(port)", "-js", "-sd", store, "-n", name]
        if let cluster {
            arguments += [
                "--cluster_name", "kevdtest", "--cluster", "nats://127.0.0.1:\(cluster.port)",
                "--routes", cluster.routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ","),
            ]
        }
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        let log = FileHandle(forWritingAtPath: store + "/../nats-\(name).log")
            ?? (FileManager.default.createFile(atPath: store + "/../nats-\(name).log", contents: nil)
                ? FileHandle(forWritingAtPath: store + "/../nats-\(name).log") : nil)
        log?.seekToEndOfFile()
        process.standardError = log ?? FileHandle.nullDevice
        try process.runAlone()
        LeftoverDaemons.register(process.processIdentifier)
        self.process = process
        let port = port
        _ = try waitUntil("nats-server \(name) to listen on \(port)", timeout: 20) { () -> Bool? in
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let ok = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            return ok ? true : nil
        }
    }

    /// SIGKILL: no goodbye to clients or the cluster.
    public func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    deinit { kill() }
}

/// A `[[forward]]` table to the JetStream stream `KEVD` at `url` for the events the tests emit (`source=emit`),
/// with a short acknowledgement timeout so a lost reply is retried within a test's time; `extra` lines go last.
public func natsForwardConfig(url: String, ackTimeout: String = "500ms", extra: String = "") -> String {
    """
    [[forward]]
    type = "nats"
    url = ["\(url)"]
    stream = "KEVD"
    ack_timeout = "\(ackTimeout)"
    filter = ["source=emit"]
    """ + (extra.isEmpty ? "" : "\n" + extra)
}
