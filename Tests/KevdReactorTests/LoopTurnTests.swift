import KevdKernel
import Logging
import Testing

@testable import KevdReactor

/// The loop measures its own turns: the longest since the last look is what `kevd`/`stats` reports.
@Suite("loop turn measurement")
struct LoopTurnTests {
    /// Keeps the thread busy (not asleep) for `nanoseconds` of the monotonic clock.
    static func spin(_ nanoseconds: UInt64) {
        let end = Clock.monotonicNanoseconds() + nanoseconds
        while Clock.monotonicNanoseconds() < end {}
    }

    @Test("a slow handler and a slow turn-end handler make the longest turn; the wait in epoll does not count")
    func longestTurn() throws {
        let loop = try EventLoop(logger: Logger(label: "test"))
        let ready = try EventFD()
        var slowTurnEnd = false
        try loop.register(fd: ready.fd.rawValue, events: .readable, priority: .kernelInput) { _ in
            _ = try? ready.drain()
            Self.spin(30_000_000)
        }
        loop.onTurnEnd {
            if slowTurnEnd { Self.spin(20_000_000) }
        }
        #expect(loop.longestTurnNanoseconds == 0)

        // A turn that only waited (100 ms in epoll_wait, nothing ready) is short.
        #expect(try loop.runOnce(timeoutMilliseconds: 100) == 0)
        #expect(loop.longestTurnNanoseconds < 50_000_000, "\(loop.longestTurnNanoseconds) ns")

        // The handler's 30 ms, and the turn-end work's 20 ms on top.
        ready.signal()
        slowTurnEnd = true
        #expect(try loop.runOnce(timeoutMilliseconds: 1000) == 1)
        let longest = loop.longestTurnNanoseconds
        #expect(longest >= 50_000_000 && longest < 1_000_000_000, "\(longest) ns")

        // A shorter turn later leaves the maximum; taking it starts a new window.
        slowTurnEnd = false
        ready.signal()
        #expect(try loop.runOnce(timeoutMilliseconds: 1000) == 1)
        #expect(loop.longestTurnNanoseconds == longest)
        #expect(loop.takeLongestTurn() == longest)
        #expect(loop.longestTurnNanoseconds == 0)
        ready.signal()
        #expect(try loop.runOnce(timeoutMilliseconds: 1000) == 1)
        #expect(loop.longestTurnNanoseconds >= 30_000_000)
    }
}
