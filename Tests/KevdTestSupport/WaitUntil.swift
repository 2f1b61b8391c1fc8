import Foundation
import Glibc

/// Polls `check` every `interval` seconds until it returns a value, up to `timeout` seconds; a timeout is an
/// error naming `what`. For waiting on an event a test can only observe by looking (a file, a /proc entry).
@discardableResult
public func waitUntil<T>(_ what: String, timeout: Double = 30, interval: Double = 0.02, _ check: () throws -> T?) throws -> T {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if let value = try check() { return value }
        guard Date() < deadline else { throw WaitTimeout(what: what) }
        usleep(useconds_t(interval * 1_000_000))
    }
}

public struct WaitTimeout: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}
