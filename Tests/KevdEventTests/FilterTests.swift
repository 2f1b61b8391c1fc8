import Foundation
import Testing

@testable import KevdEvent

@Suite struct FilterTests {
    static let event: Event = {
        var data = EventData()
        data.append("ID_SERIAL", "WDC_WD40EFRX-68N32N0_WD-WCC7K1234567")
        data.append("ID.WITH.DOTS", "dotted")
        data.append("dir", true)
        data.append("overruns", 0)
        data.append("size", .int(-42))
        data.append("ratio", .double(0.5))
        data.append("whole", .double(3))
        data.append("nan", .double(.nan))
        data.append("empty", "")
        data.append("path", "/srv/www/site/index.html")
        return Event(
            seq: 42, id: EventID(high: 0x0190_0000_0000_7abc, low: 0x8000_0000_0000_0001),
            time: WallTime(nanoseconds: 0), mono: 7, source: .udev, type: "add",
            key: "/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda", data: data)
    }()

    static func matches(_ terms: String..., event: Event = event, sourceLocation: SourceLocation = #_sourceLocation)
        -> Bool
    {
        do {
            return try EventFilter(terms: terms).matches(event)
        } catch {
            Issue.record("\(error)", sourceLocation: sourceLocation)
            return false
        }
    }

    // MARK: - Operators

    @Test(arguments: [
        // =: fnmatch globs, anchored at both ends.
        ("source=udev", true), ("source=ude", false), ("source=u*", true), ("source=?dev", true),
        ("source=[tu]dev", true), ("source=UDEV", false), ("type=add", true), ("type=", false),
        ("key=/devices/*", true), ("key=*/sda", true), ("key=*block*", true), ("key=/devices/*/sdb", false),
        ("key=/devices/pci0000:00/*/block/sd?", true),
        // !=: the negation.
        ("source!=udev", false), ("source!=inotify", true), ("key!=*/sda", false), ("type!=a*", false),
        // ~: POSIX extended regex, unanchored.
        ("key~sda", true), ("key~^/devices", true), ("key~^block", false), ("key~sd[a-c]$", true),
        ("key~(ata|nvme)[0-9]+", true), ("source~^(udev|inotify)$", true), ("type~^a.d$", true),
        ("key~SDA", false), ("key~", true),
        // Bare field: present.
        ("source", true), ("key", true), ("seq", true), ("id", true), ("data.dir", true), ("data.nope", false),
    ])
    func operators(_ term: String, _ expected: Bool) {
        #expect(Self.matches(term) == expected)
    }

    @Test func globStarCrossesSlashes() {
        var data = EventData()
        data.append("path", "/srv/a/b/c/d.txt")
        let deep = Event(
            seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .inotify,
            type: "modify", key: "/srv/a/b/c/d.txt", data: data)
        #expect(Self.matches("key=/srv/*", event: deep))
        #expect(Self.matches("key=/srv/*.txt", event: deep))
        #expect(Self.matches("data.path=/srv/*/d.txt", event: deep))
        #expect(Self.matches("key=/srv/?/b/c/d.txt", event: deep))
        #expect(!Self.matches("key=/srv/*.log", event: deep))
        #expect(!Self.matches("key=/srv", event: deep))
        // Leading dots are not special either (no FNM_PERIOD).
        let dotfile = Event(
            seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .inotify,
            type: "modify", key: "/home/u/.config/app", data: EventData())
        #expect(Self.matches("key=/home/*/app", event: dotfile))
        #expect(Self.matches("key=*", event: dotfile))
    }

    @Test func globEscapesAndLiteralValues() {
        var data = EventData()
        data.append("name", "a*b?[c]")
        data.append("slash", #"x\y"#)
        let event = Event(
            seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .inotify,
            type: "t", key: "k=v~w!=z", data: data)
        #expect(Self.matches(#"data.name=a\*b\?\[c]"#, event: event))
        #expect(!Self.matches(#"data.name=a\*c*"#, event: event))
        #expect(Self.matches(#"data.slash=x\\y"#, event: event))
        // The value is everything after the first operator, operators included.
        #expect(Self.matches("key=k=v~w!=z", event: event))
        #expect(Self.matches("key!=k=v", event: event))
        #expect(Self.matches("key~=v~w!", event: event))
    }

    // MARK: - Missing fields and data types

    @Test(arguments: [
        ("data.nope=x", false), ("data.nope=*", false), ("data.nope~.*", false), ("data.nope!=x", true),
        ("data.nope!=*", true), ("data.nope", false), ("data.empty", true), ("data.empty=", true),
        ("data.empty=*", true), ("data.empty!=", false), ("data.empty~^$", true),
    ])
    func missingFields(_ term: String, _ expected: Bool) {
        #expect(Self.matches(term) == expected)
    }

    @Test(arguments: [
        ("data.dir=true", true), ("data.dir=false", false), ("data.dir!=false", true), ("data.dir=t*", true),
        ("data.overruns=0", true), ("data.overruns!=0", false), ("data.size=-42", true), ("data.size=-4?", true),
        ("data.ratio=0.5", true), ("data.ratio=.5", false), ("data.whole=3.0", true), ("data.whole=3", false),
        ("data.nan=null", true), ("data.size~^-[0-9]+$", true), ("seq=42", true), ("seq=4*", true),
        ("seq!=42", false), ("seq~^4", true), ("seq=042", false),
        ("id=01900000-0000-7abc-8000-000000000001", true), ("id=0190*", true), ("id=*7ABC*", false),
        ("data.ID_SERIAL=WDC_*", true), ("data.ID_SERIAL~K[0-9]{7}$", true), ("data.ID.WITH.DOTS=dotted", true),
        ("data.ID=dotted", false),
    ])
    func dataTypesCompareAsJSONText(_ term: String, _ expected: Bool) {
        #expect(Self.matches(term) == expected)
    }

    @Test func termsExposeTheirParts() throws {
        let filter = try EventFilter(terms: ["data.ID.WITH.DOTS!=a=b", "key~x", "seq", "type=add"])
        #expect(filter.terms.map(\.field) == [.data("ID.WITH.DOTS"), .key, .seq, .type])
        #expect(filter.terms.map(\.op) == [.notEquals, .matches, .present, .equals])
        #expect(filter.terms.map(\.value) == ["a=b", "x", "", "add"])
        #expect(filter.terms.map(\.text) == ["data.ID.WITH.DOTS!=a=b", "key~x", "seq", "type=add"])
        #expect(filter.terms.map(\.field.description) == ["data.ID.WITH.DOTS", "key", "seq", "type"])
    }

    // MARK: - AND semantics and diagnosis

    @Test func termsAreANDed() throws {
        #expect(Self.matches())
        #expect(Self.matches("source=udev", "type=add", "key~sda$", "data.dir=true"))
        #expect(!Self.matches("source=udev", "type=remove"))
        #expect(!Self.matches("source=inotify", "type=add"))
        #expect(Self.matches("source=udev", "source!=inotify", "source~d"))
    }

    @Test func firstFailingTermNamesTheCulprit() throws {
        let filter = try EventFilter(terms: ["source=udev", "type=add", "data.dir=false", "key~nvme"])
        #expect(filter.firstFailingTerm(Self.event) == "data.dir=false")
        #expect(!filter.matches(Self.event))
        let passing = try EventFilter(terms: ["source=udev", "data.dir=true"])
        #expect(passing.firstFailingTerm(Self.event) == nil)
        #expect(passing.matches(Self.event))
        #expect(try EventFilter(terms: []).firstFailingTerm(Self.event) == nil)
        #expect(try EventFilter(terms: ["data.missing"]).firstFailingTerm(Self.event) == "data.missing")
    }

    // MARK: - Bad terms

    @Test(arguments: [
        ("colour=red", 0, "unknown field 'colour' (expected source, type, key, id, seq or data.NAME)"),
        ("Source=udev", 0, "unknown field 'Source' (expected source, type, key, id, seq or data.NAME)"),
        ("data", 0, "unknown field 'data' (expected source, type, key, id, seq or data.NAME)"),
        ("data=x", 0, "unknown field 'data' (expected source, type, key, id, seq or data.NAME)"),
        (" source=udev", 0, "unknown field ' source' (expected source, type, key, id, seq or data.NAME)"),
        ("key!x", 0, "unknown field 'key!x' (expected source, type, key, id, seq or data.NAME)"),
        ("time=1", 0, "unknown field 'time' (expected source, type, key, id, seq or data.NAME)"),
        ("", 0, "empty term"),
        ("=udev", 0, "empty field name"),
        ("!=udev", 0, "empty field name"),
        ("~x", 0, "empty field name"),
        ("data.=x", 5, "empty data field name"),
        ("data.", 5, "empty data field name"),
        ("key~(", 4, "bad regex: Unmatched ( or \\("),
        ("key~a{1", 4, "bad regex: Unmatched \\{"),
        ("data.x~[[:nope:]]", 7, "bad regex: Invalid character class name"),
        ("key~*a", 4, "bad regex: Invalid preceding regular expression"),
        ("key=a\u{0}b", 5, "NUL byte in the value"),
    ] as [(String, Int, String)])
    func badTermsAreNamed(_ term: String, _ offset: Int, _ message: String) {
        do {
            _ = try EventFilter(terms: ["source=udev", term, "colour=ignored-after-the-first-error"])
            Issue.record("accepted \(term.debugDescription)")
        } catch {
            #expect(error == FilterError(term: term, offset: offset, message: message))
            #expect(error.description == "filter term '\(term)': \(message)")
        }
    }

    // MARK: - Edge cases

    @Test func embeddedNULsInValues() {
        var data = EventData()
        data.append("nul", "abc\u{0}def")
        let event = Event(
            seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .kevd,
            type: "t", key: "k", data: data)
        // A regex sees the whole value (REG_STARTEND), not just the C string before the NUL.
        #expect(Self.matches("data.nul~def$", event: event))
        #expect(Self.matches("data.nul~^abc", event: event))
        #expect(!Self.matches("data.nul~^abc$", event: event))
        // A glob cannot see past the NUL, so it matches nothing rather than a prefix.
        #expect(!Self.matches("data.nul=abc*", event: event))
        #expect(!Self.matches("data.nul=abc", event: event))
        #expect(Self.matches("data.nul!=abc", event: event))
        // A literal compares all bytes, NUL included.
        #expect(!Self.matches("data.nul=abcdef", event: event))
    }

    @Test func nonASCIIValues() {
        var data = EventData()
        data.append("name", "café ☕")
        let event = Event(
            seq: 1, id: EventID(high: 0, low: 0), time: WallTime(nanoseconds: 0), mono: 0, source: .inotify,
            type: "t", key: "/tmp/ünïcödé/файл", data: data)
        #expect(Self.matches("data.name=café ☕", event: event))
        #expect(Self.matches("data.name=caf* ☕", event: event))
        #expect(Self.matches("key=/tmp/*/файл", event: event))
        #expect(Self.matches("key~файл$", event: event))
        // Literal values compare exact bytes, not canonical equivalence.
        #expect(!Self.matches("data.name=cafe\u{301} ☕", event: event))
    }

    @Test func sharedAcrossThreads() throws {
        let filter = try EventFilter(terms: ["key~^/devices/.*/block/sd[a-z]+$", "source=u*", "data.dir!=false"])
        let events = (0..<64).map { i in
            Event(
                seq: UInt64(i), id: EventID(high: 0, low: UInt64(i)), time: WallTime(nanoseconds: 0), mono: 0,
                source: .udev, type: "add", key: i % 2 == 0 ? "/devices/x/block/sd\(i)" : "/devices/x/block/sdq",
                data: EventData())
        }
        let mismatches = Atomic()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<200 {
                for (i, event) in events.enumerated() where filter.matches(event) != (i % 2 == 1) {
                    mismatches.increment()
                }
            }
        }
        #expect(mismatches.value == 0)
    }
}

/// A counter for the thread test, guarded by a lock.
private final class Atomic: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
