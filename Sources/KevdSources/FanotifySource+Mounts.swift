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
        forgetUnmounted()
        for root in roots { markFileSystems(for: root.spec.path) }
    }

    /// Mounts gone from the table: their file systems' marks went with them (the kernel drops a file-system mark
    /// when the file system is unmounted), so a file system mounted there again, even on the same device, is
    /// marked afresh; its cached directories are dropped. Refusals are forgotten too (a new file system may take
    /// a mark).
    func forgetUnmounted() {
        let present = MountTable.mountIDs()
        guard !present.isEmpty else { return }
        refusedDevices.removeAll()
        for (fsid, kept) in mounts {
            let left = kept.filter { present.contains($0.mount) }
            if left.count == kept.count { continue }
            if !left.isEmpty {
                mounts[fsid] = left
                continue
            }
            mounts[fsid] = nil
            markedDevices = markedDevices.filter { $0.value != fsid }
            directories = directories.filter { $0.key.fsid != fsid }
            logger.info("fanotify: a marked file system was unmounted", metadata: ["fsid": "\(fsid)"])
        }
    }

    /// Reads the file to its end (a few KiB of kernel memory: no disk).
    private func readAll(_ fd: Int32) {
        _ = lseek(fd, 0, SEEK_SET)
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while chunk.withUnsafeMutableBytes({ Glibc.read(fd, $0.baseAddress, $0.count) }) > 0 {}
    }
}
