import Glibc
import KevdEvent
import KevdKernel
import KevdReactor
import Logging

/// Signals as events, from one signalfd.
///
/// `TERM`/`INT` ask the daemon to stop, `HUP` to reload; both go to the daemon's handler rather than becoming
/// `signal` events (the daemon reports them as `kevd`/`stopping` and `kevd`/`reloaded`). `USR1`/`USR2` become
/// `signal` events. `CHLD` is handed to whoever reaps children (the rules engine).
public final class SignalSource {
    /// Every signal kevd takes over; blocked in all threads at the top of `main`.
    public static let handledSignals: [Int32] = [SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD]

    public enum Request {
        case stop(signal: Int32, senderPID: UInt32, senderUID: UInt32)
        case reload(senderPID: UInt32, senderUID: UInt32)
        case childExited
    }

    let signalFD: SignalFD
    let loop: EventLoop
    let pipeline: EventPipeline
    let onRequest: (Request) -> Void

    public init(loop: EventLoop, pipeline: EventPipeline, onRequest: @escaping (Request) -> Void) throws {
        self.loop = loop
        self.pipeline = pipeline
        self.onRequest = onRequest
        signalFD = try SignalFD(signals: Self.handledSignals)
        try loop.register(fd: signalFD.fd.rawValue, events: .readable, priority: .signals) { [unowned self] _ in
            self.drain()
        }
    }

    deinit { loop.unregister(fd: signalFD.fd.rawValue) }

    func drain() {
        let records: [SignalFD.Record]
        do {
            records = try signalFD.readAll()
        } catch {
            return
        }
        var childExited = false
        for record in records {
            switch record.signal {
            case SIGTERM, SIGINT:
                onRequest(.stop(signal: record.signal, senderPID: record.senderPID, senderUID: record.senderUID))
            case SIGHUP:
                onRequest(.reload(senderPID: record.senderPID, senderUID: record.senderUID))
            case SIGCHLD:
                childExited = true  // Coalesced by the kernel anyway: the reaper must wait for all children.
            default:
                let name = SignalFD.name(of: record.signal)
                var data = EventData()
                data.append("signo", Int(record.signal))
                data.append("pid", Int(record.senderPID))
                data.append("uid", Int(record.senderUID))
                pipeline.publish(EventDraft(source: .signal, type: name, key: name, data: data))
            }
        }
        if childExited { onRequest(.childExited) }
    }
}
