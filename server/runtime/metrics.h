/*
 * Server metrics: counters, gauges and histograms updated with relaxed atomics from any
 * thread (HTTP threads, workers), rendered on demand as Prometheus text format 0.0.4 with
 * HELP and TYPE lines, plus the standard process_* metrics read from /proc. Per-model series
 * carry a `model` label, request durations an `endpoint` label; resattn_build_info and
 * resattn_compute_info say what binary runs and which compute paths it takes.
 */
#ifndef RESATTN_METRICS_H
#define RESATTN_METRICS_H

#include <resattn/resattn.h>
#include <stddef.h>
#include <stdio.h>

/* The endpoint label of resattn_http_requests_total and resattn_request_duration_seconds;
 * one per routing-table family. */
typedef enum resattn_endpoint {
    RESATTN_EP_V2_SERVER = 0, /* GET /v2 */
    RESATTN_EP_V2_LIVE,
    RESATTN_EP_V2_READY,
    RESATTN_EP_V2_MODEL,
    RESATTN_EP_V2_MODEL_READY,
    RESATTN_EP_V2_INFER,
    RESATTN_EP_V1_MODEL,
    RESATTN_EP_V1_PREDICT,
    RESATTN_EP_HEALTHZ,
    RESATTN_EP_READYZ,
    RESATTN_EP_METRICS,
    RESATTN_EP_PREDICT,            /* image endpoints */
    RESATTN_EP_WEB,                /* GET /: the page (server/http/web/index.html) */
    RESATTN_EP_V2_INDEX,           /* POST /v2/repository/index */
    RESATTN_EP_V2_REPOSITORY_LOAD, /* POST /v2/repository/models/{m}/load and /unload */
    RESATTN_EP_V2_STATS,           /* GET /v2/models[/{m}[/versions/{v}]]/stats */
    RESATTN_EP_GRPC_HEALTH,        /* gRPC grpc.health.v1.Health/Check */
    RESATTN_EP_UNKNOWN,            /* no route matched */
    RESATTN_EP_COUNT
} resattn_endpoint;

const char *resattn_endpoint_name(resattn_endpoint e);

/* The protocol label: which transport carried a request. */
typedef enum resattn_transport {
    RESATTN_TRANSPORT_HTTP = 0,
    RESATTN_TRANSPORT_GRPC,
    RESATTN_TRANSPORT_COUNT
} resattn_transport;

/* The reason label of resattn_requests_rejected_total. */
typedef enum resattn_reject_reason {
    RESATTN_REJECT_QUEUE_FULL = 0,
    RESATTN_REJECT_TIMEOUT,
    RESATTN_REJECT_DRAINING,
    RESATTN_REJECT_BODY_TOO_LARGE,
    RESATTN_REJECT_UNAUTHORIZED,
    RESATTN_REJECT_MEMORY, /* the memory budget could not take the request (503) */
    RESATTN_REJECT_COUNT
} resattn_reject_reason;

typedef struct resattn_metrics resattn_metrics;
struct resattn_budget;

/* Models with their own series: the --model files and the repository's models (a model
 * beyond the limit has none; its requests still count in the server-wide series). */
#define RESATTN_METRICS_MAX_MODELS 64

resattn_metrics *resattn_metrics_new(void);
void resattn_metrics_free(resattn_metrics *m);

/* Before serving (not thread-safe). The i-th call describes model index i, the index the pool
 * and the HTTP server use: `name` becomes the `model` label of the per-model series, and
 * `info` a resattn_model_info{model=...,...} 1 line. -1 beyond RESATTN_METRICS_MAX_MODELS. */
int resattn_metrics_add_model(resattn_metrics *m, const char *name, const resattn_model_info *info);
/* The same, returning the new model's index (-1 when full or out of memory); safe while
 * other threads update and render (one caller at a time: the model repository's thread). */
int resattn_metrics_register_model(resattn_metrics *m, const char *name,
                                   const resattn_model_info *info);
/* Before serving (not thread-safe): one label of resattn_compute_info{...} 1, which names the
 * compute paths in use, e.g. ("gemm", "avx512_packed"). key is a label name ([a-z_]+). */
int resattn_metrics_add_compute_label(resattn_metrics *m, const char *key, const char *value);

/* Before serving: export the budget's limit and use as gauges (it must outlive m). */
void resattn_metrics_set_budget(resattn_metrics *m, const struct resattn_budget *b);

/* A finished HTTP request: its endpoint, the model it was routed to (-1: none), status code
 * and whole duration in seconds. Inference requests are counted per model too. */
void resattn_metrics_request(resattn_metrics *m, resattn_endpoint e, int model, int status,
                             double seconds);
/* A finished request of either transport: the duration histogram and, for inference, the
 * per-model count by (HTTP-equivalent) status, both with the protocol label.
 * resattn_metrics_request is this for HTTP plus resattn_http_requests_total. */
void resattn_metrics_call(resattn_metrics *m, resattn_transport t, resattn_endpoint e, int model,
                          int status, double seconds);
/* A finished gRPC call: resattn_grpc_requests_total{endpoint, code} (gRPC status code). */
void resattn_metrics_grpc(resattn_metrics *m, resattn_endpoint e, int grpc_code);
/* An error answer (4xx/5xx), counted by the one error-answer function. */
void resattn_metrics_error(resattn_metrics *m, int status);
void resattn_metrics_reject(resattn_metrics *m, resattn_reject_reason r);
/* A job of `model` waited `seconds` in the queue. */
void resattn_metrics_queue_wait(resattn_metrics *m, int model, double seconds);
/* One forward pass of `model` over `batch` images that took `seconds`, `cpu_seconds` of them
 * on the calling worker thread's CPU. Observations for a model index that was never added
 * are dropped. */
void resattn_metrics_batch(resattn_metrics *m, int model, int batch, double seconds,
                           double cpu_seconds);
void resattn_metrics_queue_depth_add(resattn_metrics *m, long delta);
void resattn_metrics_in_flight_add(resattn_metrics *m, long delta);
long resattn_metrics_in_flight(const resattn_metrics *m);

/* More lines for the exposition, written by fn(user, f) at the end of each render (the model
 * repository's per-model and per-version families). Set before serving. */
typedef void (*resattn_metrics_render_fn)(void *user, FILE *f);
void resattn_metrics_set_renderer(resattn_metrics *m, resattn_metrics_render_fn fn, void *user);

/* Writers of the text format for every renderer (this module's and a renderer set above):
 * s as a label value with backslash, quote and newline escaped (NULL writes nothing), and
 * the HELP and TYPE lines of a family. */
void resattn_metrics_put_label(FILE *f, const char *s);
void resattn_metrics_put_head(FILE *f, const char *name, const char *type, const char *help);

/* The exposition text (malloc'ed, *len bytes, NUL-terminated) or NULL when out of memory. */
char *resattn_metrics_render(resattn_metrics *m, size_t *len);

#endif
