import CKevdShim
import Glibc
import KevdKernel

/// The benchmark's scratch directory: `mkdtemp` under a parent the user chooses, removed with its contents.
struct TempDirectory {
    let path: String

    init(parent: String) throws {
        try Self.makeDirectories(parent)
        var template = Array((parent + "/kevd-bench-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw SyscallError(call: "mkdtemp(\(parent))", errno: .init(rawValue: errno))
        }
        path = String(cString: made)
    }

    func remove() { Self.removeTree(path) }

    /// `rm -r`: the benchmark only ever creates directories and regular files here.
    static func removeTree(_ path: String) {
        if let entries = try? DirectoryListing.entries(of: path) {
            for entry in entries {
                let child = path + "/" + String(decoding: entry.name, as: UTF8.self)
                if entry.isDirectory ?? (FileKind.of(child) == .directory) {
                    removeTree(child)
                } else {
                    unlink(child)
                }
            }
        }
        rmdir(path)
    }

    /// `mkdir -p`.
    static func makeDirectories(_ path: String) throws {
        try Directories.make(path, mode: 0o755)
    }
}

/// What the figures depend on besides the code: recorded with every result.
struct Machine {
    var cpus: Int
    var kernel: String
    var fileSystem: String
    var crcHardware: Bool
    var loadAverage: String
    var started: String

    static func describe(directory: String) -> Machine {
        Machine(
            cpus: sysconf(Int32(_SC_NPROCESSORS_ONLN)), kernel: firstLine(of: "/proc/sys/kernel/osrelease") ?? "?",
            fileSystem: fileSystemName(directory), crcHardware: kevd_crc32c_hardware() == 1,
            loadAverage: loadAverageText(), started: localTime("%Y-%m-%dT%H:%M:%S%z"))
    }

    /// The 1, 5 and 15 minute load averages: on a shared machine, the first thing to check when figures vary.
    static func loadAverageText() -> String {
        guard let line = firstLine(of: "/proc/loadavg") else { return "?" }
        return line.split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// `bench/results/journal-20261123-074512.json`: the other benchmark's naming, sortable by time.
    static func timestampForFileName() -> String { localTime("%Y%m%d-%H%M%S") }

    /// A binary built next to this one (`swift build` puts every product in the same directory).
    static func siblingExecutable(_ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return name }
        let me = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = me.lastIndex(of: "/") else { return name }
        return String(me[...slash]) + name
    }

    /// fsync on tmpfs costs nothing: the name shows whether the sync figures mean anything. Glibc's module does
    /// not export `statfs`, so this is the type of the longest mount point in /proc/self/mounts that holds `path`.
    static func fileSystemName(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return "?" }
        let absolute = String(cString: resolved)
        free(resolved)
        guard let mounts = try? readSmallFile("/proc/self/mounts", limit: 1 << 20) else { return "?" }
        var best: (mountPoint: String, type: String)? = nil
        for line in String(decoding: mounts, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            // Octal escapes (`\040` for a space) are left alone: such mount points are not benchmark targets.
            let mountPoint = String(fields[1])
            let holds = mountPoint == "/" || absolute == mountPoint || absolute.hasPrefix(mountPoint + "/")
            if holds && mountPoint.count >= (best?.mountPoint.count ?? 0) {
                best = (mountPoint, String(fields[2]))
            }
        }
        return best.map { "\($0.type) on \($0.mountPoint)" } ?? "?"
    }

    static func firstLine(of path: String) -> String? {
        guard let bytes = try? readSmallFile(path) else { return nil }
        return String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
    }

    static func readSmallFile(_ path: String, limit: Int = 4096) throws -> [UInt8] {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        // /proc files report size 0: read until end of file.
        var bytes = [UInt8](repeating: 0, count: limit)
        var done = 0
        while done < limit {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, limit - done) }
            if n <= 0 { break }
            done += n
        }
        return Array(bytes.prefix(done))
    }

    static func localTime(_ format: String) -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A plain-text table: the first column left-aligned, the others right-aligned, two spaces apart.
class TextTable {
    private(set) var rows: [[String]]

    init(header: [String]) { rows = [header] }

    func add(_ row: [String]) { rows.append(row) }

    var hasRows: Bool { rows.count > 1 }

    /// The widest cell of each column, and at least `minimum`.
    func columnWidths(minimum: Int = 0) -> [Int] {
        var widths = [Int](repeating: minimum, count: rows.map(\.count).max() ?? 0)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        return widths
    }

    func print() {
        let widths = columnWidths()
        for row in rows {
            var line = ""
            for (i, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                line += i == 0 ? cell + pad : "  " + pad + cell
            }
            Swift.print(line)
        }
    }
}

/// The same table in Markdown, its columns padded (readable as text, pastable into the docs).
final class MarkdownTable: TextTable {
    override func print() {
        let widths = columnWidths(minimum: 3)
        let columns = widths.count
        func line(_ row: [String]) -> String {
            var out = "|"
            for i in 0..<columns {
                let cell = i < row.count ? row[i] : ""
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                out += " " + (i == 0 ? cell + pad : pad + cell) + " |"
            }
            return out
        }
        Swift.print(line(rows[0]))
        Swift.print("|" + widths.enumerated().map { i, w in
            " " + String(repeating: "-", count: i == 0 ? w : w - 1) + (i == 0 ? "" : ":") + " "
        }.joined(separator: "|") + "|")
        for row in rows.dropFirst() { Swift.print(line(row)) }
    }
}

/// `1234567` as `1,234,567`.
func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return value < 0 ? "-" + out : out
}

func grouped(_ value: Double) -> String {
    value.isFinite ? grouped(Int(value.rounded())) : "-"
}

extension String {
    /// One decimal, without Foundation: `12.3`.
    init(format1 value: Double) { self = Self.fixed(value, decimals: 1) }
    /// Three decimals: `0.123`.
    init(format3 value: Double) { self = Self.fixed(value, decimals: 3) }

    private static func fixed(_ value: Double, decimals: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int((value.magnitude * Double(scale)).rounded())
        let fraction = String(scaled % scale)
        let text = "\(scaled / scale)." + String(repeating: "0", count: decimals - fraction.count) + fraction
        return value < 0 && scaled != 0 ? "-" + text : text
    }
}

/// Monotonic time in seconds, for the tables.
enum Seconds {
    static func since(_ start: UInt64) -> Double { between(start, Clock.monotonicNanoseconds()) }
    static func between(_ start: UInt64, _ end: UInt64) -> Double { Double(end &- start) / 1e9 }
}

/// The first occurrence of `needle` in `bytes`: the benchmarks' readers classify short lines by a few bytes
/// instead of parsing JSON, so a plain scan is enough.
func firstIndex(of needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    guard !needle.isEmpty, bytes.count >= needle.count else { return nil }
    var i = 0
    while i <= bytes.count - needle.count {
        if bytes[i] == needle[0] {
            var j = 1
            while j < needle.count && bytes[i + j] == needle[j] { j += 1 }
            if j == needle.count { return i }
        }
        i += 1
    }
    return nil
}

/// Reads `fd` (blocking) until EOF and hands `line` each complete line (without its newline) with the
/// monotonic time of the read that completed it; `initial` is what a handshake read already got. A line longer
/// than the 1 MiB buffer is dropped (no benchmark line is that long).
func readTimestampedLines(fd: Int32, initial: [UInt8], line: (UnsafeBufferPointer<UInt8>, UInt64) -> Void) {
    let capacity = 1 << 20
    let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
    defer { buffer.deallocate() }
    /// Hands over the complete lines in `buffer[0..<length]`, moves the partial last one to the front and
    /// returns its length.
    func consume(_ length: Int, time: UInt64) -> Int {
        var start = 0
        while start < length,
            let nl = memchr(buffer + start, 0x0A, length - start)?.assumingMemoryBound(to: UInt8.self)
        {
            let end = nl - buffer
            line(UnsafeBufferPointer(start: buffer + start, count: end - start), time)
            start = end + 1
        }
        let rest = length - start
        if rest > 0 && start > 0 { memmove(buffer, buffer + start, rest) }
        return rest
    }
    var carry = min(initial.count, capacity)
    if carry > 0 {
        initial.withUnsafeBufferPointer { buffer.update(from: $0.baseAddress!, count: carry) }
        carry = consume(carry, time: Clock.monotonicNanoseconds())
    }
    while true {
        let n = read(fd, buffer + carry, capacity - carry)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        carry = consume(carry + n, time: Clock.monotonicNanoseconds())
        if carry == capacity { carry = 0 }
    }
}
