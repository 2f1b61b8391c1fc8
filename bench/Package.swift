// swift-tools-version: 6.0
import Foundation
import PackageDescription

/// The benchmarks (`kevd-bench journal|subscribers|rules|forward`): a package of their own, as Fuzz/ is, so the
/// main package's `swift build` neither builds nor links them. Build and run them with `bench/run`.
///
/// A path dependency's identity is its directory's name, which depends on where the repository is checked out
/// (`kevd`, a worktree's name, CI's): read it here rather than hard-coding one.
let parent = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let kevd = parent.lastPathComponent.lowercased()

let package = Package(
    name: "kevd-bench",
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .executableTarget(
            name: "kevd-bench",
            dependencies: [
                .product(name: "KevdBenchParts", package: kevd),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        )
    ],
    swiftLanguageModes: [.v5]
)
