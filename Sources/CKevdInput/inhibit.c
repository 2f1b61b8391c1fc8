#include "CKevdInput.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

int kevd_logind_inhibit(const char *what, const char *who, const char *why, uint64_t timeout_usec,
                        char *error, int error_len) {
    if (error_len > 0) error[0] = 0;
    sd_bus *bus = NULL;
    int r = sd_bus_open_system(&bus);
    if (r < 0) return r;
    sd_bus_set_method_call_timeout(bus, timeout_usec);
    sd_bus_error bus_error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    r = sd_bus_call_method(bus, "org.freedesktop.login1", "/org/freedesktop/login1",
                           "org.freedesktop.login1.Manager", "Inhibit", &bus_error, &reply, "ssss",
                           what, who, why, "block");
    int fd = -1;
    if (r >= 0) {
        int borrowed = -1;
        r = sd_bus_message_read(reply, "h", &borrowed);
        // The message owns the fd it carries: keep a copy of our own.
        if (r >= 0) fd = fcntl(borrowed, F_DUPFD_CLOEXEC, 3);
        if (r >= 0 && fd < 0) r = -errno;
    } else if (bus_error.message && error_len > 0) {
        strncpy(error, bus_error.message, (size_t)error_len - 1);
        error[error_len - 1] = 0;
    }
    sd_bus_error_free(&bus_error);
    sd_bus_message_unref(reply);
    sd_bus_flush_close_unref(bus);
    return r < 0 ? r : fd;
}
