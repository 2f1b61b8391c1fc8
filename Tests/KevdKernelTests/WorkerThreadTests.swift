import Glibc
import KevdKernel
import Synchronization
import Testing

/// WorkerThread against real threads: it runs, is named, joins once; a start the system refuses throws the
/// errno and leaves nothing to join.
@Suite("worker thread")
struct WorkerThreadTests {
    @Test("the body runs on a thread of its own, named, and join waits for it; a second join returns at once")
    func runsAndJoins() throws {
        let seen = Mutex<(ran: Bool, name: String, own: Bool)>((false, "", false))
        let caller = pthread_self()
        // Longer than 15 bytes: cut to what the kernel keeps.
        let thread = try WorkerThread(name: "kevd-test-worker-thread") {
            let name = (try? FileContents.read("/proc/thread-self/comm")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let own = pthread_equal(pthread_self(), caller) == 0
            // Still running when the caller reaches join: join must wait for the end.
            usleep(50_000)
            seen.withLock { $0 = (true, name, own) }
        }
        #expect(thread.isJoinable)
        thread.join()
        let result = seen.withLock { $0 }
        #expect(result.ran, "join returned before the body ended")
        #expect(result.own)
        #expect(result.name == "kevd-test-worke\n", "the kernel keeps 15 bytes of the name")
        #expect(!thread.isJoinable)
        thread.join()
    }

    @Test("a thread the system cannot make: SyscallError with pthread_create's errno, the body never runs, join is a no-op")
    func startFailureThrows() throws {
        let ran = Mutex(false)
        // A stack larger than the whole user address space (128 TiB): mmap refuses it, pthread_create says EAGAIN.
        #expect {
            _ = try WorkerThread(name: "kevd-too-big", stackBytes: 1 << 50) { ran.withLock { $0 = true } }
        } throws: { error in
            guard let error = error as? SyscallError else { return false }
            return error.errno == .resourceTemporarilyUnavailable && error.call == "pthread_create(kevd-too-big)"
        }
        #expect(!ran.withLock { $0 })
        // A stack below PTHREAD_STACK_MIN is refused before any thread is tried.
        #expect(throws: SyscallError.self) { _ = try WorkerThread(name: "kevd-tiny", stackBytes: 1) {} }
    }

    @Test("many threads start and join cleanly, and each body runs exactly once")
    func manyThreads() throws {
        let count = Mutex(0)
        var threads: [WorkerThread] = []
        for _ in 0..<64 { threads.append(try WorkerThread(name: "kevd-many") { count.withLock { $0 += 1 } }) }
        for thread in threads { thread.join() }
        #expect(count.withLock { $0 } == 64)
    }
}
