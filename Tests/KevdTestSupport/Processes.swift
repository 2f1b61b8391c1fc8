import Foundation
import Glibc

extension Process {
    /// `run()`, one at a time across the test process. Foundation learns that a child exited when a socket it
    /// hands the child closes (swift-corelibs-foundation issue 4795); a process started by another test at the
    /// same moment can inherit that socket, and then the exit goes unnoticed for as long as that process (often
    /// a kevd) lives: a `waitUntilExit` hung a whole CI run. Serialized, no spawn overlaps another one's window.
    public func runAlone() throws {
        processSpawnLock.lock()
        defer { processSpawnLock.unlock() }
        try run()
    }
}

private let processSpawnLock = NSLock()

/// Kills, when the test process exits, every kevd a test started and left running. A `DaemonProcess` is kept
/// alive by its own reader threads, so its `deinit` (which kills kevd) does not run when a test simply drops it.
public enum LeftoverDaemons {
    nonisolated(unsafe) private static var pids: [Int32] = []
    private static let lock = NSLock()
    private static let installed: Void = { atexit { LeftoverDaemons.killAll() } }()

    public static func register(_ pid: Int32) {
        _ = installed
        lock.lock()
        pids.append(pid)
        lock.unlock()
    }

    private static func killAll() {
        lock.lock()
        defer { lock.unlock() }
        // Only a pid that is still our child: an exited kevd's pid may belong to anyone by now.
        for pid in pids where parent(of: pid) == getpid() { kill(pid, SIGKILL) }
    }

    private static func parent(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 ? Int32(fields[1]) : nil
    }
}
