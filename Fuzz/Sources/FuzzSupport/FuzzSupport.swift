import Glibc
import CFuzzDriver
import KevdEvent

/// What the targets share: a check that crashes loudly (libFuzzer keeps the input) and the journal round trip
/// every event must survive.
public enum Fuzz {
    /// A broken invariant: a crash with the reason, so libFuzzer saves the input and the log says why.
    public static func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        if !condition() {
            fputs("FUZZ INVARIANT BROKEN: \(message())\n", stderr)
            abort()
        }
    }

    /// A scratch directory of this process's own, in $KEVD_FUZZ_SCRATCH (scripts/fuzz makes one on tmpfs and
    /// removes it) or else /dev/shm: a file written per execution must not wear the disk.
    public static func scratchDirectory(_ name: String) -> String {
        let base = getenv("KEVD_FUZZ_SCRATCH").map { String(cString: $0) }
            ?? (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp")
        let path = "\(base)/kevd-fuzz-\(name)-\(getpid())"
        mkdir(path, 0o700)
        return path
    }

    /// Replaces `path` with `bytes`.
    public static func write(_ bytes: UnsafeRawBufferPointer, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        check(fd >= 0, "cannot create \(path)")
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            check(n > 0, "cannot write \(path)")
            done += n
        }
        close(fd)
    }

    /// An event stamped as the loop would, for what a source or an emit made.
    public static func stamp(_ draft: EventDraft, seq: UInt64 = 42) -> Event {
        Event(
            seq: seq, id: EventID(high: 0x0190_0000_0000_7000, low: 0x8000_0000_0000_0001 &+ seq),
            time: WallTime(nanoseconds: 1_700_000_000_123_456_789), mono: 123_456_789, source: draft.source,
            type: draft.type, key: draft.key, data: draft.data)
    }

    /// The journal and every subscriber get an event as its JSON line, and read it back with `Event(jsonLine:)`:
    /// whatever a source or a client can make an event of must come back whole, not as an unreadable record.
    @discardableResult
    public static func checkRoundTrip(_ event: Event) -> [UInt8] {
        var encoder = JSONLineEncoder()
        let line = encoder.encode(event)
        let decoded: Event
        do {
            decoded = try Event(jsonLine: line)
        } catch {
            check(false, "an event's own line does not read back: \(error): \(String(decoding: line, as: UTF8.self))")
            return line
        }
        // The encoder writes non-finite doubles as null, which reads back as NaN (documented in Event+JSON).
        let finite = event.data.allSatisfy { if case .double(let d) = $0.value { return d.isFinite } else { return true } }
        if finite {
            check(decoded == event, "an event reads back different: \(String(decoding: line, as: UTF8.self))")
        }
        return line
    }
}

/// SwiftPM links every executable with `main` pointing at `<Module>_main` (so tests can import it), which
/// `-parse-as-library` leaves undefined and which would hide libFuzzer's own `main` anyway. Each target
/// therefore defines `<Module>_main` as a call to this, which hands over to libFuzzer's driver.
extension Fuzz {
    public typealias TestOneInput = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

    public static func runDriver(
        _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, _ test: TestOneInput
    ) -> CInt {
        var argc = argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
        return LLVMFuzzerRunDriver(&argc, &argv, test)
    }
}
