import KevdEvent
import KevdJournal
import KevdKernel

/// `kevctl journal --boot [N|ID]`: one boot's events, as `journalctl -b`.
///
/// The journal records no boot marker of its own. Each daemon run's `kevd`/`started` names its `boot_id`, and
/// every event of a run carries the run's random id base (`EventID.runBase(seq:)`), so: fold the journal once
/// into runs (in journal order) and the boot each `started` names, then print the events whose run belongs to
/// the chosen boot. Events a run journaled before its `started` (the start-up crawl, a `recovered` report) are
/// its run's; a run that never reached `started` (killed during its crawl), or whose `started` retention
/// removed, has no known boot and is selected by no `--boot`.
struct JournalBoots {
    /// The boots in the order their first run appears in the journal: normalized ids (no dashes, lower case).
    private(set) var boots: [String] = []
    /// Each run's boot, by its id base.
    private(set) var bootOfRun: [EventIDBase: String] = [:]

    /// Reads the whole journal (a second pass prints): kevctl's own thread, never the daemon's.
    init(directory: String) throws {
        let reader = try JournalReader(directory: directory)
        reader.onProblem = { _ in }  // The printing pass reports them.
        let started: [UInt8] = Array(#""type":"started""#.utf8)
        while let record = try reader.next() {
            // Only a `started` line is decoded: the bytes are checked first, so the fold costs a scan, not a parse.
            guard record.payloadContains(started), let event = try? Event(jsonLine: record.payload),
                event.source == .kevd, event.type == "started", case .string(let boot)? = event.data["boot_id"],
                !boot.isEmpty
            else { continue }
            let id = MachineIdentity.normalizedBootID(boot)
            bootOfRun[event.id.runBase(seq: event.seq)] = id
            if !boots.contains(id) { boots.append(id) }
        }
    }

    /// The boot `selector` names: "0" or "" the newest in the journal (the current one while kevd runs), "-1"
    /// the one before it, a positive N the Nth from the oldest (1 is the oldest), or a boot id (with or without
    /// dashes). Nil when the journal holds no such boot.
    func boot(_ selector: String) -> String? {
        if selector.isEmpty { return boots.last }
        if let offset = Int(selector) {
            if offset <= 0 {
                let index = boots.count - 1 + offset
                return boots.indices.contains(index) ? boots[index] : nil
            }
            return boots.indices.contains(offset - 1) ? boots[offset - 1] : nil
        }
        let id = MachineIdentity.normalizedBootID(selector)
        return boots.contains(id) ? id : nil
    }

    /// True when `record` was journaled by a run of `boot`.
    func record(_ event: Event, isOf boot: String) -> Bool {
        bootOfRun[event.id.runBase(seq: event.seq)] == boot
    }
}

/// ArgumentParser's options always take a value; `journalctl -b` takes an optional one, and its values (`-1`)
/// look like options. So before parsing, `journal … --boot` becomes `--boot=VALUE` when a boot value follows
/// (an integer or a boot id) and `--boot=0` when none does (a filter term, another option, the end).
enum BootArgument {
    static func normalized(_ arguments: [String]) -> [String] {
        guard arguments.contains("journal") else { return arguments }
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            if argument == "--boot" || argument == "-b" {
                if i + 1 < arguments.count, isBootValue(arguments[i + 1]) {
                    out.append("--boot=" + arguments[i + 1])
                    i += 2
                    continue
                }
                out.append("--boot=0")
            } else if argument == "--" {
                out += arguments[i...]
                break
            } else {
                out.append(argument)
            }
            i += 1
        }
        return out
    }

    static func isBootValue(_ text: String) -> Bool {
        if Int(text) != nil { return true }
        let hex = MachineIdentity.normalizedBootID(text)
        return hex.count == 32 && hex.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}
