import KevdKernel
import KevdReactor
import Logging

/// Watches the rules directories with an inotify instance of its own (their changes are kevd's business, not
/// events for subscribers) and says when one changed.
///
/// A directory that does not exist yet is not watched; it is picked up at the next reload (SIGHUP), when the
/// watcher is rebuilt.
public final class RuleDirectoryWatcher {
    private let inotify: Inotify
    private let loop: EventLoop
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)
    public private(set) var watched: [String] = []

    public init(directories: [String], loop: EventLoop, logger: Logger, changed: @escaping () -> Void) throws {
        self.loop = loop
        inotify = try Inotify()
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
            if any { changed() }
        }
    }

    deinit {
        loop.unregister(fd: inotify.fd.rawValue)
        buffer.deallocate()
    }
}
