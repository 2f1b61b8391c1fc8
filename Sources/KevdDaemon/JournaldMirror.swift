import CSystemd
import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import Synchronization

/// `[journald] mirror = true`: a copy of the events (those its filter matches) in the systemd journal, as
/// structured entries (`journalctl MESSAGE_ID=… KEVD_SOURCE=udev`, `journalctl -o verbose`).
///
/// `sd_journal_sendv` blocks when journald is slow, so it runs on a thread of its own. The loop only copies each
/// matching event into a batch and, once per turn, moves the batch into a bounded queue for that thread. When the
/// queue is full, events are dropped from the mirror (never from kevd's own journal, which is the record) and
/// counted; a `kevd`/`overflow` event with component `journald` says how many, at most every few seconds.
final class JournaldMirror: EventSink, @unchecked Sendable {
    // @unchecked: `shared` is a Mutex; `batch`, `dropped` and `lastReport` belong to the loop thread; the rest is
    // immutable after init.

    /// Every kevd entry in the journal carries this `MESSAGE_ID` (`journalctl MESSAGE_ID=…`). Fixed forever.
    static let messageID = "334e16b1a3354156b57dd69a1dc33d70"
    /// Events waiting for the sender thread; beyond this they are dropped and counted.
    static let capacity = 8192
    /// At most one `overflow` report per this interval, however long journald stays slow.
    static let reportInterval: UInt64 = 5_000_000_000

    private struct Entry {
        var event: Event
        var line: [UInt8]
    }

    private struct Shared {
        var queue: [Entry] = []
        var stopping = false
    }

    private let filter: EventFilter?
    /// Unowned, as in `StdoutSink`: the pipeline owns this sink, and a weak reference slows every retain of it.
    private unowned let pipeline: EventPipeline
    private let shared = Mutex(Shared())
    private let wakeup: EventFD
    private var thread: WorkerThread? = nil
    private var batch: [Entry] = []
    private var dropped = 0
    private var lastReport: UInt64 = 0

    init(filter: EventFilter?, pipeline: EventPipeline) throws {
        self.filter = filter
        self.pipeline = pipeline
        wakeup = try EventFD(blocking: true)
        thread = try WorkerThread(name: "kevd-journald") { [self] in run() }
    }

    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        if let filter, !filter.matches(event) { return }
        // Without the newline: the journal field is the line's JSON text.
        batch.append(Entry(event: event, line: Array(line.prefix(max(line.count - 1, 0)))))
    }

    func endOfTurn() {
        enqueueBatch()
        reportDrops()
    }

    /// Hands the turn's events to the sender thread: one lock and one wakeup per turn, not per event.
    private func enqueueBatch() {
        guard !batch.isEmpty else { return }
        let lost = shared.withLock { shared in
            let room = max(Self.capacity - shared.queue.count, 0)
            shared.queue.append(contentsOf: batch.prefix(room))
            return batch.count - min(room, batch.count)
        }
        dropped += lost
        batch.removeAll(keepingCapacity: true)
        wakeup.signal()
    }

    private func reportDrops() {
        guard dropped > 0 else { return }
        let now = Clock.monotonicNanoseconds()
        // Within the interval the count grows, and a later turn reports it.
        guard lastReport == 0 || now >= lastReport + Self.reportInterval else { return }
        lastReport = now
        var data = EventData()
        data.append("message", "journald is not keeping up; events were not mirrored to the systemd journal")
        data.append("lost", dropped)
        dropped = 0
        // Published from `endOfTurn`: the same turn's `finishTurn` writes it out.
        pipeline.publishKevd("overflow", component: "journald", data)
    }

    /// Sends what is still queued (the last turn's `stopping` too) and joins the thread.
    func stop() {
        enqueueBatch()
        shared.withLock { $0.stopping = true }
        wakeup.signal()
        thread?.join()
    }

    private func run() {
        while true {
            _ = try? wakeup.drain()
            let (entries, stopping) = shared.withLock { shared in
                defer { shared.queue.removeAll(keepingCapacity: true) }
                return (shared.queue, shared.stopping)
            }
            for entry in entries { Self.send(entry.event, line: entry.line) }
            if stopping { return }
        }
    }

    /// One structured journal entry. Field values may hold any bytes (a path with a newline): sendv takes them
    /// as they are, with their lengths.
    static func send(_ event: Event, line: [UInt8]) {
        var text = event.source.name + " " + event.type
        if !event.key.isEmpty { text += " " + event.key }
        var fields: [UInt8] = []
        fields.reserveCapacity(line.count + text.utf8.count + 256)
        var ranges: [Range<Int>] = []
        func add(_ name: String, _ value: some Sequence<UInt8>) {
            let start = fields.count
            fields += name.utf8
            fields.append(UInt8(ascii: "="))
            fields += value
            ranges.append(start..<fields.count)
        }
        add("MESSAGE", text.utf8)
        add("MESSAGE_ID", messageID.utf8)
        add("PRIORITY", "\(priority(event))".utf8)
        add("SYSLOG_IDENTIFIER", "kevd".utf8)
        add("KEVD_SEQ", "\(event.seq)".utf8)
        add("KEVD_ID", event.id.string.utf8)
        add("KEVD_SOURCE", event.source.name.utf8)
        add("KEVD_TYPE", event.type.utf8)
        add("KEVD_KEY", event.key.utf8)
        add("KEVD_DATA", line)
        fields.withUnsafeBytes { raw in
            let vectors = ranges.map {
                iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress! + $0.lowerBound), iov_len: $0.count)
            }
            // Fails only when journald is not there (or refuses): the mirror is best effort, kevd's journal is not.
            _ = sd_journal_sendv(vectors, Int32(vectors.count))
        }
    }

    /// 6 (info), or 4 (warning) for kevd's reports of trouble.
    static func priority(_ event: Event) -> Int {
        guard event.source == .kevd else { return 6 }
        switch event.type {
        case "error", "overflow", "limit": return 4
        default: return 6
        }
    }
}
