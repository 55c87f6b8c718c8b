/*
 * `resattn healthcheck`: one GET /readyz against the server this process's configuration
 * describes, for a container HEALTHCHECK or a Kubernetes exec probe in an image with no shell
 * and no curl. It reads the same options and RESATTN_* variables as `resattn serve` (through
 * the same table, server/cli/config.c), so inside the container it finds the port, the API
 * key and TLS exactly as the server did, plus --timeout-ms for the whole exchange.
 *
 * Exit 0 when /readyz answers 200, else 1 with one line on stderr saying why (refused, timed
 * out, 503 and the server's reason, 401, bad configuration). Never 2: Docker reserves that
 * code in HEALTHCHECK, so even a bad option is "unhealthy".
 *
 * Where: the configured --host, except that the wildcards 0.0.0.0 and :: become the loopback
 * address of their family (the server binds IPv6 sockets IPv6-only, so :: needs ::1). Auth:
 * the first API key as `Authorization: Bearer` when keys and --auth-health are configured
 * (otherwise /readyz is open and the key is not sent). TLS: when --tls-cert is configured,
 * through GnuTLS (which libmicrohttpd links already), without certificate verification; see
 * tls_open for why. One blocking-free loop with poll() bounds connect, handshake, send and
 * receive by one deadline.
 */
#include "cli/commands.h"
#include "cli/config.h"
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CMD "resattn healthcheck"
#define DEFAULT_TIMEOUT_MS 2000
#define ANSWER_MAX 4096 /* status line, headers and the small JSON body of /readyz */

typedef struct hc_conn {
    int fd;
    gnutls_session_t tls; /* NULL: plain HTTP */
    gnutls_certificate_credentials_t cred;
    double deadline; /* CLOCK_MONOTONIC seconds */
} hc_conn;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Wait until fd is ready for events or the deadline passes: 0 ready, -1 timed out. */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)(left * 1000) + 1);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return 0; /* let the next read or write report the error */
    }
}

/* The address to dial for the configured listen address. */
static const char *dial_host(const char *host) {
    if (!host || !*host || !strcmp(host, "0.0.0.0"))
        return "127.0.0.1";
    if (!strcmp(host, "::") || !strcmp(host, "[::]"))
        return "::1";
    return host;
}

/* Non-blocking connect to host:port within the deadline, trying each resolved address. */
static int tcp_open(hc_conn *c, const char *host, int port, char *why, size_t len) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int gai = getaddrinfo(host, service, &hints, &ai);
    if (gai) {
        snprintf(why, len, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return -1;
    }
    int err = ETIMEDOUT;
    for (struct addrinfo *a = ai; a && c->fd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc && errno == EINPROGRESS) {
            socklen_t n = sizeof err;
            if (wait_fd(fd, POLLOUT, c->deadline))
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n))
                err = errno;
            rc = err ? -1 : 0;
        } else if (rc) {
            err = errno;
        }
        if (rc)
            close(fd);
        else
            c->fd = fd;
    }
    freeaddrinfo(ai);
    if (c->fd < 0)
        snprintf(why, len, "cannot connect: %s%s", strerror(err),
                 err == ECONNREFUSED ? " (nothing listens there: not started, or draining)" : "");
    return c->fd < 0 ? -1 : 0;
}

/* Wait for the direction GnuTLS is blocked on (after GNUTLS_E_AGAIN). */
static int tls_wait(hc_conn *c) {
    short ev = gnutls_record_get_direction(c->tls) ? POLLOUT : POLLIN;
    return wait_fd(c->fd, ev, c->deadline);
}

/*
 * TLS handshake on the connected socket. The server's certificate is not verified, on
 * purpose: this check dials the server's own port on loopback (or the address it was told to
 * listen on) from inside the same container or pod, where no other host can answer; the
 * certificate may name a public DNS name rather than 127.0.0.1, and a distroless image has no
 * CA bundle to verify it against. What matters here is only whether our own server answers
 * 200. (The API key is sent to that same port, which only processes of this container or pod
 * can bind.)
 */
static int tls_open(hc_conn *c, char *why, size_t len) {
    int rc = gnutls_certificate_allocate_credentials(&c->cred);
    if (rc == GNUTLS_E_SUCCESS)
        rc = gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
    if (rc == GNUTLS_E_SUCCESS)
        rc = gnutls_set_default_priority(c->tls);
    if (rc == GNUTLS_E_SUCCESS)
        rc = gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->cred);
    if (rc != GNUTLS_E_SUCCESS) {
        snprintf(why, len, "TLS set-up: %s", gnutls_strerror(rc));
        return -1;
    }
    gnutls_transport_set_int(c->tls, c->fd);
    do {
        rc = gnutls_handshake(c->tls);
    } while ((rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) && !tls_wait(c));
    if (rc == GNUTLS_E_SUCCESS)
        return 0;
    if (rc == GNUTLS_E_AGAIN)
        snprintf(why, len, "TLS handshake timed out");
    else
        snprintf(why, len, "TLS handshake failed: %s (is the server serving TLS?)",
                 gnutls_strerror(rc));
    return -1;
}

static void conn_close(hc_conn *c) {
    if (c->tls) {
        gnutls_deinit(c->tls); /* no close_notify: the server closes after the answer */
        c->tls = NULL;
    }
    if (c->cred) {
        gnutls_certificate_free_credentials(c->cred);
        c->cred = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Send all of buf[len]; -1 on error or timeout, with why. */
static int conn_send(hc_conn *c, const char *buf, size_t len, char *why, size_t why_len) {
    while (len) {
        ssize_t n;
        if (c->tls) {
            n = gnutls_record_send(c->tls, buf, len);
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                if (tls_wait(c))
                    break;
                continue;
            }
            if (n < 0) {
                snprintf(why, why_len, "TLS send failed: %s", gnutls_strerror((int)n));
                return -1;
            }
        } else {
            n = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(c->fd, POLLOUT, c->deadline))
                    break;
                continue;
            }
            if (n < 0) {
                snprintf(why, why_len, "send failed: %s", strerror(errno));
                return -1;
            }
        }
        buf += n;
        len -= (size_t)n;
    }
    if (len)
        snprintf(why, why_len, "timed out sending the request");
    return len ? -1 : 0;
}

/* Read the answer until the server closes (Connection: close) or buf is full. Returns the
 * bytes read, or -1 with why (a timeout with nothing read, or a read error). */
static ssize_t conn_recv_all(hc_conn *c, char *buf, size_t cap, char *why, size_t why_len) {
    size_t got = 0;
    while (got < cap) {
        ssize_t n;
        if (c->tls) {
            n = gnutls_record_recv(c->tls, buf + got, cap - got);
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                if (tls_wait(c))
                    break;
                continue;
            }
            if (n == GNUTLS_E_PREMATURE_TERMINATION && got)
                break; /* closed without close_notify after the answer: fine for us */
            if (n < 0) {
                snprintf(why, why_len, "TLS receive failed: %s", gnutls_strerror((int)n));
                return -1;
            }
        } else {
            n = recv(c->fd, buf + got, cap - got, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_fd(c->fd, POLLIN, c->deadline))
                    break;
                continue;
            }
            if (n < 0) {
                snprintf(why, why_len, "receive failed: %s", strerror(errno));
                return -1;
            }
        }
        if (n == 0)
            return (ssize_t)got;
        got += (size_t)n;
        /* /readyz answers are small; stop once the whole body is in (Content-Length) */
        const char *end = memmem(buf, got, "\r\n\r\n", 4);
        const char *cl = end ? memmem(buf, (size_t)(end - buf), "\r\nContent-Length:", 17) : NULL;
        if (cl && got >= (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10))
            return (ssize_t)got;
    }
    if (got == 0 || !memmem(buf, got, "\r\n", 2)) {
        snprintf(why, why_len, "timed out waiting for the answer");
        return -1;
    }
    return (ssize_t)got;
}

/* The "error" of a JSON body after the headers in answer[len], or "" (copied to out). */
static void answer_reason(const char *answer, size_t len, char *out, size_t out_len) {
    out[0] = 0;
    const char *body = memmem(answer, len, "\r\n\r\n", 4);
    if (!body)
        return;
    body += 4;
    json_t *j = json_loadb(body, len - (size_t)(body - answer), 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    if (e)
        snprintf(out, out_len, ": %s", e);
    json_decref(j);
}

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: resattn healthcheck [--timeout-ms MS] [serve options]\n\n"
        "GETs /readyz from the server that `resattn serve` with the same options and RESATTN_*\n"
        "variables runs: --host (0.0.0.0 and :: mean loopback), --port, the first API key when\n"
        "--auth-health is on, HTTPS when --tls-cert is set (the certificate is not verified).\n"
        "Exit 0 when it answers 200 (ready), else 1 with the reason on stderr. For container\n"
        "HEALTHCHECKs and Kubernetes exec probes.\n\n"
        "  --timeout-ms MS   connect + request + answer within MS milliseconds "
        "[default %d]\n",
        DEFAULT_TIMEOUT_MS);
}

/* The port from --port-file when --port is 0 (the server picked one and wrote it there). */
static int resolve_port(const resattn_server_config *cfg, char *why, size_t len) {
    if (cfg->port > 0)
        return cfg->port;
    int port = 0;
    FILE *f = cfg->port_file ? fopen(cfg->port_file, "r") : NULL;
    if (f) {
        if (fscanf(f, "%d", &port) != 1 || port < 1 || port > 65535)
            port = 0;
        fclose(f);
    }
    if (!port)
        snprintf(why, len,
                 cfg->port_file ? "port 0 and no port number in --port-file %s"
                                : "port 0 (the server picks a free port): give --port or "
                                  "--port-file%s",
                 cfg->port_file ? cfg->port_file : "");
    return port ? port : -1;
}

/* One GET /readyz; 0 when it answered 200, else 1 with why. */
static int probe(const resattn_server_config *cfg, int port, int timeout_ms, char *why,
                 size_t why_len) {
    hc_conn c = {.fd = -1, .deadline = now_s() + timeout_ms * 1e-3};
    const char *host = dial_host(cfg->host);
    char where[300];
    snprintf(where, sizeof where, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    char step[512] = "", req[1024], answer[ANSWER_MAX + 1];
    int ok = 1;
    ssize_t n = -1;
    if (!tcp_open(&c, host, port, step, sizeof step) &&
        (!cfg->tls_cert || !tls_open(&c, step, sizeof step))) {
        int auth = cfg->num_api_keys > 0 && cfg->auth_health;
        int len = snprintf(req, sizeof req,
                           "GET /readyz HTTP/1.1\r\nHost: %s\r\nUser-Agent: resattn-healthcheck\r\n"
                           "Connection: close\r\n%s%s%s\r\n",
                           where, auth ? "Authorization: Bearer " : "",
                           auth ? cfg->api_keys[0] : "", auth ? "\r\n" : "");
        if (len >= (int)sizeof req)
            snprintf(step, sizeof step, "the API key is too long for the request");
        else if (!conn_send(&c, req, (size_t)len, step, sizeof step))
            n = conn_recv_all(&c, answer, ANSWER_MAX, step, sizeof step);
    }
    conn_close(&c);
    int status = 0;
    if (n >= 0) {
        answer[n] = 0;
        if (sscanf(answer, "HTTP/1.%*d %d", &status) != 1)
            snprintf(step, sizeof step, "the answer is not HTTP (%s)",
                     cfg->tls_cert ? "the server may not serve TLS"
                                   : "does the server serve TLS? then --tls-cert is needed");
    }
    if (status == 200) {
        ok = 0;
        snprintf(why, why_len, "%s%s/readyz: 200, ready", cfg->tls_cert ? "https://" : "", where);
    } else if (status) {
        char reason[256];
        answer_reason(answer, (size_t)n, reason, sizeof reason);
        snprintf(why, why_len, "%s/readyz answered %d%s%s", where, status, reason,
                 status == 401 ? (cfg->num_api_keys && cfg->auth_health
                                      ? " (the API key was refused)"
                                      : " (the server wants an API key: set it and --auth-health "
                                        "as for serve)")
                               : "");
    } else {
        snprintf(why, why_len, "%s: %s", where, step);
    }
    return ok;
}

int resattn_cmd_healthcheck(int argc, char **argv) {
    /* Take out our own option; everything else goes to the serve option table. */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    if (!rest) {
        fprintf(stderr, CMD ": out of memory\n");
        return 1;
    }
    int nrest = 0, timeout_ms = DEFAULT_TIMEOUT_MS, rc = 1;
    rest[nrest++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(rest);
            return 0;
        }
        if (!strcmp(a, "--timeout-ms") || !strncmp(a, "--timeout-ms=", 13)) {
            const char *v =
                a[12] == '=' ? a + 13 : resattn_cli_value("healthcheck", argc, argv, &i);
            if (!v || resattn_cli_int("healthcheck", "--timeout-ms", v, 1, 600000, &timeout_ms)) {
                free(rest);
                return 1;
            }
            continue;
        }
        rest[nrest++] = argv[i];
    }
    resattn_server_config cfg;
    char err[512] = "", why[1024] = "";
    int prc = resattn_server_config_parse(nrest, rest, &cfg, stdout, err, sizeof err);
    if (prc) {
        fprintf(stderr, CMD ": %s\n", err);
    } else {
        int port = resolve_port(&cfg, why, sizeof why);
        rc = port < 0 ? 1 : probe(&cfg, port, timeout_ms, why, sizeof why);
        fprintf(rc ? stderr : stdout, CMD ": %s\n", why);
    }
    resattn_server_config_release(&cfg);
    free(rest);
    return rc;
}
