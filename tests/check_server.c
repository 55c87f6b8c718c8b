/*
 * Tests of the server: the option table, metrics (checked by promtool), the worker pool
 * in-process (batch composition does not change results, capacity, timeouts, exactly one
 * completion per job), and `resattn serve` as a child process on a free loopback port driven
 * by libcurl: every endpoint, answers equal to `resattn predict`, 32 concurrent clients, 503
 * when the queue is full, 504 on timeout, SIGTERM under load.
 */
#include "cli/config.h"
#include "cli/default_model.h"
#include "runtime/metrics.h"
#include "data/npy.h"
#include "runtime/pool.h"
#include "util_http.h"
#include "util_st.h"
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define FIXTURE "tests/fixtures/basic_cifar_se"
#define RTOL 1e-5

/* ---- helpers ---------------------------------------------------------------------------- */

static resattn_model *load_model(const char *path) {
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    ck_assert_msg(resattn_model_load_file(path, &m, err, sizeof err) == RESATTN_OK, "%s: %s", path,
                  err);
    return m;
}

static void load_npy(const char *path, resattn_npy *a) {
    size_t len = 0;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    char err[RESATTN_ERR_LEN];
    ck_assert_msg(resattn_npy_parse(buf, len, a, err, sizeof err) == RESATTN_OK, "%s: %s", path,
                  err);
    free(buf);
}

/* Deterministic inputs in [-1, 1]. */
static void fill(float *x, size_t n, unsigned seed) {
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) * (2.0 / 16777216.0) - 1.0);
    }
}

/* Logits of each image computed alone (batch of one): the truth for batched answers. */
static float *single_logits(resattn_model *m, const float *x, int n) {
    const resattn_model_info *i = resattn_model_get_info(m);
    size_t per = (size_t)i->in_channels * i->in_height * i->in_width;
    float *out = malloc(sizeof(float) * (size_t)n * i->num_classes);
    resattn_ctx *ctx = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_ctx_new(m, 1, &ctx, err, sizeof err) == RESATTN_OK);
    for (int j = 0; j < n; j++)
        ck_assert_msg(resattn_forward(ctx, x + per * j, 1, out + (size_t)i->num_classes * j, err,
                                      sizeof err) == RESATTN_OK,
                      "%s", err);
    resattn_ctx_free(ctx);
    return out;
}

static int close_enough(const float *a, const float *b, size_t n, double rtol) {
    for (size_t i = 0; i < n; i++) {
        double tol = rtol * fmax(1.0, fabs(b[i]));
        if (!(fabs((double)a[i] - b[i]) <= tol))
            return 0;
    }
    return 1;
}

/* A v2 JSON request body with flat data; extra is appended inside the top object. */
static char *v2_body(const float *x, int n, int c, int h, int w, const char *extra) {
    size_t count = (size_t)n * c * h * w, cap = count * 20 + 512;
    char *b = malloc(cap);
    int o = snprintf(b, cap,
                     "{\"id\":\"t1\",\"inputs\":[{\"name\":\"input\",\"shape\":[%d,%d,%d,%d],"
                     "\"datatype\":\"FP32\",\"data\":[",
                     n, c, h, w);
    for (size_t i = 0; i < count; i++)
        o += snprintf(b + o, cap - (size_t)o, i ? ",%.9g" : "%.9g", x[i]);
    snprintf(b + o, cap - (size_t)o, "]}]%s}", extra ? extra : "");
    return b;
}

/* The `logits` output of a v2 JSON answer into out [count]; 0 on success. */
static int v2_logits(const uh_response *r, float *out, size_t count) {
    json_error_t je;
    json_t *o = json_loadb((const char *)r->body, r->len, 0, &je);
    if (!o)
        return -1;
    int rc = -1;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(o, "outputs"), i, t) {
        if (strcmp(json_string_value(json_object_get(t, "name")) ?: "", "logits"))
            continue;
        json_t *d = json_object_get(t, "data");
        if (json_array_size(d) != count)
            break;
        for (size_t j = 0; j < count; j++)
            out[j] = (float)json_number_value(json_array_get(d, j));
        rc = 0;
    }
    json_decref(o);
    return rc;
}

static const char *JSON_CT[] = {"Content-Type: application/json", NULL};

/* A wide network on 64x64 inputs: slow enough (tens of ms) to fill queues and time out. */
static void write_slow_model(const char *path, int side) {
    ut_model um;
    ut_model_init(&um, NULL, 7);
    static const int layers[] = {2, 2, 2, 2}, widths[] = {64, 128, 256, 512};
    ut_build_resnet(&um, "basic", "cifar", "se", 4, layers, widths, 3, side, side, 10);
    size_t len = 0;
    unsigned char *bytes = ut_serialize(&um, &len);
    ck_assert(ut_write_file(path, bytes, len) == 0);
    free(bytes);
    ut_model_free(&um);
}

static long metric_value(const char *text, const char *name) {
    const char *p = strstr(text, name);
    while (p && p != text && p[-1] != '\n')
        p = strstr(p + 1, name);
    return p ? atol(p + strlen(name)) : -1;
}

/* ---- options ---------------------------------------------------------------------------- */

START_TEST(test_config_sources) {
    resattn_server_config c;
    char err[256];
    setenv("RESATTN_PORT", "1234", 1);
    setenv("RESATTN_MAX_BATCH", "4", 1);
    setenv("RESATTN_MODEL", "a.safetensors,b.safetensors", 1);
    char *argv1[] = {"serve", "--port", "99", "--log-format=json", NULL};
    ck_assert_int_eq(resattn_server_config_parse(4, argv1, &c, stdout, err, sizeof err), 0);
    ck_assert_int_eq(c.port, 99);     /* flag beats environment */
    ck_assert_int_eq(c.max_batch, 4); /* environment beats default */
    ck_assert_int_eq(c.num_models, 2);
    ck_assert_str_eq(c.models[1], "b.safetensors");
    ck_assert_int_eq(c.log_json, 1);
    ck_assert_int_eq(c.queue_capacity, 64);
    ck_assert_int_le(c.workers * c.blas_threads, resattn_usable_cpus());
    resattn_server_config_release(&c);

    char *argv2[] = {"serve", "--model", "x.safetensors", "--allow-nonfinite", NULL};
    ck_assert_int_eq(resattn_server_config_parse(4, argv2, &c, stdout, err, sizeof err), 0);
    ck_assert_int_eq(c.num_models, 1); /* flags replace the environment's list */
    ck_assert_str_eq(c.models[0], "x.safetensors");
    ck_assert_int_eq(c.allow_nonfinite, 1);
    resattn_server_config_release(&c);

    char *argv3[] = {"serve", "--max-batch", "0", NULL};
    ck_assert_int_eq(resattn_server_config_parse(3, argv3, &c, stdout, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--max-batch") != NULL, "%s", err);
    resattn_server_config_release(&c);

    char *argv4[] = {"serve", "--no-such", NULL};
    ck_assert_int_eq(resattn_server_config_parse(2, argv4, &c, stdout, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--no-such") != NULL, "%s", err);
    resattn_server_config_release(&c);

    setenv("RESATTN_WORKERS", "x", 1);
    char *argv5[] = {"serve", NULL};
    ck_assert_int_eq(resattn_server_config_parse(1, argv5, &c, stdout, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "RESATTN_WORKERS") != NULL, "%s", err);
    resattn_server_config_release(&c);
    unsetenv("RESATTN_WORKERS");

    char *argv6[] = {"serve", "--workers", "1", NULL};
    ck_assert_int_eq(resattn_server_config_parse(3, argv6, &c, stdout, err, sizeof err), 0);
    ck_assert_int_eq(c.blas_threads, resattn_usable_cpus()); /* the rest goes to BLAS */
    resattn_server_config_release(&c);

    FILE *devnull = fopen("/dev/null", "w");
    char *argv7[] = {"serve", "--help", NULL};
    ck_assert_int_eq(resattn_server_config_parse(2, argv7, &c, devnull, err, sizeof err), 1);
    fclose(devnull);
    resattn_server_config_release(&c);
    unsetenv("RESATTN_PORT");
    unsetenv("RESATTN_MAX_BATCH");
    unsetenv("RESATTN_MODEL");
}
END_TEST

START_TEST(test_help_lists_env) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    resattn_server_config_help(f);
    fclose(f);
    const char *want[] = {"--model",
                          "RESATTN_MODEL",
                          "--max-delay-ms",
                          "RESATTN_QUEUE_CAPACITY",
                          "--drain-timeout-ms",
                          "RESATTN_DRAIN_DELAY_MS",
                          "--log-format",
                          "--blas-threads",
                          "--port-file"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(buf, want[i]) != NULL, "--help lacks %s", want[i]);
    free(buf);
}
END_TEST

/* ---- metrics ---------------------------------------------------------------------------- */

START_TEST(test_metrics_promtool) {
    resattn_metrics *m = resattn_metrics_new();
    resattn_model *model = load_model(FIXTURE ".safetensors");
    ck_assert_int_eq(resattn_metrics_add_model(m, "with \"quote\"", resattn_model_get_info(model)),
                     0);
    resattn_metrics_request(m, RESATTN_EP_V2_INFER, 0, 200, 0.003);
    resattn_metrics_request(m, RESATTN_EP_UNKNOWN, -1, 404, 0.0001);
    resattn_metrics_error(m, 404);
    resattn_metrics_reject(m, RESATTN_REJECT_QUEUE_FULL);
    resattn_metrics_queue_wait(m, 0, 0.002);
    resattn_metrics_batch(m, 0, 5, 0.01, 0.008);
    resattn_metrics_batch(m, 0, 1, 20.0, 1.5);
    resattn_metrics_batch(m, 7, 1, 1.0, 1.0); /* a model index never added: dropped */
    ck_assert_int_eq(resattn_metrics_add_compute_label(m, "gemm", "a \"b\"\\c"), 0);
    ck_assert_int_ne(resattn_metrics_add_compute_label(m, "Bad-Key", "x"), 0);
    size_t len = 0;
    char *text = resattn_metrics_render(m, &len);
    ck_assert(text != NULL);
    char out[4096];
    ck_assert_msg(uh_promtool_ok(text, len, out, sizeof out), "promtool: %s", out);
    ck_assert(strstr(text, "resattn_http_requests_total{endpoint=\"v2_infer\",code=\"200\"} 1"));
#define Q "model=\"with \\\"quote\\\"\""
    ck_assert(strstr(text, "resattn_batch_size_bucket{" Q ",le=\"4\"} 1\n"));
    ck_assert(strstr(text, "resattn_batch_size_bucket{" Q ",le=\"8\"} 2\n"));
    ck_assert(strstr(text, "resattn_inference_duration_seconds_bucket{" Q ",le=\"+Inf\"} 2\n"));
    ck_assert(strstr(text, "resattn_inference_cpu_seconds_total{" Q "} 1.508000000\n"));
    ck_assert(strstr(text, "resattn_inferences_total{" Q "} 6\n"));
    ck_assert(
        strstr(text, "resattn_inference_requests_total{" Q ",protocol=\"http\",code=\"200\"} 1\n"));
    ck_assert(strstr(
        text,
        "resattn_request_duration_seconds_count{endpoint=\"v2_infer\",protocol=\"http\"} 1\n"));
    ck_assert(strstr(
        text,
        "resattn_request_duration_seconds_count{endpoint=\"unknown\",protocol=\"http\"} 1\n"));
    ck_assert(strstr(text, "resattn_compute_info{gemm=\"a \\\"b\\\"\\\\c\"} 1\n"));
#undef Q
    ck_assert(strstr(text, "resattn_requests_rejected_total{reason=\"queue_full\"} 1"));
    ck_assert_int_gt(metric_value(text, "process_resident_memory_bytes "), 0);
    ck_assert_int_gt(metric_value(text, "process_open_fds "), 2);
    free(text);
    resattn_model_free(model);
    resattn_metrics_free(m);
}
END_TEST

/* ---- worker pool in-process ------------------------------------------------------------- */

static atomic_int completions;

static void count_done(resattn_job *job) {
    (void)job;
    atomic_fetch_add(&completions, 1);
}

/* A warmed-up pool on models[0] (the pool keeps the array: it must outlive the pool). */
static resattn_pool *ready_pool(resattn_model *const *models, resattn_pool_options po) {
    resattn_pool *p = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert_msg(resattn_pool_new(models, 1, &po, NULL, &p, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    ck_assert_msg(resattn_pool_wait_ready(p, err, sizeof err) == 0, "%s", err);
    return p;
}

START_TEST(test_pool_batch_independent) {
    resattn_model *m = load_model(FIXTURE ".safetensors");
    const resattn_model_info *info = resattn_model_get_info(m);
    size_t per = (size_t)info->in_channels * info->in_height * info->in_width;
    int k = info->num_classes;
    static const int sizes[] = {1, 2, 1, 3, 1}; /* 8 images, one batch when gathered */
    enum { J = 5, TOTAL = 8 };
    float *x = malloc(sizeof(float) * per * TOTAL);
    fill(x, per * TOTAL, 3);
    float *want = single_logits(m, x, TOTAL);
    float *got = calloc((size_t)TOTAL * k, sizeof(float));
    resattn_model *models[] = {m};
    resattn_pool *p = ready_pool(
        models,
        (resattn_pool_options){.workers = 1, .max_batch = 8, .max_delay_ms = 500, .capacity = 16});
    resattn_job jobs[J];
    memset(jobs, 0, sizeof jobs);
    atomic_store(&completions, 0);
    int off = 0;
    for (int j = 0; j < J; j++) {
        jobs[j] = (resattn_job){.model = 0,
                                .input = x + per * off,
                                .n = sizes[j],
                                .logits = got + (size_t)k * off,
                                .deadline = resattn_now() + 60,
                                .done = count_done};
        off += sizes[j];
        ck_assert_int_eq(resattn_pool_reserve(p), 0);
        resattn_pool_push(p, &jobs[j]);
    }
    resattn_pool_free(p); /* finishes the queue, then joins */
    ck_assert_int_eq(atomic_load(&completions), J);
    int batched = 0;
    for (int j = 0; j < J; j++) {
        ck_assert_int_eq(jobs[j].status, 0);
        batched |= jobs[j].batch_size > jobs[j].n;
    }
    ck_assert_msg(batched, "no job was computed in a batch with others");
    ck_assert_msg(close_enough(got, want, (size_t)TOTAL * k, RTOL),
                  "batched logits differ from single-image logits");
    free(x);
    free(want);
    free(got);
    resattn_model_free(m);
}
END_TEST

/* A job whose `done` blocks keeps the only worker busy (done runs on the worker thread). */
static atomic_int hold_worker;

static void blocking_done(resattn_job *job) {
    (void)job;
    atomic_fetch_add(&completions, 1);
    while (atomic_load(&hold_worker))
        usleep(1000);
}

/* A queued job whose deadline passes while every worker is busy is answered 504 at its
 * deadline by the reaper, not when a worker comes free; jobs that wait for a free worker
 * within their deadline are computed. */
START_TEST(test_pool_deadline_while_busy) {
    resattn_model *m = load_model(FIXTURE ".safetensors");
    const resattn_model_info *info = resattn_model_get_info(m);
    size_t per = (size_t)info->in_channels * info->in_height * info->in_width;
    resattn_model *models[] = {m};
    resattn_pool *p = ready_pool(
        models,
        (resattn_pool_options){.workers = 1, .max_batch = 1, .max_delay_ms = 0, .capacity = 4});
    float *x = calloc(per, sizeof(float));
    float logits[3][64];
    atomic_store(&completions, 0);
    atomic_store(&hold_worker, 1);
    resattn_job busy = {.input = x,
                        .n = 1,
                        .logits = logits[0],
                        .deadline = resattn_now() + 60,
                        .done = blocking_done};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(resattn_pool_reserve(p), 0);
    resattn_pool_push(p, &busy);
    for (int i = 0; i < 2500 && atomic_load(&completions) < 1; i++)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&completions), 1); /* the worker now blocks in done */
    double t0 = resattn_now();
    resattn_job late = {
        .input = x, .n = 1, .logits = logits[1], .deadline = t0 + 0.15, .done = count_done};
    resattn_job patient = {
        .input = x, .n = 1, .logits = logits[2], .deadline = t0 + 60, .done = count_done};
    resattn_pool_push(p, &patient);
    resattn_pool_push(p, &late); /* queued behind, but it expires first */
    for (int i = 0; i < 2500 && atomic_load(&completions) < 2; i++)
        usleep(2000);
    double waited = resattn_now() - t0;
    ck_assert_int_eq(atomic_load(&completions), 2);
    ck_assert_int_eq(late.status, 504);
    ck_assert_msg(waited >= 0.15 && waited < 2.0, "504 after %.3f s, deadline 0.15 s", waited);
    atomic_store(&hold_worker, 0); /* the worker comes free and computes the patient job */
    for (int i = 0; i < 2500 && atomic_load(&completions) < 3; i++)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&completions), 3);
    ck_assert_int_eq(patient.status, 0);
    ck_assert_int_eq(resattn_pool_reserve(p), 0); /* each completion gave its slot back */
    resattn_pool_unreserve(p);
    resattn_pool_free(p);
    free(x);
    resattn_model_free(m);
}
END_TEST

START_TEST(test_pool_capacity_and_deadline) {
    resattn_model *m = load_model(FIXTURE ".safetensors");
    const resattn_model_info *info = resattn_model_get_info(m);
    size_t per = (size_t)info->in_channels * info->in_height * info->in_width;
    resattn_model *models[] = {m};
    resattn_pool *p = ready_pool(
        models,
        (resattn_pool_options){.workers = 1, .max_batch = 2, .max_delay_ms = 0, .capacity = 2});
    ck_assert_int_eq(resattn_pool_reserve(p), 0);
    ck_assert_int_eq(resattn_pool_reserve(p), 0);
    ck_assert_int_eq(resattn_pool_reserve(p), -1); /* full */
    float *x = calloc(per, sizeof(float));
    float logits[64];
    atomic_store(&completions, 0);
    resattn_job late = {.model = 0,
                        .input = x,
                        .n = 1,
                        .logits = logits,
                        .deadline = resattn_now() - 1,
                        .done = count_done};
    resattn_pool_push(p, &late);
    resattn_pool_unreserve(p);
    for (int i = 0; i < 500 && atomic_load(&completions) < 1; i++)
        usleep(2000);
    ck_assert_int_eq(atomic_load(&completions), 1);
    ck_assert_int_eq(late.status, 504);
    ck_assert_int_eq(resattn_pool_reserve(p), 0); /* slots came back */
    resattn_pool_unreserve(p);
    resattn_pool_free(p);
    ck_assert_int_eq(atomic_load(&completions), 1);
    free(x);
    resattn_model_free(m);
}
END_TEST

/* ---- the server as a process ------------------------------------------------------------ */

static void expect_status(int port, const char *method, const char *path, long status,
                          const char *body_part) {
    uh_response r;
    uh_request(port, method, path, NULL, NULL, 0, &r);
    ck_assert_msg(r.status == status, "%s %s: %ld, want %ld (%s)", method, path, r.status, status,
                  r.body ? (char *)r.body : "");
    ck_assert_msg(!body_part || (r.body && strstr((char *)r.body, body_part)),
                  "%s %s: body %s lacks %s", method, path, r.body ? (char *)r.body : "", body_part);
    ck_assert_msg(strlen(r.request_id) > 0, "%s %s: no X-Request-Id", method, path);
    ck_assert_msg(!strncmp(r.content_type, "application/json", 16) ||
                      !strncmp(r.content_type, "text/plain", 10),
                  "%s %s: Content-Type %s", method, path, r.content_type);
    uh_response_release(&r);
}

START_TEST(test_endpoints) {
    uh_server s;
    const char *args[] = {"--model",
                          FIXTURE ".safetensors",
                          "--model",
                          "tests/fixtures/bottleneck_imagenet_eca.safetensors",
                          "--max-body-bytes",
                          "4096",
                          NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    int port = s.port;
    expect_status(port, "GET", "/v2", 200, "\"binary_tensor_data\"");
    expect_status(port, "GET", "/v2/health/live", 200, "\"live\":true");
    expect_status(port, "GET", "/v2/health/ready", 200, "\"ready\":true");
    expect_status(port, "GET", "/healthz", 200, "ok");
    expect_status(port, "GET", "/readyz", 200, "ready");
    expect_status(port, "GET", "/v2/models/basic_cifar_se", 200,
                  "\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[-1,1,9,11]},");
    expect_status(port, "GET", "/v2/models/bottleneck_imagenet_eca", 200,
                  "\"platform\":\"resattn_safetensors\"");
    expect_status(port, "GET", "/v2/models/basic_cifar_se/ready", 200, "\"ready\":true");
    expect_status(port, "GET", "/v2/models/basic_cifar_se/versions/1", 200, "\"versions\":[\"1\"]");
    expect_status(port, "GET", "/v2/models/basic_cifar_se/versions/1/ready", 200, "true");
    expect_status(port, "GET", "/v2/models/basic_cifar_se/versions/7", 404, "version '7'");
    expect_status(port, "GET", "/v2/models/nope", 404, "model 'nope' not found");
    expect_status(port, "POST", "/v2/models/nope/infer", 404, "'nope'");
    expect_status(port, "GET", "/v1/models/basic_cifar_se", 200, "\"state\":\"AVAILABLE\"");
    expect_status(port, "GET", "/v1/models/nope", 404, "'nope'");
    expect_status(port, "GET", "/nothing/here", 404, "\"error\"");
    expect_status(port, "GET", "/metrics", 200, "resattn_model_info{model=\"basic_cifar_se\"");

    /* 405 with Allow */
    uh_response r;
    uh_request(port, "GET", "/v2/models/basic_cifar_se/infer", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "POST");
    uh_response_release(&r);
    uh_request(port, "DELETE", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "GET, HEAD");
    uh_response_release(&r);
    /* 415 */
    const char *text_ct[] = {"Content-Type: text/plain", NULL};
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", text_ct, "hello", 5, &r);
    ck_assert_int_eq(r.status, 415);
    ck_assert(strstr((char *)r.body, "\"error\""));
    uh_response_release(&r);
    uh_request(port, "POST", "/v1/models/basic_cifar_se:predict", text_ct, "hello", 5, &r);
    ck_assert_int_eq(r.status, 415);
    uh_response_release(&r);
    /* curl -d's default type is read as JSON on :predict, as TF Serving does */
    const char *form_ct[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    uh_request(port, "POST", "/v1/models/basic_cifar_se:predict", form_ct, "hello", 5, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert(strstr((char *)r.body, "\"error\""));
    uh_response_release(&r);
    /* 400 on broken JSON, with a message */
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, "{\"inputs\": [", 12, &r);
    ck_assert_int_eq(r.status, 400);
    ck_assert(strstr((char *)r.body, "{\"error\":"));
    uh_response_release(&r);
    /* 413: Content-Length above --max-body-bytes */
    char *big = calloc(1, 8192);
    memset(big, ' ', 8191);
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, big, 8191, &r);
    ck_assert_int_eq(r.status, 413);
    uh_response_release(&r);
    free(big);
    /* X-Request-Id echoed, and generated ids differ */
    const char *rid[] = {"X-Request-Id: abc-123", NULL};
    uh_request(port, "GET", "/healthz", rid, NULL, 0, &r);
    ck_assert_str_eq(r.request_id, "abc-123");
    uh_response_release(&r);
    uh_response r2;
    uh_request(port, "GET", "/healthz", NULL, NULL, 0, &r);
    uh_request(port, "GET", "/healthz", NULL, NULL, 0, &r2);
    ck_assert_str_ne(r.request_id, r2.request_id);
    uh_response_release(&r);
    uh_response_release(&r2);
    /* the live /metrics passes promtool and counted the errors above */
    uh_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    char out[4096];
    ck_assert_msg(uh_promtool_ok((char *)r.body, r.len, out, sizeof out), "promtool: %s", out);
    ck_assert_msg(
        strstr((char *)r.body, "resattn_http_requests_total{endpoint=\"v2_infer\",code=\"415\"} 1"),
        "%s", r.body);
    ck_assert(strstr((char *)r.body, "resattn_http_errors_total{code=\"413\"} 1"));
    ck_assert(
        strstr((char *)r.body, "resattn_requests_rejected_total{reason=\"body_too_large\"} 1"));
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* POST /v2/repository/index (Triton's index, which the page's model picker reads): every
 * served model in --model order, {"ready": true} keeps the ready ones, a bad body is a 400. */
START_TEST(test_repository_index) {
    uh_server s;
    const char *args[] = {"--model", FIXTURE ".safetensors", "--model",
                          "tests/fixtures/bottleneck_imagenet_eca.safetensors", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    const char *want = "[{\"name\":\"basic_cifar_se\",\"version\":\"1\",\"state\":\"READY\"},"
                       "{\"name\":\"bottleneck_imagenet_eca\",\"version\":\"1\",\"state\":"
                       "\"READY\"}]";
    const char *bodies[] = {"", "{\"ready\": true}", "{\"ready\": false}"};
    uh_response r;
    for (int i = 0; i < 3; i++) {
        uh_request(s.port, "POST", "/v2/repository/index", JSON_CT, bodies[i], strlen(bodies[i]),
                   &r);
        ck_assert_msg(r.status == 200, "body '%s': %ld", bodies[i], r.status);
        ck_assert_msg(r.len == strlen(want) && !memcmp(r.body, want, r.len), "body '%s': %.*s",
                      bodies[i], (int)r.len, (char *)r.body);
        uh_response_release(&r);
    }
    const char *bad[] = {"[1]", "{\"ready\": 1}", "{\"ready\""};
    for (int i = 0; i < 3; i++) {
        uh_request(s.port, "POST", "/v2/repository/index", JSON_CT, bad[i], strlen(bad[i]), &r);
        ck_assert_msg(r.status == 400 && strstr((char *)r.body, "{\"error\":\"repository index"),
                      "body '%s': %ld %s", bad[i], r.status, (char *)r.body);
        uh_response_release(&r);
    }
    uh_request(s.port, "GET", "/v2/repository/index", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(r.allow, "POST");
    uh_response_release(&r);
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_msg(strstr((char *)r.body, "resattn_http_requests_total{endpoint=\"v2_repository_"
                                         "index\",code=\"200\"} 3"),
                  "%s", (char *)r.body);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* `resattn predict` on the fixture input, as the reference of the HTTP answers. */
static float *predict_cli(const char *model, const char *input, size_t count) {
    char out[] = "/tmp/resattn-predict-XXXXXX";
    int fd = mkstemp(out);
    ck_assert(fd >= 0);
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s predict --model %s --input %s --output %s >/dev/null",
             uh_binary(), model, input, out);
    ck_assert_msg(system(cmd) == 0, "failed: %s", cmd);
    resattn_npy y;
    load_npy(out, &y);
    unlink(out);
    ck_assert_uint_eq(y.count, count);
    float *v = malloc(sizeof(float) * count);
    memcpy(v, y.data, sizeof(float) * count);
    resattn_npy_release(&y);
    return v;
}

static void check_v2_json(int port, const resattn_npy *x, const float *want, int k) {
    int n = (int)x->shape[0];
    char *body = v2_body(x->data, n, (int)x->shape[1], (int)x->shape[2], (int)x->shape[3], NULL);
    uh_response r;
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, body, strlen(body), &r);
    ck_assert_msg(r.status == 200, "v2 JSON: %ld %s", r.status, r.body ? (char *)r.body : "");
    float got[256];
    ck_assert_msg(v2_logits(&r, got, (size_t)n * k) == 0, "no logits in %s", r.body);
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "v2 JSON logits differ");
    ck_assert(strstr((char *)r.body, "\"model_name\":\"basic_cifar_se\""));
    uh_response_release(&r);
    free(body);
}

static void check_v2_binary(int port, const resattn_npy *x, const float *want, int k) {
    int n = (int)x->shape[0];
    size_t in_bytes = sizeof(float) * x->count;
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "{\"inputs\":[{\"name\":\"input\",\"shape\":[%d,%d,%d,%d],\"datatype\":"
                      "\"FP32\",\"parameters\":{\"binary_data_size\":%zu}}],\"outputs\":[{"
                      "\"name\":\"logits\",\"parameters\":{\"binary_data\":true}}]}",
                      n, (int)x->shape[1], (int)x->shape[2], (int)x->shape[3], in_bytes);
    unsigned char *body = malloc((size_t)hl + in_bytes);
    memcpy(body, head, (size_t)hl);
    memcpy(body + hl, x->data, in_bytes);
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Inference-Header-Content-Length: %d", hl);
    const char *headers[] = {"Content-Type: application/octet-stream", hdr, NULL};
    uh_response r;
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", headers, body,
               (size_t)hl + in_bytes, &r);
    ck_assert_msg(r.status == 200, "v2 binary: %ld %s", r.status, r.body ? (char *)r.body : "");
    ck_assert_msg(r.header_len >= 0, "no Inference-Header-Content-Length in the answer");
    size_t out_bytes = sizeof(float) * (size_t)n * k;
    ck_assert_uint_eq(r.len, (size_t)r.header_len + out_bytes);
    float got[256];
    memcpy(got, r.body + r.header_len, out_bytes);
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "v2 binary logits differ");
    ck_assert(memmem(r.body, (size_t)r.header_len, "binary_data_size", 16) != NULL);
    uh_response_release(&r);
    free(body);
}

static void check_npy_body(int port, const resattn_npy *x, const float *want, int k) {
    unsigned char *npy = NULL;
    size_t len = 0;
    ck_assert(resattn_npy_encode(x->data, x->ndim, x->shape, &npy, &len) == RESATTN_OK);
    const char *headers[] = {"Content-Type: application/x-npy", NULL};
    uh_response r;
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", headers, npy, len, &r);
    ck_assert_msg(r.status == 200, "npy: %ld %s", r.status, r.body ? (char *)r.body : "");
    int n = (int)x->shape[0];
    float got[256];
    ck_assert_msg(v2_logits(&r, got, (size_t)n * k) == 0, "no logits in %s", r.body);
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "npy logits differ");
    uh_response_release(&r);
    free(npy);
}

static void check_tfs(int port, const resattn_npy *x, const float *want, int k) {
    int n = (int)x->shape[0], c = (int)x->shape[1], h = (int)x->shape[2], w = (int)x->shape[3];
    size_t cap = x->count * 20 + 256;
    char *b = malloc(cap);
    int o = snprintf(b, cap, "{\"instances\":[");
    for (int i = 0; i < n; i++) {
        o += snprintf(b + o, cap - (size_t)o, i ? ",[" : "[");
        for (int ci = 0; ci < c; ci++) {
            o += snprintf(b + o, cap - (size_t)o, ci ? ",[" : "[");
            for (int y = 0; y < h; y++) {
                o += snprintf(b + o, cap - (size_t)o, y ? ",[" : "[");
                for (int xx = 0; xx < w; xx++)
                    o += snprintf(b + o, cap - (size_t)o, xx ? ",%.9g" : "%.9g",
                                  x->data[(((size_t)i * c + ci) * h + y) * w + xx]);
                o += snprintf(b + o, cap - (size_t)o, "]");
            }
            o += snprintf(b + o, cap - (size_t)o, "]");
        }
        o += snprintf(b + o, cap - (size_t)o, "]");
    }
    snprintf(b + o, cap - (size_t)o, "]}");
    uh_response r;
    uh_request(port, "POST", "/v1/models/basic_cifar_se:predict", JSON_CT, b, strlen(b), &r);
    ck_assert_msg(r.status == 200, "TFS: %ld %s", r.status, r.body ? (char *)r.body : "");
    json_t *o2 = json_loadb((char *)r.body, r.len, 0, NULL);
    json_t *pred = json_object_get(o2, "predictions");
    ck_assert_msg(json_array_size(pred) == (size_t)n, "TFS answer: %s", r.body);
    float got[256];
    for (int i = 0; i < n; i++) {
        json_t *row = json_array_get(pred, (size_t)i);
        ck_assert_int_eq(json_array_size(row), k);
        for (int j = 0; j < k; j++)
            got[i * k + j] = (float)json_number_value(json_array_get(row, (size_t)j));
    }
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "TFS predictions differ");
    json_decref(o2);
    uh_response_release(&r);
    free(b);
}

/* A .npy answer (Accept: application/x-npy) into out [count]; 0 when it is one [n, k] array. */
static int npy_answer(const uh_response *r, int n, int k, float *out) {
    resattn_npy a;
    char err[RESATTN_ERR_LEN];
    if (strcmp(r->content_type, "application/x-npy") ||
        resattn_npy_parse(r->body, r->len, &a, err, sizeof err) != RESATTN_OK)
        return -1;
    int ok = a.ndim == 2 && a.shape[0] == n && a.shape[1] == k;
    if (ok)
        memcpy(out, a.data, sizeof(float) * (size_t)n * k);
    resattn_npy_release(&a);
    return ok ? 0 : -1;
}

/* Accept: application/x-npy on the infer endpoint (both path forms, JSON, binary and npy
 * bodies): logits, or probabilities when only they are asked for; 406 for two tensors. */
static void check_npy_accept(int port, const resattn_npy *x, const float *want, int k) {
    int n = (int)x->shape[0], c = (int)x->shape[1], h = (int)x->shape[2], w = (int)x->shape[3];
    float got[256], probs[256];
    for (int i = 0; i < n; i++) { /* softmax of the expected logits */
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < k; j++)
            mx = fmax(mx, want[i * k + j]);
        for (int j = 0; j < k; j++)
            sum += exp(want[i * k + j] - mx);
        for (int j = 0; j < k; j++)
            probs[i * k + j] = (float)(exp(want[i * k + j] - mx) / sum);
    }
    const char *json_npy[] = {"Content-Type: application/json",
                              "Accept: application/json;q=0.5, application/x-npy", NULL};
    char *body = v2_body(x->data, n, c, h, w, NULL);
    uh_response r;
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", json_npy, body, strlen(body), &r);
    ck_assert_msg(r.status == 200, "npy answer: %ld %s", r.status, r.body ? (char *)r.body : "");
    ck_assert_msg(npy_answer(&r, n, k, got) == 0, "not a [%d,%d] .npy: %s", n, k, r.content_type);
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "npy answer logits differ");
    uh_response_release(&r);
    free(body);
    /* probabilities only, on the versions path */
    body = v2_body(x->data, n, c, h, w, ",\"outputs\":[{\"name\":\"probabilities\"}]");
    uh_request(port, "POST", "/v2/models/basic_cifar_se/versions/1/infer", json_npy, body,
               strlen(body), &r);
    ck_assert_msg(r.status == 200, "npy probabilities: %ld", r.status);
    ck_assert_msg(npy_answer(&r, n, k, got) == 0, "not a .npy: %s", r.content_type);
    ck_assert_msg(close_enough(got, probs, (size_t)n * k, RTOL), "npy probabilities differ");
    uh_response_release(&r);
    free(body);
    /* both tensors cannot be one .npy: 406 with a JSON error */
    body = v2_body(x->data, n, c, h, w,
                   ",\"outputs\":[{\"name\":\"logits\"},{\"name\":\"probabilities\"}]");
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", json_npy, body, strlen(body), &r);
    ck_assert_int_eq(r.status, 406);
    ck_assert_str_eq(r.content_type, "application/json");
    ck_assert_msg(strstr((char *)r.body, "one tensor"), "%s", r.body);
    uh_response_release(&r);
    /* q=0 refuses npy: the usual JSON answer */
    const char *no_npy[] = {"Content-Type: application/json",
                            "Accept: application/x-npy;q=0, application/json", NULL};
    uh_request(port, "POST", "/v2/models/basic_cifar_se/infer", no_npy, body, strlen(body), &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.content_type, "application/json");
    uh_response_release(&r);
    free(body);
    /* npy in, npy out */
    unsigned char *npy = NULL;
    size_t len = 0;
    ck_assert(resattn_npy_encode(x->data, x->ndim, x->shape, &npy, &len) == RESATTN_OK);
    const char *npy_npy[] = {"Content-Type: application/x-npy", "Accept: application/x-npy", NULL};
    uh_request(port, "POST", "/v2/models/basic_cifar_se/versions/1/infer", npy_npy, npy, len, &r);
    ck_assert_msg(r.status == 200, "npy in, npy out: %ld", r.status);
    ck_assert_msg(npy_answer(&r, n, k, got) == 0, "not a .npy: %s", r.content_type);
    ck_assert_msg(close_enough(got, want, (size_t)n * k, RTOL), "npy in/out logits differ");
    uh_response_release(&r);
    free(npy);
}

START_TEST(test_infer_equals_predict) {
    resattn_npy x;
    load_npy(FIXTURE ".in.npy", &x);
    resattn_model *m = load_model(FIXTURE ".safetensors");
    int k = resattn_model_get_info(m)->num_classes;
    int n = (int)x.shape[0];
    float *want = predict_cli(FIXTURE ".safetensors", FIXTURE ".in.npy", (size_t)n * k);
    uh_server s;
    const char *args[] = {"--model", FIXTURE ".safetensors", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    check_v2_json(s.port, &x, want, k);
    check_v2_binary(s.port, &x, want, k);
    check_npy_body(s.port, &x, want, k);
    check_npy_accept(s.port, &x, want, k);
    check_tfs(s.port, &x, want, k);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    free(want);
    resattn_model_free(m);
    resattn_npy_release(&x);
}
END_TEST

/* ---- concurrency ------------------------------------------------------------------------ */

typedef struct client_arg {
    int port, id, requests;
    const char *path;
    resattn_model *model; /* for the expected answers; NULL = only count statuses */
    int ok, wrong, s503, s504, other, failed, refused;
    int retry_after_seen;
    atomic_int *stop;
} client_arg;

static void *client_main(void *p) {
    client_arg *a = p;
    const resattn_model_info *info = resattn_model_get_info(a->model);
    int c = info->in_channels, h = info->in_height, w = info->in_width, k = info->num_classes;
    size_t per = (size_t)c * h * w;
    float *x = malloc(sizeof(float) * per);
    float *got = malloc(sizeof(float) * k);
    uh_client *cl = uh_client_new(a->port);
    for (int i = 0; a->requests ? i < a->requests : !atomic_load(a->stop); i++) {
        fill(x, per, (unsigned)(a->id * 1000 + i));
        char *body = v2_body(x, 1, c, h, w, NULL);
        uh_response r;
        uh_client_request(cl, "POST", a->path, JSON_CT, body, strlen(body), &r);
        free(body);
        if (r.status == 200) {
            a->ok++;
            if (a->requests) { /* check the answer against a batch-of-one forward pass */
                float *want = single_logits(a->model, x, 1);
                if (v2_logits(&r, got, (size_t)k) || !close_enough(got, want, (size_t)k, RTOL))
                    a->wrong++;
                free(want);
            }
        } else if (r.status == 503) {
            a->s503++;
            a->retry_after_seen |= r.retry_after[0] != 0;
        } else if (r.status == 504) {
            a->s504++;
        } else if (r.status) {
            a->other++;
        } else if (r.curl_error == CURLE_COULDNT_CONNECT) {
            a->refused++; /* the listener is closed: never accepted */
            uh_response_release(&r);
            break;
        } else {
            a->failed++; /* accepted but not answered */
            fprintf(stderr, "client %d: curl error %d\n", a->id, r.curl_error);
            uh_response_release(&r);
            break;
        }
        uh_response_release(&r);
    }
    uh_client_free(cl);
    free(x);
    free(got);
    return NULL;
}

static void run_clients(client_arg *args, int n) {
    pthread_t t[64];
    for (int i = 0; i < n; i++)
        ck_assert(pthread_create(&t[i], NULL, client_main, &args[i]) == 0);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
}

START_TEST(test_concurrent_32_batched) {
    resattn_model *m = load_model(FIXTURE ".safetensors");
    uh_server s;
    const char *args[] = {
        "--model", FIXTURE ".safetensors", "--max-batch", "8", "--max-delay-ms", "5", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    enum { N = 32 };
    client_arg ca[N];
    for (int i = 0; i < N; i++)
        ca[i] = (client_arg){.port = s.port,
                             .id = i,
                             .requests = 4,
                             .model = m,
                             .path = "/v2/models/basic_cifar_se/infer"};
    run_clients(ca, N);
    int ok = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(ca[i].wrong == 0, "client %d got %d wrong answers", i, ca[i].wrong);
        ck_assert_msg(ca[i].failed + ca[i].refused + ca[i].other + ca[i].s503 + ca[i].s504 == 0,
                      "client %d: failures", i);
        ok += ca[i].ok;
    }
    ck_assert_int_eq(ok, N * 4);
    uh_response r;
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    long single = metric_value((char *)r.body,
                               "resattn_batch_size_bucket{model=\"basic_cifar_se\",le=\"1\"} ");
    long batches =
        metric_value((char *)r.body, "resattn_batch_size_count{model=\"basic_cifar_se\"} ");
    ck_assert_msg(batches > 0 && single < batches, "no batch had more than one image");
    ck_assert_int_ge(
        metric_value((char *)r.body, "resattn_batch_size_sum{model=\"basic_cifar_se\"} "), N * 4);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    resattn_model_free(m);
}
END_TEST

START_TEST(test_queue_full_503) {
    char path[] = "/tmp/resattn-slow-XXXXXX.safetensors";
    int fd = mkstemps(path, 12);
    close(fd);
    write_slow_model(path, 64);
    resattn_model *m = load_model(path);
    uh_server s;
    const char *args[] = {"--model",          path, "--workers",   "1",
                          "--blas-threads",   "1",  "--max-batch", "1",
                          "--queue-capacity", "1",  NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char infer[128];
    snprintf(infer, sizeof infer, "/v2/models/%s/infer", strrchr(path, '/') + 1);
    *strstr(infer, ".safetensors") = 0;
    strcat(infer, "/infer");
    enum { N = 8 };
    client_arg ca[N];
    for (int i = 0; i < N; i++)
        ca[i] = (client_arg){.port = s.port, .id = i, .requests = 2, .model = m, .path = infer};
    run_clients(ca, N);
    int ok = 0, s503 = 0, retry = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(ca[i].failed + ca[i].refused + ca[i].other + ca[i].s504 + ca[i].wrong == 0,
                      "client %d: unexpected outcome", i);
        ok += ca[i].ok;
        s503 += ca[i].s503;
        retry |= ca[i].retry_after_seen;
    }
    ck_assert_int_eq(ok + s503, N * 2); /* every request answered */
    ck_assert_msg(s503 > 0, "the queue never overflowed (%d ok)", ok);
    ck_assert_msg(ok > 0, "nothing was computed");
    ck_assert_msg(retry, "503 without Retry-After");
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 60000), 0);
    resattn_model_free(m);
    unlink(path);
}
END_TEST

START_TEST(test_timeout_504) {
    char path[] = "/tmp/resattn-slow-XXXXXX.safetensors";
    int fd = mkstemps(path, 12);
    close(fd);
    write_slow_model(path, 64);
    resattn_model *m = load_model(path);
    uh_server s;
    const char *args[] = {"--model",
                          path,
                          "--workers",
                          "1",
                          "--blas-threads",
                          "1",
                          "--max-batch",
                          "1",
                          "--request-timeout-ms",
                          "5",
                          NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char infer[128];
    snprintf(infer, sizeof infer, "/v2/models/%s", strrchr(path, '/') + 1);
    *strstr(infer, ".safetensors") = 0;
    strcat(infer, "/infer");
    enum { N = 6 };
    client_arg ca[N];
    for (int i = 0; i < N; i++)
        ca[i] = (client_arg){.port = s.port, .id = i, .requests = 1, .model = m, .path = infer};
    run_clients(ca, N);
    int ok = 0, s504 = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(ca[i].failed + ca[i].refused + ca[i].other + ca[i].s503 + ca[i].wrong == 0,
                      "client %d: unexpected outcome", i);
        ok += ca[i].ok;
        s504 += ca[i].s504;
    }
    ck_assert_int_eq(ok + s504, N);
    ck_assert_msg(s504 > 0, "no request timed out");
    uh_response r;
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(
        metric_value((char *)r.body, "resattn_requests_rejected_total{reason=\"timeout\"} "), s504);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 60000), 0);
    resattn_model_free(m);
    unlink(path);
}
END_TEST

START_TEST(test_sigterm_under_load) {
    char path[] = "/tmp/resattn-slow-XXXXXX.safetensors";
    int fd = mkstemps(path, 12);
    close(fd);
    write_slow_model(path, 128);
    resattn_model *m = load_model(path);
    uh_server s;
    /* One worker, one image per batch: the 16 requests queued at the signal take 16 forward
     * passes to drain, long enough for the probe below to see readiness turn 503 even on a
     * loaded machine. Under ASan those passes outlast the default 30 s request timeout (the
     * last ones answered 504), so the timeout is raised: this test is about the drain. */
    const char *args[] = {
        "--model",     path, "--workers",        "1",   "--blas-threads",       "1",
        "--max-batch", "1",  "--queue-capacity", "256", "--request-timeout-ms", "600000",
        NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char infer[128];
    snprintf(infer, sizeof infer, "/v2/models/%s", strrchr(path, '/') + 1);
    *strstr(infer, ".safetensors") = 0;
    strcat(infer, "/infer");
    enum { N = 16 };
    atomic_int stop = 0;
    client_arg ca[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        ca[i] = (client_arg){.port = s.port, .id = i, .model = m, .path = infer, .stop = &stop};
        ck_assert(pthread_create(&t[i], NULL, client_main, &ca[i]) == 0);
    }
    uh_client *probe = uh_client_new(s.port); /* a keep-alive connection opened before */
    uh_response r;
    uh_client_request(probe, "GET", "/readyz", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    uh_response_release(&r);
    usleep(800000);
    kill(s.pid, SIGTERM);
    /* readiness turns 503 at once while requests still drain (0: the drain already ended) */
    long ready_status = uh_wait_status(probe, s.port, "/readyz", 503, 2000);
    uh_client_free(probe);
    int status = uh_server_stop(&s, SIGTERM, 60000);
    atomic_store(&stop, 1);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    int ok = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        ok += ca[i].ok;
        failed += ca[i].failed + ca[i].other + ca[i].s504;
    }
    ck_assert_int_eq(status, 0);
    ck_assert_msg(ready_status == 503, "/readyz during the drain: %ld", ready_status);
    ck_assert_msg(failed == 0, "%d accepted requests were not answered properly", failed);
    ck_assert_msg(ok > 0, "no request was answered before the signal");
    resattn_model_free(m);
    unlink(path);
}
END_TEST

/* One v2 infer request of the fixture model on c; the status, Connection header in conn. */
static long infer_once(uh_client *c, const resattn_model_info *info, char *conn, size_t conn_len) {
    size_t per = (size_t)info->in_channels * info->in_height * info->in_width;
    float *x = malloc(sizeof(float) * per);
    fill(x, per, 7);
    char *body = v2_body(x, 1, info->in_channels, info->in_height, info->in_width, NULL);
    uh_response r;
    uh_client_request(c, "POST", "/v2/models/basic_cifar_se/infer", JSON_CT, body, strlen(body),
                      &r);
    long status = r.status;
    snprintf(conn, conn_len, "%s", r.connection);
    uh_response_release(&r);
    free(body);
    free(x);
    return status;
}

/* --drain-delay-ms: after SIGTERM readiness is 503 at once, but the listener stays open and
 * requests on new and on kept-alive connections are answered 200 with Connection: close (so
 * clients move elsewhere) until the delay is over; then the usual drain and exit 0. */
START_TEST(test_drain_delay_serves_on) {
    resattn_model *m = load_model(FIXTURE ".safetensors");
    const resattn_model_info *info = resattn_model_get_info(m);
    uh_server s;
    const char *args[] = {"--model", FIXTURE ".safetensors", "--drain-delay-ms", "2000", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char conn[32];
    uh_client *kept = uh_client_new(s.port); /* a keep-alive connection opened before */
    ck_assert_int_eq(infer_once(kept, info, conn, sizeof conn), 200);
    ck_assert_str_eq(conn, ""); /* kept alive while serving normally */
    double t0 = uh_now_s();
    kill(s.pid, SIGTERM);
    long ready = uh_wait_status(NULL, s.port, "/readyz", 503, 1500);
    ck_assert_msg(ready == 503, "/readyz after SIGTERM: %ld", ready);
    /* still inside the delay: a new connection and the kept one are both served */
    uh_client *fresh = uh_client_new(s.port);
    ck_assert_int_eq(infer_once(fresh, info, conn, sizeof conn), 200);
    ck_assert_str_eq(conn, "close");
    ck_assert_int_eq(infer_once(kept, info, conn, sizeof conn), 200);
    ck_assert_str_eq(conn, "close");
    double served_at = uh_now_s() - t0;
    uh_client_free(fresh);
    uh_client_free(kept);
    ck_assert_msg(served_at < 2.0, "the checks took %.2f s, past the delay", served_at);
    /* no second signal: the server ends the delay, drains and exits by itself */
    int status = uh_server_stop(&s, 0, 30000);
    double took = uh_now_s() - t0;
    ck_assert_int_eq(status, 0);
    ck_assert_msg(took >= 1.9, "exited %.2f s after SIGTERM, before the 2 s delay", took);
    resattn_model_free(m);
}
END_TEST

/* A second SIGTERM ends the drain delay early: the server exits 0 long before it is over. */
START_TEST(test_drain_delay_second_signal) {
    uh_server s;
    const char *args[] = {"--model", FIXTURE ".safetensors", "--drain-delay-ms", "600000", NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    double t0 = uh_now_s();
    kill(s.pid, SIGTERM);
    long ready = uh_wait_status(NULL, s.port, "/readyz", 503, 5000);
    ck_assert_msg(ready == 503, "/readyz after SIGTERM: %ld", ready);
    int status = uh_server_stop(&s, SIGTERM, 20000);
    ck_assert_int_eq(status, 0);
    ck_assert_msg(uh_now_s() - t0 < 20, "the second SIGTERM did not end the delay");
}
END_TEST

/* ---- SIGTERM while clients keep opening connections ------------------------------------ */

/* One client of test_sigterm_connection_churn: a new connection per request (plain sockets,
 * so that a reset is told apart from a refusal exactly), until *stop. */
typedef struct churn_arg {
    int port;
    atomic_int *stop;
    int ok, s503, refused, reset, other;
    char what[96]; /* the first unexpected outcome */
} churn_arg;

static const char CHURN_REQUEST[] = "GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    "Connection: close\r\n\r\n";

/* Send the request and read the answer to EOF: its status, 0 with errno set on failure, or
 * -1 when the server closed without answering. */
static int churn_exchange(int fd) {
    size_t off = 0, n = sizeof CHURN_REQUEST - 1;
    while (off < n) {
        ssize_t w = send(fd, CHURN_REQUEST + off, n - off, MSG_NOSIGNAL);
        if (w < 0)
            return 0;
        off += (size_t)w;
    }
    char head[16] = {0}, buf[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0)
            return 0;
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r && got < sizeof head - 1; i++)
            head[got++] = buf[i];
    }
    int status = 0;
    return sscanf(head, "HTTP/1.%*d %d", &status) == 1 ? status : -1;
}

static void *churn_main(void *p) {
    churn_arg *a = p;
    /* signals (the server's SIGCHLD) go to the main thread: a connect() waiting for a
     * dropped SYN to be sent again would fail with EINTR */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a->port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    while (!atomic_load(a->stop)) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert(fd >= 0);
        struct timeval tv = {10, 0}; /* a hung exchange fails the test instead of hanging it */
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int status = -2, err = 0;
        if (connect(fd, (struct sockaddr *)&to, sizeof to) == 0) {
            status = churn_exchange(fd);
            err = errno;
        } else if (errno == ECONNREFUSED) {
            a->refused++;
        } else {
            err = errno;
            status = 0;
        }
        close(fd);
        if (status == -2) {
            uh_sleep_ms(2); /* refused: the server is gone, or not yet back */
            continue;
        }
        if (status == 200)
            a->ok++;
        else if (status == 503)
            a->s503++;
        else if (status == 0 && (err == ECONNRESET || err == EPIPE))
            a->reset++;
        else
            a->other++;
        if (status != 200 && status != 503 && !a->what[0])
            snprintf(a->what, sizeof a->what, "status %d, %s", status,
                     status == 0 ? strerror(err) : "-");
    }
    return NULL;
}

/* SIGTERM while many clients keep opening new connections (Connection: close): every
 * connection the server's kernel completed the handshake of must be answered (200, or 503
 * while draining); the rest must be refused at connect. A reset after the request was sent
 * is a dropped request: this is what happens when the listening socket is closed with
 * connections still in its accept queue or mid-handshake. The window is short, so the test
 * repeats the stop a few times with a new server each. */
START_TEST(test_sigterm_connection_churn) {
    enum { ROUNDS = 6, CLIENTS = 16 };
    int ok = 0, s503 = 0, refused = 0, reset = 0, other = 0;
    char what[128] = "";
    for (int round = 0; round < ROUNDS; round++) {
        uh_server s;
        const char *args[] = {"--model", FIXTURE ".safetensors", NULL};
        ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
        atomic_int stop = 0;
        churn_arg ca[CLIENTS];
        pthread_t t[CLIENTS];
        for (int i = 0; i < CLIENTS; i++) {
            ca[i] = (churn_arg){.port = s.port, .stop = &stop};
            ck_assert(pthread_create(&t[i], NULL, churn_main, &ca[i]) == 0);
        }
        uh_sleep_ms(200 + 37 * round);
        int status = uh_server_stop(&s, SIGTERM, 30000);
        uh_sleep_ms(50); /* a few refusals after the exit */
        atomic_store(&stop, 1);
        for (int i = 0; i < CLIENTS; i++) {
            pthread_join(t[i], NULL);
            ok += ca[i].ok;
            s503 += ca[i].s503;
            refused += ca[i].refused;
            reset += ca[i].reset;
            other += ca[i].other;
            if (ca[i].what[0] && !what[0])
                snprintf(what, sizeof what, "round %d: %s", round, ca[i].what);
        }
        ck_assert_int_eq(status, 0);
    }
    ck_assert_msg(reset == 0 && other == 0,
                  "%d connections reset and %d not answered (%s); %d answered 200, %d 503, %d "
                  "refused",
                  reset, other, what, ok, s503, refused);
    ck_assert_msg(ok > 0 && refused > 0, "%d answered 200, %d refused", ok, refused);
}
END_TEST

START_TEST(test_builtin_model_or_exit_2) {
    if (resattn_default_model_size == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s serve --host 127.0.0.1 --port 0 >/dev/null 2>&1",
                 uh_binary());
        int st = system(cmd);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "serve without a model: %d", st);
        return;
    }
    uh_server s;
    ck_assert_msg(uh_server_start(&s, NULL) == 0, "server did not start (log %s)", s.log);
    uh_response r;
    uh_request(s.port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert(strstr((char *)r.body, "resattn_model_info{model=\"") != NULL);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

Suite *server_suite(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0);
    Suite *s = suite_create("server");
    TCase *unit = tcase_create("unit");
    tcase_add_test(unit, test_config_sources);
    tcase_add_test(unit, test_help_lists_env);
    tcase_add_test(unit, test_metrics_promtool);
    tcase_add_test(unit, test_pool_batch_independent);
    tcase_add_test(unit, test_pool_capacity_and_deadline);
    tcase_add_test(unit, test_pool_deadline_while_busy);
    tcase_set_timeout(unit, 30);
    suite_add_tcase(s, unit);
    TCase *http = tcase_create("http");
    tcase_add_test(http, test_endpoints);
    tcase_add_test(http, test_repository_index);
    tcase_add_test(http, test_infer_equals_predict);
    tcase_add_test(http, test_concurrent_32_batched);
    tcase_add_test(http, test_queue_full_503);
    tcase_add_test(http, test_timeout_504);
    tcase_add_test(http, test_sigterm_under_load);
    tcase_add_test(http, test_drain_delay_serves_on);
    tcase_add_test(http, test_drain_delay_second_signal);
    tcase_add_test(http, test_builtin_model_or_exit_2);
    tcase_set_timeout(http, 180);
    suite_add_tcase(s, http);
    /* its own case, so that it can be run alone (CK_RUN_CASE=churn) many times */
    TCase *churn = tcase_create("churn");
    tcase_add_test(churn, test_sigterm_connection_churn);
    tcase_set_timeout(churn, 180);
    suite_add_tcase(s, churn);
    return s;
}
