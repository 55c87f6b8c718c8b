/*
 * Closing a listening socket without resets (see listener.h). The handshakes in progress are
 * counted with sock_diag (the request sockets in SYN_RECV on our local address and port, as
 * `ss -tn state syn-recv` lists them), the accept queue with TCP_INFO (on a listener,
 * tcpi_unacked is the number of connections ready for accept()). Both must read zero twice
 * in a row: between the two steps of a completing handshake (request socket unlinked, child
 * queued) a reader can see neither.
 */
#include "net/listener.h"
#include <errno.h>
#include <linux/filter.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define POLL_MS 1

/* Drop every segment with SYN and without ACK (a new connection); pass the rest, including
 * the ACKs that complete the handshakes already answered. A socket filter sees a TCP
 * segment from its TCP header: byte 13 holds the flags. */
static int drop_new_syns(int fd) {
    static struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),       /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1), /* SYN alone: */
        BPF_STMT(BPF_RET | BPF_K, 0),                    /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),          /* anything else: whole segment */
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
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

/* Does the local end of a diag record match the listener's address (any local address when
 * the listener is bound to the wildcard)? */
static int same_local(const struct inet_diag_msg *m, const struct sockaddr_storage *a) {
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        return m->id.idiag_sport == in->sin_port && (in->sin_addr.s_addr == htonl(INADDR_ANY) ||
                                                     m->id.idiag_src[0] == in->sin_addr.s_addr);
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
    return m->id.idiag_sport == in6->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ||
            !memcmp(m->id.idiag_src, &in6->sin6_addr, sizeof in6->sin6_addr));
}

/* Handshakes in progress (request sockets in SYN_RECV) to the listener's address, or -1. */
static int handshakes_in_progress(int nl, const struct sockaddr_storage *local) {
    struct {
        struct nlmsghdr nlh;
        struct inet_diag_req_v2 r;
    } req = {.nlh = {.nlmsg_len = sizeof req,
                     .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                     .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP},
             .r = {.sdiag_family = local->ss_family,
                   .sdiag_protocol = IPPROTO_TCP,
                   .idiag_states = 1u << TCP_SYN_RECV}};
    if (send(nl, &req, sizeof req, 0) != (ssize_t)sizeof req)
        return -1;
    long buf[2048]; /* 16 KB, aligned for nlmsghdr */
    int count = 0;
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
            if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && m->idiag_state == TCP_SYN_RECV &&
                same_local(m, local))
                count++;
        }
    }
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

resattn_status resattn_listener_settle(int fd, int timeout_ms, resattn_listener_settle_info *info,
                                       char *err, size_t err_len) {
    resattn_listener_settle_info dummy;
    if (!info)
        info = &dummy;
    memset(info, 0, sizeof *info);
    if (drop_new_syns(fd)) {
        snprintf(err, err_len, "cannot filter new connections on the listener: %s",
                 strerror(errno));
        return RESATTN_ERR_IO;
    }
    struct sockaddr_storage local;
    socklen_t n = sizeof local;
    int nl = -1;
    if (!getsockname(fd, (struct sockaddr *)&local, &n) &&
        (local.ss_family == AF_INET || local.ss_family == AF_INET6))
        nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    double t0 = now_ms();
    int zero_in_a_row = 0;
    for (int first = 1;; first = 0) {
        int queued = accept_queue_len(fd);
        int shaking = nl >= 0 ? handshakes_in_progress(nl, &local) : -1;
        if (first) {
            info->queued = queued;
            info->handshakes = shaking;
        }
        /* without a count, wait the whole timeout: better late than reset */
        zero_in_a_row = queued == 0 && shaking == 0 ? zero_in_a_row + 1 : 0;
        info->waited_ms = (int)(now_ms() - t0);
        if (zero_in_a_row >= 2) {
            info->settled = 1;
            break;
        }
        if (info->waited_ms >= timeout_ms)
            break;
        nanosleep(&(struct timespec){0, POLL_MS * 1000000L}, NULL);
    }
    if (nl >= 0)
        close(nl);
    return RESATTN_OK;
}

int resattn_listener_unlisten(int fd) {
    return shutdown(fd, SHUT_RD);
}
