import Glibc
import KevdEvent
import KevdKernel
import KevdSpec

/// Event shaping: which events a root wants, exclusion globs, and the data every inotify event carries.
extension InotifySource {

    func wants(_ type: FileEventType, root: Int) -> Bool { roots[root].events & type.bit != 0 }

    /// Shared with the fanotify backend: WatchRoot+Shaping.swift.
    func isExcluded(path: String, name: String, root: Root) -> Bool { root.excludes(path: path, name: name) }

    /// `name` is `nameBytes` as text, when the caller has it already.
    func baseData(
        root: Int, path: String, nameBytes: UnsafeBufferPointer<UInt8>?, name known: ByteText? = nil,
        isDirectory: Bool
    ) -> EventData {
        roots[root].baseData(path: path, nameBytes: nameBytes, name: known, isDirectory: isDirectory)
    }

    func baseData(root: Int, path: String, nameBytes: [UInt8], isDirectory: Bool) -> EventData {
        nameBytes.withUnsafeBufferPointer { baseData(root: root, path: path, nameBytes: $0, isDirectory: isDirectory) }
    }

    /// `dir/name` in one allocation (this runs for every event).
    static func join(_ dir: String, _ name: String) -> String {
        if dir == "/" { return "/" + name }
        var dir = dir
        var name = name
        return dir.withUTF8 { d in
            name.withUTF8 { n in
                String(unsafeUninitializedCapacity: d.count + 1 + n.count) { out in
                    _ = out.initialize(from: d)
                    out[d.count] = UInt8(ascii: "/")
                    _ = UnsafeMutableBufferPointer(rebasing: out[(d.count + 1)...]).initialize(from: n)
                    return d.count + 1 + n.count
                }
            }
        }
    }

    func emit(
        _ type: FileEventType, root: Int, path: String, nameBytes: UnsafeBufferPointer<UInt8>?,
        name: ByteText? = nil, isDirectory: Bool, synthetic: Bool = false
    ) {
        guard wants(type, root: root) else { return }
        var data = baseData(root: root, path: path, nameBytes: nameBytes, name: name, isDirectory: isDirectory)
        if synthetic { data.append("synthetic", true) }
        pipeline.publish(source: .inotify, type: type.rawValue, key: path, data: data)
    }

    func emit(
        _ type: FileEventType, root: Int, path: String, nameBytes: [UInt8], isDirectory: Bool, synthetic: Bool
    ) {
        nameBytes.withUnsafeBufferPointer {
            emit(type, root: root, path: path, nameBytes: $0, isDirectory: isDirectory, synthetic: synthetic)
        }
    }

    func reportWatchLimit(path: String) {
        guard !watchLimitReported else { return }
        watchLimitReported = true
        var data = EventData()
        data.append("message", "inotify watch limit reached; raise fs.inotify.max_user_watches")
        data.append("limit", "fs.inotify.max_user_watches")
        if let value = SysctlValue.read("/proc/sys/fs/inotify/max_user_watches") { data.append("max_user_watches", value) }
        data.append("watches", table.count)
        data.append("path", path)
        logger.error("inotify watch limit reached", metadata: ["path": "\(path)", "inotify.watches": "\(table.count)"])
        pipeline.publishKevd("error", component: "inotify", data)
    }

    func reportError(_ message: String, error: Error, path: String? = nil) {
        var data = EventData()
        data.append("message", message)
        data.append("error", "\(error)")
        if let path { data.append("path", path) }
        logger.error("\(message)", metadata: ["error": "\(error)", "path": "\(path ?? "")"])
        pipeline.publishKevd("error", component: "inotify", data)
    }
}

/// Reads one integer from /proc/sys.
enum SysctlValue {
    static func read(_ path: String) -> Int? {
        guard let bytes = try? FileContents.read(path) else { return nil }  // Unreadable: the report omits it.
        return Int(String(decoding: bytes.filter { $0 > 0x20 }, as: UTF8.self))
    }
}
