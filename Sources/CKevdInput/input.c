#include "CKevdInput.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/input.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int kevd_input_open(const char *path) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static int ioctl_result(int r) { return r < 0 ? -errno : r; }

int kevd_input_bits(int fd, int ev_type, uint8_t *bits, int len) {
    memset(bits, 0, (size_t)len);
    return ioctl_result(ioctl(fd, EVIOCGBIT(ev_type, len), bits));
}

int kevd_input_switch_state(int fd, uint8_t *bits, int len) {
    memset(bits, 0, (size_t)len);
    return ioctl_result(ioctl(fd, EVIOCGSW(len), bits));
}

int kevd_input_key_state(int fd, uint8_t *bits, int len) {
    memset(bits, 0, (size_t)len);
    return ioctl_result(ioctl(fd, EVIOCGKEY(len), bits));
}

int kevd_input_name(int fd, char *buf, int len) {
    memset(buf, 0, (size_t)len);
    return ioctl_result(ioctl(fd, EVIOCGNAME(len - 1), buf));
}

int kevd_input_phys(int fd, char *buf, int len) {
    memset(buf, 0, (size_t)len);
    return ioctl_result(ioctl(fd, EVIOCGPHYS(len - 1), buf));
}

int kevd_input_grab(int fd, int on) { return ioctl_result(ioctl(fd, EVIOCGRAB, on ? 1 : 0)); }

int kevd_input_read(int fd, struct kevd_input_event *events, int max) {
    struct input_event raw[64];
    if (max > 64) max = 64;
    ssize_t n = read(fd, raw, sizeof(struct input_event) * (size_t)max);
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
    int count = (int)(n / (ssize_t)sizeof(struct input_event));
    for (int i = 0; i < count; i++) {
        events[i].sec = raw[i].input_event_sec;
        events[i].usec = raw[i].input_event_usec;
        events[i].type = raw[i].type;
        events[i].code = raw[i].code;
        events[i].value = raw[i].value;
    }
    return count;
}
