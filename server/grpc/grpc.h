/*
 * The gRPC front end: inference.GRPCInferenceService (the Open Inference Protocol's gRPC
 * service) and grpc.health.v1.Health/Check over HTTP/2 (nghttp2), with TLS (GnuTLS, ALPN
 * "h2") when a certificate is given. One event-loop thread (epoll) owns the listener, every
 * connection and every nghttp2 session; inference calls go to the same worker pool as HTTP
 * requests (so both batch together), and workers hand finished calls back to the loop
 * through an eventfd, which alone writes to the sessions. Messages are decoded and encoded
 * by the pure codec server/protocol/grpc_codec.h; routing, API keys, the memory budget, the
 * queue and the metrics are the ones HTTP uses.
 */
#ifndef RESATTN_GRPC_H
#define RESATTN_GRPC_H

#include "http/http.h"
#include "protocol/protocol.h"
#include "repository/repository.h"
#include "runtime/budget.h"
#include "runtime/metrics.h"
#include "runtime/pool.h"
#include <resattn/resattn.h>
#include <stdio.h>

typedef struct resattn_grpc resattn_grpc;

/* Start the event loop on listen_fd (from resattn_listen; owned from here, also on failure)
 * with the HTTP server's settings: body cap (the largest message), request timeout, log,
 * parse limits, API keys (metadata `authorization: Bearer KEY`; auth_health as on HTTP),
 * certificate, max_connections, connection_timeout_s (idle connections are closed), memory
 * budget, image pixel limit (opt->listen_fd, threads and the other connection limits are
 * libmicrohttpd's and not used). repo, pool and metrics
 * must outlive the server. RESATTN_ERR_INVALID_ARGUMENT for a certificate GnuTLS refuses,
 * err filled. */
resattn_status resattn_grpc_start(int listen_fd, const resattn_http_options *opt,
                                  resattn_repository *repo, resattn_pool *pool,
                                  resattn_metrics *metrics, resattn_grpc **out, char *err,
                                  size_t err_len);
int resattn_grpc_port(const resattn_grpc *g);
/* Readiness as ServerReady and Health/Check report it. */
void resattn_grpc_set_ready(resattn_grpc *g, int ready);
/* Drain step 1: not ready, new inference calls UNAVAILABLE, listener closed, GOAWAY sent
 * on every connection (calls already started finish). */
void resattn_grpc_begin_drain(resattn_grpc *g);
/* Drain step 2: wait until no call is in progress; 0 if idle within timeout_ms. */
int resattn_grpc_wait_idle(resattn_grpc *g, int timeout_ms);
/* Stop the loop, close every connection, free (call when idle). NULL is accepted. */
void resattn_grpc_stop(resattn_grpc *g);

#endif
