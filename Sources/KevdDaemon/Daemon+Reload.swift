import KevdConfig
import KevdEvent
import KevdReactor
import KevdRules
import KevdSources
import KevdSpec

/// Reload, in one place: SIGHUP re-reads the config and the rule files (`reload`), a settled change in a
/// rules directory re-reads the rule files (`reloadRules`; the debounce is `RuleDirectoryWatcher`'s); both
/// make the sources and rules match through `apply`.
extension Daemon {
    /// SIGHUP: systemd hears RELOADING=1, then READY=1 once the new configuration's roots are crawled (also after
    /// a failed reload: the running configuration is still in force).
    func reloadRequested(senderPID: UInt32, senderUID: UInt32) {
        systemd.reloading()
        reload(senderPID: senderPID, senderUID: senderUID)
        let reloaded: () -> Void = { [unowned self] in self.systemd.reloaded(status: self.statusSummary()) }
        if let inotify { inotify.whenWatchesArmed(reloaded) } else { reloaded() }
    }

    func loadRules(_ config: Config) -> (RuleSet, [ConfigError]) {
        RuleLoader.load(directories: config.rules.directories, baseTimers: config.timers.map(\.name))
    }

    /// Watches the rules directories that exist now (rebuilt on every reload, to pick up new ones).
    func watchRuleDirectories(_ directories: [String]) {
        ruleWatcher = nil
        do {
            // Debounced by the watcher: one reload once the directory settled.
            ruleWatcher = try RuleDirectoryWatcher(directories: directories, loop: loop, logger: logger) { [unowned self] in
                self.reloadRules()
            }
        } catch {
            reportError("cannot watch the rules directories; reload with SIGHUP", error: "\(error)", component: "rules")
        }
    }

    /// Makes the sources and rules match `new` and `ruleSet` (whose files may declare sources of their own).
    /// A source that fails to start is reported and the rest still applies.
    func apply(_ new: Config, rules ruleSet: RuleSet) throws {
        try applyWatches(new.watches + ruleSet.watches)

        if timers == nil { timers = TimerSource(loop: loop, pipeline: pipeline, logger: logger) }
        try timers?.configure(new.timers + ruleSet.timers)

        if !new.udev.enabled {
            udev = nil
        } else if udev?.spec != new.udev {
            let known = udev?.knownDevices
            udev = nil  // Close the old monitor first: one netlink socket at a time.
            do {
                udev = try UdevSource(spec: new.udev, loop: loop, pipeline: pipeline, logger: logger)
                followDevices(known)
            } catch {
                // A source that cannot start is reported and left off; the others keep working.
                reportError("cannot start the udev monitor", error: "\(error)", component: "udev")
            }
        }
        rules?.configure(ruleSet.rules, settings: new.rules)
        applyInput(new)  // After the rules: a switch's position at start is published now, and rules see it.
        watchRuleDirectories(new.rules.directories)
        try configureStats(interval: new.daemon.statsIntervalNanoseconds)
        self.ruleSet = ruleSet
        config = new
    }

    /// Re-reads the config and the rule files atomically: a bad config keeps the running config, a bad rule file
    /// keeps the running rules; each problem is reported with file:line:col.
    public func reload(senderPID: UInt32 = 0, senderUID: UInt32 = 0) {
        let new: Config
        do {
            new = try ConfigLoader.load(file: config.file)
        } catch {
            reportError("reload failed; keeping the running configuration", error: "\(error)", component: "config")
            return
        }
        let ruleSet = checkedRules(new) ?? self.ruleSet
        do {
            try apply(new, rules: ruleSet)
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
        data.append("rules", ruleSet.rules.count)
        pipeline.publishKevd("reloaded", component: "config", data)
        logger.info("configuration reloaded", metadata: ["config": "\(new.file)"])
        if new.forwards != (forwarders?.specs ?? []) {
            // Stopping a forwarder waits for its acknowledgements, which the loop must not do.
            reportError("[[forward]] changes take effect when kevd restarts", error: "forward configuration changed", component: "forward")
        }
    }

    /// The rule files as they are now, or nil (reported) when any has a problem: all or nothing.
    func checkedRules(_ config: Config) -> RuleSet? {
        let (loaded, problems) = loadRules(config)
        ruleProblems = problems
        guard problems.isEmpty else {
            for problem in problems {
                reportError("invalid rule file; keeping the running rules", error: "\(problem)", component: "rules")
            }
            return nil
        }
        return loaded
    }

    /// A rules directory changed: re-read the rule files (the config stays as it is).
    func reloadRules() {
        guard let ruleSet = checkedRules(config) else { return }
        do {
            try apply(config, rules: ruleSet)
        } catch {
            reportError("rule reload failed while applying", error: "\(error)", component: "rules")
            return
        }
        var data = EventData()
        data.append("rules", ruleSet.rules.count)
        data.append("files", ruleSet.files.count)
        pipeline.publishKevd("reloaded", component: "rules", data)
        logger.info("rules reloaded", metadata: ["rules": "\(ruleSet.rules.count)"])
    }
}
