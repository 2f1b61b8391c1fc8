import KevdEvent
import KevdFuzzSupport

/// Filter terms (`kevctl subscribe/journal/wait`, a subscription's "filter", a rule's `match`), one per line;
/// the last line is also the key of an extra event, so terms meet subjects of the fuzzer's choosing.
///
/// A filter is checked two ways, as the server uses it: on the decoded event, and on the journal's JSON line
/// without decoding it (`matches(line:)`, the catch-up fast path). Both must agree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFilter(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).prefix(16).map(String.init)
    let filter: EventFilter
    do {
        filter = try EventFilter(terms: lines)
    } catch {
        Fuzz.check(error.offset >= 0 && error.offset <= error.term.utf8.count, "offset \(error.offset) outside '\(error.term)'")
        Fuzz.check(!error.description.isEmpty, "an empty error")
        return 0
    }
    for event in events(key: lines.last ?? "") {
        let verdict = filter.matches(event)
        Fuzz.check((filter.firstFailingTerm(event) == nil) == verdict, "firstFailingTerm disagrees with matches")
        let line = Fuzz.checkRoundTrip(event)
        if let quick = line.withUnsafeBytes({ filter.matches(line: $0) }) {
            Fuzz.check(quick == verdict, "matches(line:) says \(quick), matches(event) says \(verdict) for \(String(decoding: line, as: UTF8.self))")
        }
    }
    return 0
}

let fixed: [EventDraft] = [
    EventDraft(
        source: .inotify, type: "close_write", key: "/srv/inbox/a b.txt",
        data: EventData(["watch": .string("inbox"), "size": .int(12), "dir": .bool(false)])),
    EventDraft(
        source: .udev, type: "add", key: "/devices/pci0000:00/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        data: EventData(["subsystem": .string("block"), "devtype": .string("disk"), "DEVNAME": .string("/dev/sdb")])),
    EventDraft(source: EventSource("emit"), type: "deploy.done", key: "", data: EventData(["ratio": .double(0.25)])),
]

func events(key: String) -> [Event] {
    var out = fixed.enumerated().map { Fuzz.stamp($0.element, seq: UInt64($0.offset + 1)) }
    out.append(
        Fuzz.stamp(
            EventDraft(source: EventSource(key), type: key, key: key, data: EventData(["k": .string(key)])), seq: 9))
    return out
}

@_cdecl("FuzzFilter_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    Fuzz.runDriver(argc, argv, fuzzFilter)
}
