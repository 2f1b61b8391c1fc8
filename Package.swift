// swift-tools-version: 6.0
import PackageDescription

/// kevd's own runtime modules are optimized in every build: the integration tests drive the daemon at realistic
/// rates (100,000 events through a stalled subscriber), which an unoptimized build cannot sustain (~7,500
/// events/s against ~80,000). Debug builds keep the runtime exclusivity checks, as a safety net for the tests;
/// release builds skip them: the loop is single-threaded and they cost about 5% of the per-event CPU.
let hotPath: [SwiftSetting] = [
    .unsafeFlags(["-O"], .when(configuration: .debug)),
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "kevd",
    products: [
        .executable(name: "kevd", targets: ["kevd"]),
        .executable(name: "kevctl", targets: ["kevctl"]),
        // For the fuzz targets (Fuzz/Package.swift) only: the parsers of untrusted input, as a library a
        // separate package can link. Nothing installs or ships it.
        .library(name: "KevdParsers", targets: ["KevdEvent", "KevdConfig", "KevdJournal", "KevdKernel", "KevdLoop"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        // `kevctl metrics` only (the Prometheus text format); the daemon's code uses neither (its binary holds them
        // as the multi-call kevctl).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C: what Glibc does not export (epoll, signalfd, timerfd, eventfd, inotify) and macros Swift cannot call.
        .target(name: "CKevdShim"),
        .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        // sd_notify (readiness, status, watchdog), sd_listen_fds (socket activation) and sd_journal_sendv (the
        // optional journal mirror), for the daemon only.
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // The NATS C client, for `[[forward]]` to JetStream (and the forwarding tests and benchmark).
        .systemLibrary(name: "CNats", pkgConfig: "libnats", providers: [.apt(["libnats-dev"])]),
        // The TOML parser: toml++ from Debian's libtomlplusplus-dev (headers at /usr/include/toml++), compiled here
        // header-only behind a C interface, so neither Foundation (TOMLKit's) nor libtomlplusplus3 is linked.
        // Parse errors are values (no exceptions); the formatters, which nothing here uses, are left out.
        .target(
            name: "CKevdTOML",
            cxxSettings: [
                .define("TOML_HEADER_ONLY", to: "1"), .define("TOML_EXCEPTIONS", to: "0"),
                .define("TOML_ENABLE_FORMATTERS", to: "0"),
            ]
        ),

        // The immutable event and its JSON line form. Imports nothing of ours.
        .target(name: "KevdEvent", swiftSettings: hotPath),
        // Durations and calendar (cron) schedules: pure arithmetic, no I/O.
        .target(name: "KevdSchedule"),
        // Thin Swift wrappers over syscalls and libudev; the only module that imports the C shims.
        .target(
            name: "KevdKernel",
            dependencies: ["CKevdShim", "CUdev", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: hotPath
        ),
        // The configuration file: TOML in, validated values out, errors with file:line:col.
        .target(
            name: "KevdConfig",
            dependencies: ["KevdSchedule", "KevdKernel", "KevdEvent", "CKevdTOML"]
        ),
        // The durable journal: segments, framing, CRC-32C, recovery, readers, the flusher thread.
        .target(
            name: "KevdJournal",
            dependencies: ["KevdKernel", "KevdEvent", "CKevdShim", .product(name: "Logging", package: "swift-log")],
            swiftSettings: hotPath
        ),
        // The epoll loop, the cross-thread queue and the five sources.
        .target(
            name: "KevdLoop",
            dependencies: [
                "KevdKernel", "KevdEvent", "KevdSchedule", "KevdConfig",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath
        ),
        // The input and ACPI sources' C side: evdev ioctls, the acpi_event generic-netlink socket, logind's Inhibit
        // through sd-bus.
        .target(name: "CKevdInput", linkerSettings: [.linkedLibrary("systemd")]),
        // `[input]` (evdev keys and switches) and `[acpi]` (the acpi_event netlink family) as sources on the loop.
        .target(
            name: "KevdInput",
            dependencies: [
                "CKevdInput", "KevdLoop", "KevdKernel", "KevdEvent", "KevdConfig",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath
        ),
        // The client socket: protocol, subscribers with bounded send buffers and journal catch-up, emit, status.
        .target(
            name: "KevdServer",
            dependencies: [
                "KevdLoop", "KevdJournal", "KevdEvent", "KevdKernel", "KevdConfig", "CKevdShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath
        ),
        // The rules engine: matches events to rules, runs their scripts (spawn, reap, timeouts, retries, debounce),
        // keeps each rule's journal position for at-least-once runs across restarts.
        .target(
            name: "KevdRules",
            dependencies: [
                "KevdLoop", "KevdJournal", "KevdEvent", "KevdKernel", "KevdConfig", "CKevdShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath
        ),
        // `[[forward]]`: forwarder threads that read the journal from a stored position and publish to NATS
        // JetStream, advancing only over acknowledged events.
        .target(
            name: "KevdForward",
            dependencies: [
                "KevdJournal", "KevdEvent", "KevdKernel", "KevdConfig", "CNats",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath
        ),
        // The client side of the socket protocol, for kevctl, tests and benchmarks.
        .target(name: "KevdClient", dependencies: ["KevdEvent", "KevdKernel", "CKevdShim"]),
        // Wiring: config, start-up order, signals, reload, shutdown, sinks.
        .target(
            name: "KevdDaemon",
            dependencies: [
                "KevdLoop", "KevdConfig", "KevdEvent", "KevdKernel", "KevdJournal", "KevdServer", "KevdRules",
                "KevdForward", "KevdInput", "CSystemd", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath
        ),
        // One binary for both commands: kevd runs kevctl's commands when called by that name (a link to it), so
        // the installed pair carries one static Swift runtime, not two (scripts/install; README, "Installing").
        .executableTarget(
            name: "kevd",
            dependencies: [
                "KevdDaemon", "KevctlCommands", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // kevctl's commands (Sources/kevctl), for the `kevctl` executable (builds, tests) and the multi-call kevd.
        .target(
            name: "KevctlCommands",
            dependencies: [
                "KevdConfig", "KevdEvent", "KevdJournal", "KevdKernel", "KevdSchedule", "KevdClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/kevctl"
        ),
        .executableTarget(name: "kevctl", dependencies: ["KevctlCommands"], path: "Sources/kevctl-main"),
        // Benchmarks (`kevd-bench journal`): not shipped, measures the journal against a ceiling it measures too.
        .executableTarget(
            name: "kevd-bench",
            dependencies: [
                "KevdJournal", "KevdEvent", "KevdKernel", "CKevdShim", "KevdForward", "KevdConfig", "CNats",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "KevdEventTests", dependencies: ["KevdEvent"]),
        .testTarget(name: "KevdScheduleTests", dependencies: ["KevdSchedule"]),
        .testTarget(name: "KevdConfigTests", dependencies: ["KevdConfig", "KevdKernel"]),
        .testTarget(name: "KevdKernelTests", dependencies: ["KevdKernel", "CKevdShim"]),
        .testTarget(
            name: "KevdRulesTests",
            dependencies: ["KevdRules", "KevdConfig", "KevdEvent", "KevdKernel", "KevdLoop", "KevdJournal"]
        ),
        .testTarget(
            name: "KevdLoopTests",
            dependencies: ["KevdLoop", "KevdKernel", "KevdEvent", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "KevdJournalTests", dependencies: ["KevdJournal", "KevdEvent", "KevdKernel", "CKevdShim"]),
        .testTarget(name: "KevdInputTests", dependencies: ["KevdInput", "KevdConfig", "KevdEvent"]),
        .testTarget(name: "KevdIntegrationTests", dependencies: ["KevdEvent", "KevdKernel", "KevdClient", "CNats"]),
    ],
    swiftLanguageModes: [.v5],
    cxxLanguageStandard: .cxx17  // toml++'s minimum
)
