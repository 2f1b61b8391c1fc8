import KevdKernel
import KevdReactor
import Logging

/// Watches the rules directories with an inotify instance of its own (their changes are kevd's business, not
/// events for subscribers) and says when one changed and then settled.
///
/// The debounce is here: the first change arms a one-shot timer (`settleNanoseconds`), and `changed` is called
/// once when it fires, however many changes came meanwhile (an editor writes a file in several steps; a package
/// manager drops several files). The daemon re-reads the rule files then, in one place (`Daemon+Reload.swift`).
///
/// A directory that does not exist yet is not watched; it is picked up at the next reload (SIGHUP), when the
/// watcher is rebuilt.
public final class RuleDirectoryWatcher {
    /// How long after the first change the rule files are read again.
    public static let settleNanoseconds: Int64 = 200_000_000

    private let inotify: Inotify
    private let settle: TimerFD
    private var settling = false
    private let loop: EventLoop
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)
    public private(set) var watched: [String] = []

    /// `changed` runs on the loop thread; it may drop this watcher (a reload rebuilds it).
    public init(directories: [String], loop: EventLoop, logger: Logger, changed: @escaping () -> Void) throws {
        self.loop = loop
        inotify = try Inotify()
        settle = try TimerFD(clock: .monotonic)
        let mask: Inotify.Mask = [.create, .delete, .closeWrite, .movedFrom, .movedTo, .attrib, .deleteSelf, .moveSelf]
        for directory in directories {
            do {
                _ = try inotify.addWatch(path: directory, mask: mask.union(.onlyDirectory))
                watched.append(directory)
            } catch let error as SyscallError where error.errno == .noSuchFileOrDirectory {
                continue
            } catch {
                logger.warning("cannot watch a rules directory", metadata: ["directory": "\(directory)", "error": "\(error)"])
            }
        }
        try loop.register(fd: inotify.fd.rawValue, events: .readable, priority: .kernelInput) { [unowned self] _ in
            var any = false
            while let n = try? self.inotify.read(into: self.buffer), n > 0 { any = true }
            guard any, !self.settling else { return }
            do {
                try self.settle.arm(delay: Self.settleNanoseconds, interval: 0)
                self.settling = true
            } catch {
                // Arming a monotonic timerfd fails only for a bad fd or value: report at once rather than never.
                logger.error("cannot arm the rules reload timer", metadata: ["error": "\(error)"])
                changed()
            }
        }
        // Should this throw, deinit unregisters the inotify fd.
        try loop.register(fd: settle.fd.rawValue, events: .readable, priority: .timers) { [unowned self] _ in
            guard case .expired = (try? self.settle.read()) ?? .none else { return }
            self.settling = false
            changed()  // Last: it may release this watcher.
        }
    }

    deinit {
        loop.unregister(fd: inotify.fd.rawValue)
        loop.unregister(fd: settle.fd.rawValue)
        buffer.deallocate()
    }
}
