import Foundation

/// The reliability suites' sizes, read from the environment here and nowhere else. The SHORT default is what CI
/// runs inside `scripts/test`; `KEVD_RELIABILITY=full` (set by `scripts/reliability`) selects the FULL sizes.
enum ReliabilityKnobs {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    static var full: Bool { environment["KEVD_RELIABILITY"] == "full" }

    /// SIGKILL-and-restart rounds in a row.
    static var crashRounds: Int { Int(environment["KEVD_CRASH_ROUNDS"] ?? "") ?? (full ? 50 : 5) }
    /// Seed of the crash test's random kill points (printed, so a failing run can be repeated).
    static var crashSeed: UInt64 { UInt64(environment["KEVD_CRASH_SEED"] ?? "") ?? UInt64.random(in: 1...UInt64.max) }

    /// How long the soak runs, and how often it samples kevd.
    static var soakSeconds: Double { Double(environment["KEVD_SOAK_SECONDS"] ?? "") ?? (full ? 600 : 30) }
    static var soakInterval: Double { Double(environment["KEVD_SOAK_INTERVAL"] ?? "") ?? (full ? 10 : 3) }
    /// Where the soak writes its samples as CSV (default: the test's temporary directory).
    static var soakCSV: String? { environment["KEVD_SOAK_CSV"].flatMap { $0.isEmpty ? nil : $0 } }
}

/// A small seeded generator (SplitMix64): the same seed gives the same kill points.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
