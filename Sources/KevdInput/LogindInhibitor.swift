import CKevdInput
import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import Logging

/// `[input] inhibit`: logind's `handle-*` inhibitor locks ("block" mode), so that logind leaves those keys and
/// switches to kevd's rules. Each lock is an fd logind watches: kevd holds it open until it stops (or a reload
/// drops the lock), and logind releases the lock when the fd closes, also when kevd is killed.
///
/// A D-Bus call may block (logind busy, the bus starting): the calls run on a thread of their own, each bounded
/// by sd-bus's method call timeout (`callTimeout`), and their results come back through the loop's inbox. The
/// loop never waits on the bus.
final class LogindInhibitor {
    static let callTimeoutMicroseconds: UInt64 = 5_000_000
    private var held: [String: Int32] = [:]
    private var thread: WorkerThread?
    private var stopped = false
    let logger: Logger
    let pipeline: EventPipeline

    init(locks: [String], loop: EventLoop, pipeline: EventPipeline, logger: Logger) {
        self.logger = logger
        self.pipeline = pipeline
        let box = UnsafeSendable(self)
        let inbox = loop.inbox
        do {
            thread = try WorkerThread(name: "kevd-inhibit") {
                for lock in locks {
                    let what = "handle-" + lock
                    var message = [CChar](repeating: 0, count: 256)
                    let fd = kevd_logind_inhibit(
                        what, "kevd", "kevd rules handle \(lock) ([input] inhibit)", Self.callTimeoutMicroseconds,
                        &message, Int32(message.count))
                    let text = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    inbox.post {
                        box.value.finished(lock: lock, fd: fd, message: text)
                    }
                }
                inbox.post { box.value.thread?.join() }
            }
        } catch {
            report(lock: locks.joined(separator: ","), error: "\(error)")
        }
    }

    deinit { stop() }

    /// Releases the locks held, and any still to come back from the bus (a reload that drops `inhibit`).
    func stop() {
        stopped = true
        for fd in held.values { close(fd) }
        held.removeAll()
    }

    /// The locks taken so far.
    var heldLocks: [String] { held.keys.sorted() }

    private func finished(lock: String, fd: Int32, message: String) {
        guard fd >= 0 else {
            let reason = message.isEmpty ? String(cString: strerror(-fd)) : message
            report(lock: lock, error: reason)
            return
        }
        if stopped {
            close(fd)
            return
        }
        held[lock] = fd
        logger.info("logind inhibitor lock taken", metadata: ["lock": "handle-\(lock)"])
        var data = EventData()
        data.append("lock", "handle-" + lock)
        data.append("mode", "block")
        pipeline.publishKevd("inhibited", component: "input", data)
    }

    private func report(lock: String, error: String) {
        var data = EventData()
        data.append("message", "cannot take logind's handle-\(lock) inhibitor lock; logind still acts on it")
        data.append("error", error)
        logger.error("cannot take logind inhibitor lock", metadata: ["lock": "handle-\(lock)", "error": "\(error)"])
        pipeline.publishKevd("error", component: "input", data)
    }
}

/// Carries a loop-thread object through a helper thread and back: only the loop thread touches it.
struct UnsafeSendable<T: AnyObject>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
