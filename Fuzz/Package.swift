// swift-tools-version: 6.0
import Foundation
import PackageDescription

/// Coverage-guided fuzz targets (libFuzzer) for the parsers of untrusted input: a package of its own, so the
/// main package's `swift build` never sees `-sanitize=fuzzer`. Build and run them with `scripts/fuzz`.
///
/// A path dependency's identity is its directory's name, which depends on where the repository is checked out
/// (`kevd`, a worktree's name, CI's): read it here rather than hard-coding one.
let parent = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let kevd = parent.lastPathComponent.lowercased()

let targets = ["FuzzRequest", "FuzzRules", "FuzzFilter", "FuzzJournal", "FuzzInotify", "FuzzUevent"]

let package = Package(
    name: "kevd-fuzz",
    dependencies: [.package(path: "..")],
    targets: [
        .target(name: "CFuzzDriver"),
        .target(
            name: "KevdFuzzSupport", dependencies: ["CFuzzDriver", .product(name: "KevdParsers", package: kevd)],
            path: "Sources/FuzzSupport"),
    ]
        + targets.map { name in
            .executableTarget(name: name, dependencies: ["KevdFuzzSupport", .product(name: "KevdParsers", package: kevd)])
        },
    swiftLanguageModes: [.v5]
)
