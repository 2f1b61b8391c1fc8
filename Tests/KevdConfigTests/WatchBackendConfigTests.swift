import Testing

@testable import KevdConfig
import KevdSpec

@Suite("[[watch]] backend")
struct WatchBackendConfigTests: ConfigText {
    @Test("auto by default; inotify and fanotify when named")
    func values() throws {
        let config = try parse(
            """
            [[watch]]
            path = "/srv/a"

            [[watch]]
            path = "/srv/b"
            backend = "inotify"

            [[watch]]
            path = "/srv/c"
            backend = "fanotify"
            """)
        #expect(config.watches.map(\.backend) == [.auto, .inotify, .fanotify])
    }

    @Test("an unknown backend is an error at its key, listing the choices")
    func unknown() throws {
        let found = try #require(error("[[watch]]\npath = \"/srv\"\nbackend = \"dnotify\"\n"))
        #expect(found.line == 3 && found.column == 1, "\(found)")
        #expect(found.message == "unknown backend 'dnotify'; expected one of: auto, inotify, fanotify", "\(found)")
    }
}
