import KevdSpec
import KevdEvent
import Testing

@testable import KevdServer

@Suite("server: access from peer credentials")
struct AccessTests {
    typealias Permissions = Server.Permissions
    static let socketGroup: UInt32 = 500
    static let kevdUID: UInt32 = 990

    static func creds(uid: UInt32, gid: UInt32 = 100, groups: [UInt32] = []) -> Connection.Credentials {
        Connection.Credentials(pid: 1, uid: uid, gid: gid, groups: groups)
    }

    static func permissions(_ creds: Connection.Credentials, _ access: [AccessRule] = []) -> Permissions {
        Permissions(for: creds, access: access, socketGroup: socketGroup, ownUID: kevdUID)
    }

    static func rule(uids: [UInt32] = [], gids: [UInt32] = [], emit: Bool = false, sources: [String]? = nil) -> AccessRule {
        var rule = AccessRule()
        rule.uids = uids
        rule.gids = gids
        rule.emit = emit
        rule.sources = sources
        return rule
    }

    @Test("root and kevd's own user may do everything, whatever the rules say")
    func rootAndOwnUser() {
        let restrictive = [Self.rule(uids: [0, Self.kevdUID], emit: false, sources: [])]
        for uid in [0, Self.kevdUID] {
            #expect(Self.permissions(Self.creds(uid: uid), restrictive) == Permissions(emit: true, sources: nil))
        }
    }

    @Test("without rules: the socket's group (primary or supplementary) may do everything, others nothing")
    func socketGroup() {
        let all = Permissions(emit: true, sources: nil)
        #expect(Self.permissions(Self.creds(uid: 1000, gid: Self.socketGroup)) == all)
        #expect(Self.permissions(Self.creds(uid: 1000, gid: 100, groups: [7, Self.socketGroup])) == all)
        let outsider = Self.permissions(Self.creds(uid: 1000, gid: 100, groups: [7]))
        #expect(outsider == Permissions(emit: false, sources: []))
        #expect(!outsider.any)
    }

    @Test("with rules: the socket's group grants nothing by itself")
    func rulesReplaceTheGroup() {
        let p = Self.permissions(Self.creds(uid: 1000, gid: Self.socketGroup), [Self.rule(uids: [2000], emit: true)])
        #expect(p == Permissions(emit: false, sources: []))
    }

    @Test("rules naming the uid or one of its groups add up")
    func rulesUnion() {
        let rules = [
            Self.rule(uids: [1000], emit: false, sources: ["udev"]),
            Self.rule(gids: [7], emit: true, sources: ["inotify"]),
            Self.rule(gids: [8], emit: true, sources: nil),
        ]
        let p = Self.permissions(Self.creds(uid: 1000, gid: 100, groups: [7]), rules)
        #expect(p == Permissions(emit: true, sources: ["udev", "inotify"]))
        let q = Self.permissions(Self.creds(uid: 1000, gid: 8), rules)
        #expect(q == Permissions(emit: true, sources: nil))  // one rule without `sources` allows them all
        let r = Self.permissions(Self.creds(uid: 1001, gid: 100), rules)
        #expect(!r.any)
    }

    static func event(source: String) -> Event {
        Event(seq: 1, id: EventID(unixMilliseconds: 0, seq: 1, base: EventIDBase(randA: 0, randB: 0)),
              time: WallTime(nanoseconds: 0), mono: 0, source: EventSource(source), type: "t", key: "k", data: EventData())
    }

    @Test("a source restriction matches the allowed sources whole and literally")
    func sourceTerm() throws {
        let filter = try EventFilter(terms: [Permissions.sourceTerm(["udev", "my.app", "a+b"])])
        for allowed in ["udev", "my.app", "a+b"] { #expect(filter.matches(Self.event(source: allowed))) }
        for other in ["udevx", "xudev", "myxapp", "aab", "inotify", "udev|inotify"] {
            #expect(!filter.matches(Self.event(source: other)))
        }
    }
}
