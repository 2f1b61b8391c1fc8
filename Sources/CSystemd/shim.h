// libsystemd's daemon API only: sd_notify, sd_watchdog_enabled, sd_listen_fds, sd_is_socket_unix.
#include <systemd/sd-daemon.h>
