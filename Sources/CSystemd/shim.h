// libsystemd's daemon API (sd_notify, sd_watchdog_enabled, sd_listen_fds, sd_is_socket_unix) and
// sd_journal_sendv, for the optional mirror of events into the systemd journal.
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
