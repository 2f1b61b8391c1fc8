import Foundation
import Glibc
import KevdTestSupport
import Logging
import Synchronization
import Testing

@testable import KevdJournal

/// The journal alone on `scripts/faultfs.py` (a FUSE file system whose fsync fails on command and then drops what
/// the file got since its last good sync), mounted for the test and unmounted after it.
private final class FaultFSMount {
    let root: String
    var mountpoint: String { root + "/mnt" }
    var control: String { root + "/control" }
    private var armed = 0

    init() throws {
        root = try makeTemporaryDirectory(prefix: "kevd-faultfs")
        mkdir(root + "/disk", 0o750)
        mkdir(mountpoint, 0o750)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/faultfs.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, root + "/disk", mountpoint, control, root + "/pid"]
        try process.run()
        // It daemonizes once the mount is up: its exit is the signal that the mount is there.
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "faultfs did not mount")
    }

    func fail(_ errnoName: String, count: Int, pattern: String = "*.seg") throws {
        armed += 1
        try "\(armed) \(errnoName) \(count) \(pattern)\n".write(toFile: control, atomically: true, encoding: .utf8)
    }

    deinit {
        // Unmounting ends the file system's process; lazily, so that a file still open cannot keep it.
        _ = umount2(mountpoint, Int32(MNT_DETACH))
        if let text = try? String(contentsOfFile: root + "/pid", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGTERM)
        }
        try? FileManager.default.removeItem(atPath: root)
    }
}

private var faultFSAvailable: Bool {
    geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0
        && access("/usr/lib/python3/dist-packages/fusepy.py", R_OK) == 0
}
private var rootRequired: Bool { ProcessInfo.processInfo.environment["KEVD_REQUIRE_ROOT"] == "1" }

@Suite(
    "Reliability: journal sync failures (FUSE)",
    .enabled(if: faultFSAvailable || rootRequired, "needs root, /dev/fuse and python3-fusepy; KEVD_REQUIRE_ROOT=1 makes this a failure"),
    .serialized)
struct ReliabilityJournalSyncFailureTests {
    @Test("a failed fdatasync keeps durable where it was, the records in doubt go to a new segment, and a later sync's success is not trusted")
    func failedSyncIsRewritten() throws {
        try #require(faultFSAvailable, "KEVD_REQUIRE_ROOT=1: this test must run (root, /dev/fuse, python3-fusepy)")
        let fs = try FaultFSMount()
        let f = try JournalFixture(directory: fs.mountpoint + "/journal")
        var options = Journal.Options()
        options.sync = .always
        let journal = try f.open(options)
        /// Turns of the "loop" until `done`, applying the flusher's reports as the daemon does.
        func turns(until what: String, _ done: () -> Bool) throws {
            let deadline = Date().addingTimeInterval(20)
            while !done() {
                try #require(Date() < deadline, "timed out waiting for \(what)")
                journal.writePending()
                journal.applyFlusherReports()
                usleep(1_000)
            }
        }
        f.write(journal, count: 100)
        try turns(until: "100 durable") { journal.durableSeq == 100 }

        // One sync fails and the file loses what it had not synced; the next one succeeds (the error was reported).
        try fs.fail("EIO", count: 1)
        f.write(journal, count: 50)
        try turns(until: "the failure") { journal.syncFailure != nil }
        let failure = try #require(journal.syncFailure)
        #expect(failure.errno == EIO && failure.firstSeq == 101, "\(failure)")
        #expect(journal.lastError?.contains("EIO") == true)
        #expect(journal.durableSeq == 100, "durable moved past a failed sync")
        try turns(until: "the repair") { journal.syncFailure == nil && journal.durableSeq == 150 }
        f.write(journal, count: 10)
        try turns(until: "160 durable") { journal.durableSeq == 160 }
        #expect(journal.close())

        let names = try JournalDirectory.segments(in: f.directory).map(\.firstSeq)
        #expect(names.contains(101), "the records in doubt were written to a segment of their own: \(names)")
        let all = try f.readAll()
        #expect(all.seqs == Array(1...160), "\(all.seqs.count) records")
        #expect(all.problems.isEmpty, "\(all.problems)")
        #expect(try JournalVerifier.verify(directory: f.directory).problems.isEmpty)
    }
}
