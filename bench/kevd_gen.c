/*
 * kevd_gen: load generators for the kevd benchmark (bench/run).
 * Compiled on the fly by bench/kevd_bench.py into a temp dir (gcc -O2).
 *
 *   kevd_gen files DIR N
 *       For i in 0..N-1: open(DIR/f<i>, O_CREAT|O_WRONLY|O_TRUNC), write 4
 *       bytes, close, unlink.  In a watched DIR that is 4 inotify events per
 *       file: IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, IN_DELETE.
 *
 *   kevd_gen uevent PATH N ACTION
 *       N times: pwrite(ACTION) to PATH (e.g. /sys/class/net/lo/uevent),
 *       each write makes the kernel emit one synthetic uevent.
 *
 *   The generators print one line on stdout on success: "ok <count>
 *   <elapsed_seconds>" (monotonic clock, the loop only).  On error they print
 *   the errno text on stderr and exit 1.
 *
 *   kevd_gen count KIND HEADFILE RAWFILE|-
 *       Reads a consumer's stdout on stdin (a pipe, grown to 1 MiB) with 1 MiB
 *       reads, classifies it line by line, and every 20 ms while something
 *       changed prints a report line (format below) on stdout; at EOF a final
 *       one starting with "E".  Keeps the first 64 KiB of the stream in
 *       HEADFILE and, unless RAWFILE is "-", all of it in RAWFILE.
 *       KIND: inotifywait | fsnotifywait | udevadm | kevd-inotify | kevd-udev.
 *       fsnotifywait: like inotifywait, but a line may carry several events
 *       (fanotify merges a file's queued events into one record: "%e" is then
 *       e.g. "CREATE,MODIFY,CLOSE_WRITE,DELETE,CLOSE"); each is counted.
 *       Counting in C keeps the harness's share of the 2 cores small, so it
 *       drains the pipe as fast as the consumer writes.
 *
 *   Report: "R|E lines captured overflows other bytes t_first_event
 *   t_last_event t_last_data n_create n_modify n_close_write n_delete
 *   started stopping other_kevd banner unterminated max_stall stalls"
 *   (times: CLOCK_MONOTONIC seconds, 0 if none, the same clock as Python's
 *   time.monotonic(); max_stall in seconds, see stall_probe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int gen_files(const char *dir, long n) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) { fprintf(stderr, "open %s: %s\n", dir, strerror(errno)); return 1; }
    char name[32];
    static const char payload[] = "kev\n";
    double t0 = now();
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "f%ld", i);
        int fd = openat(dfd, name, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) { fprintf(stderr, "create %s/%s: %s\n", dir, name, strerror(errno)); return 1; }
        if (write(fd, payload, sizeof payload - 1) != (ssize_t)(sizeof payload - 1)) {
            fprintf(stderr, "write %s/%s: %s\n", dir, name, strerror(errno)); return 1;
        }
        if (close(fd) != 0) { fprintf(stderr, "close %s/%s: %s\n", dir, name, strerror(errno)); return 1; }
        if (unlinkat(dfd, name, 0) != 0) { fprintf(stderr, "unlink %s/%s: %s\n", dir, name, strerror(errno)); return 1; }
    }
    double t1 = now();
    close(dfd);
    printf("ok %ld %.6f\n", n, t1 - t0);
    return 0;
}

static int gen_uevent(const char *path, long n, const char *action) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", path, strerror(errno)); return 1; }
    size_t len = strlen(action);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (pwrite(fd, action, len, 0) != (ssize_t)len) {
            fprintf(stderr, "write %s (#%ld): %s\n", path, i, strerror(errno)); return 1;
        }
    }
    double t1 = now();
    close(fd);
    printf("ok %ld %.6f\n", n, t1 - t0);
    return 0;
}

/* ---- count ---------------------------------------------------------- */

enum kind { K_INOTIFYWAIT, K_FSNOTIFYWAIT, K_UDEVADM, K_KEVD_INOTIFY, K_KEVD_UDEV };

struct counts {
    long lines, captured, overflows, other, per_type[4];
    long started, stopping, other_kevd, banner, unterminated;
    long long bytes;
    double t_first, t_last, t_data;
};

static int has(const char *p, size_t n, const char *needle) {
    return memmem(p, n, needle, strlen(needle)) != NULL;
}

static int prefix(const char *p, size_t n, const char *word) {
    /* word followed by ' ' or ',' (inotifywait's "%e" is e.g. "CLOSE_WRITE,CLOSE") */
    size_t w = strlen(word);
    return n > w && memcmp(p, word, w) == 0 && (p[w] == ' ' || p[w] == ',');
}

/* The string value after `key` (e.g. "\"type\":\"") in p[0..n): pointer and length, or NULL. */
static const char *value_of(const char *p, size_t n, const char *key, size_t *len) {
    size_t kl = strlen(key);
    const char *v = memmem(p, n, key, kl);
    if (!v) return NULL;
    v += kl;
    const char *q = memchr(v, '"', (size_t)(p + n - v));
    if (!q) return NULL;
    *len = (size_t)(q - v);
    return v;
}

static int eq(const char *v, size_t len, const char *word) {
    return len == strlen(word) && memcmp(v, word, len) == 0;
}

static int classify(enum kind k, const char *p, size_t n, struct counts *c) {
    /* returns 1 if the line is a captured event */
    static const char *iw[4] = {"CREATE", "MODIFY", "CLOSE_WRITE", "DELETE"};
    static const char *ktypes[4] = {"create", "modify", "close_write", "delete"};
    c->lines++;
    switch (k) {
    case K_INOTIFYWAIT:
        if (has(p, n, "Q_OVERFLOW")) { c->overflows++; return 0; }
        for (int i = 0; i < 4; i++)
            if (prefix(p, n, iw[i])) { c->per_type[i]++; c->captured++; return 1; }
        c->other++;
        return 0;
    case K_FSNOTIFYWAIT: {
        if (has(p, n, "Q_OVERFLOW")) { c->overflows++; return 0; }
        /* the first field, "%e": comma-separated event names */
        const char *end = memchr(p, ' ', n);
        size_t field = end ? (size_t)(end - p) : n;
        long found = 0;
        for (size_t at = 0; at < field;) {
            const char *comma = memchr(p + at, ',', field - at);
            size_t len = comma ? (size_t)(comma - (p + at)) : field - at;
            for (int i = 0; i < 4; i++)
                if (eq(p + at, len, iw[i])) { c->per_type[i]++; found++; }
            at += len + 1;
        }
        if (!found) { c->other++; return 0; }
        c->captured += found;
        return 1;
    }
    case K_UDEVADM:
        if (n >= 7 && memcmp(p, "KERNEL[", 7) == 0) { c->captured++; return 1; }
        if (has(p, n, "KERNEL - the kernel uevent")) c->banner++;
        c->other++;
        return 0;
    case K_KEVD_INOTIFY:
    case K_KEVD_UDEV: {
        /* the first "source":"..." and "type":"..." of the line (the top-level ones: they come before "data") */
        size_t sl, tl;
        const char *src = value_of(p, n, "\"source\":\"", &sl);
        const char *typ = value_of(p, n, "\"type\":\"", &tl);
        if (typ && eq(typ, tl, "overflow")) { c->overflows++; return 0; }
        if (src && eq(src, sl, k == K_KEVD_INOTIFY ? "inotify" : "udev")) {
            if (k == K_KEVD_UDEV) { c->captured++; return 1; }
            for (int i = 0; i < 4; i++)
                if (typ && eq(typ, tl, ktypes[i])) { c->per_type[i]++; c->captured++; return 1; }
            c->other++;
            return 0;
        }
        if (src && eq(src, sl, "kevd")) {
            if (typ && eq(typ, tl, "started")) c->started++;
            else if (typ && eq(typ, tl, "stopping")) c->stopping++;
            else c->other_kevd++;
            return 0;
        }
        c->other++;
        return 0;
    }
    }
    return 0;
}

/* The stall probe: a thread of the counter that sleeps 1 ms at a time and
 * keeps how late it woke.  On a VM a vCPU that went idle can be left
 * unscheduled by the host for tens of ms (seen here: 30 to 100 ms with the
 * whole CPU idle, kernel threads included); every process on that CPU,
 * the consumer among them, stops for as long, while the generator goes on
 * on the other.  At 250,000 events/s the kernel's 16,384-event inotify queue
 * lasts 65 ms, so such a stall alone can overflow it.  The report carries the
 * longest lateness and the number of wakeups late by 10 ms or more, so that
 * an overflow can be told apart from a consumer too slow to keep up. */
static long stall_max_ns;   /* written by the probe, read by the counter */
static long stalls;

static void *stall_probe(void *unused) {
    (void)unused;
    for (;;) {
        double t0 = now();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        long late = (long)((now() - t0 - 0.001) * 1e9);
        if (late > __atomic_load_n(&stall_max_ns, __ATOMIC_RELAXED))
            __atomic_store_n(&stall_max_ns, late, __ATOMIC_RELAXED);
        if (late >= 10000000) __atomic_add_fetch(&stalls, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void report(char tag, const struct counts *c) {
    printf("%c %ld %ld %ld %ld %lld %.6f %.6f %.6f %ld %ld %ld %ld %ld %ld %ld %ld %ld %.6f %ld\n", tag, c->lines,
           c->captured, c->overflows, c->other, c->bytes, c->t_first, c->t_last, c->t_data, c->per_type[0],
           c->per_type[1], c->per_type[2], c->per_type[3], c->started, c->stopping, c->other_kevd, c->banner,
           c->unterminated, __atomic_load_n(&stall_max_ns, __ATOMIC_RELAXED) / 1e9,
           __atomic_load_n(&stalls, __ATOMIC_RELAXED));
    fflush(stdout);
}

static int count(const char *kindname, const char *headpath, const char *rawpath) {
    enum kind k;
    if (strcmp(kindname, "inotifywait") == 0) k = K_INOTIFYWAIT;
    else if (strcmp(kindname, "fsnotifywait") == 0) k = K_FSNOTIFYWAIT;
    else if (strcmp(kindname, "udevadm") == 0) k = K_UDEVADM;
    else if (strcmp(kindname, "kevd-inotify") == 0) k = K_KEVD_INOTIFY;
    else if (strcmp(kindname, "kevd-udev") == 0) k = K_KEVD_UDEV;
    else { fprintf(stderr, "count: unknown kind %s\n", kindname); return 2; }
#ifdef F_SETPIPE_SZ
    fcntl(0, F_SETPIPE_SZ, 1 << 20);
#endif
    int head = open(headpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int raw = strcmp(rawpath, "-") == 0 ? -1 : open(rawpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const size_t cap = 2u << 20, chunk = 1u << 20;
    char *buf = malloc(cap);
    if (!buf) return 1;
    size_t have = 0;           /* bytes of an unfinished line at buf[0..have) */
    long long headleft = 64 * 1024;
    struct counts c;
    memset(&c, 0, sizeof c);
    pthread_t probe;
    if (pthread_create(&probe, NULL, stall_probe, NULL) == 0) pthread_detach(probe);
    int dirty = 0;
    double last_report = 0;
    for (;;) {
        struct pollfd p = {0, POLLIN, 0};
        int pr = poll(&p, 1, 20);
        double t = now();
        if (pr == 0) {
            if (dirty) { report('R', &c); dirty = 0; last_report = t; }
            continue;
        }
        if (pr < 0) { if (errno == EINTR) continue; break; }
        if (have + chunk > cap) {   /* an absurdly long line: count what we have as one */
            classify(k, buf, have, &c);
            have = 0;
        }
        ssize_t r = read(0, buf + have, chunk);
        if (r < 0) { if (errno == EINTR || errno == EAGAIN) continue; break; }
        if (r == 0) break;
        c.bytes += r;
        c.t_data = t;
        if (headleft > 0 && head >= 0) {
            ssize_t w = write(head, buf + have, r < headleft ? r : headleft);
            headleft -= w > 0 ? w : headleft;
        }
        if (raw >= 0 && write(raw, buf + have, r) != r) { close(raw); raw = -1; }
        size_t end = have + (size_t)r, start = 0;
        char *nl;
        while ((nl = memchr(buf + start, '\n', end - start)) != NULL) {
            size_t len = (size_t)(nl - (buf + start));
            if (classify(k, buf + start, len, &c)) {
                if (c.t_first == 0) c.t_first = t;
                c.t_last = t;
            }
            start += len + 1;
        }
        have = end - start;
        if (have && start) memmove(buf, buf + start, have);
        dirty = 1;
        if (t - last_report >= 0.02) { report('R', &c); dirty = 0; last_report = t; }
        /* A short read means the writer is slower than us: let 1 ms of output
         * pile up (the 1 MiB pipe holds far more) rather than wake per line,
         * which for a consumer that writes line by line costs more CPU than
         * the consumer itself.  Event times are thus exact to ~1 ms. */
        if ((size_t)r < chunk / 4) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (have) {
        c.unterminated = 1;
        if (classify(k, buf, have, &c)) { if (c.t_first == 0) c.t_first = now(); c.t_last = now(); }
    }
    report('E', &c);
    if (raw >= 0) close(raw);
    if (head >= 0) close(head);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "files") == 0)
        return gen_files(argv[2], atol(argv[3]));
    if (argc == 5 && strcmp(argv[1], "uevent") == 0)
        return gen_uevent(argv[2], atol(argv[3]), argv[4]);
    if (argc == 5 && strcmp(argv[1], "count") == 0)
        return count(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: %s files DIR N | uevent PATH N ACTION | count KIND HEADFILE RAWFILE|-\n", argv[0]);
    return 2;
}
