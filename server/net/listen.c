/*
 * Listening sockets of the transports (HTTP and gRPC): bound before the models load, so a
 * taken or forbidden port fails at once with one line naming the address and the flag that
 * chose it, and never shared with another process (no SO_REUSEPORT).
 */
#include "net/listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* "host:port" as asked for, IPv6 literals in brackets. */
void resattn_format_where(char *out, size_t n, const char *host, int port) {
    snprintf(out, n, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* The lowest port an unprivileged process may bind (1024 unless the sysctl lowered it). */
static int unprivileged_port_start(void) {
    FILE *f = fopen("/proc/sys/net/ipv4/ip_unprivileged_port_start", "r");
    int p = 1024;
    if (f) {
        if (fscanf(f, "%d", &p) != 1)
            p = 1024;
        fclose(f);
    }
    return p;
}

/* One line for a failed bind() or listen(): what was asked for and why it failed. */
static void listen_error(int e, const char *where, int port, const char *flag, char *err,
                         size_t err_len) {
    if (e == EADDRINUSE)
        snprintf(err, err_len,
                 "cannot listen on %s: address already in use (another process holds the port; "
                 "stop it or choose another %s)",
                 where, flag);
    else if (e == EACCES && port < unprivileged_port_start())
        snprintf(err, err_len,
                 "cannot listen on %s: permission denied (ports below %d need root or "
                 "CAP_NET_BIND_SERVICE; choose a higher %s)",
                 where, unprivileged_port_start(), flag);
    else if (e == EACCES)
        snprintf(err, err_len, "cannot listen on %s: permission denied", where);
    else if (e == EADDRNOTAVAIL)
        snprintf(err, err_len,
                 "cannot listen on %s: address not available (not an address of this host)", where);
    else
        snprintf(err, err_len, "cannot listen on %s: %s", where, strerror(e));
}

resattn_status resattn_listen(const char *host, int port, const char *flag, int *fd_out, char *err,
                              size_t err_len) {
    *fd_out = -1;
    char where[300];
    resattn_format_where(where, sizeof where, host, port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int gai = getaddrinfo(host, service, &hints, &ai);
    if (gai) {
        snprintf(err, err_len, "--host '%s': %s", host, gai_strerror(gai));
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        listen_error(errno, where, port, flag, err, err_len);
        freeaddrinfo(ai);
        return RESATTN_ERR_IO;
    }
    /* SO_REUSEADDR lets a restarted server bind while its predecessor's closed connections
     * sit in TIME_WAIT; on Linux it never lets two sockets listen on one address (that is
     * SO_REUSEPORT, which we do not set: a second server would silently share the traffic).
     * IPv6 sockets stay IPv6-only, as libmicrohttpd made them. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* listen() fails too when a holder bound with SO_REUSEADDR and then listened */
    int rc = bind(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc == 0)
        rc = listen(fd, SOMAXCONN);
    freeaddrinfo(ai);
    if (rc) {
        listen_error(errno, where, port, flag, err, err_len);
        close(fd);
        return RESATTN_ERR_IO;
    }
    *fd_out = fd;
    return RESATTN_OK;
}

/* The port a socket is bound to, or -1. */
int resattn_bound_port(int fd) {
    struct sockaddr_storage a;
    socklen_t n = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &n))
        return -1;
    return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                         : ((struct sockaddr_in *)&a)->sin_port);
}
