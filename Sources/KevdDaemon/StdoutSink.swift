import CKevdShim
import Glibc
import KevdEvent
import KevdKernel
import KevdReactor

/// `--stdout`: every event as one JSON line, for watching a daemon by hand or piping it into a script.
///
/// A loop turn's events are written with one `write`. When stdout is a pipe or socket it is made non-blocking;
/// a reader that falls behind is buffered up to `maxBuffered` bytes, then events are dropped and counted, and
/// once the reader catches up a `kevd`/`overflow` event (component `stdout`) says how many it missed. The loop
/// never waits for it. (The journal, not stdout, is the record of everything.)
final class StdoutSink: EventSink {
    static let maxBuffered = 64 * 1024 * 1024

    private let fd: Int32
    private let loop: EventLoop
    /// Unowned: the pipeline owns this sink. (A weak reference would give the pipeline a side table, and every
    /// retain of it, once per event, would take the runtime's slow path.)
    private unowned let pipeline: EventPipeline
    private let buffer = ByteBuffer(capacity: 256 * 1024)
    private var dropped = 0
    private var waitingForWritable = false
    private let nonBlocking: Bool
    private var failed = false

    init(fd: Int32 = STDOUT_FILENO, loop: EventLoop, pipeline: EventPipeline) {
        self.fd = fd
        self.loop = loop
        self.pipeline = pipeline
        var st = stat()
        let isStream = fstat(fd, &st) == 0 && ((st.st_mode & S_IFMT) == S_IFIFO || (st.st_mode & S_IFMT) == S_IFSOCK)
        nonBlocking = isStream && kevd_set_nonblocking(fd, 1) == 0
    }

    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        guard !failed else { return }
        if buffer.count >= Self.maxBuffered {
            dropped += 1
            return
        }
        buffer.append(line)
    }

    func endOfTurn() {
        guard !waitingForWritable else { return }
        flush()
    }

    /// Writes what it can; on EAGAIN, waits for the fd to become writable (the loop calls back).
    private func flush() {
        while !buffer.isEmpty && !failed {
            let n = kevd_write_some(fd, buffer.bytes.baseAddress, buffer.count)
            if n < 0 {
                // EPIPE and friends: nobody reads stdout any more. Stop writing; the daemon keeps running.
                failed = true
                buffer.removeAll()
                return
            }
            buffer.removeFirst(n)
            if !buffer.isEmpty {
                guard nonBlocking else { continue }
                waitForWritable()
                return
            }
        }
        buffer.removeAll()
        if dropped > 0 {
            var data = EventData()
            data.append("message", "stdout reader fell behind; events were not written to stdout")
            data.append("lost", dropped)
            dropped = 0
            pipeline.publishKevd("overflow", component: "stdout", data)
        }
    }

    private func waitForWritable() {
        waitingForWritable = true
        do {
            try loop.register(fd: fd, events: .writable, priority: .clients) { [unowned self] _ in
                self.loop.unregister(fd: self.fd)
                self.waitingForWritable = false
                self.flush()
            }
        } catch {
            failed = true
        }
    }
}
