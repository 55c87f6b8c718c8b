/*
 * The HTTP front end on libmicrohttpd (one epoll thread, suspend/resume). It routes requests
 * from one static table, collects bodies under the size cap, parses inference requests with
 * the protocol codecs (protocol.h), hands them to the worker pool with the connection
 * suspended, and answers when a worker resumes it. Every error answer goes through one
 * function that writes {"error": "..."} and counts it. One access-log line per request.
 */
#ifndef RESATTN_HTTP_H
#define RESATTN_HTTP_H

#include "runtime/budget.h"
#include "runtime/metrics.h"
#include "runtime/pool.h"
#include "protocol/protocol.h"
#include "repository/repository.h"
#include "net/listener.h"
#include <resattn/resattn.h>
#include <stdio.h>

typedef struct resattn_http_options {
    int listen_fd;    /* from resattn_http_listen; resattn_http_start takes it over */
    const char *host; /* the address and port it was asked for (for messages) */
    int port;
    long long max_body_bytes;
    int request_timeout_ms;
    int threads;  /* libmicrohttpd threads (epoll each); 1 = one internal thread */
    int log_json; /* access log as JSON lines */
    FILE *log;    /* access and error log; NULL = no logging */
    resattn_parse_limits limits;
    /* security and connection limits (issue 5) */
    const char *const *api_keys; /* [num_api_keys] Bearer tokens; 0 keys = no auth */
    int num_api_keys;
    int auth_health;      /* protect health and metrics endpoints too */
    const char *tls_cert; /* PEM text (not a path), or NULL for plain HTTP */
    const char *tls_key;  /* PEM text */
    int max_connections;  /* 0 = libmicrohttpd's default */
    int connection_timeout_s;
    int max_connections_per_ip; /* 0 = unlimited */
    int max_header_bytes;       /* per-connection memory for headers; 0 = default */
    /* memory admission: inference requests are charged to the budget before their body is
     * read (503 + Retry-After when it is full); NULL = no budget */
    resattn_budget *budget;
    long long max_image_pixels; /* most pixels in one decoded image; 0 = 40 MP */
} resattn_http_options;

typedef struct resattn_http resattn_http;

/* Create the listening socket for host:port (a numeric address or a host name; port 0 = any
 * free port), without port sharing: when another socket holds the address this fails with
 * one line naming the host and port asked for ("cannot listen on 127.0.0.1:8080: address
 * already in use ..."), and with its own line for "permission denied" (a privileged port).
 * RESATTN_ERR_INVALID_ARGUMENT for a host that does not resolve, RESATTN_ERR_IO otherwise.
 * Called before the models load, so that a taken port fails at once. */
resattn_status resattn_http_listen(const char *host, int port, int *fd, char *err, size_t err_len);
/* Start serving the models of repo on opt->listen_fd, which the server owns from here, also
 * on failure. Each request acquires the version it is routed to and releases it when done.
 * repo, pool and metrics must outlive the server. */
resattn_status resattn_http_start(const resattn_http_options *opt, resattn_repository *repo,
                                  resattn_pool *pool, resattn_metrics *metrics, resattn_http **out,
                                  char *err, size_t err_len);
/* The bound TCP port (the real one with port 0). */
int resattn_http_port(const resattn_http *h);
/* Readiness as reported by /readyz and /v2/health/ready (after warm-up); also needs every
 * model that should be served to have a ready version (resattn_repository_ready). */
void resattn_http_set_ready(resattn_http *h, int ready);
/* Drain step 0 (--drain-delay-ms): readiness 503 and every answer carries Connection: close,
 * but the listener stays open and requests are served as usual, so that load balancers and
 * Kubernetes endpoints stop sending here (they notice asynchronously) and keep-alive clients
 * reconnect elsewhere before step 1 closes the listener. */
void resattn_http_announce_drain(resattn_http *h);
/* Drain step 1: readiness 503, new inference requests 503, stop accepting connections:
 * new connections are refused at connect, but those whose handshake the kernel already
 * completed (or is completing) are first accepted and answered, for up to timeout_ms
 * (resattn_listener_close_gently; usually milliseconds, longer while many clients keep
 * reconnecting; what it did in info, which may be NULL). err is "" or says why that could
 * not be done fully; the listener stops listening anyway. */
void resattn_http_begin_drain(resattn_http *h, int timeout_ms, resattn_listener_close_info *info,
                              char *err, size_t err_len);
/* Drain step 2: wait until no request is being handled; 0 if idle within timeout_ms. */
int resattn_http_wait_idle(resattn_http *h, int timeout_ms);
/* Stop the daemon (call when idle: suspended connections must not remain) and free. */
void resattn_http_stop(resattn_http *h);

#endif
