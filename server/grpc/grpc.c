/*
 * gRPC transport of `resattn serve` (see grpc.h). The life of a call:
 *   HEADERS:     a `call` is made for the stream (nghttp2 begin-headers), its metadata kept
 *                (:path, content-type, grpc-timeout, grpc-encoding, authorization);
 *   DATA:        appended under the message cap (--max-body-bytes + the 5-byte prefix) and
 *                charged to the memory budget as it grows, or dropped once an error is decided;
 *   END_STREAM:  dispatch: unframe, check the API key, route by :path; the small RPCs answer
 *                at once; ModelInfer unpacks, acquires the model version, parses (codec),
 *                reserves a queue slot and pushes the job to the pool;
 *   worker:      the job's done() encodes the answer on the worker thread, puts the call on
 *                the loop's finished list and wakes the loop (eventfd);
 *   loop:        submits the answer: HEADERS, DATA (the framed message), trailers with
 *                grpc-status; errors are Trailers-Only (one HEADERS frame with END_STREAM);
 *   stream close: metrics, statistics, access log, release, free. A call whose stream or
 *                connection went away while its job ran is freed when the job comes back.
 * Only the loop thread touches connections, sessions and calls, except a call's answer
 * fields, which the worker fills before handing the call over (the list's mutex orders it).
 */
#include "grpc/grpc.h"

#include "maps/mask_summary.h"
#include "protocol/attention_api.h"
#include "protocol/grpc_codec.h"
#include "runtime/access_log.h"
#include "runtime/auth.h"
#include "net/listen.h"
#include "net/listener.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN 512
#define READ_CHUNK 65536
#define OUT_HIGH_WATER (256 * 1024) /* stop asking nghttp2 for frames beyond this backlog */
#define MAX_EVENTS 64
#define IDLE_GRACE_S 0.05
/* The listener's gentle close at the drain; the loop serves nothing else meanwhile. */
#define LISTENER_CLOSE_MS 1000

typedef struct call call;
typedef struct conn conn;

/* What an epoll event's data.ptr points to. */
typedef enum { EV_LISTEN = 0, EV_WAKE, EV_CONN } ev_kind;

struct resattn_grpc {
    resattn_http_options opt; /* the settings it shares with HTTP */
    resattn_repository *repo;
    resattn_pool *pool;
    resattn_metrics *metrics;
    int listen_fd, wake_fd, epoll_fd, port;
    ev_kind listen_tag, wake_tag;
    pthread_t thread;
    atomic_int ready, draining, stopping, drain_seen;
    atomic_long in_flight; /* calls made and not yet finished */
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    conn *conns; /* every open connection (loop thread) */
    int num_conns;
    /* calls whose job is done, waiting for the loop (workers push, the loop pops) */
    pthread_mutex_t lock;
    call *finished;
};

struct conn {
    ev_kind tag; /* EV_CONN: first member, epoll's data.ptr */
    resattn_grpc *srv;
    int fd;
    gnutls_session_t tls; /* NULL for h2c */
    int handshaking;
    nghttp2_session *h2;
    unsigned char *out; /* bytes nghttp2 produced that the socket has not taken yet */
    size_t out_len, out_cap, out_off;
    int want_out;   /* EPOLLOUT registered */
    int dead;       /* closed; freed once no call of it is in the pool */
    int pending;    /* calls of this connection whose job is in the pool */
    int goaway;     /* drain GOAWAY sent */
    double last_io; /* resattn_now() of the last bytes received or sent (idle timeout) */
    call *calls;    /* the calls of its open streams */
    conn *next;
};

/* The RPCs, in :path order of the table below. */
typedef enum rpc {
    RPC_SERVER_LIVE = 0,
    RPC_SERVER_READY,
    RPC_MODEL_READY,
    RPC_SERVER_METADATA,
    RPC_MODEL_METADATA,
    RPC_MODEL_INFER,
    RPC_HEALTH_CHECK,
    RPC_HEALTH_WATCH,
    RPC_UNKNOWN
} rpc;

static const struct {
    const char *path;
    rpc rpc;
    resattn_endpoint ep; /* the HTTP endpoint of the same operation (metrics) */
    int health;          /* open without an API key unless --auth-health */
} rpcs[] = {
    {"/inference.GRPCInferenceService/ServerLive", RPC_SERVER_LIVE, RESATTN_EP_V2_LIVE, 1},
    {"/inference.GRPCInferenceService/ServerReady", RPC_SERVER_READY, RESATTN_EP_V2_READY, 1},
    {"/inference.GRPCInferenceService/ModelReady", RPC_MODEL_READY, RESATTN_EP_V2_MODEL_READY, 0},
    {"/inference.GRPCInferenceService/ServerMetadata", RPC_SERVER_METADATA, RESATTN_EP_V2_SERVER,
     0},
    {"/inference.GRPCInferenceService/ModelMetadata", RPC_MODEL_METADATA, RESATTN_EP_V2_MODEL, 0},
    {"/inference.GRPCInferenceService/ModelInfer", RPC_MODEL_INFER, RESATTN_EP_V2_INFER, 0},
    {"/grpc.health.v1.Health/Check", RPC_HEALTH_CHECK, RESATTN_EP_GRPC_HEALTH, 1},
    {"/grpc.health.v1.Health/Watch", RPC_HEALTH_WATCH, RESATTN_EP_GRPC_HEALTH, 1},
};
#define NUM_RPCS (sizeof rpcs / sizeof rpcs[0])

struct call {
    resattn_grpc *srv;
    conn *c;        /* its connection (kept, though closed, while the job runs) */
    int32_t stream; /* HTTP/2 stream id */
    double start, deadline;
    rpc rpc;
    resattn_endpoint ep;
    char path[128];
    char content_type[64];
    char encoding[32];
    char auth[320];
    double timeout; /* grpc-timeout in seconds, or -1 */
    int bad_timeout;
    unsigned char *body;     /* [len] the request's gRPC frames, capacity cap */
    unsigned char *body_mem; /* the allocation body is in (free this) */
    size_t len, cap;
    const unsigned char *msg_bytes; /* the ModelInferRequest in body (k->msg refers to it) */
    size_t msg_len; /* the request message's bytes (its unpacked copy holds about as much) */
    int too_large;  /* the body passed the cap: dropped, answered RESOURCE_EXHAUSTED */
    int refused;    /* the memory budget refused it (verdict) */
    int dispatched; /* END_STREAM seen */
    int in_pool;    /* the job is in the pool (the worker owns the answer fields) */
    int stream_gone, answered;
    resattn_budget_hold hold;
    /* ModelInfer */
    resattn_model_version *version;
    Inference__ModelInferRequest *msg; /* unpacked; may hold the input in place */
    resattn_infer_request ireq;
    resattn_job job;
    float *logits;
    int raw, inferring, computed;
    /* the answer: a message and/or a status */
    resattn_grpc_message resp;
    size_t resp_off;
    int http_status; /* the HTTP status of the same outcome (metrics, statistics) */
    int code;        /* gRPC status */
    char message[MSG_LEN];
    call *next_fin;  /* on srv->finished */
    call *next_conn; /* on c->calls */
};

/* ---- answers --------------------------------------------------------------------------- */

static void conn_flush(conn *c);

/* Decide the call's outcome as an HTTP status plus message; the gRPC code follows from it
 * (grpc_codec.h), or is given (code >= 0) where HTTP has no equivalent. */
static void set_error(call *k, int http_status, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->message, sizeof k->message, fmt, ap);
    va_end(ap);
    k->http_status = http_status;
    k->code = code >= 0 ? code : resattn_grpc_code_from_http(http_status);
    resattn_grpc_message_release(&k->resp);
}

static void set_answer(call *k, int rc, resattn_grpc_message *m) {
    if (rc) {
        resattn_grpc_message_release(m);
        set_error(k, 500, -1, "out of memory building the answer");
        return;
    }
    k->resp = *m;
    k->http_status = 200;
    k->code = RESATTN_GRPC_OK;
}

/* A message of one bool field (ServerLive, ServerReady, ModelReady): field 1, varint; false
 * is the empty message (proto3 leaves default values out). */
static void answer_bool(call *k, int v) {
    resattn_grpc_message m = {calloc(1, RESATTN_GRPC_PREFIX + 2), 0};
    if (m.data) {
        m.data[4] = v ? 2 : 0; /* message length */
        m.data[5] = 0x08;      /* field 1, wire type 0 */
        m.data[6] = 1;
        m.len = RESATTN_GRPC_PREFIX + (v ? 2 : 0);
    }
    set_answer(k, m.data ? 0 : 500, &m);
}

static ssize_t read_body(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user);

/* Send what was decided: the message with trailers, or Trailers-Only for an error. */
static void submit(call *k) {
    if (k->c->dead || k->stream_gone || k->answered)
        return;
    k->answered = 1;
    char status[8], msg[3 * MSG_LEN];
    snprintf(status, sizeof status, "%d", k->code);
    resattn_grpc_percent_encode(k->message, msg, sizeof msg);
#define NV(n, v)                                                                                   \
    { (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE }
    if (k->code == RESATTN_GRPC_OK && k->resp.data) {
        nghttp2_nv hdr[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
        nghttp2_data_provider dp = {.source.ptr = k, .read_callback = read_body};
        nghttp2_submit_response(k->c->h2, k->stream, hdr, 2, &dp);
    } else {
        nghttp2_nv hdr[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                            NV("grpc-status", status), NV("grpc-message", msg)};
        nghttp2_submit_response(k->c->h2, k->stream, hdr, msg[0] ? 4 : 3, NULL);
    }
}

/* The answer's DATA; at its end the trailers (grpc-status 0). */
static ssize_t read_body(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user) {
    (void)user;
    call *k = src->ptr;
    size_t n = k->resp.len - k->resp_off;
    if (n > len)
        n = len;
    memcpy(buf, k->resp.data + k->resp_off, n);
    k->resp_off += n;
    if (k->resp_off == k->resp.len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv tr[] = {NV("grpc-status", "0")};
        if (nghttp2_submit_trailer(s, stream, tr, 1))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

/* ---- finishing ------------------------------------------------------------------------- */

static void log_call(call *k, double seconds) {
    FILE *f = k->srv->opt.log;
    if (!f)
        return;
    size_t bytes = k->resp.len;
    if (k->srv->opt.log_json) {
        json_t *o = json_pack("{s:f, s:s, s:s, s:i, s:i, s:f, s:I, s:i}", "time",
                              (double)time(NULL), "method", "GRPC", "path", k->path, "status",
                              k->http_status, "grpc_status", k->code, "duration_ms", seconds * 1e3,
                              "bytes", (json_int_t)bytes, "batch_size", k->job.batch_size);
        resattn_access_log_json(f, o);
        return;
    }
    resattn_access_log_text(f, "GRPC %s %d grpc-status=%d %.3fms %zuB batch=%d", k->path,
                            k->http_status, k->code, seconds * 1e3, bytes, k->job.batch_size);
}

/* Metrics, statistics, log, release, free: once the stream is closed and no job runs. */
static void call_free(call *k) {
    resattn_grpc *s = k->srv;
    if (k->dispatched || k->answered) {
        /* the client went away before the answer (HTTP's 499), unless its deadline did it */
        if (!k->answered && k->http_status != 504)
            k->http_status = 499, k->code = RESATTN_GRPC_CANCELLED;
        double dt = resattn_now() - k->start;
        resattn_pool_model *pm = k->version ? resattn_model_version_pool_model(k->version) : NULL;
        int model = pm ? resattn_pool_model_metrics_index(pm) : -1;
        resattn_metrics_call(s->metrics, RESATTN_TRANSPORT_GRPC, k->ep, model, k->http_status, dt);
        resattn_metrics_grpc(s->metrics, k->ep, k->code);
        log_call(k, dt);
        if (pm && k->inferring) {
            resattn_model_stats *st = resattn_pool_model_stats(pm);
            if (k->computed && k->code == RESATTN_GRPC_OK)
                resattn_model_stats_success(st, k->ireq.n, dt, k->job.queue_wait, 0,
                                            k->job.infer_seconds, 0);
            else
                resattn_model_stats_fail(st, dt);
        }
    }
    resattn_infer_request_release(&k->ireq);
    resattn_grpc_infer_free(k->msg, k->msg_bytes, k->msg_len);
    resattn_model_version_release(k->version);
    free(k->logits);
    free(k->body_mem);
    resattn_grpc_message_release(&k->resp);
    resattn_budget_hold_release(&k->hold);
    free(k);
    resattn_metrics_in_flight_add(s->metrics, -1);
    atomic_fetch_sub(&s->in_flight, 1);
}

static void conn_unlink_call(conn *c, call *k) {
    for (call **p = &c->calls; *p; p = &(*p)->next_conn)
        if (*p == k) {
            *p = k->next_conn;
            return;
        }
}

/* ---- inference -------------------------------------------------------------------------- */

/* Worker (or reaper) thread: encode the answer, hand the call to the loop. */
static void on_job_done(resattn_job *job) {
    call *k = job->user;
    resattn_grpc *s = k->srv;
    k->ireq.masks = job->masks;
    job->masks = NULL;
    if (job->status == 504) {
        int client = k->timeout >= 0 && k->deadline < k->start + s->opt.request_timeout_ms * 1e-3;
        if (client)
            set_error(k, 504, -1, "deadline exceeded (grpc-timeout) before a worker took the call");
        else
            set_error(k, 504, -1, "request timed out after %d ms waiting for a worker",
                      s->opt.request_timeout_ms);
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_TIMEOUT);
    } else if (job->status) {
        set_error(k, job->status, -1, "inference failed: %s", job->err);
    } else {
        const resattn_model_info *info =
            resattn_model_get_info(resattn_model_version_model(k->version));
        k->ireq.model_version = resattn_model_version_label(k->version);
        resattn_grpc_message m;
        int rc = resattn_grpc_infer_encode(&k->ireq, resattn_model_version_name(k->version), info,
                                           k->logits, k->ireq.n, k->raw, &m);
        set_answer(k, rc, &m);
        k->computed = !rc;
    }
    /* what it holds now: the body, the unpacked message, the answer */
    resattn_budget_hold_set(&k->hold, k->cap + k->msg_len + k->resp.len);
    pthread_mutex_lock(&s->lock);
    k->next_fin = s->finished;
    s->finished = k;
    pthread_mutex_unlock(&s->lock);
    uint64_t one = 1;
    ssize_t w = write(s->wake_fd, &one, sizeof one);
    (void)w;
}

/* The budget refused `bytes`: UNAVAILABLE to retry, RESOURCE_EXHAUSTED when never. */
static void refuse_memory(call *k, resattn_budget_verdict v, size_t bytes) {
    resattn_budget *b = k->srv->opt.budget;
    resattn_metrics_reject(k->srv->metrics, RESATTN_REJECT_MEMORY);
    if (v == RESATTN_BUDGET_NEVER)
        set_error(k, 413, -1,
                  "this call needs %zu bytes of memory: more than the server's memory budget of "
                  "%lld bytes gives one request",
                  k->hold.bytes + bytes, resattn_budget_limit(b));
    else
        set_error(k, 503, -1,
                  "memory budget full (%lld of %lld bytes held by requests in progress); retry "
                  "later",
                  resattn_budget_in_use(b), resattn_budget_limit(b));
}

static void model_infer(call *k, const unsigned char *msg, size_t len) {
    resattn_grpc *s = k->srv;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    if (atomic_load(&s->draining)) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_DRAINING);
        set_error(k, 503, -1, "server is draining");
        return;
    }
    /* the unpacked message holds its fields once more, except the raw tensors (left in the
     * body; small) and typed contents (about the message's size) */
    k->msg_len = len;
    k->msg_bytes = msg;
    resattn_budget_verdict v = resattn_budget_hold_grow(&k->hold, len);
    if (v) {
        refuse_memory(k, v, len);
        return;
    }
    if (!(k->msg = resattn_grpc_infer_unpack(msg, len, err, sizeof err))) {
        set_error(k, 400, -1, "%s", err);
        return;
    }
    int status = 404;
    const char *name = k->msg->model_name[0] ? k->msg->model_name : "default";
    k->version =
        resattn_repository_acquire(s->repo, name, strlen(name), k->msg->model_version,
                                   strlen(k->msg->model_version), &status, err, sizeof err);
    if (!k->version) {
        set_error(k, status, -1, "%s", err);
        return;
    }
    resattn_pool_model *pm = resattn_model_version_pool_model(k->version);
    const resattn_model_info *info =
        resattn_model_get_info(resattn_model_version_model(k->version));
    size_t want = resattn_budget_infer_bytes(info, resattn_pool_model_max_batch(pm), 0);
    if ((v = resattn_budget_hold_grow(&k->hold, want))) {
        refuse_memory(k, v, want);
        return;
    }
    resattn_parse_limits limits = s->opt.limits;
    limits.max_batch = resattn_pool_model_max_batch(pm);
    limits.input_in_body_ok = 1; /* k->msg lives until the call is freed */
    k->inferring = 1;
    status = resattn_grpc_infer_parse(k->msg, info, &limits, s->opt.max_image_pixels, &k->ireq,
                                      &k->raw, err, sizeof err);
    if (status) {
        set_error(k, status, -1, "%s", err[0] ? err : "invalid request");
        return;
    }
    /* held from here: the body (the raw tensor may be used in it), the unpacked message, and
     * the logits and answer of its n images */
    resattn_budget_hold_set(&k->hold,
                            k->cap + len + resattn_budget_infer_bytes(info, k->ireq.n, 1));
    int nc = info->num_classes;
    if (!(k->logits = malloc(sizeof(float) * (size_t)nc * (size_t)k->ireq.n))) {
        set_error(k, 500, -1, "out of memory for %d x %d logits", k->ireq.n, nc);
        return;
    }
    if (resattn_pool_reserve(s->pool)) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_QUEUE_FULL);
        set_error(k, 503, -1, "queue full (%d requests waiting); retry later",
                  resattn_pool_depth(s->pool));
        return;
    }
    k->job.model = pm;
    k->job.input = k->ireq.input;
    k->job.n = k->ireq.n;
    k->job.logits = k->logits;
    k->job.deadline = k->deadline;
    k->job.done = on_job_done;
    k->job.user = k;
    k->job.want_masks = k->ireq.attention != 0;
    k->in_pool = 1;
    k->c->pending++;
    resattn_pool_push(s->pool, &k->job);
}

/* ---- the small RPCs ---------------------------------------------------------------------- */

static int is_ready(resattn_grpc *s) {
    return atomic_load(&s->ready) && !atomic_load(&s->draining) &&
           resattn_repository_ready(s->repo);
}

/* name/version of ModelReady and ModelMetadata (the same two fields), acquired. */
static resattn_model_version *route_model(call *k, const unsigned char *msg, size_t len) {
    Inference__ModelMetadataRequest *m = inference__model_metadata_request__unpack(NULL, len, msg);
    if (!m) {
        set_error(k, 400, -1, "the %zu-byte request is not valid protobuf", len);
        return NULL;
    }
    char err[MSG_LEN];
    int status = 404;
    resattn_model_version *v = NULL;
    if (!m->name[0])
        set_error(k, 400, -1, "name is empty: name the model");
    else if (!(v = resattn_repository_acquire(k->srv->repo, m->name, strlen(m->name), m->version,
                                              strlen(m->version), &status, err, sizeof err)))
        set_error(k, status, -1, "%s", err);
    inference__model_metadata_request__free_unpacked(m, NULL);
    return v;
}

static void model_metadata(call *k, const unsigned char *msg, size_t len) {
    if (!(k->version = route_model(k, msg, len)))
        return;
    const char *name = resattn_model_version_name(k->version);
    json_t *versions = resattn_repository_ready_versions(k->srv->repo, name, strlen(name));
    const char *labels[64];
    int nv = 0;
    for (size_t i = 0; i < json_array_size(versions) && nv < 64; i++)
        labels[nv++] = json_string_value(json_array_get(versions, i));
    resattn_grpc_message m;
    int rc = resattn_grpc_model_metadata(
        name, labels, nv, resattn_model_get_info(resattn_model_version_model(k->version)), &m);
    json_decref(versions);
    set_answer(k, rc, &m);
}

static void health_check(call *k, const unsigned char *msg, size_t len) {
    Grpc__Health__V1__HealthCheckRequest *m =
        grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (!m) {
        set_error(k, 400, -1, "the %zu-byte HealthCheckRequest is not valid protobuf", len);
        return;
    }
    int known = !m->service[0] || !strcmp(m->service, "inference.GRPCInferenceService");
    if (!known) {
        set_error(k, 404, -1, "service '%.64s' is not served here", m->service);
    } else {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = is_ready(k->srv)
                       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        resattn_grpc_message out;
        set_answer(k, resattn_grpc_pack(&r.base, &out), &out);
    }
    grpc__health__v1__health_check_request__free_unpacked(m, NULL);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void dispatch(call *k) {
    resattn_grpc *s = k->srv;
    k->dispatched = 1;
    k->rpc = RPC_UNKNOWN;
    k->ep = RESATTN_EP_UNKNOWN;
    int health = 0;
    for (size_t i = 0; i < NUM_RPCS; i++)
        if (!strcmp(k->path, rpcs[i].path)) {
            k->rpc = rpcs[i].rpc;
            k->ep = rpcs[i].ep;
            health = rpcs[i].health;
        }
    double limit = k->start + s->opt.request_timeout_ms * 1e-3;
    k->deadline = k->timeout >= 0 && k->start + k->timeout < limit ? k->start + k->timeout : limit;
    const char *ct = k->content_type;
    if (strncasecmp(ct, "application/grpc", 16) || (ct[16] && ct[16] != '+' && ct[16] != ';')) {
        set_error(k, 415, RESATTN_GRPC_INVALID_ARGUMENT,
                  "content-type '%.48s' is not application/grpc", ct);
        return;
    }
    if (s->opt.num_api_keys && (!health || s->opt.auth_health) &&
        !resattn_auth_bearer_ok(s->opt.api_keys, s->opt.num_api_keys, k->auth)) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_UNAUTHORIZED);
        set_error(k, 401, -1,
                  "missing or invalid API key (send metadata 'authorization: Bearer <key>')");
        return;
    }
    if (k->rpc == RPC_UNKNOWN || k->rpc == RPC_HEALTH_WATCH) {
        set_error(k, 501, -1, "method %.100s is not implemented by this server", k->path);
        return;
    }
    if (k->bad_timeout) {
        set_error(k, 400, -1, "grpc-timeout is not a gRPC timeout value (1-8 digits and a unit)");
        return;
    }
    if (k->encoding[0] && strcasecmp(k->encoding, "identity")) {
        set_error(k, 501, -1, "grpc-encoding '%.24s' is not supported (send identity)",
                  k->encoding);
        return;
    }
    if (k->too_large) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_BODY_TOO_LARGE);
        set_error(k, 413, -1, "message exceeds the limit of %lld bytes", s->opt.max_body_bytes);
        return;
    }
    if (k->refused) {
        refuse_memory(k, (resattn_budget_verdict)k->refused, 0);
        return;
    }
    const unsigned char *msg = NULL;
    size_t len = 0;
    char err[MSG_LEN];
    int code =
        resattn_grpc_unframe(k->body, k->len, s->opt.max_body_bytes, &msg, &len, err, sizeof err);
    if (code) {
        set_error(k, code == RESATTN_GRPC_RESOURCE_EXHAUSTED ? 413 : 400, code, "%s", err);
        return;
    }
    switch (k->rpc) {
    case RPC_SERVER_LIVE:
        answer_bool(k, 1);
        break;
    case RPC_SERVER_READY:
        answer_bool(k, is_ready(s));
        break;
    case RPC_MODEL_READY:
        if ((k->version = route_model(k, msg, len)))
            answer_bool(k, is_ready(s));
        break;
    case RPC_SERVER_METADATA: {
        resattn_grpc_message m;
        set_answer(k, resattn_grpc_server_metadata(resattn_version(), &m), &m);
        break;
    }
    case RPC_MODEL_METADATA:
        model_metadata(k, msg, len);
        break;
    case RPC_MODEL_INFER:
        model_infer(k, msg, len);
        break;
    case RPC_HEALTH_CHECK:
        health_check(k, msg, len);
        break;
    default:
        break;
    }
}

/* ---- nghttp2 callbacks ------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user) {
    conn *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    call *k = calloc(1, sizeof *k);
    if (!k)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    k->srv = c->srv;
    k->c = c;
    k->stream = f->hd.stream_id;
    k->start = resattn_now();
    k->timeout = -1;
    k->hold.budget = c->srv->opt.budget;
    if (nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, k)) {
        free(k); /* a stream nghttp2 refused (e.g. beyond the concurrent stream limit) */
        return 0;
    }
    k->next_conn = c->calls;
    c->calls = k;
    atomic_fetch_add(&c->srv->in_flight, 1);
    resattn_metrics_in_flight_add(c->srv->metrics, 1);
    return 0;
}

static void copy_value(char *dst, size_t cap, const uint8_t *v, size_t n) {
    n = n < cap - 1 ? n : cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *user) {
    (void)flags;
    (void)user;
    call *k = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!k || f->hd.type != NGHTTP2_HEADERS)
        return 0;
#define IS(s) (nl == sizeof(s) - 1 && !memcmp(name, s, nl))
    if (IS(":path"))
        copy_value(k->path, sizeof k->path, value, vl);
    else if (IS("content-type"))
        copy_value(k->content_type, sizeof k->content_type, value, vl);
    else if (IS("grpc-encoding"))
        copy_value(k->encoding, sizeof k->encoding, value, vl);
    else if (IS("authorization"))
        copy_value(k->auth, sizeof k->auth, value, vl);
    else if (IS("grpc-timeout")) {
        char t[16];
        copy_value(t, sizeof t, value, vl);
        k->timeout = resattn_grpc_timeout_seconds(t);
        k->bad_timeout = k->timeout < 0;
    }
#undef IS
    return 0;
}

static void body_drop(call *k) {
    free(k->body_mem);
    k->body = k->body_mem = NULL;
    k->len = k->cap = 0;
    resattn_budget_hold_set(&k->hold, 0);
}

/* Room for n more bytes (data, the chunk that arrived). The first allocation, once the
 * prefix tells the message size, takes the whole message and places its end on a 64-byte
 * boundary: clients write raw_input_contents last, so an FP32 tensor then lies aligned in
 * the body and is used where it is. -1 when the budget or malloc refuses (k->refused). */
static int body_grow(call *k, const uint8_t *data, size_t n, long long max) {
    size_t cap = k->cap ? k->cap * 2 : 16384, want = 0;
    if (k->len + n >= RESATTN_GRPC_PREFIX) {
        unsigned char p[RESATTN_GRPC_PREFIX];
        for (int i = 0; i < RESATTN_GRPC_PREFIX; i++)
            p[i] = (size_t)i < k->len ? k->body[i] : data[i - k->len];
        want = RESATTN_GRPC_PREFIX +
               ((size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | (size_t)p[4]);
        if (want > cap && (long long)want <= max)
            cap = want;
    }
    while (cap < k->len + n)
        cap *= 2;
    size_t pad = k->body_mem ? (size_t)(k->body - k->body_mem) : (64 - want % 64) % 64;
    size_t alloc = (pad + cap + 63) / 64 * 64;
    resattn_budget_verdict v = resattn_budget_hold_grow(&k->hold, cap - k->cap);
    unsigned char *b = v             ? NULL
                       : k->body_mem ? realloc(k->body_mem, alloc)
                                     : aligned_alloc(64, alloc);
    if (!b) {
        k->refused = v ? (int)v : (int)RESATTN_BUDGET_FULL;
        body_drop(k);
        return -1;
    }
    k->body_mem = b;
    k->body = b + pad;
    k->cap = cap;
    return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t stream, const uint8_t *data,
                   size_t n, void *user) {
    (void)flags;
    (void)user;
    call *k = nghttp2_session_get_stream_user_data(h2, stream);
    if (!k || k->too_large || k->refused)
        return 0;
    long long max = k->srv->opt.max_body_bytes + RESATTN_GRPC_PREFIX;
    if ((long long)(k->len + n) > max) {
        k->too_large = 1;
        body_drop(k);
        return 0;
    }
    if (k->len + n > k->cap && body_grow(k, data, n, max))
        return 0;
    memcpy(k->body + k->len, data, n);
    k->len += n;
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user) {
    (void)user;
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    call *k = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
    if (!k || k->dispatched)
        return 0;
    dispatch(k);
    if (!k->in_pool)
        submit(k);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream, uint32_t error, void *user) {
    (void)error;
    conn *c = user;
    call *k = nghttp2_session_get_stream_user_data(h2, stream);
    if (!k)
        return 0;
    nghttp2_session_set_stream_user_data(h2, stream, NULL);
    conn_unlink_call(c, k);
    k->stream_gone = 1;
    if (!k->in_pool)
        call_free(k);
    return 0;
}

/* ---- connections ----------------------------------------------------------------------- */

/* recv or send (out) on the socket or through TLS; -1 with errno EAGAIN when it would block. */
static ssize_t conn_io(conn *c, void *buf, size_t n, int out) {
    if (!c->tls)
        return out ? send(c->fd, buf, n, MSG_NOSIGNAL) : recv(c->fd, buf, n, 0);
    ssize_t r = out ? gnutls_record_send(c->tls, buf, n) : gnutls_record_recv(c->tls, buf, n);
    if (r < 0)
        errno = r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED ? EAGAIN : EIO;
    return r < 0 ? -1 : r;
}

static void conn_watch(conn *c, int out) {
    if (c->dead || c->want_out == out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->srv->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

/* Close: the session and socket go now; the struct stays while jobs of its calls run. */
static void conn_close(conn *c) {
    if (c->dead)
        return;
    c->dead = 1;
    resattn_grpc *s = c->srv;
    for (call *k = c->calls, *next; k; k = next) {
        next = k->next_conn;
        k->stream_gone = 1;
        if (!k->in_pool)
            call_free(k);
    }
    c->calls = NULL;
    epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    nghttp2_session_del(c->h2);
    c->h2 = NULL;
    if (c->tls)
        gnutls_deinit(c->tls);
    c->tls = NULL;
    close(c->fd);
    c->fd = -1;
    free(c->out);
    c->out = NULL;
    s->num_conns--;
}

/* Close connections on which nothing was received or sent for --connection-timeout-s while
 * no job of theirs runs, as libmicrohttpd does for HTTP: idle clients, and clients that stop
 * half-way through a message or stop reading an answer, do not hold connections forever. */
static void close_idle(resattn_grpc *s) {
    double limit = s->opt.connection_timeout_s > 0 ? s->opt.connection_timeout_s : 30;
    double now = resattn_now();
    for (conn *c = s->conns; c; c = c->next)
        if (!c->dead && !c->pending && now - c->last_io > limit)
            conn_close(c);
}

/* Free closed connections that no job refers to any more. */
static void conn_reap(resattn_grpc *s) {
    for (conn **p = &s->conns; *p;) {
        conn *c = *p;
        if (c->dead && c->pending == 0) {
            *p = c->next;
            free(c);
        } else {
            p = &c->next;
        }
    }
}

/* Write what nghttp2 has to send, as far as the socket takes it; close when done or broken. */
static void conn_flush(conn *c) {
    if (c->dead || c->handshaking)
        return;
    for (;;) {
        while (c->out_off < c->out_len) {
            ssize_t w = conn_io(c, c->out + c->out_off, c->out_len - c->out_off, 1);
            if (w < 0 && errno == EAGAIN) {
                conn_watch(c, 1);
                return;
            }
            if (w <= 0) {
                conn_close(c);
                return;
            }
            c->out_off += (size_t)w;
            c->last_io = resattn_now();
        }
        c->out_len = c->out_off = 0;
        const uint8_t *data;
        ssize_t n;
        while (c->out_len < OUT_HIGH_WATER && (n = nghttp2_session_mem_send(c->h2, &data)) > 0) {
            if (c->out_len + (size_t)n > c->out_cap) {
                size_t cap = c->out_cap ? c->out_cap : 16384;
                while (cap < c->out_len + (size_t)n)
                    cap *= 2;
                unsigned char *b = realloc(c->out, cap);
                if (!b) {
                    conn_close(c);
                    return;
                }
                c->out = b;
                c->out_cap = cap;
            }
            memcpy(c->out + c->out_len, data, (size_t)n);
            c->out_len += (size_t)n;
        }
        if (c->out_len == 0)
            break;
    }
    conn_watch(c, 0);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        conn_close(c);
}

static int conn_start_h2(conn *c) {
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb))
        return -1;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new(&c->h2, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 256},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2))
        return -1;
    /* a large connection window, so a 600 KB tensor is not held up by WINDOW_UPDATE trips */
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    if (atomic_load(&c->srv->draining)) {
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway = 1;
    }
    return 0;
}

static void conn_handshake(conn *c) {
    int rc = gnutls_handshake(c->tls);
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
        conn_watch(c, gnutls_record_get_direction(c->tls) == 1);
        return;
    }
    if (rc < 0) {
        conn_close(c);
        return;
    }
    c->handshaking = 0;
    if (conn_start_h2(c))
        conn_close(c);
}

static void conn_read(conn *c) {
    static __thread unsigned char buf[READ_CHUNK];
    c->last_io = resattn_now();
    for (;;) {
        ssize_t n = conn_io(c, buf, sizeof buf, 0);
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0 || nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
            conn_close(c);
            return;
        }
        if (c->dead)
            return;
    }
}

static void conn_event(conn *c, unsigned events) {
    if (c->handshaking) {
        conn_handshake(c);
    } else {
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            conn_read(c);
        if (!c->dead && (events & EPOLLOUT))
            conn_watch(c, 0);
    }
    if (!c->dead && !c->handshaking)
        conn_flush(c);
}

/* Start serving the accepted connection fd (owned from here, also on failure). */
static void add_conn(resattn_grpc *s, int fd) {
    if (s->opt.max_connections > 0 && s->num_conns >= s->opt.max_connections) {
        close(fd);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->tag = EV_CONN;
    c->srv = s;
    c->fd = fd;
    c->last_io = resattn_now();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* answers are one write */
    c->next = s->conns;
    s->conns = c;
    s->num_conns++;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    if (s->cred) {
        static const gnutls_datum_t h2 = {(unsigned char *)"h2", 2};
        c->handshaking = 1;
        if (gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NONBLOCK) ||
            gnutls_priority_set(c->tls, s->prio) ||
            gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, s->cred) ||
            gnutls_alpn_set_protocols(c->tls, &h2, 1, 0)) {
            conn_close(c);
            return;
        }
        gnutls_transport_set_int(c->tls, fd);
        conn_handshake(c);
    } else if (conn_start_h2(c)) {
        conn_close(c);
    } else {
        conn_flush(c);
    }
}

static void accept_all(resattn_grpc *s) {
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        add_conn(s, fd);
    }
}

static void take_conn(void *arg, int fd, const struct sockaddr *peer, socklen_t peer_len) {
    (void)peer;
    (void)peer_len;
    add_conn(arg, fd);
}

/* Calls whose job came back: answer them (or free them when their stream is gone). */
static void take_finished(resattn_grpc *s) {
    uint64_t n;
    ssize_t r = read(s->wake_fd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&s->lock);
    call *list = s->finished;
    s->finished = NULL;
    pthread_mutex_unlock(&s->lock);
    for (call *k = list, *next; k; k = next) {
        next = k->next_fin;
        k->in_pool = 0;
        conn *c = k->c;
        c->pending--;
        if (k->stream_gone) { /* a closed connection is reaped once its count is 0 */
            call_free(k);
            continue;
        }
        submit(k);
        conn_flush(c);
    }
}

static void begin_goaway(resattn_grpc *s) {
    if (s->listen_fd >= 0) {
        /* connections the kernel completed or is completing are taken in (and get the
         * GOAWAY below) instead of being reset by a plain close (net/listener.h); this loop
         * thread is the only one using the socket, so it is closed right after */
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        char err[RESATTN_ERR_LEN];
        resattn_listener_close_gently(s->listen_fd, LISTENER_CLOSE_MS, take_conn, s, NULL, err,
                                      sizeof err);
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    for (conn *c = s->conns; c; c = c->next) {
        if (c->dead || c->goaway || c->handshaking || !c->h2)
            continue;
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->h2), NGHTTP2_NO_ERROR,
                              NULL, 0);
        c->goaway = 1;
        conn_flush(c);
    }
}

static void *loop(void *arg) {
    resattn_grpc *s = arg;
    pthread_setname_np(pthread_self(), "grpc"); /* for per-thread CPU time (benchmarks, top) */
    struct epoll_event ev[MAX_EVENTS];
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(s->epoll_fd, ev, MAX_EVENTS, 100);
        for (int i = 0; i < n; i++) {
            ev_kind *tag = ev[i].data.ptr;
            if (*tag == EV_LISTEN)
                accept_all(s);
            else if (*tag == EV_WAKE)
                take_finished(s);
            else
                conn_event((conn *)tag, ev[i].events);
        }
        if (atomic_load(&s->draining) && !atomic_load(&s->drain_seen)) {
            atomic_store(&s->drain_seen, 1);
            begin_goaway(s);
        }
        close_idle(s);
        conn_reap(s);
    }
    for (conn *c = s->conns; c; c = c->next)
        conn_close(c);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static resattn_status tls_setup(resattn_grpc *s, char *err, size_t err_len) {
    gnutls_datum_t cert = {(unsigned char *)s->opt.tls_cert, (unsigned)strlen(s->opt.tls_cert)};
    gnutls_datum_t key = {(unsigned char *)s->opt.tls_key, (unsigned)strlen(s->opt.tls_key)};
    int rc = gnutls_certificate_allocate_credentials(&s->cred);
    if (!rc)
        rc = gnutls_certificate_set_x509_key_mem(s->cred, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (!rc)
        rc = gnutls_priority_init(&s->prio, NULL, NULL);
    if (rc) {
        snprintf(err, err_len, "cannot serve gRPC over TLS (invalid --tls-cert/--tls-key: %s)",
                 gnutls_strerror(rc));
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    return RESATTN_OK;
}

static void server_free(resattn_grpc *s) {
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->epoll_fd >= 0)
        close(s->epoll_fd);
    if (s->prio)
        gnutls_priority_deinit(s->prio);
    if (s->cred)
        gnutls_certificate_free_credentials(s->cred);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

resattn_status resattn_grpc_start(int listen_fd, const resattn_http_options *opt,
                                  resattn_repository *repo, resattn_pool *pool,
                                  resattn_metrics *metrics, resattn_grpc **out, char *err,
                                  size_t err_len) {
    *out = NULL;
    resattn_grpc *s = calloc(1, sizeof *s);
    if (!s) {
        close(listen_fd);
        return RESATTN_ERR_NOMEM;
    }
    s->opt = *opt;
    s->repo = repo;
    s->pool = pool;
    s->metrics = metrics;
    s->listen_fd = listen_fd;
    s->listen_tag = EV_LISTEN;
    s->wake_tag = EV_WAKE;
    s->port = resattn_bound_port(s->listen_fd);
    pthread_mutex_init(&s->lock, NULL);
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    resattn_status st = RESATTN_OK;
    if (opt->tls_cert)
        st = tls_setup(s, err, err_len);
    if (!st && (s->wake_fd < 0 || s->epoll_fd < 0)) {
        snprintf(err, err_len, "cannot start the gRPC server: %s", strerror(errno));
        st = RESATTN_ERR_IO;
    }
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &s->listen_tag};
    struct epoll_event we = {.events = EPOLLIN, .data.ptr = &s->wake_tag};
    if (!st && (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->listen_fd, &le) ||
                epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &we) ||
                pthread_create(&s->thread, NULL, loop, s))) {
        snprintf(err, err_len, "cannot start the gRPC server: %s", strerror(errno));
        st = RESATTN_ERR_IO;
    }
    if (st) {
        server_free(s);
        return st;
    }
    *out = s;
    return RESATTN_OK;
}

int resattn_grpc_port(const resattn_grpc *g) {
    return g->port;
}

void resattn_grpc_set_ready(resattn_grpc *g, int ready) {
    atomic_store(&g->ready, ready);
}

void resattn_grpc_begin_drain(resattn_grpc *g) {
    atomic_store(&g->draining, 1);
    uint64_t one = 1;
    ssize_t w = write(g->wake_fd, &one, sizeof one);
    (void)w;
}

int resattn_grpc_wait_idle(resattn_grpc *g, int timeout_ms) {
    return resattn_wait_idle(&g->in_flight, timeout_ms, IDLE_GRACE_S, NULL, NULL);
}

void resattn_grpc_stop(resattn_grpc *g) {
    if (!g)
        return;
    atomic_store(&g->stopping, 1);
    resattn_grpc_begin_drain(g);
    pthread_join(g->thread, NULL);
    conn_reap(g);
    for (conn *c = g->conns, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    server_free(g);
}
