#!/usr/bin/python3
"""faultfs: a pass-through FUSE file system whose fsync fails on command, for kevd's tests.

    faultfs.py BACKING MOUNTPOINT CONTROL PIDFILE

Mounts BACKING at MOUNTPOINT (daemonizing once the mount is up, after writing its pid to PIDFILE) and passes every
operation through, except that `fsync`/`fdatasync` (and `fsync` of a directory) can be made to fail. Before each
sync it reads the CONTROL file, one line:

    ID ERRNO COUNT [PATTERN]

A new ID arms the next COUNT syncs of files whose name matches PATTERN (fnmatch, default `*`) to fail with ERRNO
(`EIO`, `ENOSPC`, `EDQUOT`, or a number); COUNT -1 keeps failing until a new ID arrives; `ID OK 0` disarms.

A failed file sync then does what the kernel may do after a failed writeback: the data written since that file's
last good sync is dropped (the file is cut back to the size its last good sync covered: kevd's files are only
appended to, or written whole and renamed), and the error is reported once: the next sync succeeds (Linux
clears the error once reported), so a program that retries and trusts the retry loses data. A failed directory
sync drops nothing. Every injected failure is logged to stderr.

Reads and writes bypass the kernel's page cache (direct_io, no attribute caching), so what a reader sees is
what the backing file holds.
"""

import errno
import fnmatch
import os
import sys
import threading

from fusepy import FUSE, FuseOSError, Operations


class FaultFS(Operations):
    def __init__(self, root, control, pidfile):
        self.root = os.path.realpath(root)
        self.control = control
        self.pidfile = pidfile
        self.lock = threading.Lock()
        # Backing path -> size its last good sync covered (files seen before any sync: their size when first seen).
        self.synced = {}
        self.armed_id = None
        self.errno = 0
        self.remaining = 0
        self.pattern = "*"

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def init(self, path):
        # Runs in the daemonized process, once the mount is up: the pid the tests stop.
        with open(self.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())

    # Faults

    def _read_control(self):
        try:
            with open(self.control) as f:
                fields = f.read().split()
        except FileNotFoundError:
            return
        if len(fields) < 3 or fields[0] == self.armed_id:
            return
        self.armed_id = fields[0]
        name = fields[1]
        self.errno = 0 if name == "OK" else (getattr(errno, name) if not name.isdigit() else int(name))
        self.remaining = int(fields[2]) if self.errno else 0
        self.pattern = fields[3] if len(fields) > 3 else "*"
        print("faultfs: armed %s %s %d %s" % (self.armed_id, name, self.remaining, self.pattern), file=sys.stderr, flush=True)

    def _fault(self, path):
        """The errno this sync of `path` fails with, or 0."""
        self._read_control()
        if not self.errno or self.remaining == 0 or not fnmatch.fnmatch(os.path.basename(path), self.pattern):
            return 0
        if self.remaining > 0:
            self.remaining -= 1
        return self.errno

    def _known(self, full):
        if full not in self.synced:
            try:
                self.synced[full] = os.stat(full).st_size
            except FileNotFoundError:
                self.synced[full] = 0

    def fsync(self, path, datasync, fh):
        full = self._full(path)
        with self.lock:
            self._known(full)
            code = self._fault(path)
            if code:
                size = os.fstat(fh).st_size
                keep = self.synced[full]
                if size > keep:
                    os.ftruncate(fh, keep)
                print("faultfs: fsync(%s) fails with %s; dropped %d bytes" % (path, errno.errorcode.get(code, code), max(0, size - keep)),
                      file=sys.stderr, flush=True)
                raise FuseOSError(code)
            os.fsync(fh) if not datasync else os.fdatasync(fh)
            self.synced[full] = os.fstat(fh).st_size

    def fsyncdir(self, path, datasync, fh):
        with self.lock:
            code = self._fault(path if path != "/" else "/.")
            if code:
                print("faultfs: fsyncdir(%s) fails with %s" % (path, errno.errorcode.get(code, code)), file=sys.stderr, flush=True)
                raise FuseOSError(code)

    # Pass-through

    def access(self, path, mode):
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        return os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        return os.chown(self._full(path), uid, gid)

    def getattr(self, path, fh=None):
        st = os.lstat(self._full(path)) if fh is None else os.fstat(fh)
        return {key: getattr(st, key) for key in (
            "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid", "st_ino")}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._full(path))

    def readlink(self, path):
        return os.readlink(self._full(path))

    def mknod(self, path, mode, dev):
        return os.mknod(self._full(path), mode, dev)

    def rmdir(self, path):
        return os.rmdir(self._full(path))

    def mkdir(self, path, mode):
        return os.mkdir(self._full(path), mode)

    def statfs(self, path):
        st = os.statvfs(self._full(path))
        return {key: getattr(st, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def unlink(self, path):
        full = self._full(path)
        with self.lock:
            self.synced.pop(full, None)
        return os.unlink(full)

    def symlink(self, name, target):
        return os.symlink(target, self._full(name))

    def rename(self, old, new):
        with self.lock:
            size = self.synced.pop(self._full(old), None)
            if size is not None:
                self.synced[self._full(new)] = size
        return os.rename(self._full(old), self._full(new))

    def link(self, target, name):
        return os.link(self._full(name), self._full(target))

    def utimens(self, path, times=None):
        return os.utime(self._full(path), times)

    def open(self, path, flags):
        full = self._full(path)
        with self.lock:
            self._known(full)
        return os.open(full, flags)

    def create(self, path, mode, fi=None):
        full = self._full(path)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with self.lock:
            self.synced[full] = 0
        return fd

    def read(self, path, length, offset, fh):
        return os.pread(fh, length, offset)

    def write(self, path, buf, offset, fh):
        # A file opened with O_APPEND appends whatever the offset says (Linux pwrite), as a local file would.
        return os.pwrite(fh, buf, offset)

    def truncate(self, path, length, fh=None):
        full = self._full(path)
        if fh is None:
            os.truncate(full, length)
        else:
            os.ftruncate(fh, length)
        with self.lock:
            if full in self.synced and self.synced[full] > length:
                self.synced[full] = length

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return os.close(fh)


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    backing, mountpoint, control, pidfile = sys.argv[1:]
    # Nothing inherited stays open in the daemon: a test's process library learns that its child (kevd, started
    # by the same shell) exited when a socket it handed the child closes, and a copy held here would hide that.
    os.closerange(3, 1 << 16)
    FUSE(FaultFS(backing, control, pidfile), mountpoint, foreground=False, nothreads=True, direct_io=True,
         attr_timeout=0, entry_timeout=0, negative_timeout=0, default_permissions=True)


if __name__ == "__main__":
    main()
