/*
 * HTTP layer of `resattn serve` on libmicrohttpd (see http.h). The life of a request:
 *   1st callback:  allocate a `request`, route it (method, path, model), check Content-Length
 *                  against the body cap (413 at once, before any body is read) and charge an
 *                  inference request's worst case to the memory budget (503 if full: at once
 *                  to a client waiting for 100 Continue, else after its body is dropped);
 *   body chunks:   appended under the running-total cap (a body of unknown length charged to
 *                  the budget as it grows), or dropped once an error is decided;
 *   last callback: answer GETs directly; for inference, parse, reserve a queue slot (503 when
 *                  full), suspend the connection and push the job to the pool;
 *   worker:        computes, encodes the answer, resumes the connection;
 *   next callback: queue the prepared answer (never on the first callback: keep-alive);
 *   completed:     access-log line, metrics, the version's statistics, release, free.
 * Responses are only ever queued from the handler, on the libmicrohttpd thread. The request's
 * budget hold follows what it holds (account()) and is released on completion.
 * Models come from the repository (server/repository): routing acquires the version a request
 * names (or the one unversioned requests use) and the request holds it to the end, so a
 * version swapped out meanwhile still answers it. Repository loads and unloads run on the
 * repository's thread; their requests wait suspended like inference requests.
 */
#include "http/http.h"
#include "protocol/attention_api.h"
#include "protocol/image_api.h"
#include "protocol/protocol_common.h"
#include "runtime/access_log.h"
#include "runtime/auth.h"
#include "net/listen.h"
#include "http/web/index_html.h"
#include "net/listener.h"
#include "maps/mask_summary.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_ID_LEN 64
#define MSG_LEN 512
#define IDLE_GRACE_S 0.05
/* How long a drain waits for connections it accepted (or libmicrohttpd accepted before)
 * to send their first request: a client that connects and then idles must not hold it. */
#define FRESH_GRACE_S 1.0

struct resattn_http {
    struct MHD_Daemon *daemon;
    resattn_http_options opt;
    resattn_repository *repo;
    resattn_pool *pool;
    resattn_metrics *metrics;
    atomic_int ready, draining;
    atomic_int leaving; /* drain delay: readiness 503 and Connection: close, still serving */
    atomic_long in_flight;
    atomic_long fresh; /* open connections whose first request has not begun */
    double drain_start;
    atomic_ullong next_id;
    unsigned id_salt;
    int port;
    int listen_fd; /* libmicrohttpd's until the drain quiesces it, then ours to close */
    int quiesced;  /* listen_fd is ours */
};

typedef enum req_state {
    ST_COLLECTING = 0, /* reading the body */
    ST_SUSPENDED,      /* job in the pool, connection suspended */
    ST_ANSWERED        /* answer prepared, to be queued */
} req_state;

typedef struct request request;
typedef void (*route_fn)(request *r);

struct request {
    resattn_http *srv;
    struct MHD_Connection *conn;
    double start;
    resattn_endpoint ep;
    route_fn fn;                    /* the matched route's handler, run once the body is in */
    resattn_model_version *version; /* acquired at routing for model endpoints, or NULL */
    char model_name[160];           /* the {m} of the path (repository and stats endpoints) */
    char version_label[32];         /* its {v}, or "" */
    char method[16];
    char path[256]; /* for the log, truncated */
    char request_id[REQUEST_ID_LEN + 1];
    unsigned char *body;     /* [len] collected so far, capacity cap, at body_mem + a pad */
    unsigned char *body_mem; /* the allocation (free this) */
    size_t len, cap;
    req_state state;
    int discard; /* an error answer is decided: drop body chunks */
    int early;   /* answer on the first callback, before any body is sent (see admit()) */
    /* memory budget: what this request holds of it; body_charged of it is for the body */
    resattn_budget_hold hold;
    size_t body_charged;
    /* the answer */
    int status;
    unsigned char *resp; /* malloc'ed, handed to libmicrohttpd */
    size_t resp_len, resp_bytes;
    const char *content_type;
    size_t json_header_len; /* v2 binary extension, else 0 */
    unsigned npy_out;       /* Accept: application/x-npy: the RESATTN_OUT_* tensor to answer */
    const char *allow;      /* Allow header of a 405 */
    int unauthorized;       /* 401: add WWW-Authenticate */
    int retry_after;        /* seconds, for 503 queue full */
    int batch_size;
    /* inference */
    resattn_infer_request ireq;
    resattn_job job;
    float *logits; /* [n, num_classes] */
    int inferring; /* an inference on `version` was attempted: counts in its statistics */
    int computed;  /* its forward pass ran and the answer was encoded */
    double parse_seconds, encode_seconds;
};

/* ---- routing -------------------------------------------------------------------------- */

typedef struct route {
    const char *method;
    const char *pattern; /* {m} = model name, {v} = model version; captures stop at / and : */
    resattn_endpoint ep;
    route_fn fn;
} route;

static void h_v2_server(request *r);
static void h_live(request *r);
static void h_ready(request *r);
static void h_v2_model(request *r);
static void h_v2_model_ready(request *r);
static void h_infer(request *r);
static void h_v1_model(request *r);
static void h_metrics(request *r);
static void h_web(request *r);
static void h_stats(request *r);
static void h_repo_index(request *r);
static void h_repo_load(request *r);
static void h_repo_unload(request *r);

static const route routes[] = {
    {"GET", "/v2", RESATTN_EP_V2_SERVER, h_v2_server},
    {"GET", "/v2/health/live", RESATTN_EP_V2_LIVE, h_live},
    {"GET", "/v2/health/ready", RESATTN_EP_V2_READY, h_ready},
    /* statistics extension (before /v2/models/{m}, which "stats" would also match) */
    {"GET", "/v2/models/stats", RESATTN_EP_V2_STATS, h_stats},
    {"GET", "/v2/models/{m}/stats", RESATTN_EP_V2_STATS, h_stats},
    {"GET", "/v2/models/{m}/versions/{v}/stats", RESATTN_EP_V2_STATS, h_stats},
    /* model repository extension (the page's model picker reads the index) */
    {"POST", "/v2/repository/index", RESATTN_EP_V2_INDEX, h_repo_index},
    {"POST", "/v2/repository/models/{m}/load", RESATTN_EP_V2_REPOSITORY_LOAD, h_repo_load},
    {"POST", "/v2/repository/models/{m}/unload", RESATTN_EP_V2_REPOSITORY_LOAD, h_repo_unload},
    {"GET", "/v2/models/{m}", RESATTN_EP_V2_MODEL, h_v2_model},
    {"GET", "/v2/models/{m}/ready", RESATTN_EP_V2_MODEL_READY, h_v2_model_ready},
    {"POST", "/v2/models/{m}/infer", RESATTN_EP_V2_INFER, h_infer},
    {"GET", "/v2/models/{m}/versions/{v}", RESATTN_EP_V2_MODEL, h_v2_model},
    {"GET", "/v2/models/{m}/versions/{v}/ready", RESATTN_EP_V2_MODEL_READY, h_v2_model_ready},
    {"POST", "/v2/models/{m}/versions/{v}/infer", RESATTN_EP_V2_INFER, h_infer},
    {"POST", "/v1/models/{m}:predict", RESATTN_EP_V1_PREDICT, h_infer},
    {"POST", "/v1/models/{m}/versions/{v}:predict", RESATTN_EP_V1_PREDICT, h_infer},
    {"GET", "/v1/models/{m}", RESATTN_EP_V1_MODEL, h_v1_model},
    {"GET", "/v1/models/{m}/versions/{v}", RESATTN_EP_V1_MODEL, h_v1_model},
    {"GET", "/healthz", RESATTN_EP_HEALTHZ, h_live},
    {"GET", "/readyz", RESATTN_EP_READYZ, h_ready},
    {"GET", "/metrics", RESATTN_EP_METRICS, h_metrics},
    {"GET", "/", RESATTN_EP_WEB, h_web},
    /* Image endpoints: multipart, raw image or base64 JSON bodies, top-k labels out
     * (server/protocol/image_api.c); /predict is the first model ("default" without --model). */
    {"POST", "/predict", RESATTN_EP_PREDICT, h_infer},
    {"POST", "/predict/{m}", RESATTN_EP_PREDICT, h_infer},
};

#define NUM_ROUTES (sizeof routes / sizeof routes[0])

typedef struct span {
    const char *p;
    size_t n;
} span;

/* Match path against pattern; fills the {m} and {v} captures. */
static int match(const char *pat, const char *path, span *m, span *v) {
    while (*pat) {
        if (*pat == '{') {
            span *cap = pat[1] == 'm' ? m : v;
            const char *s = path;
            while (*path && *path != '/' && *path != ':')
                path++;
            if (path == s)
                return 0;
            cap->p = s;
            cap->n = (size_t)(path - s);
            pat += 3;
            continue;
        }
        if (*pat++ != *path++)
            return 0;
    }
    return *path == 0;
}

/* ---- answers -------------------------------------------------------------------------- */

static void account(request *r);

static void set_answer(request *r, int status, unsigned char *data, size_t len,
                       const char *content_type) {
    free(r->resp);
    r->status = status;
    r->resp = data;
    r->resp_len = len;
    r->content_type = content_type;
    r->discard = 1;
    account(r);
}

/* The one error answer: {"error": "<message>"} with `status`, counted in the metrics. */
static void answer_error(request *r, int status, const char *fmt, ...) {
    char msg[MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) /* a message that is not valid UTF-8, or no memory */
        text = strdup("{\"error\":\"internal error\"}");
    set_answer(r, status, (unsigned char *)text, text ? strlen(text) : 0, "application/json");
    resattn_metrics_error(r->srv->metrics, status);
}

/* Answer a JSON value (stolen). */
static void answer_json(request *r, int status, json_t *o) {
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        answer_error(r, 500, "out of memory building the answer");
        return;
    }
    set_answer(r, status, (unsigned char *)text, strlen(text), "application/json");
}

static enum MHD_Result queue_answer(request *r) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        return MHD_NO;
    r->resp = NULL; /* now owned by libmicrohttpd */
    r->resp_bytes = r->resp_len;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->json_header_len) {
        char n[32];
        snprintf(n, sizeof n, "%zu", r->json_header_len);
        MHD_add_response_header(resp, "Inference-Header-Content-Length", n);
    }
    if (r->allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->unauthorized)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"resattn\"");
    if (r->retry_after) {
        char n[16];
        snprintf(n, sizeof n, "%d", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, n);
    }
    if (atomic_load(&r->srv->draining) || atomic_load(&r->srv->leaving))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- GET handlers --------------------------------------------------------------------- */

static int is_ready(const resattn_http *h) {
    return atomic_load(&h->ready) && !atomic_load(&h->draining) && !atomic_load(&h->leaving);
}

/* A metadata answer built by server/protocol/v2_outputs.c. */
static void answer_body(request *r, int rc, resattn_response_body *b) {
    if (rc) {
        answer_error(r, 500, "out of memory building the answer");
        return;
    }
    set_answer(r, 200, b->data, b->len, b->content_type);
}

static void h_v2_server(request *r) {
    resattn_response_body b;
    answer_body(r, resattn_v2_server_metadata(resattn_version(), &b), &b);
}

static void h_live(request *r) {
    if (r->ep == RESATTN_EP_HEALTHZ)
        answer_json(r, 200, json_pack("{s:s}", "status", "ok"));
    else
        answer_json(r, 200, json_pack("{s:b}", "live", 1));
}

static void h_ready(request *r) {
    if (!is_ready(r->srv)) {
        answer_error(r, 503,
                     atomic_load(&r->srv->draining) || atomic_load(&r->srv->leaving)
                         ? "server is draining"
                         : "models are still warming up");
        return;
    }
    if (!resattn_repository_ready(r->srv->repo)) {
        answer_error(r, 503,
                     "a model that should be served has no ready version (see POST "
                     "/v2/repository/index)");
        return;
    }
    if (r->ep == RESATTN_EP_READYZ)
        answer_json(r, 200, json_pack("{s:s}", "status", "ready"));
    else
        answer_json(r, 200, json_pack("{s:b}", "ready", 1));
}

/* Metadata of the routed version; "versions" lists every ready version of the model. */
static void h_v2_model(request *r) {
    const char *name = resattn_model_version_name(r->version);
    json_t *versions = resattn_repository_ready_versions(r->srv->repo, name, strlen(name));
    const char *labels[64];
    int nv = 0;
    for (size_t i = 0; i < json_array_size(versions) && nv < 64; i++)
        labels[nv++] = json_string_value(json_array_get(versions, i));
    resattn_response_body b;
    answer_body(
        r,
        resattn_v2_model_metadata_at(
            name, labels, nv, resattn_model_get_info(resattn_model_version_model(r->version)), &b),
        &b);
    json_decref(versions);
}

static void h_v2_model_ready(request *r) {
    const char *name = resattn_model_version_name(r->version);
    if (!is_ready(r->srv)) {
        answer_error(r, 503, "model '%s' is not ready", name);
        return;
    }
    answer_json(r, 200, json_pack("{s:s, s:b}", "name", name, "ready", 1));
}

/* TensorFlow Serving's model status: every version with its state. */
static void h_v1_model(request *r) {
    char err[MSG_LEN];
    int status = 404;
    json_t *o = resattn_repository_version_status(
        r->srv->repo, r->model_name, strlen(r->model_name), r->version_label,
        strlen(r->version_label), &status, err, sizeof err);
    if (!o) {
        answer_error(r, status, "%s", err);
        return;
    }
    answer_json(r, 200, o);
}

/* Triton's statistics extension. */
static void h_stats(request *r) {
    char err[MSG_LEN];
    int status = 404;
    json_t *o = resattn_repository_stats(r->srv->repo, r->model_name[0] ? r->model_name : NULL,
                                         strlen(r->model_name), r->version_label,
                                         strlen(r->version_label), &status, err, sizeof err);
    if (!o) {
        answer_error(r, status, "%s", err);
        return;
    }
    answer_json(r, 200, o);
}

/* A repository request body: empty, or a JSON object; NULL (answered 400, the message
 * starting with `what`) otherwise. */
static json_t *repo_body(request *r, const char *what) {
    if (r->len == 0)
        return json_object();
    json_error_t je;
    json_t *o = json_loadb((const char *)r->body, r->len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        answer_error(r, 400, "%s: the body must be empty or a JSON object%s%s", what, o ? "" : ": ",
                     o ? "" : je.text);
        return NULL;
    }
    return o;
}

/* POST /v2/repository/index, body {"ready": bool} optional: every model of the repository
 * and every --model model (in --model order, first), one entry per version. */
static void h_repo_index(request *r) {
    json_t *body = repo_body(r, "repository index");
    if (!body)
        return;
    json_t *ready = json_object_get(body, "ready");
    if (ready && !json_is_boolean(ready)) {
        json_decref(body);
        answer_error(r, 400, "repository index: \"ready\" must be true or false");
        return;
    }
    int ready_only = json_is_true(ready);
    json_decref(body);
    answer_json(r, 200, resattn_repository_index(r->srv->repo, ready_only));
}

/* Repository thread: the outcome of a load or unload; resume the request. */
static void on_repo_done(void *user, int status, const char *msg) {
    request *r = user;
    if (status)
        answer_error(r, status, "%s", msg && *msg ? msg : "model repository request failed");
    else
        answer_json(r, 200, json_object());
    r->state = ST_ANSWERED;
    MHD_resume_connection(r->conn);
}

/* A load or unload, done on the repository's thread while the connection waits suspended
 * (a load reads and warms up a whole model). */
static void repo_op(request *r, resattn_repository_op op) {
    json_t *body = repo_body(r, op == RESATTN_REPO_LOAD ? "load" : "unload");
    if (!body)
        return;
    json_decref(body); /* "parameters" (Triton's config overrides) are not supported: ignored */
    r->state = ST_SUSPENDED;
    MHD_suspend_connection(r->conn);
    if (resattn_repository_post(r->srv->repo, op, r->model_name, on_repo_done, r)) {
        r->state = ST_COLLECTING;
        MHD_resume_connection(r->conn);
        answer_error(r, 503, "the model repository is stopping");
    }
}

/* POST /v2/repository/models/{m}/load */
static void h_repo_load(request *r) {
    repo_op(r, RESATTN_REPO_LOAD);
}

/* POST /v2/repository/models/{m}/unload */
static void h_repo_unload(request *r) {
    repo_op(r, RESATTN_REPO_UNLOAD);
}

static void h_metrics(request *r) {
    size_t len = 0;
    char *text = resattn_metrics_render(r->srv->metrics, &len);
    if (!text) {
        answer_error(r, 500, "out of memory rendering the metrics");
        return;
    }
    set_answer(r, 200, (unsigned char *)text, len, "text/plain; version=0.0.4; charset=utf-8");
}

/* The page (server/http/web/index.html, linked into the binary); a copy, as answers are freed. */
static void h_web(request *r) {
    size_t len = (size_t)resattn_web_index_html_size;
    unsigned char *page = malloc(len ? len : 1);
    if (!page) {
        answer_error(r, 500, "out of memory for the page");
        return;
    }
    memcpy(page, resattn_web_index_html, len);
    set_answer(r, 200, page, len, "text/html; charset=utf-8");
}

/* ---- inference ------------------------------------------------------------------------ */

/* The one tensor of an application/x-npy answer, [n, k] float32. */
static int encode_npy(const request *r, int k, resattn_response_body *b) {
    if (r->npy_out == RESATTN_OUT_LOGITS)
        return resattn_npy_response(r->logits, r->ireq.n, k, b);
    float *probs = malloc(sizeof(float) * (size_t)r->ireq.n * (size_t)k);
    if (!probs)
        return 500;
    resattn_softmax_rows(r->logits, r->ireq.n, k, probs);
    int rc = resattn_npy_response(probs, r->ireq.n, k, b);
    free(probs);
    return rc;
}

/* Worker (or reaper) thread: encode the answer, then let libmicrohttpd resume the request. */
static void on_job_done(resattn_job *job) {
    request *r = job->user;
    const char *name = resattn_model_version_name(r->version);
    const resattn_model_info *info =
        resattn_model_get_info(resattn_model_version_model(r->version));
    int k = info->num_classes;
    r->batch_size = job->batch_size;
    r->ireq.masks = job->masks; /* the request owns them from here (freed with it) */
    job->masks = NULL;
    if (job->status == 504) {
        answer_error(r, 504, "request timed out after %d ms waiting for a worker",
                     r->srv->opt.request_timeout_ms);
    } else if (job->status) {
        answer_error(r, job->status, "inference failed: %s", job->err);
    } else {
        double t0 = resattn_now();
        resattn_response_body b = {0};
        r->ireq.model_version = resattn_model_version_label(r->version);
        int rc = r->npy_out ? encode_npy(r, k, &b)
                 : resattn_image_api_owns(&r->ireq)
                     ? resattn_image_api_encode(&r->ireq, name, info, r->logits, r->ireq.n, &b)
                 : r->ireq.protocol == RESATTN_PROTO_TFS
                     ? resattn_tfs_encode(&r->ireq, r->logits, r->ireq.n, k, &b)
                     : resattn_v2_encode(&r->ireq, name, info, r->logits, r->ireq.n, &b);
        if (rc || !b.data) {
            resattn_response_body_release(&b);
            answer_error(r, 500, "could not encode the answer");
        } else {
            set_answer(r, 200, b.data, b.len, b.content_type);
            r->json_header_len = b.json_header_len;
            r->computed = 1;
        }
        r->encode_seconds = resattn_now() - t0;
    }
    r->state = ST_ANSWERED;
    MHD_resume_connection(r->conn);
}

static const char *header(request *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static size_t body_pad(request *r);

/* Accept lists application/x-npy with a q above 0 (whatever else it lists). */
static int accepts_npy(const char *accept) {
    while (accept && *accept) {
        size_t n = strcspn(accept, ",");
        char item[128];
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), accept);
        accept += n + (accept[n] == ',');
        char *t = item + strspn(item, " \t"), *params = strchr(t, ';');
        size_t tl = params ? (size_t)(params - t) : strlen(t);
        while (tl && (t[tl - 1] == ' ' || t[tl - 1] == '\t'))
            tl--;
        if (tl != 17 || strncasecmp(t, "application/x-npy", 17))
            continue;
        const char *q = params ? strcasestr(params, "q=") : NULL;
        if (!q || strtod(q + 2, NULL) > 0)
            return 1;
    }
    return 0;
}

/* The tensor a .npy answer holds: the logits when no outputs were named, or the one of
 * logits or probabilities named alone; 0 for anything else, e.g. two tensors, top-k,
 * classification or attention (406). */
static unsigned npy_tensor(const resattn_infer_request *q) {
    if (q->num_attn_outputs || q->attention || q->classification[0] || q->classification[1])
        return 0;
    if (!q->outputs_named)
        return RESATTN_OUT_LOGITS;
    unsigned t = q->outputs;
    return t == RESATTN_OUT_LOGITS || t == RESATTN_OUT_PROBABILITIES ? t : 0;
}

/* v2's Inference-Header-Content-Length into *hlen (-1 when absent): 0 or 400. */
static int header_length(request *r, long long *hlen, char *err, size_t err_len) {
    const char *h = header(r, "Inference-Header-Content-Length");
    *hlen = -1;
    if (h) {
        char *end;
        *hlen = strtoll(h, &end, 10);
        if (end == h || *end || *hlen < 0) {
            snprintf(err, err_len, "Inference-Header-Content-Length '%s' is not a byte count", h);
            return 400;
        }
    }
    return 0;
}

static int parse_infer(request *r, char *err, size_t err_len) {
    const resattn_model_info *info =
        resattn_model_get_info(resattn_model_version_model(r->version));
    /* the routed version's batch limit (a model's config.json may set its own) */
    resattn_parse_limits limits = r->srv->opt.limits;
    limits.max_batch = resattn_pool_model_max_batch(resattn_model_version_pool_model(r->version));
    const char *ct = header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    long long hlen = -1;
    if (r->ep == RESATTN_EP_V2_INFER && header_length(r, &hlen, err, err_len))
        return 400;
    if (r->ep == RESATTN_EP_PREDICT ||
        (r->ep == RESATTN_EP_V2_INFER && resattn_image_api_is_image(ct, r->body, r->len))) {
        const char *q = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "top_k");
        int top_k = -1;
        if (q) {
            char *end;
            long k = strtol(q, &end, 10);
            if (end == q || *end || k < 1 || k > 1000000) {
                snprintf(err, err_len, "query parameter top_k '%.32s' is not a positive integer",
                         q);
                return 400;
            }
            top_k = (int)k;
        }
        return resattn_image_api_parse(
            r->ep == RESATTN_EP_PREDICT ? RESATTN_PROTO_PREDICT : RESATTN_PROTO_V2, ct, r->body,
            r->len, hlen, top_k, r->srv->opt.max_image_pixels, info, &limits, &r->ireq, err,
            err_len);
    }
    if (r->ep == RESATTN_EP_V1_PREDICT) {
        /* TF Serving reads the body as JSON whatever the type; we also take curl -d's default
         * form type, and still refuse types that are clearly something else */
        if (ct && strncasecmp(ct, "application/json", 16) &&
            strncasecmp(ct, "application/x-www-form-urlencoded", 33)) {
            snprintf(err, err_len, "Content-Type '%s' is not supported here: use application/json",
                     ct);
            return 415;
        }
        return resattn_tfs_parse(r->body, r->len, info, &limits, &r->ireq, err, err_len);
    }
    /* the body stays until the request completes, so FP32 binary data is used in place */
    limits.input_in_body_ok = 1;
    return resattn_v2_parse(ct ? ct : "application/json", r->body, r->len, hlen, info, &limits,
                            &r->ireq, err, err_len);
}

static void body_free(request *r) {
    free(r->body_mem);
    r->body = r->body_mem = NULL;
    r->len = r->cap = 0;
    r->body_charged = 0;
}

/* ---- memory budget -------------------------------------------------------------------- */

static size_t masks_bytes(const struct resattn_mask_set *set) {
    size_t n = 0;
    for (int i = 0; set && i < set->count; i++)
        n += (size_t)set->n * resattn_mask_size(&set->masks[i]) * sizeof(float);
    return n;
}

/* Set the request's hold to what it holds now: its body while kept; once parsed, its input
 * and logits with the estimate of its answer, or, once answered, the masks and the encoded
 * answer (ours or libmicrohttpd's until sent). Charges never fail once admitted. */
static void account(request *r) {
    size_t bytes = r->body_mem ? r->body_charged : 0;
    const resattn_infer_request *q = &r->ireq;
    if (q->n > 0 && r->version) {
        const resattn_model_info *info =
            resattn_model_get_info(resattn_model_version_model(r->version));
        size_t chw = (size_t)info->in_channels * info->in_height * info->in_width;
        if (!r->resp && !r->resp_bytes)
            bytes += resattn_budget_infer_bytes(info, q->n, q->input_in_body || !q->input);
        else
            bytes += (q->input && !q->input_in_body ? (size_t)q->n * chw * sizeof(float) : 0) +
                     (r->logits ? (size_t)q->n * info->num_classes * sizeof(float) : 0) +
                     masks_bytes(q->masks);
    }
    bytes += r->resp ? r->resp_len : r->resp_bytes;
    resattn_budget_hold_set(&r->hold, bytes);
}

/* The allocation that holds a body of cap bytes after pad bytes (see append_body). */
static size_t body_alloc_bytes(size_t pad, size_t cap) {
    return (pad + cap + 63) / 64 * 64;
}

/* The budget refused `bytes` more: 503 to retry, or 413 when no budget would ever do. */
static void refuse_memory(request *r, resattn_budget_verdict v, size_t bytes) {
    resattn_budget *b = r->srv->opt.budget;
    resattn_metrics_reject(r->srv->metrics, RESATTN_REJECT_MEMORY);
    if (v == RESATTN_BUDGET_NEVER) {
        answer_error(r, 413,
                     "this request needs %zu bytes of memory (body, parsing, tensors, answer): "
                     "more than the server's memory budget of %lld bytes gives one request",
                     r->hold.bytes + bytes, resattn_budget_limit(b));
        return;
    }
    r->retry_after = 1;
    answer_error(r, 503,
                 "memory budget full (%lld of %lld bytes held by requests in progress, this one "
                 "needs %zu more); retry later",
                 resattn_budget_in_use(b), resattn_budget_limit(b), bytes);
}

/* Before the body is read: charge an inference request's worst case — its body
 * (Content-Length; a body of unknown length is charged as it arrives), what parsing it may
 * take, and a full batch's input, logits and answer. A client that waits for
 * `100 Continue` gets the refusal instead and never sends its body; any other client is
 * already sending it, and closing the connection under it would reset it before it reads
 * the answer, so its body is read and dropped and the answer follows (keep-alive stays). */
static void admit(request *r, const char *cl) {
    const resattn_model_info *info =
        resattn_model_get_info(resattn_model_version_model(r->version));
    int max_batch = resattn_pool_model_max_batch(resattn_model_version_pool_model(r->version));
    size_t len = cl ? (size_t)strtoull(cl, NULL, 10) : 0; /* <= max_body_bytes, checked */
    size_t body = len ? body_alloc_bytes(body_pad(r), len) : 0;
    size_t want = body + resattn_budget_parse_bytes(header(r, MHD_HTTP_HEADER_CONTENT_TYPE), len) +
                  resattn_budget_infer_bytes(info, max_batch, 0);
    resattn_budget_verdict v = resattn_budget_hold_grow(&r->hold, want);
    if (!v) {
        r->body_charged = body;
        return;
    }
    refuse_memory(r, v, want);
    const char *expect = header(r, MHD_HTTP_HEADER_EXPECT);
    r->early = expect && !strcasecmp(expect, "100-continue");
}

static void h_infer(request *r) {
    resattn_http *s = r->srv;
    if (atomic_load(&s->draining)) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_DRAINING);
        r->retry_after = 1;
        answer_error(r, 503, "server is draining");
        return;
    }
    const resattn_model_info *info =
        resattn_model_get_info(resattn_model_version_model(r->version));
    char err[RESATTN_PROTO_ERR_LEN] = "";
    r->inferring = 1;
    double t0 = resattn_now();
    int status = parse_infer(r, err, sizeof err);
    if (!status && r->ep != RESATTN_EP_V1_PREDICT) /* ?attention=1|images (attention_api.h) */
        status = resattn_attention_apply_query(
            &r->ireq, info,
            MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "attention"), err,
            sizeof err);
    r->parse_seconds = resattn_now() - t0;
    if (!r->ireq.input_in_body)
        body_free(r); /* the parsed request holds its own copy of the input */
    if (status) {
        answer_error(r, status, "%s", err[0] ? err : "invalid request");
        return;
    }
    if (r->ep == RESATTN_EP_V2_INFER && accepts_npy(header(r, MHD_HTTP_HEADER_ACCEPT)) &&
        !(r->npy_out = npy_tensor(&r->ireq))) {
        answer_error(r, 406,
                     "an application/x-npy answer holds one tensor: ask for logits or "
                     "probabilities (no attention), or accept application/json");
        return;
    }
    int k = info->num_classes;
    r->logits = malloc(sizeof(float) * (size_t)k * (size_t)r->ireq.n);
    if (!r->logits) {
        answer_error(r, 500, "out of memory for %d x %d logits", r->ireq.n, k);
        return;
    }
    if (resattn_pool_reserve(s->pool)) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_QUEUE_FULL);
        r->retry_after = 1;
        answer_error(r, 503, "queue full (%d requests waiting); retry later",
                     resattn_pool_depth(s->pool));
        return;
    }
    r->job.model = resattn_model_version_pool_model(r->version);
    r->job.input = r->ireq.input;
    r->job.n = r->ireq.n;
    r->job.logits = r->logits;
    r->job.deadline = r->start + s->opt.request_timeout_ms * 1e-3;
    r->job.done = on_job_done;
    r->job.user = r;
    r->job.want_masks = r->ireq.attention != 0;
    account(r); /* the body is gone or used in place: hold the parsed request */
    r->state = ST_SUSPENDED;
    /* suspend before the push: the worker may resume the connection at once */
    MHD_suspend_connection(r->conn);
    resattn_pool_push(s->pool, &r->job);
}

/* ---- the libmicrohttpd callbacks ------------------------------------------------------ */

static void make_request_id(request *r) {
    const char *given = header(r, "X-Request-Id");
    if (given && *given && strlen(given) <= REQUEST_ID_LEN) {
        int ok = 1;
        for (const char *p = given; *p; p++)
            ok &= *p > 32 && *p < 127 && *p != '"' && *p != '\\';
        if (ok) {
            snprintf(r->request_id, sizeof r->request_id, "%s", given);
            return;
        }
    }
    unsigned long long n = atomic_fetch_add(&r->srv->next_id, 1);
    snprintf(r->request_id, sizeof r->request_id, "%08x%08llx", r->srv->id_salt, n);
}

/* ---- API keys ------------------------------------------------------------------------- */

/* Health and metrics stay open unless --auth-health; the page is static and stays open. */
static int needs_auth(const resattn_http *s, resattn_endpoint ep) {
    if (s->opt.num_api_keys == 0 || ep == RESATTN_EP_WEB)
        return 0;
    int health = ep == RESATTN_EP_HEALTHZ || ep == RESATTN_EP_READYZ || ep == RESATTN_EP_V2_LIVE ||
                 ep == RESATTN_EP_V2_READY || ep == RESATTN_EP_METRICS;
    return !health || s->opt.auth_health;
}

static int authorized(request *r) {
    return resattn_auth_bearer_ok(r->srv->opt.api_keys, r->srv->opt.num_api_keys,
                                  header(r, MHD_HTTP_HEADER_AUTHORIZATION));
}

/* The {m} and {v} of a matched route: kept as text for the repository and statistics
 * endpoints; for model endpoints the version is acquired now and held to the end (404 for
 * an unknown model or version, 503 for a model without a ready version). */
static void route_model(request *r, span m, span v) {
    if (m.n >= sizeof r->model_name || v.n >= sizeof r->version_label) {
        answer_error(r, 404, "model '%.*s' not found", (int)(m.n < 64 ? m.n : 64), m.p);
        return;
    }
    if (m.p)
        memcpy(r->model_name, m.p, m.n);
    if (v.p)
        memcpy(r->version_label, v.p, v.n);
    if (r->ep == RESATTN_EP_V2_INDEX || r->ep == RESATTN_EP_V2_REPOSITORY_LOAD ||
        r->ep == RESATTN_EP_V2_STATS || r->ep == RESATTN_EP_V1_MODEL ||
        (!m.p && r->ep != RESATTN_EP_PREDICT))
        return;
    if (!m.p) /* POST /predict: the first (or built-in "default") model */
        snprintf(r->model_name, sizeof r->model_name, "default");
    char err[MSG_LEN];
    int status = 404;
    r->version = resattn_repository_acquire(r->srv->repo, r->model_name, strlen(r->model_name),
                                            r->version_label, strlen(r->version_label), &status,
                                            err, sizeof err);
    if (!r->version) {
        if (status == 503)
            r->retry_after = 1;
        answer_error(r, status, "%s", err);
    }
}

/* HEAD is GET without the body (RFC 9110 section 9.3.2): a GET route answers it with the
 * same status and headers, Content-Length included; libmicrohttpd leaves the body out. */
static int method_allowed(const char *route_method, const char *method) {
    return !strcmp(route_method, method) ||
           (!strcmp(method, "HEAD") && !strcmp(route_method, "GET"));
}

static const char *allow_header(const char *route_method) {
    return strcmp(route_method, "GET") ? route_method : "GET, HEAD";
}

/* Route the request and decide early errors (401, 404, 405, 413). */
static void route_request(request *r, const char *url, const char *method) {
    const char *allow = NULL;
    for (size_t i = 0; i < NUM_ROUTES; i++) {
        span m = {0}, v = {0};
        if (!match(routes[i].pattern, url, &m, &v))
            continue;
        r->ep = routes[i].ep;
        r->fn = routes[i].fn;
        if (needs_auth(r->srv, r->ep) && !authorized(r)) {
            r->unauthorized = 1;
            resattn_metrics_reject(r->srv->metrics, RESATTN_REJECT_UNAUTHORIZED);
            answer_error(r, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')");
            return;
        }
        if (!method_allowed(routes[i].method, method)) {
            allow = allow_header(routes[i].method);
            continue;
        }
        route_model(r, m, v);
        return; /* r->ep (and r->version) are set; the handler runs once the body is in */
    }
    if (allow) {
        r->allow = allow;
        answer_error(r, 405, "method %s not allowed on %s (allowed: %s)", method, url, allow);
        return;
    }
    r->ep = RESATTN_EP_UNKNOWN;
    answer_error(r, 404, "no such endpoint: %s %s", method, url);
}

static request *request_new(resattn_http *s, struct MHD_Connection *conn, const char *url,
                            const char *method) {
    request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = s;
    r->conn = conn;
    r->start = resattn_now();
    r->hold.budget = s->opt.budget;
    snprintf(r->method, sizeof r->method, "%s", method);
    snprintf(r->path, sizeof r->path, "%s", url);
    atomic_fetch_add(&s->in_flight, 1);
    resattn_metrics_in_flight_add(s->metrics, 1);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    int *fresh = ci ? ci->socket_context : NULL;
    if (fresh && *fresh) {
        *fresh = 0;
        atomic_fetch_sub(&s->fresh, 1);
    }
    make_request_id(r);
    route_request(r, url, method);
    const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!r->discard && cl && strtoll(cl, NULL, 10) > s->opt.max_body_bytes) {
        resattn_metrics_reject(s->metrics, RESATTN_REJECT_BODY_TOO_LARGE);
        answer_error(r, 413, "body of %s bytes exceeds the limit of %lld bytes", cl,
                     s->opt.max_body_bytes);
        r->early = 1;
    }
    if (!r->discard && r->fn == h_infer && r->version)
        admit(r, cl);
    return r;
}

/* Bytes before the body in its allocation that put the binary part of a v2 binary-extension
 * body at a multiple of 64 (0 without the header). */
static size_t body_pad(request *r) {
    const char *h = header(r, "Inference-Header-Content-Length");
    unsigned long long hl = h ? strtoull(h, NULL, 10) : 0;
    return (size_t)((64 - hl % 64) % 64);
}

/* Append a body chunk under the running-total cap. */
static void append_body(request *r, const char *data, size_t n) {
    long long max = r->srv->opt.max_body_bytes;
    if ((long long)(r->len + n) > max) {
        body_free(r);
        resattn_metrics_reject(r->srv->metrics, RESATTN_REJECT_BODY_TOO_LARGE);
        answer_error(r, 413, "body exceeds the limit of %lld bytes", max);
        return;
    }
    if (r->len + n > r->cap) {
        const char *cl = header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        size_t want = cl ? (size_t)strtoull(cl, NULL, 10) : 0; /* <= max, checked earlier */
        size_t cap = r->cap ? r->cap * 2 : 65536;
        if (want > cap)
            cap = want;
        while (cap < r->len + n)
            cap *= 2;
        /* The first allocation puts the binary part of a v2 binary-extension body (after
         * Inference-Header-Content-Length bytes) on a cache line, so that its FP32 tensor
         * needs no copy; a later realloc keeps it aligned to malloc's 16 bytes. */
        size_t pad = r->body_mem ? (size_t)(r->body - r->body_mem) : body_pad(r);
        size_t alloc = body_alloc_bytes(pad, cap);
        if (alloc > r->body_charged) { /* a body of unknown length (chunked) grows */
            size_t more = alloc - r->body_charged;
            resattn_budget_verdict v = resattn_budget_hold_grow(&r->hold, more);
            if (v) {
                body_free(r);
                refuse_memory(r, v, more);
                return;
            }
            r->body_charged = alloc;
        }
        unsigned char *b = r->body_mem ? realloc(r->body_mem, pad + cap) : aligned_alloc(64, alloc);
        if (!b) {
            answer_error(r, 500, "out of memory for a %zu-byte body", r->len + n);
            return;
        }
        r->body_mem = b;
        r->body = b + pad;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    (void)version;
    request *r = *req_cls;
    if (!r) {
        r = request_new(cls, conn, url, method);
        if (!r)
            return MHD_NO;
        *req_cls = r;
        /* a too-large body, or one the memory budget cannot take from a client waiting for
         * 100 Continue, is refused before it is sent (the connection then closes); everything
         * else waits for the next callback to keep the connection alive */
        return r->early ? queue_answer(r) : MHD_YES;
    }
    if (*upload_data_size) {
        if (!r->discard)
            append_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->state == ST_COLLECTING && !r->discard) {
        r->fn(r);
        if (r->state == ST_SUSPENDED)
            return MHD_YES;
        if (!r->resp && !r->discard)
            answer_error(r, 500, "no handler answered %s %s", method, url);
    }
    return queue_answer(r);
}

static void log_request(request *r, double seconds) {
    FILE *f = r->srv->opt.log;
    if (!f)
        return;
    if (r->srv->opt.log_json) {
        json_t *o = json_pack(
            "{s:f, s:s, s:s, s:i, s:f, s:I, s:i, s:s}", "time", (double)time(NULL), "method",
            r->method, "path", r->path, "status", r->status, "duration_ms", seconds * 1e3, "bytes",
            (json_int_t)r->resp_bytes, "batch_size", r->batch_size, "request_id", r->request_id);
        resattn_access_log_json(f, o);
        return;
    }
    resattn_access_log_text(f, "%s %s %d %.3fms %zuB batch=%d id=%s", r->method, r->path, r->status,
                            seconds * 1e3, r->resp_bytes, r->batch_size, r->request_id);
}

/* Counts the connections that have not begun a request (the drain waits for them): a flag
 * per connection, set when it opens, cleared by its first request or its close. Each
 * connection lives on one libmicrohttpd thread, so the flag needs no atomics. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    (void)conn;
    resattn_http *s = cls;
    int *fresh = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        fresh = malloc(sizeof *fresh);
        if (fresh) {
            *fresh = 1;
            atomic_fetch_add(&s->fresh, 1);
        }
        *socket_context = fresh;
    } else if (fresh) {
        if (*fresh)
            atomic_fetch_sub(&s->fresh, 1);
        free(fresh);
        *socket_context = NULL;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    resattn_http *s = cls;
    request *r = *req_cls;
    if (!r)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !r->resp_bytes)
        r->status = 499; /* the client went away before the answer (nginx's convention) */
    double dt = resattn_now() - r->start;
    int model = r->version
                    ? resattn_pool_model_metrics_index(resattn_model_version_pool_model(r->version))
                    : -1;
    resattn_metrics_request(s->metrics, r->ep, model, r->status, dt);
    log_request(r, dt);
    if (r->version && r->inferring) {
        resattn_model_stats *st =
            resattn_pool_model_stats(resattn_model_version_pool_model(r->version));
        if (r->computed && r->status == 200)
            resattn_model_stats_success(st, r->ireq.n, dt, r->job.queue_wait, r->parse_seconds,
                                        r->job.infer_seconds, r->encode_seconds);
        else
            resattn_model_stats_fail(st, dt);
    }
    resattn_model_version_release(r->version);
    resattn_infer_request_release(&r->ireq);
    free(r->logits);
    free(r->body_mem);
    free(r->resp);
    resattn_budget_hold_release(&r->hold);
    free(r);
    *req_cls = NULL;
    resattn_metrics_in_flight_add(s->metrics, -1);
    atomic_fetch_sub(&s->in_flight, 1);
}

static void on_mhd_error(void *cls, const char *fmt, va_list ap) {
    resattn_http *s = cls;
    if (!s->opt.log)
        return;
    char msg[MSG_LEN];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    fprintf(s->opt.log, "resattn: libmicrohttpd: %s\n", msg);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

resattn_status resattn_http_listen(const char *host, int port, int *fd_out, char *err,
                                   size_t err_len) {
    return resattn_listen(host, port, "--port", fd_out, err, err_len);
}

resattn_status resattn_http_start(const resattn_http_options *opt, resattn_repository *repo,
                                  resattn_pool *pool, resattn_metrics *metrics, resattn_http **out,
                                  char *err, size_t err_len) {
    *out = NULL;
    int fd = opt->listen_fd, listening = 0;
    socklen_t len = sizeof listening;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) || !listening) {
        snprintf(err, err_len, "internal error: no listening socket for %s:%d", opt->host,
                 opt->port);
        if (fd >= 0)
            close(fd);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    resattn_http *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return RESATTN_ERR_NOMEM;
    }
    s->opt = *opt;
    s->repo = repo;
    s->pool = pool;
    s->metrics = metrics;
    s->id_salt = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    s->port = resattn_bound_port(fd);
    s->listen_fd = fd;
    /* MHD_USE_ITC: the drain hands connections over with MHD_add_connection */
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC | (opt->tls_cert ? MHD_USE_TLS : 0);
    /* Limits (0 = leave libmicrohttpd's default). The connection memory holds the request
     * line and headers (431 beyond) and the read buffer of body chunks, which we copy out. */
    struct MHD_OptionItem extra[] = {
        {opt->max_connections > 0 ? MHD_OPTION_CONNECTION_LIMIT : MHD_OPTION_END,
         opt->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT,
         opt->connection_timeout_s > 0 ? opt->connection_timeout_s : 30, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, opt->max_connections_per_ip, NULL},
        {opt->max_header_bytes > 0 ? MHD_OPTION_CONNECTION_MEMORY_LIMIT : MHD_OPTION_END,
         opt->max_header_bytes, NULL},
        {opt->tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)opt->tls_cert},
        {opt->tls_key ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)opt->tls_key},
        /* one internal thread unless asked: a pool size of 0 or 1 only draws a warning */
        {opt->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, opt->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* drop the unused entries: MHD_OPTION_END in the middle would end the array early */
    struct MHD_OptionItem items[sizeof extra / sizeof extra[0]];
    size_t ni = 0;
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (extra[i].option != MHD_OPTION_END)
            items[ni++] = extra[i];
    items[ni] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* the socket is ours (resattn_http_listen): libmicrohttpd closes it on stop */
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_error, s,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_ARRAY, items, MHD_OPTION_END);
    if (!s->daemon) {
        char where[300];
        resattn_format_where(where, sizeof where, opt->host, s->port);
        snprintf(err, err_len,
                 opt->tls_cert ? "cannot serve HTTPS on %s (invalid --tls-cert/--tls-key)"
                               : "cannot start the HTTP server on %s",
                 where);
        /* libmicrohttpd 0.9.75 closes the socket it was given when it fails (checked); close
         * it here only in case a failure came before it took the socket over */
        if (fcntl(fd, F_GETFD) != -1)
            close(fd);
        free(s);
        return RESATTN_ERR_IO;
    }
    *out = s;
    return RESATTN_OK;
}

int resattn_http_port(const resattn_http *h) {
    return h->port;
}

void resattn_http_set_ready(resattn_http *h, int ready) {
    atomic_store(&h->ready, ready);
}

void resattn_http_announce_drain(resattn_http *h) {
    atomic_store(&h->leaving, 1);
}

/* resattn_listener_take_fn: a connection accepted during the drain goes to libmicrohttpd,
 * which answers it like any other (503 for new inference requests); it closes it itself
 * when it cannot take it (connection limits). */
static void take_connection(void *arg, int fd, const struct sockaddr *peer, socklen_t len) {
    resattn_http *h = arg;
    MHD_add_connection(h->daemon, fd, peer, len);
}

void resattn_http_begin_drain(resattn_http *h, int timeout_ms, resattn_listener_close_info *info,
                              char *err, size_t err_len) {
    atomic_store(&h->draining, 1);
    h->drain_start = resattn_now();
    if (err_len)
        err[0] = 0;
    if (info)
        memset(info, 0, sizeof *info);
    if (h->quiesced)
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->daemon);
    if (fd == MHD_INVALID_SOCKET) {
        snprintf(err, err_len, "cannot stop libmicrohttpd accepting connections");
        return;
    }
    /* libmicrohttpd no longer accepts; the connections the kernel completed or is completing
     * are accepted and handed back to it before the listener stops (a plain close would
     * reset them). Not closed: libmicrohttpd says to close it after MHD_stop_daemon. */
    h->quiesced = 1;
    resattn_listener_close_gently(fd, timeout_ms, take_connection, h, info, err, err_len);
}

/* A new connection counts as busy until it begins its request (for FRESH_GRACE_S from the
 * drain's start): stopping the daemon would otherwise close it, unanswered, and its request
 * arriving after that would be reset. */
static int fresh_connections(void *arg) {
    resattn_http *h = arg;
    return atomic_load(&h->fresh) > 0 && resattn_now() - h->drain_start < FRESH_GRACE_S;
}

int resattn_http_wait_idle(resattn_http *h, int timeout_ms) {
    /* idle must last IDLE_GRACE_S: a request a keep-alive client sent just before the
     * drain may still be on its way from the socket buffer to the first callback. */
    return resattn_wait_idle(&h->in_flight, timeout_ms, IDLE_GRACE_S, fresh_connections, h);
}

void resattn_http_stop(resattn_http *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    if (h->quiesced)
        close(h->listen_fd);
    free(h);
}
