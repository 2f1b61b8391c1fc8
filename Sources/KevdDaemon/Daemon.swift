import Glibc
import KevdConfig
import KevdEvent
import KevdKernel
import KevdLoop
import Logging

/// The running daemon: builds the loop and its sources from a config, reloads on HUP, stops on TERM/INT.
///
/// Start-up order matters: the pipeline and its sinks exist before any source, so the first kernel event
/// already has somewhere to go; `kevd`/`started` is published only once every source is armed, so a client
/// that sees it knows nothing after it can be missed.
public final class Daemon {
    public struct Options {
        public var configFile: String
        public var writeStdout: Bool
        public init(configFile: String, writeStdout: Bool) {
            self.configFile = configFile
            self.writeStdout = writeStdout
        }
    }

    public private(set) var config: Config
    let options: Options
    let logger: Logger
    public let loop: EventLoop
    public let pipeline: EventPipeline
    private var signals: SignalSource?
    private var inotify: InotifySource?
    private var timers: TimerSource?
    private var udev: UdevSource?
    private var exitCode: Int32 = 0

    /// Signals must already be blocked (`Daemon.blockSignals()`), before any thread exists.
    public init(config: Config, options: Options, logger: Logger) throws {
        self.config = config
        self.options = options
        self.logger = logger
        loop = try EventLoop(logger: logger)
        pipeline = EventPipeline(firstSeq: 1, idBase: EventIDBase(randA: try randomUInt64(), randB: try randomUInt64()))
        if options.writeStdout { pipeline.add(sink: StdoutSink(loop: loop, pipeline: pipeline)) }
        loop.onTurnEnd { [pipeline] in pipeline.endOfTurn() }
    }

    public static func blockSignals() throws {
        try SignalFD.blockInAllThreads(SignalSource.handledSignals)
    }

    /// Arms every source, announces `started`, and runs until TERM/INT. Returns the process exit code.
    public func run() throws -> Int32 {
        signals = try SignalSource(loop: loop, pipeline: pipeline) { [unowned self] request in
            self.handle(request)
        }
        try apply(config)
        var data = EventData()
        data.append("pid", Int(getpid()))
        data.append("config", config.file)
        data.append("watches", config.watches.count)
        data.append("timers", config.timers.count)
        data.append("udev", udev?.sourceName ?? "off")
        pipeline.publishKevd("started", component: "daemon", data)
        logger.info("kevd started", metadata: ["config": "\(config.file)", "pid": "\(getpid())"])
        try loop.run()
        return exitCode
    }

    /// Makes the sources match `config`. A source that fails to start is reported and the rest still applies.
    private func apply(_ new: Config) throws {
        if inotify == nil && !new.watches.isEmpty {
            inotify = try InotifySource(loop: loop, pipeline: pipeline, logger: logger)
        }
        inotify?.configure(new.watches)

        if timers == nil { timers = TimerSource(loop: loop, pipeline: pipeline, logger: logger) }
        try timers?.configure(new.timers)

        if !new.udev.enabled {
            udev = nil
        } else if udev?.spec != new.udev {
            udev = nil  // Close the old monitor first: one netlink socket at a time.
            do {
                udev = try UdevSource(spec: new.udev, loop: loop, pipeline: pipeline, logger: logger)
            } catch {
                // A source that cannot start is reported and left off; the others keep working.
                reportError("cannot start the udev monitor", error: "\(error)", component: "udev")
            }
        }
        config = new
    }

    private func handle(_ request: SignalSource.Request) {
        switch request {
        case .stop(let signal, let pid, let uid):
            var data = EventData()
            data.append("signal", SignalFD.name(of: signal))
            data.append("pid", Int(pid))
            data.append("uid", Int(uid))
            pipeline.publishKevd("stopping", component: "daemon", data)
            logger.info("kevd stopping", metadata: ["signal": "\(SignalFD.name(of: signal))"])
            loop.stop()
        case .reload(let pid, let uid):
            reload(senderPID: pid, senderUID: uid)
        case .childExited:
            break  // No children until the rules engine exists.
        }
    }

    /// Re-reads the config atomically: a bad file keeps the running config and is reported with file:line:col.
    public func reload(senderPID: UInt32 = 0, senderUID: UInt32 = 0) {
        let new: Config
        do {
            new = try ConfigLoader.load(file: config.file)
        } catch {
            reportError("reload failed; keeping the running configuration", error: "\(error)", component: "config")
            return
        }
        do {
            try apply(new)
        } catch {
            reportError("reload failed while applying", error: "\(error)", component: "config")
            return
        }
        var data = EventData()
        data.append("config", new.file)
        data.append("watches", new.watches.count)
        data.append("timers", new.timers.count)
        data.append("pid", Int(senderPID))
        data.append("uid", Int(senderUID))
        pipeline.publishKevd("reloaded", component: "config", data)
        logger.info("configuration reloaded", metadata: ["config": "\(new.file)"])
    }

    private func reportError(_ message: String, error: String, component: String) {
        var data = EventData()
        data.append("message", message)
        data.append("error", error)
        logger.error("\(message)", metadata: ["error": "\(error)"])
        pipeline.publishKevd("error", component: component, data)
    }
}
