/*
 * Closing a listening socket without resets (see listener.h). How the listener is frozen:
 * a connection of our own (the plug, from this process to the listener) is made while the
 * backlog still has room, so it completes at once (no overflow, no SYN cookie); then
 * listen(fd, 0) shrinks the backlog behind it. From then on the accept queue is full as long
 * as it holds one connection, and the kernel drops new SYNs and the ACKs that would complete
 * a handshake (those clients back off: SYNs are sent again after about 1 s). The others
 * queued beside the plug are accepted one by one, the queue never emptying, so the gate
 * stays closed while they are taken. It is frozen when, with the plug alone in the queue
 * (TCP_INFO: on a listener, tcpi_unacked is the number ready for accept()):
 *   - no handshake is in progress (sock_diag: request sockets in SYN_RECV to our address and
 *     port, as `ss -tn state syn-recv` lists them): their ACK would now be dropped and the
 *     client reset after the close;
 *   - the kernel sent no SYN cookie meanwhile (TcpExt SyncookiesSent in /proc/net/netstat):
 *     a cookie handshake keeps no request socket, so it cannot be counted.
 * Otherwise the backlog is restored, which opens the gate: what was held back completes and
 * is accepted, and the next try follows. Clients that kept reconnecting have backed off by
 * then, so a second try is rarely needed. Then shutdown(SHUT_RD) stops listening; the plug
 * is reset by that, which is why it is ours. (A socket filter dropping SYNs would be
 * simpler, but attaching one needs CAP_NET_ADMIN on some kernels, and containers drop it.)
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

/* TCP_INFO of listener fd: on a listener, tcpi_unacked is the number of connections ready
 * for accept() and tcpi_sacked the backlog (sk_max_ack_backlog). One of them, or -1. */
static int listener_count(int fd, int backlog) {
    struct tcp_info ti;
    socklen_t n = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) || ti.tcpi_state != TCP_LISTEN)
        return -1;
    return (int)(backlog ? ti.tcpi_sacked : ti.tcpi_unacked);
}

/* Connections waiting in the accept queue of listener fd, or -1. */
static int accept_queue_len(int fd) {
    return listener_count(fd, 0);
}

/* The backlog the listener was given (capped by net.core.somaxconn), or -1. */
static int listen_backlog(int fd) {
    return listener_count(fd, 1);
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

/* Is peer the plug's address? (plug NULL: no plug) */
static int is_plug(const struct sockaddr_storage *peer, const struct sockaddr_storage *plug) {
    size_t al;
    if (!plug || peer->ss_family != plug->ss_family || addr_port(peer) != addr_port(plug))
        return 0;
    const void *pb = addr_bytes(plug, &al);
    return !memcmp(pb, addr_bytes(peer, &al), al);
}

/* Wait up to PLUG_WAIT_MS until the plug's server end (an ESTABLISHED socket from the
 * listener's address to self) exists: 1 when it does, 0 if not, -1 if it cannot be counted. */
static int plug_arrived(int nl, const struct sockaddr_storage *local,
                        const struct sockaddr_storage *self) {
    double until = now_ms() + PLUG_WAIT_MS;
    for (;;) {
        int mine = diag_count(nl, local, 1u << TCP_ESTABLISHED, self);
        if (mine != 0)
            return mine < 0 ? -1 : 1;
        if (now_ms() > until)
            return 0;
        pause_us(POLL_US);
    }
}

/* Accept one queued connection: 1 if it was the plug's server end (closed here), 0 if it
 * went to take, -1 if the queue was empty. */
static int take_one(int fd, const struct sockaddr_storage *plug, resattn_listener_take_fn take,
                    void *arg, resattn_listener_close_info *info) {
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t n = sizeof peer;
        int c = accept4(fd, (struct sockaddr *)&peer, &n, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return -1;
        }
        if (is_plug(&peer, plug)) {
            close(c);
            return 1;
        }
        info->taken++;
        take(arg, c, (struct sockaddr *)&peer, n);
        return 0;
    }
}

/* Accept every queued connection: the plug's server end (its peer is plug) is closed, the
 * others go to take. */
static void take_all(int fd, const struct sockaddr_storage *plug, resattn_listener_take_fn take,
                     void *arg, resattn_listener_close_info *info) {
    while (take_one(fd, plug, take, arg, info) >= 0)
        ;
}

/* With the plug queued and the backlog at 0 (the gate closed), accept the other queued
 * connections one by one, the gate staying closed while one is left; 1 when the plug alone
 * is left and the listener is frozen as the top of the file says, 0 when not (the gate has
 * to open again), -1 when the counts are unavailable. */
static int freeze(int fd, int nl, const struct sockaddr_storage *local,
                  const struct sockaddr_storage *self, long long cookies,
                  resattn_listener_take_fn take, void *arg, resattn_listener_close_info *info) {
    for (;;) {
        int queued = accept_queue_len(fd);
        if (queued < 0)
            return -1;
        if (queued == 0)
            return 0; /* the plug's end was taken with the last of the others */
        if (queued > 1) {
            int r = take_one(fd, self, take, arg, info);
            if (r < 0)
                return 0; /* accept() failed (EMFILE?): the outer loop's timeout applies */
            if (r == 1)
                self = NULL; /* the plug is gone; what is left is someone else's */
            continue;
        }
        if (!self)
            return 0;
        break;
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
    int nl = -1, plug = -1, frozen = 0, backlog = listen_backlog(fd);
    const char *why = NULL;
    if (getsockname(fd, (struct sockaddr *)&local, &len) ||
        (local.ss_family != AF_INET && local.ss_family != AF_INET6) || backlog < 0)
        why = "not a TCP/IP listener";
    else if ((nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)) < 0 ||
             (info->handshakes = diag_count(nl, &local, 1u << TCP_SYN_RECV, NULL)) < 0)
        why = "cannot count the kernel's sockets (sock_diag)";
    double t0 = now_ms();
    while (!why) {
        take_all(fd, NULL, take, arg, info);
        info->waited_ms = (int)(now_ms() - t0);
        if (info->waited_ms > timeout_ms) {
            why = "timed out";
            break;
        }
        int shaking = diag_count(nl, &local, 1u << TCP_SYN_RECV, NULL);
        if (shaking != 0) { /* they complete within a round trip; then take them */
            if (shaking < 0)
                why = "cannot count the kernel's sockets (sock_diag)";
            pause_us(POLL_US);
            continue;
        }
        info->attempts++;
        long long cookies = syncookies_sent();
        plug = plug_open(&local, len, &self);
        if (plug < 0) {
            why = "cannot connect to the listener";
            break;
        }
        /* the plug is queued while the backlog still has room (no overflow, no cookie);
         * then the backlog shrinks to 0 behind it and the gate is closed */
        int held = plug_arrived(nl, &local, &self);
        if (held == 1 && !listen(fd, 0))
            held = freeze(fd, nl, &local, &self, cookies, take, arg, info);
        if (held == 1) {
            frozen = 1;
            break;
        }
        if (held < 0)
            why = "cannot count the kernel's sockets (sock_diag)";
        /* open the gate again: what was held back completes, and is taken next round */
        listen(fd, backlog);
        take_all(fd, &self, take, arg, info);
        close(plug);
        plug = -1;
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
