import Glibc
import KevdKernel

/// Mounts made while kevd runs: a file system mounted under a root needs its own mark.
///
/// /proc/self/mountinfo reports a change in the mount table as POLLERR|POLLPRI until it is read again (it is
/// always readable, so it is registered for no events: epoll reports the error condition regardless). Each change
/// re-reads it and marks the file systems of every mount point under a root; marks already made are skipped.
extension FanotifySource {
    func watchMounts() {
        let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            logger.warning("cannot open /proc/self/mountinfo; mounts made under a root later are not watched")
            return
        }
        let owned = OwnedFD(fd)
        readAll(owned.rawValue)
        do {
            try loop.register(fd: fd, events: [], priority: .kernelInput) { [unowned self] _ in self.mountsChanged() }
            mountInfo = owned
        } catch {
            logger.warning("cannot poll /proc/self/mountinfo; mounts made under a root later are not watched")
        }
    }

    func mountsChanged() {
        guard let mountInfo else { return }
        readAll(mountInfo.rawValue)  // Clears the change condition.
        for root in roots { markFileSystems(for: root.spec.path) }
    }

    /// Reads the file to its end (a few KiB of kernel memory: no disk).
    private func readAll(_ fd: Int32) {
        _ = lseek(fd, 0, SEEK_SET)
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while chunk.withUnsafeMutableBytes({ Glibc.read(fd, $0.baseAddress, $0.count) }) > 0 {}
    }
}
