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

/// The Swift 6 language mode (issue 16), module by module: its data-race checks hold the cross-thread hand-offs
/// (inbox, prefetcher, worker threads, the spawner, forwarders) to what the compiler can prove. The modules
/// without it stay in Swift 5 mode (the package's default below) until they are moved.
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "kevd",
    products: [
        .executable(name: "kevd", targets: ["kevd"]),
        .executable(name: "kevctl", targets: ["kevctl"]),
        // For the fuzz targets (Fuzz/Package.swift) only: the parsers of untrusted input, as a library a
        // separate package can link (requests and filters, config and rule files, journal lines, inotify records,
        // uevents and the events they become), without the loop or the sources. Nothing installs or ships it.
        .library(
            name: "KevdParsers",
            targets: ["KevdEvent", "KevdSpec", "KevdConfig", "KevdJournal", "KevdKernel", "KevdDeviceEvents"]
        ),
        // For the benchmarks (bench/Package.swift) only: the parts `kevd-bench` drives directly (the journal, the
        // NATS forwarder). Nothing installs or ships it.
        .library(
            name: "KevdBenchParts",
            targets: ["KevdEvent", "KevdSpec", "KevdConfig", "KevdJournal", "KevdKernel", "KevdForward", "CKevdShim"]
        ),
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
        .target(name: "KevdEvent", swiftSettings: hotPath + swift6),
        // Durations and calendar (cron) schedules: pure arithmetic, no I/O.
        .target(name: "KevdSchedule", swiftSettings: swift6),
        // Thin Swift wrappers over syscalls and libudev, and the only module that imports libudev. CKevdShim is
        // imported here and, for calls that have no wrapper here, directly by KevdJournal (kevd_write_some,
        // CRC-32C), KevdServer (Unix sockets, peer credentials, kevd_write_some), KevdDaemon (the --stdout sink's
        // writes) and the benchmarks (bench/, through KevdBenchParts).
        .target(
            name: "KevdKernel",
            dependencies: ["CKevdShim", "CUdev", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: hotPath + swift6
        ),
        // What the configuration and the rule files specify, as plain values: watches, timers, udev, rules,
        // forwards, the daemon's, journal's and server's settings. No TOML: the runtime modules depend on this,
        // not on the parser.
        .target(name: "KevdSpec", dependencies: ["KevdSchedule"], swiftSettings: swift6),
        // The configuration and rule files: TOML in, validated KevdSpec values out, errors with file:line:col.
        .target(
            name: "KevdConfig",
            dependencies: ["KevdSpec", "KevdSchedule", "KevdKernel", "KevdEvent", "CKevdTOML"],
            swiftSettings: swift6
        ),
        // The durable journal: segments, framing, CRC-32C, recovery, readers, the flusher thread.
        .target(
            name: "KevdJournal",
            dependencies: ["KevdKernel", "KevdEvent", "CKevdShim", .product(name: "Logging", package: "swift-log")],
            swiftSettings: hotPath + swift6
        ),
        // The reactor: the epoll loop, the cross-thread inbox and the event pipeline (stamp, then the sinks).
        .target(
            name: "KevdReactor",
            dependencies: [
                "KevdKernel", "KevdEvent",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // The event a device (uevent) becomes: pure, apart from the loop, so the uevent fuzz target reaches it.
        .target(name: "KevdDeviceEvents", dependencies: ["KevdKernel", "KevdEvent"], swiftSettings: hotPath + swift6),
        // The sources on the loop: inotify (watch table, crawl, prefetcher), signals, timers, udev.
        .target(
            name: "KevdSources",
            dependencies: [
                "KevdReactor", "KevdDeviceEvents", "KevdKernel", "KevdEvent", "KevdSchedule", "KevdSpec",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // The input and ACPI sources' C side: evdev ioctls, the acpi_event generic-netlink socket, logind's Inhibit
        // through sd-bus.
        // libsystemd (sd-bus) comes through the CSystemd system library, as the daemon's does.
        .target(name: "CKevdInput", dependencies: ["CSystemd"]),
        // `[input]` (evdev keys and switches) and `[acpi]` (the acpi_event netlink family) as sources on the loop.
        .target(
            name: "KevdInput",
            dependencies: [
                "CKevdInput", "KevdReactor", "KevdKernel", "KevdEvent", "KevdSpec",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // The client socket: protocol, subscribers with bounded send buffers and journal catch-up, emit, status.
        .target(
            name: "KevdServer",
            dependencies: [
                "KevdReactor", "KevdJournal", "KevdEvent", "KevdKernel", "KevdSpec", "CKevdShim",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // The rules engine: matches events to rules, runs their scripts (spawn, reap, timeouts, retries, debounce),
        // keeps each rule's journal position for at-least-once runs across restarts.
        .target(
            name: "KevdRules",
            dependencies: [
                "KevdReactor", "KevdJournal", "KevdEvent", "KevdKernel", "KevdSpec",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // `[[forward]]`: forwarder threads that read the journal from a stored position and publish to NATS
        // JetStream, advancing only over acknowledged events.
        .target(
            name: "KevdForward",
            dependencies: [
                "KevdJournal", "KevdEvent", "KevdKernel", "KevdSpec", "CNats",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // The client side of the socket protocol, for kevctl, tests and benchmarks.
        .target(
            name: "KevdClient",
            dependencies: ["KevdEvent", "KevdKernel", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: swift6
        ),
        // Wiring: config, start-up order, signals, reload, shutdown, sinks.
        .target(
            name: "KevdDaemon",
            dependencies: [
                "KevdReactor", "KevdSources", "KevdInput", "KevdConfig", "KevdSpec", "KevdEvent", "KevdKernel",
                "KevdJournal", "KevdServer", "KevdRules", "KevdForward", "CKevdShim", "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath + swift6
        ),
        // One binary for both commands: kevd runs kevctl's commands when called by that name (a link to it), so
        // the installed pair carries one static Swift runtime, not two (scripts/install; README, "Installing").
        .executableTarget(
            name: "kevd",
            dependencies: [
                "KevdDaemon", "KevctlCommands", "KevdConfig", "KevdSpec",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // kevctl's commands (Sources/kevctl), for the `kevctl` executable (builds, tests) and the multi-call kevd.
        .target(
            name: "KevctlCommands",
            dependencies: [
                "KevdConfig", "KevdSpec", "KevdEvent", "KevdJournal", "KevdKernel", "KevdSchedule", "KevdClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/kevctl"
        ),
        .executableTarget(name: "kevctl", dependencies: ["KevctlCommands"], path: "Sources/kevctl-main"),

        // What the test targets share (seeded random numbers, temporary directories, waits with a deadline, Unix
        // sockets, a nats-server): test code only, none of kevd's modules.
        .target(name: "KevdTestSupport", path: "Tests/KevdTestSupport"),
        .testTarget(name: "KevdEventTests", dependencies: ["KevdEvent", "KevdTestSupport"]),
        .testTarget(name: "KevdScheduleTests", dependencies: ["KevdSchedule", "KevdTestSupport"]),
        .testTarget(name: "KevdConfigTests", dependencies: ["KevdConfig", "KevdSpec", "KevdTestSupport"]),
        .testTarget(name: "KevdKernelTests", dependencies: ["KevdKernel", "CKevdShim", "KevdTestSupport"]),
        .testTarget(
            name: "KevdRulesTests",
            dependencies: ["KevdRules", "KevdReactor", "KevdSpec", "KevdEvent", "KevdKernel", "KevdTestSupport"]
        ),
        .testTarget(
            name: "KevdReactorTests",
            dependencies: [
                "KevdReactor", "KevdKernel", "KevdEvent", "KevdTestSupport", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KevdSourcesTests",
            dependencies: ["KevdSources", "KevdDeviceEvents", "KevdKernel", "KevdEvent", "KevdTestSupport"]
        ),
        .testTarget(
            name: "KevdJournalTests", dependencies: ["KevdJournal", "KevdEvent", "KevdKernel", "CKevdShim", "KevdTestSupport"]
        ),
        .testTarget(name: "KevdServerTests", dependencies: ["KevdServer", "KevdSpec", "KevdEvent", "KevdTestSupport"]),
        .testTarget(name: "KevdForwardTests", dependencies: ["KevdForward", "KevdSpec", "KevdTestSupport"]),
        .testTarget(
            name: "KevdIntegrationTests", dependencies: ["KevdEvent", "KevdKernel", "KevdClient", "CNats", "KevdTestSupport"]
        ),
        .testTarget(
            name: "KevdDaemonTests",
            dependencies: [
                "KevdDaemon", "KevdEvent", "KevdJournal", "KevdTestSupport", .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "KevdInputTests", dependencies: ["KevdInput", "KevdSpec", "KevdEvent", "KevdTestSupport"]),
    ],
    swiftLanguageModes: [.v5],
    cxxLanguageStandard: .cxx17  // toml++'s minimum
)
