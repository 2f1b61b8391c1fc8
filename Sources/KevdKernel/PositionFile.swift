import Glibc

/// A stored position file with a backup: every save first keeps the file being replaced as `.NAME.prev`
/// (a hard link, so no second data write), then replaces the file whole (`FileContents.replace`). When the
/// file cannot be read (EIO, a directory in its place) or does not parse (damage), the previous copy gives a
/// position at most one save older: a few events handled again, never events skipped. Position names never
/// start with a dot (`PositionName`), so the backup cannot be another consumer's file.
public enum PositionFile {
    public struct Loaded<Value> {
        /// The position to use; nil when none was ever stored or neither copy could be read.
        public var value: Value?
        /// What was wrong, when something was (to report); nil for a clean read or a first start.
        public var problem: String?
        public var fromBackup = false
    }

    public static func backupPath(_ path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return folder + "." + name + ".prev"
    }

    /// Keeps the current file as the backup, then replaces it with `bytes`. Blocks on the disk (helper threads
    /// only). On failure `errno` says why.
    public static func save(_ path: String, _ bytes: [UInt8]) -> Bool {
        let backup = backupPath(path)
        let staging = backup + ".tmp"
        unlink(staging)
        // No current file (a first save) or one that is not a file (link fails): the backup stays as it was.
        if link(path, staging) == 0, rename(staging, backup) != 0 { unlink(staging) }
        return FileContents.replace(path, with: bytes)
    }

    /// Reads `path` (else its backup) through `parse`, which returns nil for content that is damaged.
    public static func load<Value>(_ path: String, parse: ([UInt8]) -> Value?) -> Loaded<Value> {
        let main = read(path, parse)
        if case .value(let value) = main { return Loaded(value: value, problem: nil) }
        let backup = read(backupPath(path), parse)
        switch (main, backup) {
        case (.missing, .missing):
            return Loaded(value: nil, problem: nil)
        case (_, .value(let value)):
            return Loaded(value: value, problem: "\(path): \(main.why); using the previous copy \(backupPath(path))",
                          fromBackup: true)
        default:
            return Loaded(value: nil, problem: "\(path): \(main.why), and its previous copy: \(backup.why)")
        }
    }

    /// Every copy that parses, `path`'s first, then its backup's; and what was wrong with a copy that exists but
    /// cannot be read or parsed. For a caller that checks a parsed copy further (a catch-up checkpoint the
    /// journal must agree with) and may then need the older one.
    public static func loadEach<Value>(_ path: String, parse: ([UInt8]) -> Value?) -> (values: [Value], problems: [String]) {
        var values: [Value] = []
        var problems: [String] = []
        for file in [path, backupPath(path)] {
            switch read(file, parse) {
            case .value(let value): values.append(value)
            case .missing: continue
            case .bad(let why): problems.append("\(file): \(why)")
            }
        }
        return (values, problems)
    }

    private enum Read<Value> {
        case value(Value)
        case missing
        case bad(String)

        var why: String {
            switch self {
            case .value: return "readable"
            case .missing: return "missing"
            case .bad(let why): return why
            }
        }
    }

    private static func read<Value>(_ path: String, _ parse: ([UInt8]) -> Value?) -> Read<Value> {
        let bytes: [UInt8]
        do {
            bytes = try FileContents.read(path)
        } catch let error as SyscallError where error.errno.rawValue == ENOENT {
            return .missing
        } catch {
            return .bad("cannot be read (\(error))")
        }
        guard let value = parse(bytes) else { return .bad("damaged (\(bytes.count) bytes that do not parse)") }
        return .value(value)
    }
}
