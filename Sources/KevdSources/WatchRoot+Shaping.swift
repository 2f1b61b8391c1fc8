import Glibc
import KevdEvent

/// The event shaping both file backends share (inotify and fanotify): a root's exclusion globs and the data every
/// file event carries, so rules and subscribers cannot tell which backend produced an event.
extension InotifySource.Root {
    func excludes(path: String, name: String) -> Bool {
        if excludeNames.isEmpty && excludePaths.isEmpty { return false }
        for glob in excludeNames where fnmatch(glob, name, 0) == 0 { return true }
        if !excludePaths.isEmpty {
            let relative = String(path.dropFirst(spec.path == "/" ? 1 : spec.path.count + 1))
            for glob in excludePaths where fnmatch(glob, relative, FNM_PATHNAME) == 0 { return true }
        }
        // A name glob also hides everything below an excluded directory.
        if excludeNames.isEmpty { return false }
        let relative = path.dropFirst(spec.path == "/" ? 1 : spec.path.count + 1)
        for component in relative.split(separator: "/").dropLast() {
            let text = String(component)
            for glob in excludeNames where fnmatch(glob, text, 0) == 0 { return true }
        }
        return false
    }

    /// `path`, `name` (and their base64 forms when the name is not UTF-8), `watch` and `dir`. `name` is
    /// `nameBytes` as text, when the caller has it already.
    func baseData(
        path: String, nameBytes: UnsafeBufferPointer<UInt8>?, name known: ByteText? = nil, isDirectory: Bool
    ) -> EventData {
        var data = EventData(capacity: 7)
        if let nameBytes {
            // The path's own bytes are its directory's (valid UTF-8: watched paths are Strings) plus the name's.
            let name = known ?? ByteText(nameBytes)
            data.append("path", path)
            if !name.isLossless {
                var raw = Array(path.utf8.dropLast(name.string.utf8.count))
                raw.append(contentsOf: nameBytes)
                data.append("path_base64", Base64.encode(raw))
            }
            data.append("name", name.string)
            if !name.isLossless { data.append("name_base64", Base64.encode(nameBytes)) }
        } else {
            data.append("path", path)
            data.append("name", Self.lastComponent(path))
        }
        data.append("watch", spec.path)
        data.append("dir", isDirectory)
        return data
    }

    /// `inotify`/`overflow` for this root: the kernel queue overflowed and events were lost (either backend).
    func overflowDraft(overflows: Int) -> EventDraft {
        var data = EventData()
        data.append("path", spec.path)
        data.append("watch", spec.path)
        data.append("overflows", overflows)
        return EventDraft(source: .inotify, type: "overflow", key: spec.path, data: data)
    }

    static func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}
