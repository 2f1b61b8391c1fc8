import KevdEvent
import KevdJournal
import KevdKernel

/// The events the benchmark journals: inotify `create` events for files in one watched folder, with the data
/// fields the inotify source gives them (`path`, `name`, `watch`, `dir`), stamped the way the pipeline stamps them.
///
/// A realistic line cannot be as short as 200 bytes: the envelope alone (seq, a UUID, a nine-digit RFC 3339 time,
/// mono, source, type and the field names) is about 217 bytes. With short paths (`/srv/f000123`) a line is about
/// 251 bytes, a record 288; the header line reports the average.
struct Workload {
    /// The watched folder. Short on purpose, so that lines stay as close to 200 bytes as the schema allows.
    static let watch = "/srv"

    /// Distinct drafts, cycled through: a busy folder sees the same names again, and building a fresh path per
    /// event would measure the inotify source rather than the journal.
    private let drafts: [EventDraft]
    private let idBase = EventIDBase(randA: 0x5A5, randB: 0x1234_5678_9ABC_DEF0)
    private let wallStart: Int64
    private let monoStart: UInt64

    init(distinctPaths: Int = 4096) {
        drafts = (0..<distinctPaths).map { i in
            let digits = String(i)
            let name = "f" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
            let path = Self.watch + "/" + name
            var data = EventData(capacity: 4)
            data.append("path", path)
            data.append("name", name)
            data.append("watch", Self.watch)
            data.append("dir", false)
            return EventDraft(source: .inotify, type: "create", key: path, data: data)
        }
        wallStart = Clock.realtimeNanoseconds()
        monoStart = Clock.monotonicNanoseconds()
    }

    /// Event `seq`, stamped 1 µs after event `seq - 1`: computed, not read from a clock, so the journal runs and
    /// the ceiling write exactly the same bytes.
    @inline(__always)
    func event(seq: UInt64) -> Event {
        let draft = drafts[Int(seq % UInt64(drafts.count))]
        let wall = time(seq: seq)
        return Event(
            seq: seq, id: EventID(unixMilliseconds: UInt64(wall / 1_000_000), seq: seq, base: idBase),
            time: WallTime(nanoseconds: wall), mono: monoStart + seq * 1000, source: draft.source, type: draft.type,
            key: draft.key, data: draft.data)
    }

    @inline(__always)
    func time(seq: UInt64) -> Int64 { wallStart + Int64(seq) * 1000 }

    /// Average JSON line and record sizes over `count` events, from up to 10,000 spread evenly over the seqs
    /// (lines grow with the seq's digits): exact for small counts, within a fraction of a byte otherwise.
    func averageSizes(count: Int) -> (line: Double, record: Double) {
        let samples = min(count, 10_000)
        let buffer = ByteBuffer(capacity: 1024)
        var lines = 0
        var records = 0
        for i in 0..<samples {
            buffer.removeAll()
            JSONLineEncoder.append(event(seq: UInt64(1 + i * count / samples)), to: buffer)
            lines += buffer.count
            records += JournalFormat.recordHeaderSize + JournalFormat.padded(buffer.count)
        }
        return (Double(lines) / Double(samples), Double(records) / Double(samples))
    }
}

/// Every event's JSON line, encoded once before any timing starts: what the ceiling and `journal-line` write.
final class EncodedLines {
    private let buffer: ByteBuffer
    /// `offsets[i]..<offsets[i + 1]` is the line of seq `i + 1`.
    private var offsets: [Int]

    init(workload: Workload, count: Int) {
        buffer = ByteBuffer(capacity: count * 300)
        offsets = [0]
        offsets.reserveCapacity(count + 1)
        for seq in 1...UInt64(count) {
            JSONLineEncoder.append(workload.event(seq: seq), to: buffer)
            offsets.append(buffer.count)
        }
    }

    /// The line of event `seq` (1-based), `\n` included.
    @inline(__always)
    func payload(seq: UInt64) -> UnsafeRawBufferPointer {
        let i = Int(seq) - 1
        return UnsafeRawBufferPointer(start: buffer.base + offsets[i], count: offsets[i + 1] - offsets[i])
    }
}

/// What JSON encoding alone costs: the daemon's per-event work without the framing, CRC and I/O.
enum EncodeMeasurement {
    /// Encodes `count` events into one reused buffer emptied every `batch` events; returns the seconds taken.
    static func run(workload: Workload, count: Int, batch: Int) -> Double {
        let buffer = ByteBuffer(capacity: 1024 * 1024)
        let start = Clock.monotonicNanoseconds()
        var seq: UInt64 = 1
        while seq <= UInt64(count) {
            let end = min(seq + UInt64(batch), UInt64(count) + 1)
            while seq < end {
                JSONLineEncoder.append(workload.event(seq: seq), to: buffer)
                seq += 1
            }
            buffer.removeAll()
        }
        return Seconds.since(start)
    }
}
