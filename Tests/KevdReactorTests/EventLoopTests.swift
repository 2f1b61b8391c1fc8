import Foundation
import Glibc
import KevdEvent
import KevdKernel
import KevdTestSupport
import Logging
import Testing

@testable import KevdReactor

/// Collects what the pipeline publishes.
final class RecordingSink: EventSink {
    var events: [Event] = []
    var turns = 0
    var lines: [[UInt8]] = []
    func consume(_ event: Event, line: UnsafeRawBufferPointer) {
        events.append(event)
        lines.append(Array(line))
    }
    func endOfTurn() { turns += 1 }
}

func makeLoop() throws -> (EventLoop, EventPipeline, RecordingSink) {
    let loop = try EventLoop(logger: Logger(label: "test"))
    let pipeline = EventPipeline(idBase: EventIDBase(randA: 1, randB: 2))
    let sink = RecordingSink()
    pipeline.add(sink: sink)
    loop.onTurnEnd { pipeline.endOfTurn() }
    return (loop, pipeline, sink)
}

@Suite("event loop")
struct EventLoopTests {
    @Test("ready fds are dispatched in priority order, then the turn ends once")
    func priorityOrder() throws {
        let (loop, _, sink) = try makeLoop()
        let low = try EventFD()
        let high = try EventFD()
        var order: [String] = []
        try loop.register(fd: low.fd.rawValue, events: .readable, priority: .clients) { _ in
            order.append("clients")
            _ = try? low.drain()
        }
        try loop.register(fd: high.fd.rawValue, events: .readable, priority: .signals) { _ in
            order.append("signals")
            _ = try? high.drain()
        }
        low.signal()
        high.signal()
        let ran = try loop.runOnce(timeoutMilliseconds: 1000)
        #expect(ran == 2)
        #expect(order == ["signals", "clients"])
        #expect(sink.turns == 1)
    }

    @Test("a registration removed by an earlier handler in the same batch is not called, even when its fd number is reused")
    func staleRegistrationSkipped() throws {
        let (loop, _, _) = try makeLoop()
        let first = try EventFD()
        // A pipe whose read end is readable in the same batch as `first`; its number is what gets reused.
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        let second = ends[0]
        defer { close(ends[1]) }
        var secondCalled = false
        var replacementCalled = false
        var reusedNumber = false
        try loop.register(fd: first.fd.rawValue, events: .readable, priority: .signals) { _ in
            _ = try? first.drain()
            loop.unregister(fd: second)
            // Close the fd and put a new, idle pipe under the same number within this turn, as a handler that
            // closes a client and accepts another can: the batch still holds the old fd's readiness report.
            close(second)
            var fresh: [Int32] = [0, 0]
            guard pipe(&fresh) == 0 else { return }
            close(fresh[1])
            if fresh[0] != second {
                guard dup2(fresh[0], second) == second else { return }
                close(fresh[0])
            }
            reusedNumber = true
            try? loop.register(fd: second, events: .readable, priority: .clients) { _ in replacementCalled = true }
        }
        try loop.register(fd: second, events: .readable, priority: .clients) { _ in
            secondCalled = true
        }
        first.signal()
        #expect(write(ends[1], "x", 1) == 1)
        try loop.runOnce(timeoutMilliseconds: 1000)
        #expect(reusedNumber)
        #expect(!secondCalled)
        // The replacement's pipe has no writer and nothing in it: only the stale report could have called it.
        #expect(!replacementCalled)
        loop.unregister(fd: second)
        close(second)
    }

    @Test("after a handler stops the loop, the rest of that turn's ready handlers do not run")
    func stopEndsTheTurn() throws {
        let (loop, _, _) = try makeLoop()
        let first = try EventFD()
        let second = try EventFD()
        var secondCalled = false
        try loop.register(fd: first.fd.rawValue, events: .readable, priority: .signals) { _ in
            _ = try? first.drain()
            loop.stop()
        }
        try loop.register(fd: second.fd.rawValue, events: .readable, priority: .kernelInput) { _ in
            secondCalled = true
        }
        first.signal()
        second.signal()
        try loop.runOnce(timeoutMilliseconds: 1000)
        #expect(loop.isStopping)
        #expect(!secondCalled)
    }

    @Test("work posted from another thread wakes a loop blocked in epoll_wait and runs on the loop thread")
    func inboxWakesLoop() throws {
        let (loop, pipeline, sink) = try makeLoop()
        let loopThread = pthread_self()
        let loopTID = currentThreadID()
        let ranOnLoopThread = LockedFlag()
        let poster = Thread {
            // Post only once the loop thread sleeps in epoll_wait, so the posts must wake it.
            _ = try? waitUntil("the loop thread to block in epoll_wait", timeout: 10) {
                isBlockedInEpollWait(thread: loopTID) ? true : nil
            }
            for i in 0..<100 {
                loop.inbox.post {
                    ranOnLoopThread.set(pthread_equal(pthread_self(), loopThread) != 0)
                    pipeline.publish(EventDraft(source: .kevd, type: "posted", key: "k\(i)"))
                }
            }
        }
        poster.start()
        let deadline = Date().addingTimeInterval(10)
        while sink.events.count < 100 && Date() < deadline {
            try loop.runOnce(timeoutMilliseconds: 1000)
        }
        #expect(sink.events.map(\.key) == (0..<100).map { "k\($0)" })
        #expect(sink.events.map(\.seq) == Array(1...100))
        // Sinks get each event's JSON line, encoded once by the pipeline.
        #expect(sink.lines.map { (try? Event(jsonLine: $0)) ?? nil } == sink.events.map { Optional($0) })
        #expect(ranOnLoopThread.value == true)
    }

    @Test("a monotonic interval timerfd counts expirations the loop missed")
    func timerOverruns() throws {
        let timer = try TimerFD(clock: .monotonic)
        try timer.arm(delay: 10_000_000, interval: 10_000_000)
        #expect(try timer.read() == TimerFD.Expiry.none)
        var ready = pollfd(fd: timer.fd.rawValue, events: Int16(POLLIN), revents: 0)
        _ = poll(&ready, 1, 1000)
        // The loop "misses" expirations: nothing reads the timer for 60 ms. The kernel counts an interval timer's
        // overruns only when it is read, so the one thing to wait for is the clock: a one-shot timerfd's expiry.
        let later = try TimerFD(clock: .monotonic)
        try later.arm(delay: 60_000_000, interval: 0)
        var laterReady = pollfd(fd: later.fd.rawValue, events: Int16(POLLIN), revents: 0)
        try #require(poll(&laterReady, 1, 5000) == 1, "the 60 ms timer did not fire within 5 s")
        guard case .expired(let count) = try timer.read() else {
            Issue.record("timer did not expire")
            return
        }
        #expect(count >= 5)
    }

    @Test("an absolute wall-clock timerfd fires at its deadline")
    func absoluteRealtimeTimer() throws {
        let timer = try TimerFD(clock: .realtime)
        let deadline = Clock.realtimeNanoseconds() + 50_000_000
        try timer.arm(atAbsolute: deadline, cancelOnClockChange: true)
        var ready = pollfd(fd: timer.fd.rawValue, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 5000) == 1)
        #expect(try timer.read() == .expired(1))
        #expect(Clock.realtimeNanoseconds() >= deadline)
    }

    @Test("signalfd reports a raised signal with the sender's pid and uid")
    func signalRecord() throws {
        // raise() directs the signal at this thread, so blocking it here is enough.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGUSR2)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        defer { pthread_sigmask(SIG_UNBLOCK, &set, nil) }
        let signals = try SignalFD(signals: [SIGUSR2])
        raise(SIGUSR2)
        let records = try signals.readAll()
        #expect(records.count == 1)
        #expect(records.first?.signal == SIGUSR2)
        #expect(records.first?.senderPID == UInt32(getpid()))
        #expect(records.first?.senderUID == UInt32(getuid()))
        #expect(SignalFD.name(of: SIGUSR2) == "usr2")
    }
}

/// This thread's kernel id (Glibc's module has no `gettid`): `/proc/thread-self` links to `<pid>/task/<tid>`.
func currentThreadID() -> Int32 {
    var buffer = [CChar](repeating: 0, count: 64)
    let n = readlink("/proc/thread-self", &buffer, buffer.count - 1)
    guard n > 0 else { return -1 }
    let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return Int32(link.split(separator: "/").last ?? "") ?? -1
}

/// Whether thread `tid` of this process is asleep in `epoll_wait`: its kernel wait channel says so, or (where
/// the kernel hides wait channels) it sleeps inside the epoll_wait or epoll_pwait system call.
func isBlockedInEpollWait(thread tid: Int32) -> Bool {
    let task = "/proc/self/task/\(tid)/"
    if let channel = try? String(contentsOfFile: task + "wchan", encoding: .utf8), channel.contains("ep_poll") {
        return true
    }
    #if arch(x86_64)
        let epollWaits = [232, 281]
    #elseif arch(arm64)
        let epollWaits = [22]
    #else
        let epollWaits: [Int] = []
    #endif
    guard let call = try? String(contentsOfFile: task + "syscall", encoding: .utf8),
        let number = call.split(separator: " ").first.flatMap({ Int($0) }),
        let stat = try? String(contentsOfFile: task + "stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    return epollWaits.contains(number) && stat[stat.index(after: close)...].hasPrefix(" S")
}

final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Bool? = nil
    func set(_ value: Bool) {
        lock.lock()
        stored = (stored ?? true) && value
        lock.unlock()
    }
    var value: Bool? {
        lock.lock()
        defer { lock.unlock() }
        return stored
    }
}
