import Glibc
import KevdEvent
import KevdJournal
import KevdKernel

/// The part of one source's journal history that a start-up catch-up still needs, compacted: for `udev`, the
/// last event of each device still present (a `remove` forgets its device, a `move` its old path); for
/// `timer`, the last `fired` of each timer. Folding these lines gives what folding the whole history gives, as
/// a compacted Kafka topic does for its keys.
///
/// Pure. The start-up fold builds one while it reads the journal; the checkpointer (a sink) keeps it current
/// from every published event, with tombstones for keys this run removed until the earlier history is known.
struct CompactedHistory: Sendable {
    let source: EventSource
    /// Key → the event line (no newline) that still matters, or nil: removed in this run (a tombstone, kept
    /// only so that `merged(over:)` can forget the key in the earlier history).
    private(set) var entries: [String: [UInt8]?] = [:]

    init(source: EventSource) { self.source = source }

    /// Whether this compaction keeps anything of `source` (the sources a catch-up folds).
    static func tracks(_ source: EventSource) -> Bool { source == .udev || source == .timer }

    /// Takes one event of this source (others are ignored) with its JSON line.
    mutating func apply(_ event: Event, line: UnsafeRawBufferPointer) {
        guard event.source == source else { return }
        switch source {
        case .udev:
            if event.type == "remove" {
                entries[event.key] = .some(nil)
                return
            }
            if event.type == "move", case .string(let old)? = event.data["DEVPATH_OLD"] { entries[old] = .some(nil) }
        case .timer:
            guard event.type == "fired" else { return }
        default:
            return
        }
        var bytes = [UInt8](line)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        entries[event.key] = bytes
    }

    /// This run's compaction laid over the earlier history: a key this run named wins, a removal forgets it.
    func merged(over earlier: CompactedHistory) -> CompactedHistory {
        var result = earlier
        for (key, line) in entries { result.entries[key] = line.map { .some($0) } ?? nil }
        return result
    }

    /// The lines to store, by key (tombstones dropped): the same order every time, so unchanged state gives
    /// the same bytes.
    var lines: [[UInt8]] {
        entries.sorted { $0.key < $1.key }.compactMap { $0.value }
    }

    /// One event per kept key, for a fold to start from.
    func forEachEvent(_ body: (Event) -> Void) {
        for line in lines {
            guard let event = try? Event(jsonLine: line), event.source == source else { continue }
            body(event)
        }
    }
}

/// A stored `CompactedHistory` with the journal seq it is complete up to and that record's id: the next start
/// folds these lines and then only the journal after `seq`, so it reads what the last run wrote, not the whole
/// journal, and what retention deleted since is not forgotten (a device's last `add`, a monthly timer's last
/// fire).
///
/// `state_dir/catchup/SOURCE` (`udev`, `timer`): a header line `{"seq":N,"id":"…"}`, then one event line per
/// key. Saved with the previous copy kept (`PositionFile`). A checkpoint counts only when the journal agrees:
/// its record `seq` has the same id (a power cut can lose the journal's unsynced tail and a later run give
/// those seqs to other events), or retention deleted that record since. Otherwise the previous copy is tried,
/// then the whole journal is read as before.
struct CatchUpCheckpoint: Sendable {
    var seq: UInt64
    var id: String
    var history: CompactedHistory

    static func path(stateDirectory: String, source: EventSource) -> String {
        stateDirectory + "/catchup/" + source.name
    }

    func encoded() -> [UInt8] {
        var bytes = Array("{\"seq\":\(seq),\"id\":\"\(id)\"}\n".utf8)
        for line in history.lines {
            bytes.append(contentsOf: line)
            bytes.append(UInt8(ascii: "\n"))
        }
        return bytes
    }

    /// Parses a stored checkpoint; nil when it is damaged (a header that does not parse, a line that is not
    /// an event of `source`, no final newline).
    static func decode(_ bytes: [UInt8], source: EventSource) -> CatchUpCheckpoint? {
        guard bytes.last == UInt8(ascii: "\n") else { return nil }
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast()
        guard let headerLine = lines.first, let header = try? JSONReader.parse(Array(headerLine)),
            let seq = header["seq"]?.uint64Value, let id = header["id"]?.stringValue
        else { return nil }
        var history = CompactedHistory(source: source)
        for line in lines.dropFirst() {
            let bytes = Array(line)
            guard let event = try? Event(jsonLine: bytes), event.source == source else { return nil }
            bytes.withUnsafeBytes { history.apply(event, line: $0) }
        }
        return CatchUpCheckpoint(seq: seq, id: id, history: history)
    }

    /// The stored checkpoint and its previous copy, in that order, each only if it parses; and what was wrong
    /// with a file that exists but does not.
    static func load(stateDirectory: String, source: EventSource) -> (candidates: [CatchUpCheckpoint], problems: [String]) {
        let loaded = PositionFile.loadEach(path(stateDirectory: stateDirectory, source: source)) {
            decode($0, source: source)
        }
        return (loaded.values, loaded.problems)
    }

    /// Saves it (helper threads only: it syncs). On failure `errno` says why.
    func save(stateDirectory: String) -> Bool {
        let folder = stateDirectory + "/catchup"
        if mkdir(folder, 0o750) != 0 && errno != EEXIST { return false }
        return PositionFile.save(Self.path(stateDirectory: stateDirectory, source: history.source), encoded())
    }

    /// Whether the journal agrees with it (see the type's comment). `reader` is repositioned.
    func agrees(with reader: JournalReader, before beforeSeq: UInt64) throws -> Bool {
        guard seq < beforeSeq else { return false }  // Past the journal's end: that tail was lost.
        if let first = reader.firstAvailableSeq, first > seq { return true }  // Retention deleted it since.
        try reader.seek(.seq(seq))
        guard let record = try reader.next(), record.seq == seq else { return false }
        return record.payloadContains(Array("\"id\":\"\(id)\"".utf8))
    }
}
