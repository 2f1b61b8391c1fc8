import Foundation
import Glibc
import KevdKernel
import KevdReactor
import Logging
import Testing

@testable import KevdRules

/// The rules directories' debounce lives in the watcher: a burst of changes becomes one callback,
/// `settleNanoseconds` after the first change.
@Suite("rules directory watcher")
struct RuleDirectoryWatcherTests {
    @Test("a burst of changes in a rules directory is one reload, 200 ms after the first; a later change another")
    func debounced() throws {
        var template = Array("/tmp/kevd-rulewatch-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let loop = try EventLoop(logger: Logger(label: "test"))
        var calls: [UInt64] = []
        let watcher = try RuleDirectoryWatcher(directories: [directory], loop: loop, logger: Logger(label: "test")) {
            calls.append(Clock.monotonicNanoseconds())
        }
        #expect(watcher.watched == [directory])

        func turns(until done: () -> Bool, seconds: Double) throws {
            let deadline = Clock.monotonicNanoseconds() + UInt64(seconds * 1e9)
            while !done() && Clock.monotonicNanoseconds() < deadline { try loop.runOnce(timeoutMilliseconds: 20) }
        }
        let first = Clock.monotonicNanoseconds()
        for i in 0..<3 {
            try "[[rule]]\n".write(toFile: directory + "/r\(i).toml", atomically: false, encoding: .utf8)
            try loop.runOnce(timeoutMilliseconds: 10)
        }
        try turns(until: { !calls.isEmpty }, seconds: 5)
        #expect(calls.count == 1)
        let settle = UInt64(RuleDirectoryWatcher.settleNanoseconds)
        if let call = calls.first { #expect(call - first >= settle, "reloaded \((call - first) / 1_000_000) ms after the first change") }
        // Quiet for a while: still one.
        try turns(until: { false }, seconds: 0.5)
        #expect(calls.count == 1)

        unlink(directory + "/r0.toml")
        try turns(until: { calls.count == 2 }, seconds: 5)
        #expect(calls.count == 2)
    }
}
