import Foundation
import Testing

@testable import KevdEvent

@Suite("event line header")
struct EventLineHeaderTests {
    func line(_ event: Event) -> [UInt8] {
        var out: [UInt8] = []
        JSONLineEncoder.append(event, to: &out)
        return out
    }

    func event(source: String, type: String, key: String, data: EventData = EventData()) -> Event {
        Event(
            seq: 123_456_789, id: EventID(high: 0x0123_4567_89AB_7DEF, low: 0x8123_4567_89AB_CDEF),
            time: WallTime(nanoseconds: 1_790_000_000_123_456_789), mono: 42, source: EventSource(source), type: type,
            key: key, data: data)
    }

    @Test("reads seq, source, type and key in place, as the full decoder does")
    func readsFixedFields() throws {
        let e = event(source: "inotify", type: "close_write", key: "/srv/drop/a b.txt", data: EventData(["n": .int(1)]))
        let bytes = line(e)
        let header = try #require(bytes.withUnsafeBytes { EventLineHeader($0) })
        #expect(header.seq == 123_456_789)
        bytes.withUnsafeBytes { raw in
            #expect(EventLineHeader.text(header.seqRange, in: raw) == "123456789")
            #expect(EventLineHeader.text(header.sourceRange, in: raw) == "inotify")
            #expect(EventLineHeader.text(header.typeRange, in: raw) == "close_write")
            #expect(EventLineHeader.text(header.keyRange, in: raw) == "/srv/drop/a b.txt")
        }
        #expect(EventLineHeader.make(seq: 7, source: "udev", type: "add", key: "/devices/x")?.seq == 7)
    }

    @Test("escaped strings and foreign layouts are left to the full decoder")
    func fallsBack() {
        #expect(line(event(source: "inotify", type: "create", key: "/a\"b")).withUnsafeBytes { EventLineHeader($0) } == nil)
        #expect(Array(#"{"id":"x","seq":1}"#.utf8).withUnsafeBytes { EventLineHeader($0) } == nil)
        #expect(Array(#"{"seq":1,"#.utf8).withUnsafeBytes { EventLineHeader($0) } == nil)
    }

    @Test("the filter's quick path agrees with the full one, and declines terms it cannot decide")
    func filterAgrees() throws {
        let events = [
            event(source: "inotify", type: "create", key: "/srv/x.pdf"), event(source: "udev", type: "add", key: "/devices/a"),
            event(source: "emit", type: "backup.done", key: "nightly"),
        ]
        for terms in [
            ["source=inotify"], ["type!=add", "key=*.pdf"], ["key~^/dev"], ["seq=123456789"], ["source"],
            ["key=/srv/x.pdf"], ["type!=create"], ["seq!=1"],
        ] {
            let filter = try EventFilter(terms: terms)
            for e in events {
                #expect(line(e).withUnsafeBytes { filter.matches(line: $0) } == filter.matches(e), "\(terms)")
            }
        }
        let needsData = try EventFilter(terms: ["data.n=1"])
        #expect(line(events[0]).withUnsafeBytes { needsData.matches(line: $0) } == nil)
    }
}

extension EventLineHeader {
    static func make(seq: UInt64, source: String, type: String, key: String) -> EventLineHeader? {
        let id = "01a20747-1993-7f33-9063-8f929dc5f86f"
        let time = "2026-11-23T07:20:29.843225592Z"
        let text = #"{"seq":\#(seq),"id":"\#(id)","time":"\#(time)","mono":1,"source":"\#(source)","type":"\#(type)","key":"\#(key)","data":{}}"#
        return Array(text.utf8).withUnsafeBytes { EventLineHeader($0) }
    }
}
