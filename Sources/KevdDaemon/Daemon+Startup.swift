import Glibc
import KevdConfig
import KevdEvent
import KevdForward
import KevdJournal
import KevdKernel
import KevdReactor
import KevdRules
import KevdServer
import KevdSources
import KevdSpec

/// Start-up: the consumers of the pipeline, in the order they must see events (journal, stdout, mirror, then
/// the server, then the rules), and what start-up repaired in the journal.
extension Daemon {
    /// `started` and READY mean every watch is armed: they wait for the start-up crawl, which runs in slices on
    /// the loop (clients are answered, timers and signals handled meanwhile; `status` shows its progress).
    func announceStartedWhenArmed() throws {
        let announceStarted: () -> Void = { [unowned self] in
            var data = EventData()
            data.append("pid", Int(getpid()))
            data.append("config", config.file)
            data.append("watches", config.watches.count)
            data.append("timers", config.timers.count)
            data.append("rules", ruleSet.rules.count)
            data.append("udev", udev?.sourceName ?? "off")
            data.append("journal", journal.directory)
            data.append("inotify_watches", inotify?.watchCount ?? 0)
            data.append("watch_backend", watchBackends.summary)
            if let fallback = watchBackends.fallback { data.append("fanotify_fallback", fallback) }
            // Which machine and which boot: `kevctl journal --boot` selects the runs whose `started` names a boot.
            data.append("machine_id", identity.machineID)
            data.append("boot_id", identity.bootID)
            pipeline.publishKevd("started", component: "daemon", data)
            logger.info("kevd started", metadata: ["config": "\(config.file)", "pid": "\(getpid())"])
            // The journal is recovered, the rules are loaded, every source is armed and the socket listens.
            do {
                try systemd.ready(loop: loop) { [unowned self] in self.statusSummary() }
            } catch {
                reportError("cannot start the systemd status timer", error: "\(error)", component: "daemon")
            }
        }
        if let inotify { inotify.whenWatchesArmed(announceStarted) } else { announceStarted() }
        if let inotify, inotify.crawlProgress.running {
            try systemd.starting(loop: loop) {
                let crawl = inotify.crawlProgress
                return "watching \(inotify.watchCount) directories, \(crawl.queued) more found"
            }
        }
    }

    /// The client socket: a sink after the journal (and stdout), so clients only see journaled events.
    func startServer() throws {
        // Socket activation: systemd bound and listens; clients that connected before kevd ran are in the backlog.
        let activated = SystemdNotifier.activationSocket(expectedPath: config.daemon.socket, logger: logger)
        // A socket systemd bound is systemd's to protect; one kevd binds itself must not sit where anyone can swap it.
        if activated == nil { try DirectorySafety.check([(PathText.directory(of: config.daemon.socket), "socket directory")]) }
        let server = try Server(
            .init(
                loop: loop, pipeline: pipeline, journal: journal, settings: config.server,
                socketPath: config.daemon.socket, stateDirectory: config.daemon.stateDir, logger: logger,
                statusFields: { [unowned self] in self.statusFields() }, cascadeLimit: config.rules.cascadeLimit,
                listenFD: activated))
        pipeline.add(sink: server)
        self.server = server
        journal.addDurabilityObserver(server)
        logger.info(
            "listening", metadata: ["socket": "\(config.daemon.socket)", "activated": "\(activated != nil)"])
    }

    /// `[[forward]]`: forwarders read the journal from their stored positions on their own threads; the loop
    /// only tells them how far it is durable.
    func startForwarders() throws {
        guard !config.forwards.isEmpty else { return }
        forwarders = try Forwarders(
            specs: config.forwards, stateDirectory: config.daemon.stateDir, journalDirectory: journal.directory,
            durable: journal.durableSeq, consumers: journal.consumers, identity: identity, logger: logger)
        if let forwarders { journal.addDurabilityObserver(forwarders) }
    }

    /// The rules engine: a sink after the server, so a script's `kevctl subscribe` never lags its trigger.
    func startRules() throws {
        let engine = try RulesEngine(
            .init(
                loop: loop, pipeline: pipeline, journal: journal, settings: config.rules,
                socketPath: config.daemon.socket, stateDirectory: config.daemon.stateDir, logger: logger))
        pipeline.add(sink: engine)
        rules = engine
    }

    /// Says what start-up repaired, so a client resuming by seq knows which seqs are given again.
    func reportRecovery() {
        let recovery = journal.recovery
        guard recovery.truncatedBytes > 0 || !recovery.removedSegments.isEmpty else { return }
        var data = EventData()
        data.append("truncated_bytes", recovery.truncatedBytes)
        data.append("segment", recovery.truncatedSegment ?? "")
        data.append("removed_segments", recovery.removedSegments.count)
        data.append("next_seq", .int(Int64(clamping: recovery.nextSeq)))
        data.append("message", "the journal's tail was torn or damaged and was cut; seqs from next_seq are given again")
        logger.warning(
            "journal tail repaired",
            metadata: ["journal.truncated_bytes": "\(recovery.truncatedBytes)", "journal.next_seq": "\(recovery.nextSeq)"])
        pipeline.publishKevd("recovered", component: "journal", data)
    }
}
