// CKevdShim: the kernel interfaces Swift's Glibc module does not export, and the C macros Swift cannot
// call. Almost every symbol here is a plain pass-through; policy (errno handling, ownership) lives in
// KevdKernel. The exception is `kevd_spawn`: what a vfork child does between fork and exec must be C (only
// async-signal-safe calls, no allocation, no Swift runtime).
#ifndef CKEVD_SHIM_H
#define CKEVD_SHIM_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/fanotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// epoll: glibc declares the flags as an enum plus macros; give Swift plain integers.
static const uint32_t kevd_EPOLLIN = EPOLLIN;
static const uint32_t kevd_EPOLLOUT = EPOLLOUT;
static const uint32_t kevd_EPOLLERR = EPOLLERR;
static const uint32_t kevd_EPOLLHUP = EPOLLHUP;
static const uint32_t kevd_EPOLLRDHUP = EPOLLRDHUP;
static const int kevd_EPOLL_CLOEXEC = EPOLL_CLOEXEC;

int kevd_epoll_create(void);
int kevd_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// epoll_wait into parallel arrays, so Swift never sees the packed `struct epoll_event`.
int kevd_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms);

// eventfd
int kevd_eventfd(unsigned int initval, int nonblocking);

// timerfd
static const int kevd_TFD_TIMER_ABSTIME = TFD_TIMER_ABSTIME;
static const int kevd_TFD_TIMER_CANCEL_ON_SET = TFD_TIMER_CANCEL_ON_SET;
int kevd_timerfd_create(int clockid);
/// Arms a timerfd: first expiry `value_ns` (absolute when `flags` has TFD_TIMER_ABSTIME), then every `interval_ns`.
int kevd_timerfd_settime(int fd, int flags, int64_t value_ns, int64_t interval_ns);

// signalfd: the fields of `struct signalfd_siginfo` kevd reports.
struct kevd_siginfo {
    uint32_t signo;
    int32_t code;
    uint32_t pid;
    uint32_t uid;
    int32_t status;
};
int kevd_signalfd(int fd, const sigset_t *mask);
/// Reads up to `max` records; returns the count, 0 when none is pending, -1 with errno on error.
int kevd_signalfd_read(int fd, struct kevd_siginfo *out, int max);
/// The calling thread's mask becomes exactly `signals` (SIG_SETMASK), whatever it inherited.
int kevd_sigmask_set(const int *signals, int count);
int kevd_sigmask_unblock_all(void);
int kevd_sigset_fill(sigset_t *set, const int *signals, int count);

// fanotify (directory-entry events, whole-file-system marks) and file handles.
static const unsigned int kevd_FAN_CLASS_NOTIF = FAN_CLASS_NOTIF;
static const unsigned int kevd_FAN_REPORT_FID = FAN_REPORT_FID;
static const unsigned int kevd_FAN_UNLIMITED_QUEUE = FAN_UNLIMITED_QUEUE;
static const unsigned int kevd_FAN_REPORT_TARGET_FID = FAN_REPORT_TARGET_FID;
static const unsigned int kevd_FAN_REPORT_DFID_NAME = FAN_REPORT_DFID_NAME;
static const unsigned int kevd_FAN_MARK_ADD = FAN_MARK_ADD;
static const unsigned int kevd_FAN_MARK_REMOVE = FAN_MARK_REMOVE;
static const unsigned int kevd_FAN_MARK_FILESYSTEM = FAN_MARK_FILESYSTEM;
static const uint64_t kevd_FAN_ACCESS = FAN_ACCESS;
static const uint64_t kevd_FAN_MODIFY = FAN_MODIFY;
static const uint64_t kevd_FAN_ATTRIB = FAN_ATTRIB;
static const uint64_t kevd_FAN_CLOSE_WRITE = FAN_CLOSE_WRITE;
static const uint64_t kevd_FAN_MOVED_FROM = FAN_MOVED_FROM;
static const uint64_t kevd_FAN_MOVED_TO = FAN_MOVED_TO;
static const uint64_t kevd_FAN_CREATE = FAN_CREATE;
static const uint64_t kevd_FAN_DELETE = FAN_DELETE;
static const uint64_t kevd_FAN_DELETE_SELF = FAN_DELETE_SELF;
static const uint64_t kevd_FAN_MOVE_SELF = FAN_MOVE_SELF;
static const uint64_t kevd_FAN_Q_OVERFLOW = FAN_Q_OVERFLOW;
static const uint64_t kevd_FAN_RENAME = FAN_RENAME;
static const uint64_t kevd_FAN_ONDIR = FAN_ONDIR;
static const int kevd_FAN_EVENT_INFO_TYPE_FID = FAN_EVENT_INFO_TYPE_FID;
static const int kevd_FAN_EVENT_INFO_TYPE_DFID_NAME = FAN_EVENT_INFO_TYPE_DFID_NAME;
static const int kevd_FAN_EVENT_INFO_TYPE_DFID = FAN_EVENT_INFO_TYPE_DFID;
static const int kevd_FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = FAN_EVENT_INFO_TYPE_OLD_DFID_NAME;
static const int kevd_FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = FAN_EVENT_INFO_TYPE_NEW_DFID_NAME;
/// O_PATH is a _GNU_SOURCE name, which Swift's Glibc lacks.
static const int kevd_O_PATH = 010000000;
static const uint8_t kevd_FANOTIFY_METADATA_VERSION = FANOTIFY_METADATA_VERSION;
/// Sizes of `struct fanotify_event_metadata` and of the fixed part of `struct fanotify_event_info_fid` (header
/// and fsid; the `struct file_handle` follows).
static const int kevd_fanotify_metadata_size = (int)sizeof(struct fanotify_event_metadata);
static const int kevd_fanotify_info_fid_size = (int)sizeof(struct fanotify_event_info_fid);
/// The fsid (`statfs`'s `f_fsid`, as fanotify reports it) of the file system holding `path`.
int kevd_fsid(const char *path, uint64_t *fsid);
/// The id of the mount `fd` is on (`statx` with `STATX_MNT_ID`, Linux 5.8); -1 when the kernel does not say.
int kevd_mount_id(int fd, uint64_t *id);
int kevd_fanotify_init(unsigned int flags);
/// FIONREAD: the bytes a read of `fd` would return now (fanotify: every queued event), or -1.
long kevd_queued_bytes(int fd);
int kevd_fanotify_mark(int fd, unsigned int flags, uint64_t mask, const char *path);
/// `open_by_handle_at` with the handle given as its type and bytes (Swift never builds `struct file_handle`).
int kevd_open_by_handle_at(int mount_fd, int handle_type, const uint8_t *bytes, unsigned int length, int flags);
/// `name_to_handle_at(AT_FDCWD, path, ..., AT_SYMLINK_FOLLOW)`: the handle's type, bytes (up to `*length`, set to
/// the real length) and the mount id.
int kevd_name_to_handle(const char *path, int *handle_type, uint8_t *bytes, unsigned int *length);

// inotify
int kevd_inotify_init(void);
static const uint32_t kevd_IN_ACCESS = IN_ACCESS;
static const uint32_t kevd_IN_MODIFY = IN_MODIFY;
static const uint32_t kevd_IN_ATTRIB = IN_ATTRIB;
static const uint32_t kevd_IN_CLOSE_WRITE = IN_CLOSE_WRITE;
static const uint32_t kevd_IN_CLOSE_NOWRITE = IN_CLOSE_NOWRITE;
static const uint32_t kevd_IN_OPEN = IN_OPEN;
static const uint32_t kevd_IN_MOVED_FROM = IN_MOVED_FROM;
static const uint32_t kevd_IN_MOVED_TO = IN_MOVED_TO;
static const uint32_t kevd_IN_CREATE = IN_CREATE;
static const uint32_t kevd_IN_DELETE = IN_DELETE;
static const uint32_t kevd_IN_DELETE_SELF = IN_DELETE_SELF;
static const uint32_t kevd_IN_MOVE_SELF = IN_MOVE_SELF;
static const uint32_t kevd_IN_UNMOUNT = IN_UNMOUNT;
static const uint32_t kevd_IN_Q_OVERFLOW = IN_Q_OVERFLOW;
static const uint32_t kevd_IN_IGNORED = IN_IGNORED;
static const uint32_t kevd_IN_ONLYDIR = IN_ONLYDIR;
static const uint32_t kevd_IN_DONT_FOLLOW = IN_DONT_FOLLOW;
static const uint32_t kevd_IN_EXCL_UNLINK = IN_EXCL_UNLINK;
static const uint32_t kevd_IN_ISDIR = IN_ISDIR;
/// Size of the fixed part of `struct inotify_event` (wd, mask, cookie, len).
static const int kevd_inotify_event_header_size = (int)sizeof(struct inotify_event);

// Directory scanning without Foundation: d_type avoids a stat per entry on most file systems.
typedef struct kevd_dir kevd_dir;
kevd_dir *kevd_opendir(const char *path);
/// Next entry name (never "." or ".."), or NULL at the end. `is_dir` is 1, 0, or -1 when d_type is unknown.
const char *kevd_readdir(kevd_dir *dir, int *is_dir);
void kevd_closedir(kevd_dir *dir);

/* malloc_trim(0): gives the heap's free pages back to the kernel (after a crawl's transient lists). */
int kevd_malloc_trim(void);

// Clocks, in nanoseconds.
int64_t kevd_clock_ns(int clockid);
static const int kevd_CLOCK_MONOTONIC = CLOCK_MONOTONIC;
static const int kevd_CLOCK_REALTIME = CLOCK_REALTIME;
static const int kevd_CLOCK_BOOTTIME = CLOCK_BOOTTIME;

// Socket options netlink monitors need.
int kevd_set_rcvbuf(int fd, int bytes, int force);
int kevd_get_rcvbuf(int fd);

// Kernel uevents (NETLINK_KOBJECT_UEVENT, multicast group 1), read without libudev.
/// Opens, binds and sizes the socket (SO_RCVBUFFORCE, else SO_RCVBUF); non-blocking, close-on-exec.
int kevd_uevent_socket(int rcvbuf);
/// Receives up to `max` datagrams with one recvmmsg: datagram i lands at `buffers + i * slot`, its length in
/// `lengths[i]` and its sender's netlink port id in `senders[i]` (0 is the kernel). Returns the count, 0 when
/// none is pending, -1 with errno (ENOBUFS: the kernel dropped datagrams because the buffer was full).
int kevd_uevent_receive(int fd, uint8_t *buffers, int slot, int max, int *lengths, uint32_t *senders);

// Unix stream sockets for the client protocol.
/// Creates, binds and listens on `path` (non-blocking, close-on-exec). Returns the fd or -1 with errno.
int kevd_unix_listen(const char *path, int backlog);
/// Connects to `path`; returns the fd (blocking, close-on-exec) or -1 with errno.
int kevd_unix_connect(const char *path);
/// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int kevd_accept(int fd);
/// The peer's credentials (SO_PEERCRED).
int kevd_peercred(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// The peer's supplementary groups (SO_PEERGROUPS); returns the count, or -1 with errno.
int kevd_peergroups(int fd, uint32_t *groups, int max);

// CRC-32C (Castagnoli), as the journal frames records with it.
/// Extends `crc` (0 to start) over `len` bytes: the SSE4.2 `crc32` instruction when the CPU has it.
uint32_t kevd_crc32c(uint32_t crc, const void *data, size_t len);
/// The same with the portable table, for tests and CPUs without SSE4.2.
uint32_t kevd_crc32c_portable(uint32_t crc, const void *data, size_t len);
/// 1 when `kevd_crc32c` uses the hardware instruction.
int kevd_crc32c_hardware(void);

// Random bytes for event ids (getrandom, no fd).
int kevd_getrandom(void *buf, size_t len);

// Process status macros.
int kevd_WIFEXITED(int status);
int kevd_WEXITSTATUS(int status);
int kevd_WIFSIGNALED(int status);
int kevd_WTERMSIG(int status);

// Whole-buffer writes that keep going on EINTR and partial writes; stops at EAGAIN and returns what it wrote.
ssize_t kevd_write_some(int fd, const void *buf, size_t len);
int kevd_set_nonblocking(int fd, int on);
// syncfs(2): glibc declares it only under _GNU_SOURCE, which Swift's Glibc lacks.
int kevd_syncfs(int fd);
// Pipes and memory files: glibc declares pipe2 and memfd_create only under _GNU_SOURCE, which Swift's Glibc lacks.
/// pipe2(O_CLOEXEC), then O_NONBLOCK on the read end only: the loop reads it, a child writes it.
int kevd_pipe(int *read_end, int *write_end);
/// memfd_create(name, MFD_CLOEXEC).
int kevd_memfd_create(const char *name);
/// A close-on-exec, blocking pipe already holding `length` bytes (at most PIPE_BUF, which a write to an empty pipe
/// takes whole at once) whose write end is closed: a reader gets the bytes, then end of file. Returns the read
/// end, or -1 with errno.
int kevd_input_pipe(const void *bytes, size_t length);

// Child processes.
/// waitid for an exited child without blocking (WEXITED | WNOHANG, plus WNOWAIT when `keep` is 1, which leaves
/// it a zombie). `pid` 0 means any child. Returns the child's pid, 0 when none has exited, -1 with errno (ECHILD:
/// no such child). `code` is the siginfo code (CLD_EXITED, CLD_KILLED, CLD_DUMPED), `status` the exit status or
/// the signal.
int kevd_waitid_exited(int pid, int keep, int32_t *code, int32_t *status);
// prctl(PR_SET_CHILD_SUBREAPER, 1): orphans of kevd's children are re-parented to kevd, which reaps them.
int kevd_become_subreaper(void);
static const int32_t kevd_CLD_EXITED = CLD_EXITED;
static const int32_t kevd_CLD_KILLED = CLD_KILLED;
static const int32_t kevd_CLD_DUMPED = CLD_DUMPED;
/// "KILL" for SIGKILL (sigabbrev_np), or NULL for a number without a name.
const char *kevd_signal_abbreviation(int signal);

/// What `kevd_spawn` starts. Every string and array stays owned by the caller; nothing is copied.
struct kevd_spawn_request {
    /// The program, by absolute path: execve does no PATH search.
    const char *path;
    /// NULL-terminated argv (argv[0] included) and environment ("NAME=value").
    const char *const *argv;
    const char *const *envp;
    /// The working directory of the child.
    const char *directory;
    /// The parent's fds that become the child's 0, 1 and 2; -1 opens /dev/null for that one. Any fd may be given
    /// (one of 0-2 included, the same fd twice included); close-on-exec ones too.
    int stdio[3];
    /// 1: drop to `uid`, `gid` and the `group_count` supplementary `groups` before exec. 0: keep kevd's.
    int set_credentials;
    uint32_t uid;
    uint32_t gid;
    const uint32_t *groups;
    int group_count;
    /// 1: set PR_SET_NO_NEW_PRIVS, so neither the program nor anything it execs gains privileges (setuid and
    /// setgid bits, file capabilities) beyond the ones it starts with.
    int no_new_privs;
};

/// The steps of starting a child that can fail, in the order the child takes them (KEVD_SPAWN_VFORK is the
/// parent's); `kevd_spawn` reports the one that failed.
enum {
    KEVD_SPAWN_VFORK = 1,
    KEVD_SPAWN_SETSID,
    KEVD_SPAWN_OPEN_DEV_NULL,
    KEVD_SPAWN_DUP,
    KEVD_SPAWN_SETGROUPS,
    KEVD_SPAWN_SETRESGID,
    KEVD_SPAWN_SETRESUID,
    KEVD_SPAWN_PDEATHSIG,
    KEVD_SPAWN_NO_NEW_PRIVS,
    KEVD_SPAWN_PARENT_EXITED,
    KEVD_SPAWN_CHDIR,
    KEVD_SPAWN_CLOSE_FDS,
    KEVD_SPAWN_EXECVE,
};
/// Starts `request` (vfork, then exec in the child) and returns the child's pid, which is also its session and
/// process group id. On failure returns -1 with the step that failed in `*failed_step` (a KEVD_SPAWN_ value)
/// and its errno in `*failed_errno`; a child that got as far as existing has been reaped by then.
///
/// Call it from a thread that lives as long as kevd (the loop's): the child's parent-death signal follows the
/// thread that created it, not the process. SIGCHLD must not be ignored (a failed child is reaped with waitpid).
int kevd_spawn(const struct kevd_spawn_request *request, int *failed_step, int *failed_errno);

#endif
