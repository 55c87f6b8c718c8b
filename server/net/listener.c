/*
 * Closing a listening socket without resets (see listener.h). How the listener is frozen:
 * listen(fd, 0) leaves room for one connection in the accept queue; a connection of our own
 * (the plug, from this process to the listener) fills it, and while it is full the kernel
 * drops new SYNs and the ACKs that would complete a handshake. Before that, every connection
 * that arrives is accepted and handed over. The plug counts only when, with it queued:
 *   - its own server end is the connection in the queue (sock_diag: an ESTABLISHED socket
 *     from the listener's address and port to the plug's), and the queue holds one
 *     (TCP_INFO: on a listener, tcpi_unacked is the number ready for accept());
 *   - no handshake is in progress (sock_diag: request sockets in SYN_RECV to our address and
 *     port, as `ss -tn state syn-recv` lists them): their ACK would now be dropped and the
 *     client reset after the close;
 *   - the kernel sent no SYN cookie meanwhile (TcpExt SyncookiesSent in /proc/net/netstat):
 *     a cookie handshake keeps no request socket, so it cannot be counted.
 * Otherwise the plug is accepted and closed and the next try follows. Then shutdown(SHUT_RD)
 * stops listening; the plug is reset by that, which is why it is ours.
 */
#include "net/listener.h"
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POLL_US 200
#define PLUG_WAIT_MS 50 /* a loopback handshake takes microseconds */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static void pause_us(long us) {
    nanosleep(&(struct timespec){0, us * 1000L}, NULL);
}

/* Connections waiting in the accept queue of listener fd, or -1. */
static int accept_queue_len(int fd) {
    struct tcp_info ti;
    socklen_t n = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) || ti.tcpi_state != TCP_LISTEN)
        return -1;
    return (int)ti.tcpi_unacked;
}

/* The port and address bytes of an AF_INET/AF_INET6 address (network order). */
static unsigned short addr_port(const struct sockaddr_storage *a) {
    return a->ss_family == AF_INET ? ((const struct sockaddr_in *)a)->sin_port
                                   : ((const struct sockaddr_in6 *)a)->sin6_port;
}

static const void *addr_bytes(const struct sockaddr_storage *a, size_t *len) {
    if (a->ss_family == AF_INET) {
        *len = 4;
        return &((const struct sockaddr_in *)a)->sin_addr;
    }
    *len = 16;
    return &((const struct sockaddr_in6 *)a)->sin6_addr;
}

static int is_wildcard(const struct sockaddr_storage *a) {
    static const unsigned char zero[16];
    size_t n;
    const void *b = addr_bytes(a, &n);
    return !memcmp(b, zero, n);
}

/* Does a sock_diag address/port pair equal a? (wildcard: any address) */
static int diag_matches(const __be32 *addr, __be16 port, const struct sockaddr_storage *a,
                        int any_addr) {
    size_t n;
    const void *b = addr_bytes(a, &n);
    return port == addr_port(a) && (any_addr || !memcmp(addr, b, n));
}

/* Sockets of the listener's family in the states of mask whose local end is the listener's
 * address and port and, when peer is not NULL, whose remote end is peer; -1 on error. */
static int diag_count(int nl, const struct sockaddr_storage *local, unsigned mask,
                      const struct sockaddr_storage *peer) {
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req = {.nlh = {.nlmsg_len = sizeof req,
                     .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                     .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
             .r = {.sdiag_family = local->ss_family,
                   .sdiag_protocol = IPPROTO_TCP,
                   .idiag_states = mask}};
    if (send(nl, &req, sizeof req, 0) != (ssize_t)sizeof req)
        return -1;
    long buf[2048]; /* 16 KB, aligned for nlmsghdr */
    int count = 0, wild = is_wildcard(local);
    for (;;) {
        ssize_t len = recv(nl, buf, sizeof buf, 0);
        if (len <= 0)
            return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len);
             h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE)
                return count;
            if (h->nlmsg_type == NLMSG_ERROR)
                return -1;
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || !((1u << m->idiag_state) & mask))
                continue;
            if (diag_matches(m->id.idiag_src, m->id.idiag_sport, local, wild) &&
                (!peer || diag_matches(m->id.idiag_dst, m->id.idiag_dport, peer, 0)))
                count++;
        }
    }
}

/* TcpExt SyncookiesSent of this network namespace, or -1. */
static long long syncookies_sent(void) {
    FILE *f = fopen("/proc/net/netstat", "re");
    if (!f)
        return -1;
    char names[4096], values[4096];
    long long v = -1;
    while (fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
        if (strncmp(names, "TcpExt:", 7))
            continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *x = strtok_r(values, " \n", &sv);
        while (n && x && strcmp(n, "SyncookiesSent"))
            n = strtok_r(NULL, " \n", &sn), x = strtok_r(NULL, " \n", &sv);
        if (n && x)
            v = atoll(x);
        break;
    }
    fclose(f);
    return v;
}

/* Accept every queued connection: the plug's server end (its peer is plug) is closed, the
 * others go to take. */
static void take_all(int fd, const struct sockaddr_storage *plug, resattn_listener_take_fn take,
                     void *arg, resattn_listener_close_info *info) {
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t n = sizeof peer;
        int c = accept4(fd, (struct sockaddr *)&peer, &n, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN: empty */
        }
        size_t al;
        const void *pb = plug ? addr_bytes(plug, &al) : NULL;
        const void *cb = addr_bytes(&peer, &al);
        if (plug && peer.ss_family == plug->ss_family && addr_port(&peer) == addr_port(plug) &&
            !memcmp(pb, cb, al)) {
            close(c);
            continue;
        }
        info->taken++;
        take(arg, c, (struct sockaddr *)&peer, n);
    }
}

/* Connect the plug to the listener (loopback for a wildcard listener); its descriptor, with
 * its own address in *self, or -1. SO_LINGER 0: closing it resets at once, which also
 * removes its server end when that is still a request socket. */
static int plug_open(const struct sockaddr_storage *local, socklen_t len,
                     struct sockaddr_storage *self) {
    struct sockaddr_storage to = *local;
    if (is_wildcard(&to)) {
        if (to.ss_family == AF_INET)
            ((struct sockaddr_in *)&to)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else
            ((struct sockaddr_in6 *)&to)->sin6_addr = in6addr_loopback;
    }
    int c = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c < 0)
        return -1;
    struct linger lg = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    socklen_t n = sizeof *self;
    if ((connect(c, (struct sockaddr *)&to, len) && errno != EINPROGRESS) ||
        getsockname(c, (struct sockaddr *)self, &n)) {
        close(c);
        return -1;
    }
    return c;
}

/* Wait until the plug's server end is queued; 1 if the listener is then frozen as the top
 * of the file says, 0 if not (yet), -1 if the counts are unavailable. */
static int plug_holds(int fd, int nl, const struct sockaddr_storage *local,
                      const struct sockaddr_storage *self, long long cookies) {
    double until = now_ms() + PLUG_WAIT_MS;
    for (;;) {
        int mine = diag_count(nl, local, 1u << TCP_ESTABLISHED, self);
        int queued = accept_queue_len(fd);
        if (mine < 0 || queued < 0)
            return -1;
        if (mine == 1 && queued == 1)
            break;
        if (queued >= 1 || now_ms() > until)
            return 0; /* someone else's connection took the place */
        pause_us(POLL_US);
    }
    /* twice, a moment apart: a handshake completing on another CPU is neither a request
     * socket nor queued for an instant; once queued beside the plug it shows as 2 */
    for (int i = 0; i < 2; i++) {
        int shaking = diag_count(nl, local, 1u << TCP_SYN_RECV, NULL);
        if (shaking < 0)
            return -1;
        if (shaking || syncookies_sent() != cookies || accept_queue_len(fd) != 1)
            return 0;
        if (!i)
            pause_us(POLL_US);
    }
    return 1;
}

resattn_status resattn_listener_close_gently(int fd, int timeout_ms, resattn_listener_take_fn take,
                                             void *arg, resattn_listener_close_info *info,
                                             char *err, size_t err_len) {
    resattn_listener_close_info dummy;
    if (!info)
        info = &dummy;
    memset(info, 0, sizeof *info);
    info->handshakes = -1;
    struct sockaddr_storage local, self;
    socklen_t len = sizeof local;
    int nl = -1, plug = -1, frozen = 0;
    const char *why = NULL;
    if (getsockname(fd, (struct sockaddr *)&local, &len) ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6))
        why = "not a TCP/IP listener";
    else if ((nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) < 0 ||
             (info->handshakes = diag_count(nl, &local, 1u << TCP_SYN_RECV, NULL)) < 0)
        why = "cannot count the kernel's sockets (sock_diag)";
    else if (listen(fd, 0))
        why = "cannot shrink the backlog";
    double t0 = now_ms();
    while (!why) {
        long long cookies = syncookies_sent();
        take_all(fd, NULL, take, arg, info);
        info->waited_ms = (int)(now_ms() - t0);
        if (info->waited_ms > timeout_ms) {
            why = "timed out";
            break;
        }
        int shaking = diag_count(nl, &local, 1u << TCP_SYN_RECV, NULL);
        if (shaking != 0) { /* they complete within a round trip; then take them */
            pause_us(POLL_US);
            continue;
        }
        info->attempts++;
        plug = plug_open(&local, len, &self);
        int held = plug < 0 ? -1 : plug_holds(fd, nl, &local, &self, cookies);
        if (held == 1) {
            frozen = 1;
            break;
        }
        if (plug < 0) {
            why = "cannot connect to the listener";
            break;
        }
        take_all(fd, &self, take, arg, info); /* the plug's end and whatever came first */
        close(plug);
        plug = -1;
        if (held < 0)
            why = "cannot count the kernel's sockets (sock_diag)";
    }
    info->waited_ms = (int)(now_ms() - t0);
    info->settled = frozen;
    if (!frozen)
        take_all(fd, NULL, take, arg, info); /* the last ones, at least */
    shutdown(fd, SHUT_RD); /* not listening any more: queued connections are reset */
    if (plug >= 0)
        close(plug);
    if (nl >= 0)
        close(nl);
    if (why) {
        snprintf(err, err_len, "listener closed without waiting for every connection: %s", why);
        return RESATTN_ERR_IO;
    }
    return RESATTN_OK;
}
