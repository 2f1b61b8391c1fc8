// CKevdShim: the kernel interfaces Swift's Glibc module does not export, and the C macros Swift cannot
// call. Every symbol here is a plain pass-through; policy (errno handling, ownership) lives in KevdKernel.
#ifndef CKEVD_SHIM_H
#define CKEVD_SHIM_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
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
int kevd_sigmask_block(const int *signals, int count);
int kevd_sigmask_unblock_all(void);
int kevd_sigset_fill(sigset_t *set, const int *signals, int count);

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

#endif
