// The input and ACPI sources' C side: evdev ioctls (macros Swift cannot call), the ACPI generic-netlink socket
// and its message decoder, and logind's Inhibit call through sd-bus.
#ifndef CKEVD_INPUT_H
#define CKEVD_INPUT_H

#include <stdint.h>
#include <stddef.h>

// --- evdev -------------------------------------------------------------------------------------------------

/// One struct input_event, with the time flattened (the 64-bit layout of struct timeval on x86-64 and arm64).
struct kevd_input_event {
    int64_t sec;
    int64_t usec;
    uint16_t type;
    uint16_t code;
    int32_t value;
};

/// Opens an evdev node read-only, non-blocking, close-on-exec. -errno on failure.
int kevd_input_open(const char *path);
/// EVIOCGBIT(ev_type, len): the capability bits of one event type (0 for the event types themselves).
/// Bytes written, or -errno.
int kevd_input_bits(int fd, int ev_type, uint8_t *bits, int len);
/// EVIOCGSW / EVIOCGKEY: the current state bits of switches / keys. Bytes written, or -errno.
int kevd_input_switch_state(int fd, uint8_t *bits, int len);
int kevd_input_key_state(int fd, uint8_t *bits, int len);
/// EVIOCGNAME / EVIOCGPHYS into buf (NUL-terminated). Length, or -errno (ENOENT: the device has none).
int kevd_input_name(int fd, char *buf, int len);
int kevd_input_phys(int fd, char *buf, int len);
/// EVIOCGRAB: 1 grabs the device exclusively, 0 releases it. 0 or -errno.
int kevd_input_grab(int fd, int on);
/// read(2) of up to max events. Count (0: none ready), or -errno (ENODEV: the device was unplugged).
int kevd_input_read(int fd, struct kevd_input_event *events, int max);
/// The kernel's KEY_MAX, SW_MAX and the event types kevd reads.
enum {
    KEVD_EV_SYN = 0x00, KEVD_EV_KEY = 0x01, KEVD_EV_SW = 0x05,
    KEVD_KEY_MAX = 0x2ff, KEVD_SW_MAX = 0x10, KEVD_SYN_DROPPED = 3,
};

// --- ACPI generic netlink ----------------------------------------------------------------------------------

/// struct acpi_genl_event (include/acpi/acpi_bus.h... drivers/acpi/event.c), decoded.
struct kevd_acpi_event {
    char device_class[21];
    char bus_id[16];
    uint32_t type;
    uint32_t data;
};

/// A non-blocking NETLINK_GENERIC socket joined to the `acpi_event` family's `acpi_mc_group`. The family and
/// group ids are resolved with CTRL_CMD_GETFAMILY on a socket with a 1-second receive timeout (the kernel
/// answers at once; the bound only guards a kernel that never does). fd, or -errno (-ENOENT: no such family,
/// a kernel without ACPI).
int kevd_acpi_open(int rcvbuf);
/// Receives one datagram. 1: an event was decoded into *out; 0: nothing (more) to read; 2: a message that is
/// not an ACPI event (skipped); -errno (ENOBUFS: the kernel dropped messages, the receive buffer was full).
int kevd_acpi_receive(int fd, uint8_t *buffer, int size, struct kevd_acpi_event *out);
/// Decodes one netlink datagram of `len` bytes: 1 decoded, 0 not an ACPI event, -EBADMSG malformed.
int kevd_acpi_decode(const uint8_t *message, int len, struct kevd_acpi_event *out);
/// Builds the datagram the kernel sends for an event (for the decoder's tests). Bytes written, or -ENOSPC.
int kevd_acpi_encode(const char *device_class, const char *bus_id, uint32_t type, uint32_t data,
                     uint8_t *buffer, int size);

// --- logind -------------------------------------------------------------------------------------------------

/// org.freedesktop.login1.Manager.Inhibit(what, who, why, "block") on the system bus, with sd-bus's method
/// call timeout set to timeout_usec. Returns the lock's fd (close it to release the lock), or -errno; on a
/// D-Bus error its message is copied into error (NUL-terminated).
int kevd_logind_inhibit(const char *what, const char *who, const char *why, uint64_t timeout_usec,
                        char *error, int error_len);

#endif
