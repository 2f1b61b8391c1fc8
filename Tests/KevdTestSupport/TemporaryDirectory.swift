import Foundation
import Glibc

/// A fresh directory `/tmp/<prefix>-XXXXXX` (mkdtemp); its path, or the errno as an error.
public func makeTemporaryDirectory(prefix: String = "kevd-test") throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    return String(cString: made)
}

/// A directory under /tmp, removed with everything in it when the last reference goes.
public final class TemporaryDirectory: @unchecked Sendable {
    // @unchecked: `path` never changes; the directory's contents are the file system's business.
    public let path: String

    public init(prefix: String = "kevd-test") throws {
        path = try makeTemporaryDirectory(prefix: prefix)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
