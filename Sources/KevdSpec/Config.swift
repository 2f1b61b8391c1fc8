import KevdSchedule

/// kevd's configuration, validated: every value here is usable as it is.
public struct Config: Sendable, Equatable {
    /// The file it was read from (absolute), for messages and reloads.
    public var file: String
    public var daemon: DaemonSettings
    public var watches: [WatchSpec]
    public var timers: [TimerSpec]
    public var udev: UdevSpec
    public var journal: JournalSettings
    public var server = ServerSettings()
    public var rules = RulesSettings()
    public var journald = JournaldSettings()
    /// `[[forward]]` tables, each with a distinct name.
    public var forwards: [ForwardSpec] = []
    /// `[input]` and `[acpi]`; nil when absent (or `enabled = false`).
    public var input: InputSpec? = nil
    public var acpi: AcpiSpec? = nil

    public init(
        file: String, daemon: DaemonSettings, watches: [WatchSpec], timers: [TimerSpec], udev: UdevSpec,
        journal: JournalSettings = JournalSettings()
    ) {
        self.file = file
        self.daemon = daemon
        self.watches = watches
        self.timers = timers
        self.udev = udev
        self.journal = journal
    }

    /// Where the journal's segments live: `<state_dir>/journal`.
    public var journalDirectory: String { daemon.stateDir + "/journal" }
}

/// The `[journal]` table.
public struct JournalSettings: Sendable, Equatable {
    public enum Sync: String, Sendable, CaseIterable { case batch, always, none }
    /// `batch`: group commit, one fdatasync at most every `batchInterval`; `always`: a sync starts as soon as
    /// anything is written; `none`: never sync (page cache only: survives a kevd crash, not a power cut).
    public var sync: Sync = .batch
    public var batchIntervalNanoseconds: Int64 = 5_000_000
    public var segmentBytes: Int64 = 64 * 1024 * 1024
    /// Retention; 0 means no limit.
    public var maxBytes: Int64 = 0
    public var maxAgeNanoseconds: Int64 = 0
    /// `max_bytes_hard`: segments a forwarder or rule has not read are kept past `max_bytes`/`max_age` up to this
    /// many bytes of journal (0: without limit). nil: twice `max_bytes` (without limit when `max_bytes` is 0).
    public var maxBytesHard: Int64? = nil
    /// `min_free`: unread segments past `max_bytes`/`max_age` are also deleted while the journal's file system has
    /// less than this free (0: no floor).
    public var minFreeBytes: Int64 = 64 << 20
    /// How often retention runs besides at each new segment.
    public var retentionIntervalNanoseconds: Int64 = 60_000_000_000
    public init() {}

    /// The hard ceiling in force (0: none).
    public var effectiveMaxBytesHard: Int64 { maxBytesHard ?? (maxBytes > 0 ? maxBytes.multipliedReportingOverflow(by: 2).partialValue : 0) }
}

/// The `[daemon]` table.
public struct DaemonSettings: Sendable, Equatable {
    public var stateDir: String
    public var socket: String
    public var logLevel: String
    /// `auto`, `journald` (a `<N>` priority prefix, no timestamp) or `plain`; see `logFormats`.
    public var logFormat = "auto"
    /// How often kevd publishes a `kevd`/`stats` event; 0: never.
    public var statsIntervalNanoseconds: Int64 = 60_000_000_000

    public static let defaultStateDir = "/var/lib/kevd"
    public static let defaultSocket = "/run/kevd/kevd.sock"
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    public static let logFormats = ["auto", "journald", "plain"]

    public init(
        stateDir: String, socket: String, logLevel: String, logFormat: String = "auto",
        statsIntervalNanoseconds: Int64 = 60_000_000_000
    ) {
        self.stateDir = stateDir
        self.socket = socket
        self.logLevel = logLevel
        self.logFormat = logFormat
        self.statsIntervalNanoseconds = statsIntervalNanoseconds
    }
}

/// The `[rules]` table.
public struct RulesSettings: Sendable, Equatable {
    /// Rule directories, highest priority first: a file name in an earlier one overrides (or, as a symlink to
    /// /dev/null, masks) the same name in a later one. The systemd and udev order.
    public var directories = ["/etc/kevd/rules.d", "/run/kevd/rules.d", "/usr/lib/kevd/rules.d"]
    /// How many rule runs deep a chain of events may go (an event caused by a run caused by an event…) before
    /// kevd refuses to run or emit the next link: a rule cannot trigger itself forever.
    public var cascadeLimit = 8
    /// Bytes kept of each run's stdout and of its stderr (the last ones), for `rule.succeeded`/`rule.failed`.
    public var outputTail = 4096
    public init() {}
}

/// A `[[watch]]` table: a file or directory tree to watch with inotify.
public struct WatchSpec: Sendable, Equatable {
    public var path: String
    public var recursive: Bool
    /// The event types to report; always a subset of `FileEventType.allCases`.
    public var events: Set<FileEventType>
    /// Globs: without a `/` they match any file or directory name in the tree; with one, the path relative to
    /// `path`. Excluded directories are not descended into.
    public var exclude: [String]
    /// Which kernel interface watches it (`backend`; see WatchBackend).
    public var backend: WatchBackend
    /// `catchup` (default true): at start, and after a queue overflow, what changed in the tree while kevd was
    /// not reading is journaled as `inotify` events with `data.catchup = true` (see FileCatchUp).
    public var catchup: Bool

    public init(
        path: String, recursive: Bool, events: Set<FileEventType>, exclude: [String], backend: WatchBackend = .auto,
        catchup: Bool = true
    ) {
        self.path = path
        self.recursive = recursive
        self.events = events
        self.exclude = exclude
        self.backend = backend
        self.catchup = catchup
    }
}

/// `[[watch]] backend`: `inotify` (a watch per directory, crawled), `fanotify` (one mark per file system, no
/// crawl; needs root and Linux 5.9), or `auto` (fanotify where it can be used, inotify otherwise).
public enum WatchBackend: String, Sendable, CaseIterable, Hashable {
    case auto, inotify, fanotify
}

/// The inotify event types a watch can ask for.
public enum FileEventType: String, Sendable, CaseIterable, Hashable {
    case create, modify, attrib, delete, moved
    case closeWrite = "close_write"
    case movedFrom = "moved_from"
    case movedTo = "moved_to"
    case deleteSelf = "delete_self"
    case unmount

    /// A distinct bit per type, for masks that are cheaper to test than a Set.
    public var bit: UInt32 {
        switch self {
        case .create: return 1 << 0
        case .modify: return 1 << 1
        case .attrib: return 1 << 2
        case .delete: return 1 << 3
        case .moved: return 1 << 4
        case .closeWrite: return 1 << 5
        case .movedFrom: return 1 << 6
        case .movedTo: return 1 << 7
        case .deleteSelf: return 1 << 8
        case .unmount: return 1 << 9
        }
    }
}

/// A `[[timer]]` table.
public struct TimerSpec: Sendable, Equatable {
    public enum Schedule: Sendable, Equatable {
        /// Every so many nanoseconds, on the monotonic clock.
        case every(nanoseconds: Int64)
        /// Calendar times in local time, on the wall clock.
        case cron(CronSchedule, expression: String)
    }

    public var name: String
    public var schedule: Schedule
    /// `persistent = true` (cron timers only), as systemd's `Persistent=`: when one or more of its times passed
    /// while kevd was down, it fires once at start with `data.catchup = true` and `data.missed`.
    public var persistent: Bool

    public init(name: String, schedule: Schedule, persistent: Bool = false) {
        self.name = name
        self.schedule = schedule
        self.persistent = persistent
    }
}

/// The `[udev]` table.
public struct UdevSpec: Sendable, Equatable {
    public enum Source: String, Sendable {
        case auto, udev, kernel
    }

    public struct Match: Sendable, Equatable {
        public var subsystem: String
        public var devtype: String?

        public init(subsystem: String, devtype: String?) {
            self.subsystem = subsystem
            self.devtype = devtype
        }
    }

    public var enabled: Bool
    public var source: Source
    public var matches: [Match]
    public var receiveBuffer: Int
    /// `catchup` (default true): at start, devices that appeared or vanished while kevd was down are journaled
    /// as `add`/`remove` with `data.catchup = true` (the `kernel` source; see `DeviceCatchUp`).
    public var catchup: Bool

    public init(enabled: Bool, source: Source, matches: [Match], receiveBuffer: Int, catchup: Bool = true) {
        self.enabled = enabled
        self.source = source
        self.matches = matches
        self.receiveBuffer = receiveBuffer
        self.catchup = catchup
    }

    public static let defaultReceiveBuffer = 16 * 1024 * 1024
    public static let disabled = UdevSpec(enabled: false, source: .auto, matches: [], receiveBuffer: defaultReceiveBuffer)
}

/// The `[server]` table and the `[[access]]` rules: the client socket.
public struct ServerSettings: Sendable, Equatable {
    /// The socket's group (resolved to a gid); nil: the daemon's own group.
    public var group: UInt32? = nil
    /// The socket file's permission bits.
    public var mode: UInt32 = 0o660
    /// Per subscriber: bytes queued for a client before it is switched to reading from the journal.
    public var sendBuffer = 4 * 1024 * 1024
    /// The longest request line accepted.
    public var maxRequest = 1024 * 1024
    public var maxClients = 1024
    /// Per peer uid: connections at once, whatever they do; 0: unlimited. Root and kevd's own uid are not limited.
    public var maxClientsPerUID = 128
    /// Of `maxClients`, slots only root and kevd's own uid may take (PostgreSQL's
    /// `superuser_reserved_connections`): other users together hold at most `maxClients - reservedClients`.
    public var reservedClients = 8
    /// A connection that has not sent its first complete request line this long after it was accepted is
    /// closed (slowloris); 0: never.
    public var firstRequestTimeoutNanoseconds: Int64 = 10_000_000_000
    /// Per peer uid: connections holding a subscription at once. Root and kevd's own uid are not limited.
    public var maxSubscriptionsPerUID = 64
    /// Per peer uid: emits a second (a token bucket holding `emitBurstPerUID`); 0: unlimited. Root and kevd's
    /// own uid are not limited.
    public var emitRatePerUID = 1000
    public var emitBurstPerUID = 2000
    public var idempotencyWindowNanoseconds: Int64 = 600_000_000_000
    /// Who may do what. Empty: root, kevd's own user and members of the socket's group may do everything.
    public var access: [AccessRule] = []
    public init() {}
}

/// An `[[access]]` table: users and groups it applies to, and what they may do.
public struct AccessRule: Sendable, Equatable {
    public var uids: [UInt32] = []
    public var gids: [UInt32] = []
    public var emit = false
    /// Sources they may subscribe to; nil: all, empty: none.
    public var sources: [String]? = nil
    public init() {}
}
