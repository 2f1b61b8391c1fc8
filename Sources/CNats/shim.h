// The NATS C client (libnats, Debian's libnats-dev): connections, JetStream publishing and stream management, for
// the `[[forward]]` forwarder and its tests.
#include <nats/nats.h>
