/* uinput-emit: a uinput device for the input scenario (Tests/VM/scenarios/input.py), through the raw
 * /dev/uinput ioctls (the guest has no compiler and no Python: the host builds this statically).
 *
 *   uinput-emit NAME STEP...
 *
 * The device has SW_LID, KEY_POWER and KEY_A (an ordinary key, which kevd must not record). Steps, in order:
 *   lid=0|1        report the lid open (0) or closed (1), with a SYN_REPORT
 *   key=CODE:VAL   report EV_KEY CODE with VAL (1 press, 0 release, 2 repeat), with a SYN_REPORT
 *   wait=PATH      wait until PATH exists (the host creates it: the scenario's go signal), at most 300 s
 *   ready=PATH     create PATH (tells the host the step before it is done)
 * The device is destroyed when the steps are done (UI_DEV_DESTROY), also while a key is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/uinput.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "uinput-emit: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void emit(int fd, int type, int code, int value) {
    struct input_event e;
    memset(&e, 0, sizeof e);
    e.type = (unsigned short)type;
    e.code = (unsigned short)code;
    e.value = value;
    if (write(fd, &e, sizeof e) != (ssize_t)sizeof e) die("write");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: uinput-emit NAME STEP...\n");
        return 64;
    }
    int fd = open("/dev/uinput", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/uinput");
    if (ioctl(fd, UI_SET_EVBIT, EV_KEY) < 0 || ioctl(fd, UI_SET_KEYBIT, KEY_POWER) < 0 || ioctl(fd, UI_SET_KEYBIT, KEY_A) < 0 ||
        ioctl(fd, UI_SET_EVBIT, EV_SW) < 0 || ioctl(fd, UI_SET_SWBIT, SW_LID) < 0)
        die("UI_SET_*BIT");
    struct uinput_setup setup;
    memset(&setup, 0, sizeof setup);
    setup.id.bustype = BUS_VIRTUAL;
    setup.id.vendor = 0x1234;
    setup.id.product = 0x5678;
    snprintf(setup.name, sizeof setup.name, "%s", argv[1]);
    if (ioctl(fd, UI_DEV_SETUP, &setup) < 0) die("UI_DEV_SETUP");
    if (ioctl(fd, UI_DEV_CREATE) < 0) die("UI_DEV_CREATE");
    for (int i = 2; i < argc; i++) {
        const char *step = argv[i];
        if (strncmp(step, "lid=", 4) == 0) {
            emit(fd, EV_SW, SW_LID, atoi(step + 4));
            emit(fd, EV_SYN, SYN_REPORT, 0);
        } else if (strncmp(step, "key=", 4) == 0) {
            int code = 0, value = 0;
            if (sscanf(step + 4, "%d:%d", &code, &value) != 2) { fprintf(stderr, "bad step %s\n", step); return 64; }
            emit(fd, EV_KEY, code, value);
            emit(fd, EV_SYN, SYN_REPORT, 0);
        } else if (strncmp(step, "wait=", 5) == 0) {
            struct timespec tick = {0, 20 * 1000 * 1000};
            int ticks = 0;
            while (access(step + 5, F_OK) != 0) {
                if (++ticks > 15000) { fprintf(stderr, "uinput-emit: gave up waiting for %s\n", step + 5); return 1; }
                nanosleep(&tick, NULL);
            }
        } else if (strncmp(step, "ready=", 6) == 0) {
            int f = open(step + 6, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (f < 0) die("ready file");
            close(f);
        } else {
            fprintf(stderr, "uinput-emit: unknown step %s\n", step);
            return 64;
        }
        printf("uinput-emit %s: %s\n", argv[1], step);
        fflush(stdout);
    }
    if (ioctl(fd, UI_DEV_DESTROY) < 0) die("UI_DEV_DESTROY");
    close(fd);
    return 0;
}
