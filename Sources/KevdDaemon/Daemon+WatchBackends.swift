import KevdEvent
import KevdReactor
import KevdSources
import KevdSpec

/// Which backend watches each `[[watch]]` root: fanotify (`backend = "fanotify"`, or `auto` where kevd is root and
/// the kernel has directory-entry events) or inotify. A root that asked for fanotify and cannot have it is watched
/// with inotify, and the reason is in `kevd`/`started` (`fanotify_fallback`) and `status`; an explicit
/// `backend = "fanotify"` that falls back is also reported as `kevd`/`error`. The fallback is per root when only
/// some roots' file systems refuse a file-system mark (overlayfs).
struct WatchBackends {
    var inotifyRoots = 0
    var fanotifyRoots = 0
    /// Why roots that asked for fanotify (or `auto`) are on inotify, if any are.
    var fallback: String?

    /// `fanotify`, `inotify`, `fanotify+inotify` or `none`: what `kevd`/`started` and `status` name.
    var summary: String {
        switch (fanotifyRoots > 0, inotifyRoots > 0) {
        case (true, true): return "fanotify+inotify"
        case (true, false): return "fanotify"
        case (false, true): return "inotify"
        case (false, false): return "none"
        }
    }
}

extension Daemon {
    func applyWatches(_ watches: [WatchSpec]) throws {
        var onFanotify: [WatchSpec] = []
        var onInotify: [WatchSpec] = []
        var fallback: String?
        if watches.contains(where: { $0.backend != .inotify }) {
            fallback = FanotifySource.unavailableReason()
            if fallback == nil && fanotify == nil {
                do {
                    fanotify = try FanotifySource(loop: loop, pipeline: pipeline, logger: logger)
                } catch {
                    fallback = "fanotify could not start: \(error)"
                }
            }
        }
        for spec in watches {
            if spec.backend != .inotify && fallback == nil { onFanotify.append(spec) } else { onInotify.append(spec) }
        }
        var fellBack = fallback == nil ? [] : watches.filter { $0.backend != .inotify }
        // A root on a file system that refuses a file-system mark (overlayfs) goes to inotify, root by root.
        if let fanotify {
            let refused = fanotify.configure(onFanotify)
            if !refused.isEmpty {
                onFanotify.removeAll { spec in refused.contains { $0.spec == spec } }
                onInotify += refused.map(\.spec)
                fellBack += refused.map(\.spec)
                fallback = ((fallback.map { [$0] } ?? []) + refused.map(\.reason)).joined(separator: "; ")
            }
        }
        let explicit = fellBack.filter { $0.backend == .fanotify }
        if let fallback, !explicit.isEmpty {
            var data = EventData()
            data.append("message", "backend = \"fanotify\" is not available; watching with inotify")
            data.append("reason", fallback)
            data.append("paths", explicit.map(\.path).joined(separator: " "))
            logger.error("fanotify not available; watching with inotify", metadata: ["reason": "\(fallback)"])
            pipeline.publishKevd("error", component: "fanotify", data)
        } else if let fallback, !fellBack.isEmpty {
            logger.info("watching with inotify", metadata: ["fanotify": "\(fallback)"])
        }
        watchBackends = WatchBackends(
            inotifyRoots: onInotify.count, fanotifyRoots: onFanotify.count,
            fallback: fellBack.isEmpty ? nil : fallback)
        if inotify == nil && !onInotify.isEmpty {
            inotify = try InotifySource(loop: loop, pipeline: pipeline, logger: logger)
        }
        inotify?.configure(onInotify)
    }

    /// The fanotify backend in `status`: which backend the roots use, why not fanotify (if so), its marks.
    func fanotifyStatus() -> JSONValue {
        .object([
            ("backend", .string(watchBackends.summary)),
            ("roots", .int(Int64(watchBackends.fanotifyRoots))),
            ("file_systems", .int(Int64(fanotify?.markCount ?? 0))),
            ("directories_cached", .int(Int64(fanotify?.cachedDirectories ?? 0))),
            ("overflows", .int(Int64(fanotify?.overflowCount ?? 0))),
            ("queue", fanotify.map { .string($0.queueLimit) } ?? .null),
            ("fallback", watchBackends.fallback.map { .string($0) } ?? .null),
        ])
    }
}
