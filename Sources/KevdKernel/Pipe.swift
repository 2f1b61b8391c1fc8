import CKevdShim
import Glibc

/// Pipes between kevd and a child: the child's end blocks like any stdio, kevd's end never does.
public enum Pipes {
    /// A close-on-exec pipe whose read end is non-blocking (the loop reads it through epoll) and whose write end
    /// blocks (it becomes a child's stdout or stderr, and programs do not expect EAGAIN there).
    public static func make() throws -> (read: OwnedFD, write: OwnedFD) {
        var readEnd: Int32 = -1
        var writeEnd: Int32 = -1
        try syscall("pipe2") { kevd_pipe(&readEnd, &writeEnd) }
        return (OwnedFD(readEnd), OwnedFD(writeEnd))
    }

    /// Reads what a non-blocking fd has: the byte count, 0 at end of file, nil when nothing is available yet.
    public static func readAvailable(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try nonBlockingSyscall("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }
}

/// Input for a child held in memory (`memfd_create`), to pass as its stdin: unlike a pipe, writing it never
/// blocks the loop, whatever its size and however slowly the child reads.
public enum MemoryFile {
    /// A close-on-exec memory file holding `contents`, its offset at 0. One per child: a child shares the offset
    /// with every other holder of the fd, so a reused one would start where the last reader stopped.
    public static func make(name: String, contents: UnsafeRawBufferPointer) throws -> OwnedFD {
        let fd = OwnedFD(try syscall("memfd_create") { kevd_memfd_create(name) })
        // pwrite leaves the offset at 0, where the child starts reading: no lseek needed.
        var written = 0
        while written < contents.count {
            written += try syscall("pwrite(memfd)") {
                pwrite(fd.rawValue, contents.baseAddress! + written, contents.count - written, off_t(written))
            }
        }
        return fd
    }
}

/// A child's stdin holding given bytes: a pipe when they fit in one atomic pipe write (`PIPE_BUF`, 4 KiB: an event
/// line nearly always does), else a memory file. Either way writing it never blocks, and the child reads the bytes
/// and then end of file. A pipe costs the kernel less than a memory file (no tmpfs inode, no page cache page).
public enum ChildInput {
    /// The most bytes put into a pipe (`PIPE_BUF`).
    public static let pipeLimit = 4096

    public static func make(name: String, contents: UnsafeRawBufferPointer) throws -> OwnedFD {
        guard contents.count <= pipeLimit else { return try MemoryFile.make(name: name, contents: contents) }
        return OwnedFD(try syscall("pipe2(stdin)") { kevd_input_pipe(contents.baseAddress, contents.count) })
    }
}
