import Glibc
import KevdKernel

extension Journal {
    /// Deletes whole old segments beyond `maxBytes` / `maxAge`, never the active one, and never one that a
    /// consumer (`consumers`) has not read unless the journal is past `maxBytesHard` or the file system has
    /// less than `minFreeBytes` free. Returns what it did; a
    /// directory that cannot be listed deletes nothing and is reported through `onRetentionProblem`, once
    /// until a pass works again (retention must not turn itself off silently: the disk would fill unseen).
    @discardableResult
    public func enforceRetention(now: Int64 = Clock.realtimeNanoseconds()) -> JournalDirectory.Retention {
        guard options.maxBytes > 0 || options.maxAgeNanoseconds > 0 else { return .init() }
        do {
            let result = try JournalDirectory.retain(
                directory: directory, keepingFrom: activeSegmentFirstSeq, maxBytes: options.maxBytes,
                maxAgeNanoseconds: options.maxAgeNanoseconds, now: now, needed: consumers.lowestNeeded(),
                hardMaxBytes: options.maxBytesHard, freeBytes: options.minFreeBytes > 0 ? freeBytes() : nil,
                minFree: options.minFreeBytes)
            if retentionProblem != nil {
                retentionProblem = nil
                onRetentionProblem?(nil)
            }
            if !result.deletedUnread.isEmpty {
                logger.warning("journal retention deleted segments a consumer had not read (max_bytes_hard, min_free)", metadata: [
                    "journal.deleted": "\(result.deletedUnread.joined(separator: " "))",
                ])
            }
            return result
        } catch {
            let message = "journal retention cannot list \(directory): \(error); nothing is deleted until it can"
            if retentionProblem == nil {
                retentionProblem = message
                logger.error("journal retention failed", metadata: ["error": "\(error)"])
                onRetentionProblem?(message)
            }
            return .init()
        }
    }

    /// Bytes an unprivileged writer may still use on the journal's file system (nil when statvfs fails).
    func freeBytes() -> Int64? {
        var fs = statvfs()
        guard statvfs(directory, &fs) == 0 else { return nil }
        return Int64(fs.f_bavail) * Int64(fs.f_frsize)
    }
}
