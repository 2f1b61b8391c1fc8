#include "CKevdInput.h"

#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

// From the kernel's drivers/acpi/event.c (not in the uapi headers).
#define ACPI_GENL_FAMILY_NAME "acpi_event"
#define ACPI_GENL_MCAST_GROUP_NAME "acpi_mc_group"
#define ACPI_GENL_CMD_EVENT 1
#define ACPI_GENL_ATTR_EVENT 1
// struct acpi_genl_event { char device_class[20]; char bus_id[15]; u32 type; u32 data; }: natural alignment.
#define ACPI_EVENT_CLASS_LEN 20
#define ACPI_EVENT_BUS_LEN 15
#define ACPI_EVENT_TYPE_OFFSET 36
#define ACPI_EVENT_DATA_OFFSET 40
#define ACPI_EVENT_SIZE 44

static const struct nlattr *attr_find(const uint8_t *start, int len, int type) {
    int offset = 0;
    while (offset + (int)NLA_HDRLEN <= len) {
        const struct nlattr *a = (const struct nlattr *)(start + offset);
        if (a->nla_len < NLA_HDRLEN || offset + a->nla_len > len) return NULL;
        if ((a->nla_type & NLA_TYPE_MASK) == type) return a;
        offset += NLA_ALIGN(a->nla_len);
    }
    return NULL;
}

static const uint8_t *attr_data(const struct nlattr *a) { return (const uint8_t *)a + NLA_HDRLEN; }
static int attr_len(const struct nlattr *a) { return a->nla_len - NLA_HDRLEN; }

/// The family id and the id of its group `group` from a CTRL_CMD_NEWFAMILY reply.
static int parse_family(const uint8_t *msg, int len, const char *group, int *family, int *group_id) {
    const struct nlmsghdr *h = (const struct nlmsghdr *)msg;
    if (len < (int)NLMSG_HDRLEN || h->nlmsg_len > (uint32_t)len) return -EBADMSG;
    if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = NLMSG_DATA(h);
        return e->error < 0 ? e->error : -EBADMSG;
    }
    const uint8_t *attrs = msg + NLMSG_HDRLEN + GENL_HDRLEN;
    int attrs_len = (int)h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;
    if (attrs_len < 0) return -EBADMSG;
    const struct nlattr *id = attr_find(attrs, attrs_len, CTRL_ATTR_FAMILY_ID);
    const struct nlattr *groups = attr_find(attrs, attrs_len, CTRL_ATTR_MCAST_GROUPS);
    if (!id || attr_len(id) < 2 || !groups) return -EBADMSG;
    *family = *(const uint16_t *)attr_data(id);
    const uint8_t *g = attr_data(groups);
    int glen = attr_len(groups), offset = 0;
    while (offset + (int)NLA_HDRLEN <= glen) {
        const struct nlattr *entry = (const struct nlattr *)(g + offset);
        if (entry->nla_len < NLA_HDRLEN || offset + entry->nla_len > glen) break;
        const struct nlattr *name = attr_find(attr_data(entry), attr_len(entry), CTRL_ATTR_MCAST_GRP_NAME);
        const struct nlattr *gid = attr_find(attr_data(entry), attr_len(entry), CTRL_ATTR_MCAST_GRP_ID);
        if (name && gid && attr_len(gid) >= 4 &&
            strncmp((const char *)attr_data(name), group, (size_t)attr_len(name)) == 0) {
            *group_id = (int)*(const uint32_t *)attr_data(gid);
            return 0;
        }
        offset += NLA_ALIGN(entry->nla_len);
    }
    return -ENOENT;
}

static int resolve(int *family, int *group_id) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
    if (fd < 0) return -errno;
    struct timeval timeout = {.tv_sec = 1, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    struct {
        struct nlmsghdr h;
        struct genlmsghdr g;
        uint8_t attrs[64];
    } request;
    memset(&request, 0, sizeof request);
    size_t name_len = sizeof ACPI_GENL_FAMILY_NAME;  // With its NUL.
    struct nlattr *a = (struct nlattr *)request.attrs;
    a->nla_type = CTRL_ATTR_FAMILY_NAME;
    a->nla_len = (uint16_t)(NLA_HDRLEN + name_len);
    memcpy((uint8_t *)a + NLA_HDRLEN, ACPI_GENL_FAMILY_NAME, name_len);
    request.h.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN + NLA_ALIGN(a->nla_len));
    request.h.nlmsg_type = GENL_ID_CTRL;
    request.h.nlmsg_flags = NLM_F_REQUEST;
    request.h.nlmsg_seq = 1;
    request.g.cmd = CTRL_CMD_GETFAMILY;
    request.g.version = 1;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &request, request.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    uint8_t reply[8192];
    ssize_t n = recv(fd, reply, sizeof reply, 0);
    int e = errno;
    close(fd);
    if (n < 0) return e == EAGAIN ? -ETIMEDOUT : -e;
    return parse_family(reply, (int)n, ACPI_GENL_MCAST_GROUP_NAME, family, group_id);
}

int kevd_acpi_open(int rcvbuf) {
    int family = 0, group = 0;
    int r = resolve(&family, &group);
    if (r < 0) return r;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_GENERIC);
    if (fd < 0) return -errno;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_nl local = {.nl_family = AF_NETLINK};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0 ||
        setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void copy_field(char *out, const uint8_t *in, int len) {
    int i = 0;
    for (; i < len && in[i]; i++) out[i] = (char)in[i];
    out[i] = 0;
}

int kevd_acpi_decode(const uint8_t *message, int len, struct kevd_acpi_event *out) {
    const struct nlmsghdr *h = (const struct nlmsghdr *)message;
    if (len < (int)NLMSG_HDRLEN || h->nlmsg_len < NLMSG_HDRLEN || h->nlmsg_len > (uint32_t)len) return -EBADMSG;
    if (h->nlmsg_type < NLMSG_MIN_TYPE) return 0;  // NOOP, ERROR, DONE, OVERRUN
    if ((int)h->nlmsg_len < (int)(NLMSG_HDRLEN + GENL_HDRLEN)) return -EBADMSG;
    const struct genlmsghdr *g = (const struct genlmsghdr *)(message + NLMSG_HDRLEN);
    if (g->cmd != ACPI_GENL_CMD_EVENT) return 0;
    const uint8_t *attrs = message + NLMSG_HDRLEN + GENL_HDRLEN;
    const struct nlattr *a = attr_find(attrs, (int)h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN, ACPI_GENL_ATTR_EVENT);
    if (!a) return 0;
    if (attr_len(a) < ACPI_EVENT_SIZE) return -EBADMSG;
    const uint8_t *e = attr_data(a);
    copy_field(out->device_class, e, ACPI_EVENT_CLASS_LEN);
    copy_field(out->bus_id, e + ACPI_EVENT_CLASS_LEN, ACPI_EVENT_BUS_LEN);
    memcpy(&out->type, e + ACPI_EVENT_TYPE_OFFSET, 4);
    memcpy(&out->data, e + ACPI_EVENT_DATA_OFFSET, 4);
    return 1;
}

int kevd_acpi_receive(int fd, uint8_t *buffer, int size, struct kevd_acpi_event *out) {
    ssize_t n = recv(fd, buffer, (size_t)size, 0);
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
    int r = kevd_acpi_decode(buffer, (int)n, out);
    if (r == 1) return 1;
    return r < 0 ? r : 2;
}

int kevd_acpi_encode(const char *device_class, const char *bus_id, uint32_t type, uint32_t data,
                     uint8_t *buffer, int size) {
    int total = (int)NLMSG_LENGTH(GENL_HDRLEN + NLA_HDRLEN + NLA_ALIGN(ACPI_EVENT_SIZE));
    if (size < total) return -ENOSPC;
    memset(buffer, 0, (size_t)total);
    struct nlmsghdr *h = (struct nlmsghdr *)buffer;
    h->nlmsg_len = (uint32_t)total;
    h->nlmsg_type = 0x17;  // Any dynamic family id.
    struct genlmsghdr *g = (struct genlmsghdr *)(buffer + NLMSG_HDRLEN);
    g->cmd = ACPI_GENL_CMD_EVENT;
    g->version = 1;
    struct nlattr *a = (struct nlattr *)(buffer + NLMSG_HDRLEN + GENL_HDRLEN);
    a->nla_type = ACPI_GENL_ATTR_EVENT;
    a->nla_len = NLA_HDRLEN + ACPI_EVENT_SIZE;
    uint8_t *e = (uint8_t *)a + NLA_HDRLEN;
    strncpy((char *)e, device_class, ACPI_EVENT_CLASS_LEN);
    strncpy((char *)e + ACPI_EVENT_CLASS_LEN, bus_id, ACPI_EVENT_BUS_LEN);
    memcpy(e + ACPI_EVENT_TYPE_OFFSET, &type, 4);
    memcpy(e + ACPI_EVENT_DATA_OFFSET, &data, 4);
    return total;
}
