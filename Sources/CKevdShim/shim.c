#define _GNU_SOURCE
#include "CKevdShim.h"

#include <dirent.h>
#include <limits.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/random.h>
#include <sys/vfs.h>

int kevd_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int kevd_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int kevd_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        events[i] = evs[i].events;
        data[i] = evs[i].data.u64;
    }
    return n;
}

int kevd_eventfd(unsigned int initval, int nonblocking) {
    return eventfd(initval, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
}

int kevd_timerfd_create(int clockid) { return timerfd_create(clockid, TFD_CLOEXEC | TFD_NONBLOCK); }

int kevd_timerfd_settime(int fd, int flags, int64_t value_ns, int64_t interval_ns) {
    struct itimerspec spec;
    spec.it_value.tv_sec = value_ns / 1000000000;
    spec.it_value.tv_nsec = value_ns % 1000000000;
    spec.it_interval.tv_sec = interval_ns / 1000000000;
    spec.it_interval.tv_nsec = interval_ns % 1000000000;
    return timerfd_settime(fd, flags, &spec, NULL);
}

int kevd_signalfd(int fd, const sigset_t *mask) { return signalfd(fd, mask, SFD_CLOEXEC | SFD_NONBLOCK); }

int kevd_signalfd_read(int fd, struct kevd_siginfo *out, int max) {
    struct signalfd_siginfo buf[16];
    if (max > 16) max = 16;
    ssize_t n;
    do {
        n = read(fd, buf, sizeof(buf[0]) * (size_t)max);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return (errno == EAGAIN) ? 0 : -1;
    int count = (int)(n / (ssize_t)sizeof(buf[0]));
    for (int i = 0; i < count; i++) {
        out[i].signo = buf[i].ssi_signo;
        out[i].code = buf[i].ssi_code;
        out[i].pid = buf[i].ssi_pid;
        out[i].uid = buf[i].ssi_uid;
        out[i].status = buf[i].ssi_status;
    }
    return count;
}

int kevd_sigset_fill(sigset_t *set, const int *signals, int count) {
    if (sigemptyset(set) != 0) return -1;
    for (int i = 0; i < count; i++)
        if (sigaddset(set, signals[i]) != 0) return -1;
    return 0;
}

int kevd_sigmask_set(const int *signals, int count) {
    sigset_t set;
    if (kevd_sigset_fill(&set, signals, count) != 0) return -1;
    int r = pthread_sigmask(SIG_SETMASK, &set, NULL);
    if (r != 0) { errno = r; return -1; }
    return 0;
}

int kevd_sigmask_unblock_all(void) {
    sigset_t set;
    sigemptyset(&set);
    int r = pthread_sigmask(SIG_SETMASK, &set, NULL);
    if (r != 0) { errno = r; return -1; }
    return 0;
}

int kevd_inotify_init(void) { return inotify_init1(IN_CLOEXEC | IN_NONBLOCK); }

struct kevd_dir { DIR *dir; };

kevd_dir *kevd_opendir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return NULL;
    DIR *d = fdopendir(fd);
    if (!d) { int e = errno; close(fd); errno = e; return NULL; }
    kevd_dir *out = malloc(sizeof *out);
    if (!out) { closedir(d); errno = ENOMEM; return NULL; }
    out->dir = d;
    return out;
}

const char *kevd_readdir(kevd_dir *dir, int *is_dir) {
    struct dirent *e;
    while ((e = readdir(dir->dir)) != NULL) {
        if (e->d_name[0] == '.' && (e->d_name[1] == 0 || (e->d_name[1] == '.' && e->d_name[2] == 0))) continue;
        *is_dir = e->d_type == DT_UNKNOWN ? -1 : (e->d_type == DT_DIR ? 1 : 0);
        return e->d_name;
    }
    return NULL;
}

int kevd_malloc_trim(void) {
    return malloc_trim(0);
}

void kevd_closedir(kevd_dir *dir) {
    closedir(dir->dir);
    free(dir);
}

int64_t kevd_clock_ns(int clockid) {
    struct timespec ts;
    clock_gettime(clockid, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int kevd_set_rcvbuf(int fd, int bytes, int force) {
    return setsockopt(fd, SOL_SOCKET, force ? SO_RCVBUFFORCE : SO_RCVBUF, &bytes, sizeof bytes);
}

int kevd_get_rcvbuf(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) != 0) return -1;
    return v;
}

int kevd_uevent_socket(int rcvbuf) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT);
    if (fd < 0) return -1;
    struct sockaddr_nl addr;
    memset(&addr, 0, sizeof addr);
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = 1;  // the kernel's own uevents; group 2 is udevd's re-broadcast
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (kevd_set_rcvbuf(fd, rcvbuf, 1) != 0) (void)kevd_set_rcvbuf(fd, rcvbuf, 0);
    return fd;
}

int kevd_uevent_receive(int fd, uint8_t *buffers, int slot, int max, int *lengths, uint32_t *senders) {
    enum { batch = 64 };
    struct mmsghdr msgs[batch];
    struct iovec iov[batch];
    struct sockaddr_nl from[batch];
    if (max > batch) max = batch;
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)max);
    for (int i = 0; i < max; i++) {
        iov[i].iov_base = buffers + (size_t)i * (size_t)slot;
        iov[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n;
    do {
        n = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    for (int i = 0; i < n; i++) {
        // A datagram larger than the slot is truncated: report it as malformed rather than parse half of it.
        lengths[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -1 : (int)msgs[i].msg_len;
        senders[i] = msgs[i].msg_hdr.msg_namelen >= sizeof(struct sockaddr_nl) ? from[i].nl_pid : UINT32_MAX;
    }
    return n;
}

int kevd_getrandom(void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = getrandom((char *)buf + done, len - done, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int kevd_WIFEXITED(int status) { return WIFEXITED(status); }
int kevd_WEXITSTATUS(int status) { return WEXITSTATUS(status); }
int kevd_WIFSIGNALED(int status) { return WIFSIGNALED(status); }
int kevd_WTERMSIG(int status) { return WTERMSIG(status); }

int kevd_syncfs(int fd) { return syncfs(fd); }

ssize_t kevd_write_some(int fd, const void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return done > 0 ? (ssize_t)done : -1;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int kevd_set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags);
}

// CRC-32C, reflected polynomial 0x82F63B78. The table is built on first use; the hardware path handles 8 bytes
// per instruction (several GB/s), so the journal's checksum is never the bottleneck.
static uint32_t crc32c_table[256];
static int crc32c_table_ready;

static void crc32c_build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
    __atomic_store_n(&crc32c_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t kevd_crc32c_portable(uint32_t crc, const void *data, size_t len) {
    if (!__atomic_load_n(&crc32c_table_ready, __ATOMIC_ACQUIRE)) crc32c_build_table();
    const uint8_t *p = data;
    crc = ~crc;
    while (len--) crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}
#endif

int kevd_crc32c_hardware(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
    return 0;
#endif
}

uint32_t kevd_crc32c(uint32_t crc, const void *data, size_t len) {
#if defined(__x86_64__)
    static int hardware = -1;
    if (hardware < 0) hardware = kevd_crc32c_hardware();
    if (hardware) return crc32c_sse42(crc, data, len);
#endif
    return kevd_crc32c_portable(crc, data, len);
}

static int unix_address(const char *path, struct sockaddr_un *addr) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr->sun_path, path);
    return 0;
}

int kevd_unix_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    if (unix_address(path, &addr) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int kevd_unix_connect(const char *path) {
    struct sockaddr_un addr;
    if (unix_address(path, &addr) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int r;
    do {
        r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    } while (r != 0 && errno == EINTR);
    if (r != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int kevd_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int kevd_peercred(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int kevd_peergroups(int fd, uint32_t *groups, int max) {
    socklen_t len = (socklen_t)(sizeof(gid_t) * (size_t)max);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0) return -1;
    return (int)(len / sizeof(gid_t));
}

int kevd_pipe(int *read_end, int *write_end) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    // A fresh pipe's file status flags are O_RDONLY alone (pipe2 put O_CLOEXEC on the fd, not the file): one
    // F_SETFL sets O_NONBLOCK without the F_GETFL a general helper needs. Two system calls fewer per rule run.
    if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        return -1;
    }
    *read_end = fds[0];
    *write_end = fds[1];
    return 0;
}

int kevd_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int kevd_input_pipe(const void *bytes, size_t length) {
    if (length > PIPE_BUF) {
        errno = EINVAL;
        return -1;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    ssize_t written = 0;
    // Up to PIPE_BUF bytes into an empty pipe: one write takes them all without waiting (a pipe holds at least
    // one page even when the user's pipe buffer quota is spent).
    if (length > 0) {
        do written = write(fds[1], bytes, length);
        while (written < 0 && errno == EINTR);
    }
    int e = errno;
    close(fds[1]);
    if (written != (ssize_t)length) {
        close(fds[0]);
        errno = written < 0 ? e : EIO;
        return -1;
    }
    return fds[0];
}

int kevd_become_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

int kevd_waitid_exited(int pid, int keep, int32_t *code, int32_t *status) {
    siginfo_t info;
    // POSIX leaves si_pid unspecified when WNOHANG finds nothing; zeroed, 0 means "none".
    memset(&info, 0, sizeof info);
    int options = WEXITED | WNOHANG | (keep ? WNOWAIT : 0);
    if (waitid(pid == 0 ? P_ALL : P_PID, (id_t)pid, &info, options) != 0) return -1;
    if (info.si_pid == 0) return 0;
    *code = info.si_code;
    *status = info.si_status;
    return info.si_pid;
}

const char *kevd_signal_abbreviation(int signal) { return sigabbrev_np(signal); }

// Spawning. The child is started with vfork: it borrows kevd's memory and stack instead of copying the page
// tables, and kevd's thread sleeps until it execs or exits, which makes a start as cheap as posix_spawn's and
// lets the child report a failure through plain memory. The price is that the child may only make system calls
// (no malloc, no locks, nothing that touches shared state in glibc) and must never return from `spawn_child`.

/// Where the child leaves the step that failed and its errno: the parent reads them once vfork returns.
/// volatile, so neither side keeps them in a register across vfork.
struct spawn_failure {
    volatile int step;
    volatile int error;
};

__attribute__((noreturn)) static void spawn_fail(struct spawn_failure *failure, int step) {
    failure->error = errno;
    failure->step = step;
    _exit(127);
}

// noinline: the child's locals must live in its own frame, below kevd_spawn's, where they cannot overwrite
// anything the parent still uses when it resumes.
__attribute__((noinline, noreturn)) static void spawn_child(
    const struct kevd_spawn_request *request, pid_t parent, struct spawn_failure *failure) {
    // Every disposition back to the default: ignored signals survive execve (kevd ignores SIGPIPE, scripts must
    // not), and a handler of kevd's must not run here once signals are unblocked below. The raw system call,
    // because glibc's sigaction refuses its two internal signals (32 and 33), and those arrive ignored when an
    // ancestor was started by posix_spawn. The kernel's struct is all zeros for SIG_DFL, no flags, empty mask,
    // whatever its field order; it cannot fail for a signal other than SIGKILL and SIGSTOP.
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } default_action;
    memset(&default_action, 0, sizeof default_action);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)syscall(SYS_rt_sigaction, sig, &default_action, NULL, sizeof default_action.mask);

    // A session and process group of its own, led by the child: kill(-pid) then reaches everything it started.
    if (setsid() < 0) spawn_fail(failure, KEVD_SPAWN_SETSID);

    int source[3];
    int dev_null = -1;
    for (int i = 0; i < 3; i++) {
        source[i] = request->stdio[i];
        if (source[i] >= 0) continue;
        if (dev_null < 0 && (dev_null = open("/dev/null", O_RDWR)) < 0) spawn_fail(failure, KEVD_SPAWN_OPEN_DEV_NULL);
        source[i] = dev_null;
    }
    // A source among 0-2 other than its own target would be overwritten by an earlier dup2 (stdout given as fd 0,
    // say): move every such one above 2 before installing any. The copies go with the close-range below.
    for (int i = 0; i < 3; i++)
        if (source[i] <= 2 && source[i] != i && (source[i] = fcntl(source[i], F_DUPFD, 3)) < 0)
            spawn_fail(failure, KEVD_SPAWN_DUP);
    for (int i = 0; i < 3; i++) {
        // dup2 onto itself does nothing, close-on-exec included: clear the flag instead.
        int installed = source[i] == i ? fcntl(i, F_SETFD, 0) : dup2(source[i], i);
        if (installed < 0) spawn_fail(failure, KEVD_SPAWN_DUP);
    }

    if (request->set_credentials) {
        // Raw system calls: glibc's wrappers broadcast a credential change to every thread of the process they
        // know of, and in a vfork child those are kevd's threads, not the child's.
        if (syscall(SYS_setgroups, (size_t)request->group_count, request->groups) != 0)
            spawn_fail(failure, KEVD_SPAWN_SETGROUPS);
        if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) != 0)
            spawn_fail(failure, KEVD_SPAWN_SETRESGID);
        if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) != 0)
            spawn_fail(failure, KEVD_SPAWN_SETRESUID);
    }

    // Scripts die with kevd instead of running on unsupervised. Set after the credential change, which clears
    // it; and a kevd that died before it was set sends nothing, so check the parent is still the one that started
    // us (an orphan is reparented).
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) spawn_fail(failure, KEVD_SPAWN_PDEATHSIG);
    if (getppid() != parent) {
        errno = ESRCH;
        spawn_fail(failure, KEVD_SPAWN_PARENT_EXITED);
    }

    if (request->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        spawn_fail(failure, KEVD_SPAWN_NO_NEW_PRIVS);

    if (chdir(request->directory) != 0) spawn_fail(failure, KEVD_SPAWN_CHDIR);

    // kevd opens everything close-on-exec, but a library might not: nothing but 0-2 reaches a script.
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        if (errno != ENOSYS) spawn_fail(failure, KEVD_SPAWN_CLOSE_FDS);
        // Before Linux 5.9: every fd the limit allows.
        struct rlimit limit;
        if (getrlimit(RLIMIT_NOFILE, &limit) != 0) spawn_fail(failure, KEVD_SPAWN_CLOSE_FDS);
        for (rlim_t fd = 3; fd < limit.rlim_cur; fd++) (void)close((int)fd);
    }

    // The mask kevd blocked around vfork (and kevd's own blocked signals, inherited) must not reach the script.
    // It cannot fail with a valid set.
    sigset_t none;
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);

    execve(request->path, (char *const *)request->argv, (char *const *)request->envp);
    spawn_fail(failure, KEVD_SPAWN_EXECVE);
}

int kevd_spawn(const struct kevd_spawn_request *request, int *failed_step, int *failed_errno) {
    // Every signal blocked across vfork: a handler of kevd's must never run in the child, which runs on kevd's
    // memory and stack. The child starts with this mask and empties it just before execve.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    struct spawn_failure failure = {0, 0};
    pid_t parent = getpid();
    pid_t pid = vfork();
    if (pid == 0) spawn_child(request, parent, &failure);
    int vfork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);

    if (pid < 0) {
        *failed_step = KEVD_SPAWN_VFORK;
        *failed_errno = vfork_errno;
        return -1;
    }
    if (failure.step != 0) {
        // vfork returned, so the child has already exited: reap it now, leaving neither a zombie nor an exit for
        // the caller's SIGCHLD handling to find.
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        *failed_step = failure.step;
        *failed_errno = failure.error;
        return -1;
    }
    return pid;
}

// FAN_CLOEXEC | FAN_NONBLOCK are for the group's own fd (the second argument is for event fds, which FID
// reporting never sends): without them a spawned child inherited it and a read of an empty queue blocked the loop.
int kevd_fanotify_init(unsigned int flags) {
    return fanotify_init(flags | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

long kevd_queued_bytes(int fd) {
    int n = 0;
    return ioctl(fd, FIONREAD, &n) == 0 ? (long)n : -1;
}

int kevd_fanotify_mark(int fd, unsigned int flags, uint64_t mask, const char *path) {
    return fanotify_mark(fd, flags, mask, AT_FDCWD, path);
}

int kevd_open_by_handle_at(int mount_fd, int handle_type, const uint8_t *bytes, unsigned int length, int flags) {
    if (length > MAX_HANDLE_SZ) { errno = EINVAL; return -1; }
    union { struct file_handle handle; char room[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    h.handle.handle_bytes = length;
    h.handle.handle_type = handle_type;
    memcpy(h.handle.f_handle, bytes, length);
    return open_by_handle_at(mount_fd, &h.handle, flags);
}

int kevd_name_to_handle(const char *path, int *handle_type, uint8_t *bytes, unsigned int *length) {
    union { struct file_handle handle; char room[sizeof(struct file_handle) + MAX_HANDLE_SZ]; } h;
    h.handle.handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (name_to_handle_at(AT_FDCWD, path, &h.handle, &mount_id, AT_SYMLINK_FOLLOW) != 0) return -1;
    if (h.handle.handle_bytes > *length) { errno = EOVERFLOW; return -1; }
    *handle_type = h.handle.handle_type;
    memcpy(bytes, h.handle.f_handle, h.handle.handle_bytes);
    *length = h.handle.handle_bytes;
    return 0;
}

int kevd_fsid(const char *path, uint64_t *fsid) {
    struct statfs sfs;
    if (statfs(path, &sfs) != 0) return -1;
    memcpy(fsid, &sfs.f_fsid, sizeof *fsid);
    return 0;
}

int kevd_mount_id(int fd, uint64_t *id) {
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &sx) != 0 || !(sx.stx_mask & STATX_MNT_ID)) return -1;
    *id = sx.stx_mnt_id;
    return 0;
}
