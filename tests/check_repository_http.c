/*
 * The model repository on the real server (`resattn serve --model-repository`), driven by
 * libcurl: a new version dropped in by an atomic rename under continuous load from several
 * clients is picked up within the poll interval plus its load time with no answer other than
 * 200 (and /readyz 200 throughout), every answer's logits being those of the version its
 * model_version names; a half-written file does not disturb serving; unload makes a model 404
 * and load brings it back (API key required); the statistics count exactly the requests sent;
 * versioned paths on both protocols; strict readiness; SIGHUP; and 20 swaps leave the
 * resident memory within 10% of what it was after 2. Versions differ by their weights.
 */
#include "cli/config.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <resattn/resattn.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define C 3
#define H 16
#define W 16
#define K 10
#define PER (C * H * W)
#define MAX_VERSIONS 32

static const char *JSON_CT[] = {"Content-Type: application/json", NULL};

/* ---- the repository on disk ------------------------------------------------------------ */

static char repo[256];

static void setup(void) {
    snprintf(repo, sizeof repo, "/tmp/resattn-repo-http-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(repo));
}

static void teardown(void) {
    ut_rm_tree(repo);
}

/* A small SE-ResNet whose weights come from seed (wide: the bigger network of the memory
 * test, so that a leaked version would show in the resident size). */
static unsigned char *model_bytes(unsigned seed, int wide, size_t *len) {
    static const int layers[2] = {1, 1}, narrow_w[2] = {8, 16}, wide_w[2] = {96, 192};
    ut_model m;
    ut_model_init(&m, NULL, seed);
    ut_build_resnet(&m, "basic", "cifar", "se", 2, layers, wide ? wide_w : narrow_w, C, H, W, K);
    unsigned char *b = ut_serialize(&m, len);
    ut_model_free(&m);
    return b;
}

/* DIR/model/version/model.safetensors, written under a hidden name and renamed into place
 * (what operators should do: the server never sees a partial version). */
static void drop_version(const char *model, int version, unsigned seed, int wide) {
    char tmp[512], dst[512], file[600];
    snprintf(tmp, sizeof tmp, "%s/%s/.incoming-%d", repo, model, version);
    ut_mkdirs(tmp);
    snprintf(file, sizeof file, "%s/model.safetensors", tmp);
    size_t len;
    unsigned char *b = model_bytes(seed, wide, &len);
    ck_assert_int_eq(ut_write_file(file, b, len), 0);
    free(b);
    snprintf(dst, sizeof dst, "%s/%s/%d", repo, model, version);
    ck_assert_int_eq(rename(tmp, dst), 0);
}

static void write_text(const char *rel, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", repo, rel);
    ck_assert_int_eq(ut_write_file(p, text, strlen(text)), 0);
}

/* ---- what each version should answer --------------------------------------------------- */

static float input[PER];
static float want[MAX_VERSIONS][K]; /* logits of `input` by version v (seed 100 + v) */

static void fill(float *x, size_t n, unsigned seed) {
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) * (2.0 / 16777216.0) - 1.0);
    }
}

static void expect_version(int v, unsigned seed) {
    size_t len;
    unsigned char *b = model_bytes(seed, 0, &len);
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    resattn_ctx *ctx = NULL;
    ck_assert_int_eq(resattn_model_load_buffer(b, len, &m, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(resattn_ctx_new(m, 1, &ctx, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(resattn_forward(ctx, input, 1, want[v], err, sizeof err), RESATTN_OK);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    free(b);
}

static int close_enough(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= 1e-5 * fmax(1.0, fabs(b[i]))))
            return 0;
    return 1;
}

static char *infer_body(int n) {
    size_t cap = (size_t)n * PER * 20 + 256;
    char *b = malloc(cap);
    int o = snprintf(b, cap,
                     "{\"inputs\":[{\"name\":\"input\",\"shape\":[%d,%d,%d,%d],\"datatype\":"
                     "\"FP32\",\"data\":[",
                     n, C, H, W);
    for (int k = 0; k < n; k++)
        for (int i = 0; i < PER; i++)
            o += snprintf(b + o, cap - (size_t)o, k || i ? ",%.9g" : "%.9g", input[i]);
    snprintf(b + o, cap - (size_t)o, "]}]}");
    return b;
}

/* model_version and logits[0..K) of a v2 answer; the version, or -1 when malformed. */
static int v2_answer(const uh_response *r, float *logits) {
    json_t *o = json_loadb((const char *)r->body, r->len, 0, NULL);
    json_t *mv = json_object_get(o, "model_version");
    json_t *d = json_object_get(json_array_get(json_object_get(o, "outputs"), 0), "data");
    int v = json_is_string(mv) ? atoi(json_string_value(mv)) : -1;
    if (json_array_size(d) < K)
        v = -1;
    for (int j = 0; v >= 0 && j < K; j++)
        logits[j] = (float)json_number_value(json_array_get(d, j));
    json_decref(o);
    return v;
}

static long get_status(int port, const char *method, const char *path, const char *const *hdrs,
                       const char *body, char *out, size_t out_len) {
    uh_response r;
    uh_request(port, method, path, hdrs, body, body ? strlen(body) : 0, &r);
    long st = r.status;
    if (out && out_len)
        snprintf(out, out_len, "%.*s", (int)r.len, r.body ? (const char *)r.body : "");
    uh_response_release(&r);
    return st;
}

/* One inference on path; the version that answered (-1 on anything but a correct 200). */
static int infer_version(int port, const char *path) {
    char *body = infer_body(1);
    uh_response r;
    uh_request(port, "POST", path, JSON_CT, body, strlen(body), &r);
    free(body);
    float got[K];
    int v = r.status == 200 ? v2_answer(&r, got) : -1;
    if (v >= 0 && (v >= MAX_VERSIONS || !close_enough(got, want[v], K)))
        v = -1;
    uh_response_release(&r);
    return v;
}

/* ---- clients under load ------------------------------------------------------------------ */

typedef struct load {
    int port;
    atomic_int stop;
    atomic_int ok, bad_status, wrong, ready_bad;
    atomic_int seen[MAX_VERSIONS];           /* answers per version */
    _Atomic double first_seen[MAX_VERSIONS]; /* when a version first answered */
    char last_bad[256];
} load;

static void *client_main(void *arg) {
    load *L = arg;
    char *body = infer_body(1);
    uh_client *c = uh_client_new(L->port);
    while (!atomic_load(&L->stop)) {
        uh_response r;
        uh_client_request(c, "POST", "/v2/models/m/infer", JSON_CT, body, strlen(body), &r);
        float got[K];
        int v = r.status == 200 ? v2_answer(&r, got) : -1;
        if (r.status != 200) {
            atomic_fetch_add(&L->bad_status, 1);
            snprintf(L->last_bad, sizeof L->last_bad, "%ld %.*s", r.status, (int)r.len,
                     r.body ? (const char *)r.body : "");
        } else if (v < 0 || v >= MAX_VERSIONS || !close_enough(got, want[v], K)) {
            atomic_fetch_add(&L->wrong, 1);
        } else {
            atomic_fetch_add(&L->ok, 1);
            if (atomic_fetch_add(&L->seen[v], 1) == 0)
                atomic_store(&L->first_seen[v], uh_now_s());
        }
        uh_response_release(&r);
    }
    uh_client_free(c);
    free(body);
    return NULL;
}

static void *ready_main(void *arg) {
    load *L = arg;
    while (!atomic_load(&L->stop)) {
        if (get_status(L->port, "GET", "/readyz", NULL, NULL, NULL, 0) != 200 ||
            get_status(L->port, "GET", "/v2/health/ready", NULL, NULL, NULL, 0) != 200)
            atomic_fetch_add(&L->ready_bad, 1);
        uh_sleep_ms(20);
    }
    return NULL;
}

enum { CLIENTS = 4 };

typedef struct load_run {
    load L;
    pthread_t t[CLIENTS + 1];
} load_run;

static void load_start(load_run *lr, int port) {
    memset(lr, 0, sizeof *lr);
    lr->L.port = port;
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_int_eq(pthread_create(&lr->t[i], NULL, client_main, &lr->L), 0);
    ck_assert_int_eq(pthread_create(&lr->t[CLIENTS], NULL, ready_main, &lr->L), 0);
}

static void load_stop(load_run *lr) {
    atomic_store(&lr->L.stop, 1);
    for (int i = 0; i <= CLIENTS; i++)
        pthread_join(lr->t[i], NULL);
}

/* Wait up to seconds until version v has answered a client; its time, or -1. */
static double wait_seen(load *L, int v, double seconds) {
    double until = uh_now_s() + seconds;
    while (uh_now_s() < until && !atomic_load(&L->seen[v]))
        uh_sleep_ms(10);
    return atomic_load(&L->seen[v]) ? atomic_load(&L->first_seen[v]) : -1;
}

static void expect_clean(load *L) {
    ck_assert_msg(atomic_load(&L->bad_status) == 0, "%d answers were not 200 (last: %s)",
                  atomic_load(&L->bad_status), L->last_bad);
    ck_assert_msg(atomic_load(&L->wrong) == 0,
                  "%d answers had logits of another version than they named",
                  atomic_load(&L->wrong));
    ck_assert_msg(atomic_load(&L->ready_bad) == 0, "readiness was not 200 %d times",
                  atomic_load(&L->ready_bad));
}

/* The server's log as a string (malloc'ed; "" when unreadable). */
static char *read_log(const uh_server *s) {
    size_t len = 0;
    unsigned char *b = ut_read_file(s->log, &len);
    char *t = malloc(len + 1);
    if (b)
        memcpy(t, b, len);
    t[b ? len : 0] = 0;
    free(b);
    return t;
}

/* Occurrences of needle in the server's log. */
static int log_count(const uh_server *s, const char *needle) {
    char *log = read_log(s);
    int n = 0;
    for (char *p = log; (p = strstr(p, needle)); p++)
        n++;
    free(log);
    return n;
}

/* The "loaded in N ms" of model m version v in the server log; -1 when absent. */
static double load_ms(const uh_server *s, int v) {
    char *log = read_log(s);
    char needle[64];
    snprintf(needle, sizeof needle, "model 'm' version %d: loaded in ", v);
    char *p = strstr(log, needle);
    double ms = p ? atof(p + strlen(needle)) : -1;
    free(log);
    return ms;
}

static void start_server(uh_server *s, const char *const *args) {
    ck_assert_msg(uh_server_start(s, args) == 0, "server did not start (log %s)", s->log);
}

static void stop_server(uh_server *s) {
    ck_assert_int_eq(uh_server_stop(s, SIGTERM, 20000), 0);
}

static void prepare(int versions) {
    fill(input, PER, 5);
    for (int v = 1; v <= versions; v++)
        expect_version(v, 100 + (unsigned)v);
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(test_swap_under_load) {
    prepare(2);
    drop_version("m", 1, 101, 0);
    uh_server s;
    const char *args[] = {"--model-repository",
                          repo,
                          "--model-control-mode",
                          "poll",
                          "--repository-poll-secs",
                          "1",
                          "--workers",
                          "2",
                          NULL};
    start_server(&s, args);
    load_run lr;
    load_start(&lr, s.port);
    ck_assert_msg(wait_seen(&lr.L, 1, 10) > 0, "version 1 never answered");
    uh_sleep_ms(500);
    double t0 = uh_now_s();
    drop_version("m", 2, 102, 0);
    double t2 = wait_seen(&lr.L, 2, 15);
    uh_sleep_ms(500); /* keep the load on while version 1 drains and is freed */
    load_stop(&lr);
    expect_clean(&lr.L);
    ck_assert_msg(t2 > 0, "version 2 never answered");
    double ms = load_ms(&s, 2), took = t2 - t0;
    ck_assert_msg(ms >= 0, "no load line for version 2 in %s", s.log);
    /* one poll interval, the load, and one request's round trip (0.5 s of slack: 2 shared
     * cores, 4 clients and the loader) */
    ck_assert_msg(took <= 1.0 + ms / 1e3 + 0.5,
                  "version 2 answered %.2f s after the rename "
                  "(poll 1 s, load %.0f ms)",
                  took, ms);
    ck_assert_int_gt(atomic_load(&lr.L.seen[1]), 0);
    ck_assert_int_gt(atomic_load(&lr.L.seen[2]), 0);
    /* version 1 is gone: no answer names it any more */
    ck_assert_int_eq(infer_version(s.port, "/v2/models/m/infer"), 2);
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/models/m/versions/1/infer", JSON_CT, "{}", NULL, 0), 404);
    stop_server(&s);
}
END_TEST

START_TEST(test_half_written_file) {
    prepare(2);
    drop_version("m", 1, 101, 0);
    uh_server s;
    const char *args[] = {"--model-repository",
                          repo,
                          "--model-control-mode",
                          "poll",
                          "--repository-poll-secs",
                          "1",
                          NULL};
    start_server(&s, args);
    load_run lr;
    load_start(&lr, s.port);
    size_t len;
    unsigned char *b = model_bytes(102, 0, &len);
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/m/2", repo);
    ut_mkdirs(dir);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    ck_assert_int_eq(ut_write_file(file, b, len / 3), 0); /* in place, not renamed: partial */
    char idx[4096] = "";
    for (int i = 0; i < 500 && !strstr(idx, "\"version\":\"2\",\"state\":\"UNAVAILABLE\""); i++) {
        uh_sleep_ms(20);
        get_status(s.port, "POST", "/v2/repository/index", JSON_CT, "{}", idx, sizeof idx);
    }
    ck_assert_msg(strstr(idx, "\"version\":\"2\",\"state\":\"UNAVAILABLE\",\"reason\":\"model."
                              "safetensors: "),
                  "%s", idx);
    uh_sleep_ms(1500);           /* more polls: the same partial file is not retried */
    FILE *f = fopen(file, "ab"); /* the writer finishes */
    ck_assert_uint_eq(fwrite(b + len / 3, 1, len - len / 3, f), len - len / 3);
    fclose(f);
    free(b);
    ck_assert_msg(wait_seen(&lr.L, 2, 15) > 0, "the completed version 2 never answered");
    load_stop(&lr);
    expect_clean(&lr.L);
    ck_assert_int_gt(atomic_load(&lr.L.seen[1]), 0);
    ck_assert_int_eq(log_count(&s, "version 2: load failed"), 1);
    stop_server(&s);
}
END_TEST

static const char *KEY[] = {"Authorization: Bearer sekrit", "Content-Type: application/json", NULL};

START_TEST(test_explicit_unload_load) {
    prepare(1);
    drop_version("m", 1, 101, 0);
    drop_version("other", 1, 7, 0);
    uh_server s;
    const char *args[] = {"--model-repository", repo,           "--model-control-mode",
                          "explicit",           "--load-model", "m",
                          "--api-key",          "sekrit",       NULL};
    uh_set_ready_headers(KEY);
    start_server(&s, args);
    char body[2048];
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/models/other/infer", KEY, "{}", body, sizeof body), 404);
    /* the repository endpoints need the key */
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/repository/models/m/unload", JSON_CT, NULL, NULL, 0), 401);
    ck_assert_int_eq(get_status(s.port, "POST", "/v2/repository/index", NULL, NULL, NULL, 0), 401);
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/repository/models/m/unload", KEY, NULL, body, sizeof body),
        200);
    ck_assert_str_eq(body, "{}");
    ck_assert_int_eq(get_status(s.port, "POST", "/v2/models/m/infer", KEY, "{}", body, sizeof body),
                     404);
    ck_assert_msg(strstr(body, "model 'm' is not loaded"), "%s", body);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/models/m/ready", KEY, NULL, NULL, 0), 404);
    ck_assert_int_eq(get_status(s.port, "GET", "/readyz", KEY, NULL, NULL, 0), 200);
    /* UNLOADING until the repository's thread has freed it, then UNAVAILABLE "unloaded" */
    for (int i = 0; i < 500 && !strstr(body, "\"reason\":\"unloaded\""); i++) {
        uh_sleep_ms(10);
        ck_assert_int_eq(get_status(s.port, "POST", "/v2/repository/index", KEY,
                                    "{\"ready\": false}", body, sizeof body),
                         200);
    }
    ck_assert_msg(strstr(body, "{\"name\":\"m\",\"version\":\"1\",\"state\":\"UNAVAILABLE\","
                               "\"reason\":\"unloaded\"}") &&
                      strstr(body, "{\"name\":\"other\"}"),
                  "%s", body);
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/repository/models/m/load", KEY, "{}", body, sizeof body),
        200);
    uh_response r;
    char *ib = infer_body(1);
    uh_request(s.port, "POST", "/v2/models/m/infer", KEY, ib, strlen(ib), &r);
    free(ib);
    float got[K];
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(v2_answer(&r, got), 1);
    ck_assert(close_enough(got, want[1], K));
    uh_response_release(&r);
    /* names that are not one plain folder name never reach the file system */
    static const char *bad[] = {
        "/v2/repository/models/%2e%2e/load", "/v2/repository/models/..%2F..%2Fetc/load",
        "/v2/repository/models/.hidden/load", "/v2/repository/models/a%25b/load"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long st = get_status(s.port, "POST", bad[i], KEY, NULL, body, sizeof body);
        ck_assert_msg(st == 400 || st == 404, "%s: %ld %s", bad[i], st, body);
    }
    ck_assert_int_eq(get_status(s.port, "POST", "/v2/repository/models/%2e%2e/load", KEY, NULL,
                                body, sizeof body),
                     400);
    ck_assert_msg(strstr(body, "starts with '.'"), "%s", body);
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/repository/models/nope/load", KEY, NULL, body, sizeof body),
        404);
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/repository/models/m/load", KEY, "[1]", body, sizeof body),
        400);
    uh_set_ready_headers(NULL);
    stop_server(&s);
}
END_TEST

/* Triton's statistics count exactly what was sent; versioned paths on both protocols; the
 * TF Serving status lists every version; --model files are served beside the repository. */
START_TEST(test_stats_and_versioned_paths) {
    prepare(2);
    drop_version("m", 1, 101, 0);
    drop_version("m", 2, 102, 0);
    write_text("m/config.json", "{\"version_policy\": {\"latest\": 2}, \"max_batch\": 4}");
    char fixed[512];
    snprintf(fixed, sizeof fixed, "%s/../resattn-fixed-%d.safetensors", repo, (int)getpid());
    size_t len;
    unsigned char *b = model_bytes(9, 0, &len);
    ck_assert_int_eq(ut_write_file(fixed, b, len), 0);
    free(b);
    uh_server s;
    const char *args[] = {"--model-repository", repo, "--model", fixed, NULL};
    start_server(&s, args);
    unlink(fixed);
    char fixed_name[128], body[8192];
    snprintf(fixed_name, sizeof fixed_name, "/v2/models/resattn-fixed-%d/infer", (int)getpid());
    char *one = infer_body(1);
    ck_assert_int_eq(get_status(s.port, "POST", fixed_name, JSON_CT, one, body, sizeof body), 200);
    free(one);
    ck_assert_msg(strstr(body, "\"model_version\":\"1\""), "%s", body);
    ck_assert_int_eq(infer_version(s.port, "/v2/models/m/infer"), 2);
    ck_assert_int_eq(infer_version(s.port, "/v2/models/m/versions/1/infer"), 1);
    ck_assert_int_eq(infer_version(s.port, "/v2/models/m/versions/2/infer"), 2);
    /* TF Serving: unversioned and versioned :predict */
    char tfs[PER * 20 + 64];
    int o = snprintf(tfs, sizeof tfs, "{\"instances\":[[");
    for (int i = 0; i < PER; i++)
        o += snprintf(tfs + o, sizeof tfs - (size_t)o, i ? ",%.9g" : "%.9g", input[i]);
    snprintf(tfs + o, sizeof tfs - (size_t)o, "]]}");
    for (int v = 1; v <= 2; v++) {
        uh_response r;
        uh_request(s.port, "POST",
                   v == 1 ? "/v1/models/m/versions/1:predict" : "/v1/models/m:predict", JSON_CT,
                   tfs, strlen(tfs), &r);
        ck_assert_int_eq(r.status, 200);
        json_t *j = json_loadb((const char *)r.body, r.len, 0, NULL);
        json_t *d = json_array_get(json_object_get(j, "predictions"), 0);
        float got[K];
        for (int k = 0; k < K; k++)
            got[k] = (float)json_number_value(json_array_get(d, k));
        ck_assert_msg(close_enough(got, want[v], K), "TF Serving answer of version %d", v);
        json_decref(j);
        uh_response_release(&r);
    }
    ck_assert_int_eq(get_status(s.port, "GET", "/v1/models/m", NULL, NULL, body, sizeof body), 200);
    ck_assert_str_eq(body, "{\"model_version_status\":[{\"version\":\"2\",\"state\":\"AVAILABLE\","
                           "\"status\":{\"error_code\":\"OK\",\"error_message\":\"\"}},{"
                           "\"version\":\"1\",\"state\":\"AVAILABLE\",\"status\":{\"error_code\":"
                           "\"OK\",\"error_message\":\"\"}}]}");
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/models/m", NULL, NULL, body, sizeof body), 200);
    ck_assert_msg(strstr(body, "\"versions\":[\"2\",\"1\"]"), "%s", body);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/models/m/versions/3", NULL, NULL, NULL, 0),
                     404);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2", NULL, NULL, body, sizeof body), 200);
    ck_assert_msg(strstr(body, "\"model_repository\"") && strstr(body, "\"statistics\""), "%s",
                  body);
    /* statistics: exactly what was sent to version 1 (2 single requests above + these) */
    char *two = infer_body(2);
    for (int i = 0; i < 3; i++) {
        uh_response r;
        uh_request(s.port, "POST", "/v2/models/m/versions/1/infer", JSON_CT, two, strlen(two), &r);
        ck_assert_int_eq(r.status, 200);
        uh_response_release(&r);
    }
    free(two);
    ck_assert_int_eq(get_status(s.port, "POST", "/v2/models/m/versions/1/infer", JSON_CT,
                                "{\"inputs\": 1}", NULL, 0),
                     400);
    ck_assert_int_eq(
        get_status(s.port, "GET", "/v2/models/m/versions/1/stats", NULL, NULL, body, sizeof body),
        200);
    json_t *st = json_loads(body, 0, NULL);
    json_t *e = json_array_get(json_object_get(st, "model_stats"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")), "m");
    ck_assert_str_eq(json_string_value(json_object_get(e, "version")), "1");
    json_t *is = json_object_get(e, "inference_stats");
    /* 1 (v2 path) + 1 (TF Serving) + 3 two-image requests */
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(is, "success"), "count")),
                     5);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(is, "fail"), "count")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(e, "inference_count")), 8);
    ck_assert_int_gt(json_integer_value(json_object_get(e, "last_inference")), 0);
    static const char *phases[] = {"queue", "compute_input", "compute_infer", "compute_output"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(
            json_integer_value(json_object_get(json_object_get(is, phases[i]), "count")), 5);
    ck_assert_int_gt(
        json_integer_value(json_object_get(json_object_get(is, "compute_infer"), "ns")), 0);
    json_decref(st);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/models/stats", NULL, NULL, body, sizeof body),
                     200);
    st = json_loads(body, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(st, "model_stats")), 3); /* m 2, m 1, fixed */
    json_decref(st);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/models/nope/stats", NULL, NULL, NULL, 0), 404);
    /* metrics: load outcomes, loaded versions, per-version requests */
    ck_assert_int_eq(get_status(s.port, "GET", "/metrics", NULL, NULL, NULL, 0), 200);
    uh_response r;
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    const char *text = (const char *)r.body;
    ck_assert(strstr(text, "resattn_model_loads_total{model=\"m\",result=\"success\"} 2\n"));
    ck_assert(strstr(text, "resattn_model_versions_loaded{model=\"m\"} 2\n"));
    ck_assert(strstr(text, "resattn_model_serving_version{model=\"m\"} 2\n"));
    ck_assert(strstr(
        text, "resattn_model_requests_total{model=\"m\",version=\"1\",result=\"success\"} 5\n"));
    ck_assert(strstr(
        text, "resattn_inference_requests_total{model=\"m\",protocol=\"http\",code=\"200\"}"));
    uh_response_release(&r);
    stop_server(&s);
}
END_TEST

/* Readiness is strict: a model that should be served but has no ready version makes the
 * server unready until it has one. */
START_TEST(test_readiness_strict) {
    prepare(1);
    drop_version("m", 1, 101, 0);
    uh_server s;
    const char *args[] = {"--model-repository",
                          repo,
                          "--model-control-mode",
                          "poll",
                          "--repository-poll-secs",
                          "1",
                          NULL};
    start_server(&s, args);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/n/1", repo);
    ut_mkdirs(dir);
    write_text("n/1/model.safetensors", "this is not a model");
    char body[1024] = "";
    long st = 200;
    for (int i = 0; i < 300 && st == 200; i++) {
        uh_sleep_ms(20);
        st = get_status(s.port, "GET", "/readyz", NULL, NULL, body, sizeof body);
    }
    ck_assert_int_eq(st, 503);
    ck_assert_msg(strstr(body, "no ready version"), "%s", body);
    ck_assert_int_eq(get_status(s.port, "GET", "/v2/health/ready", NULL, NULL, NULL, 0), 503);
    ck_assert_int_eq(infer_version(s.port, "/v2/models/m/infer"), 1); /* m serves on */
    ck_assert_int_eq(
        get_status(s.port, "POST", "/v2/models/n/infer", JSON_CT, "{}", body, sizeof body), 503);
    ck_assert_msg(strstr(body, "model.safetensors"), "%s", body);
    snprintf(dir, sizeof dir, "%s/n/1", repo);
    ut_rm_tree(dir);
    drop_version("n", 1, 55, 0);
    for (int i = 0; i < 300 && st != 200; i++) {
        uh_sleep_ms(20);
        st = get_status(s.port, "GET", "/readyz", NULL, NULL, NULL, 0);
    }
    ck_assert_int_eq(st, 200);
    stop_server(&s);
}
END_TEST

/* 20 swaps by SIGHUP (mode none): each old version is freed, so the resident size after 20
 * stays within 10% of the size after 2. A second model (8 MB, given with --model) stays
 * loaded, as on a real server (about 56 MB resident in all): glibc keeps up to a few MB of
 * freed memory at the top of the loading thread's heap (measured: 12 to 17 MB of anonymous
 * memory from one swap to the next, no trend), which on a bare 20 MB process would exceed
 * 10% by itself; one leaked version per swap (weights and a context per worker, > 3 MB)
 * still adds > 50 MB. */
START_TEST(test_swaps_do_not_leak) {
    /* under AddressSanitizer freed memory waits in a quarantine; keep it small so that the
     * resident size shows what is still allocated (no effect without ASan) */
    setenv("ASAN_OPTIONS", "quarantine_size_mb=1:detect_leaks=1", 1);
    drop_version("m", 1, 201, 1);
    char big[600];
    snprintf(big, sizeof big, "%s/../resattn-big-%d.safetensors", repo, (int)getpid());
    static const int layers[2] = {2, 2}, widths[2] = {128, 256};
    ut_model um;
    ut_model_init(&um, NULL, 3);
    ut_build_resnet(&um, "basic", "cifar", "none", 2, layers, widths, C, H, W, K);
    size_t len;
    unsigned char *bytes = ut_serialize(&um, &len);
    ut_model_free(&um);
    ck_assert_int_eq(ut_write_file(big, bytes, len), 0);
    free(bytes);
    uh_server s;
    const char *args[] = {"--model-repository", repo, "--model", big, "--workers", "2", NULL};
    start_server(&s, args);
    unlink(big);
    long after2 = 0;
    char body[1024];
    for (int v = 2; v <= 21; v++) {
        drop_version("m", v, 200 + (unsigned)v, 1);
        kill(s.pid, SIGHUP);
        char want_v[32];
        snprintf(want_v, sizeof want_v, "\"model_version\":\"%d\"", v);
        int served = 0;
        char *ib = infer_body(1);
        for (int i = 0; i < 1000 && !served; i++) {
            uh_response r;
            uh_request(s.port, "POST", "/v2/models/m/infer", JSON_CT, ib, strlen(ib), &r);
            ck_assert_int_eq(r.status, 200);
            served = r.body && memmem(r.body, r.len, want_v, strlen(want_v));
            uh_response_release(&r);
            if (!served)
                uh_sleep_ms(10);
        }
        free(ib);
        ck_assert_msg(served, "version %d never served", v);
        /* sample only once the old version is freed (UNAVAILABLE "unloaded" in the index)
         * and its pages given back (the repository's thread trims right after freeing) */
        char freed[128];
        snprintf(freed, sizeof freed,
                 "\"version\":\"%d\",\"state\":\"UNAVAILABLE\",\"reason\":\"unloaded\"", v - 1);
        int gone = 0;
        for (int i = 0; i < 500 && !gone; i++) {
            get_status(s.port, "POST", "/v2/repository/index", JSON_CT, NULL, body, sizeof body);
            gone = strstr(body, freed) != NULL;
            if (!gone)
                uh_sleep_ms(10);
        }
        ck_assert_msg(gone, "version %d was not freed: %s", v - 1, body);
        uh_sleep_ms(100);
        if (v == 3)
            after2 = resattn_resident_bytes(s.pid);
    }
    long after20 = resattn_resident_bytes(s.pid);
    ck_assert_int_gt(after2, 0);
    ck_assert_msg(after20 <= after2 + after2 / 10,
                  "resident memory %.1f MB after 20 swaps vs %.1f MB after 2", after20 / 1e6,
                  after2 / 1e6);
    ck_assert_int_eq(log_count(&s, ": unloading ("), 20);
    stop_server(&s); /* exit 0: under ASan, also no leak at exit */
}
END_TEST

START_TEST(test_options_checked) {
    /* option combinations that cannot work are usage errors (exit 2) with one line */
    static const char *const cases[][6] = {
        {"--model-control-mode", "poll", NULL},
        {"--model-repository", "/nonexistent-dir", NULL},
        {"--model-repository", "/tmp", "--load-model", "m", NULL},
        {"--model-repository", "/tmp", "--model-control-mode", "explicit", "--load-model", "../x"},
        {"--model-control-mode", "sometimes", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024];
        int o = snprintf(cmd, sizeof cmd, "%s serve --port 0", uh_binary());
        for (int j = 0; j < 6 && cases[i][j]; j++)
            o += snprintf(cmd + o, sizeof cmd - (size_t)o, " '%s'", cases[i][j]);
        snprintf(cmd + o, sizeof cmd - (size_t)o, " >/dev/null 2>&1");
        int rc = system(cmd);
        ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "%s: exit %d", cmd, WEXITSTATUS(rc));
    }
}
END_TEST

Suite *repository_http_suite(void) {
    Suite *s = suite_create("repository_http");
    TCase *t = tcase_create("server");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, test_swap_under_load);
    tcase_add_test(t, test_half_written_file);
    tcase_add_test(t, test_explicit_unload_load);
    tcase_add_test(t, test_stats_and_versioned_paths);
    tcase_add_test(t, test_readiness_strict);
    tcase_add_test(t, test_swaps_do_not_leak);
    tcase_add_test(t, test_options_checked);
    suite_add_tcase(s, t);
    return s;
}
