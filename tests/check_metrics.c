/*
 * Metrics of a real `resattn serve` with two models (the built-in model's file and a fixture),
 * scraped over HTTP: every series passes `promtool check metrics`; the per-model series carry
 * the model label from the start; requests to one model move that model's counts only
 * (inference requests by status, images, queue wait, forward passes, batch sizes); request
 * durations are split by endpoint, so probes and scrapes stay out of the inference latency;
 * resattn_build_info and resattn_compute_info name the build and the compute paths.
 */
#include "util_http.h"
#include <check.h>
#include <curl/curl.h>
#include <jansson.h>
#include <resattn/resattn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BUILTIN "fashion-se-resnet" /* the name in models/default.safetensors */
#define OTHER "basic_cifar_eca"

/* A series of one model: name{model="m"<more>} */
static double model_metric(const char *text, const char *name, const char *model,
                           const char *more) {
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s{model=\"%s\"%s} ", name, model, more);
    return uh_metric(text, prefix);
}

static char *scrape(int port) {
    uh_response r;
    uh_request(port, "GET", "/metrics", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    char *text = (char *)r.body; /* NUL-terminated by the helper; ours now */
    r.body = NULL;
    uh_response_release(&r);
    return text;
}

/* A v2 JSON request of zeros in the input shape the model's metadata gives. */
static char *zeros_request(int port, const char *model) {
    char path[128];
    snprintf(path, sizeof path, "/v2/models/%s", model);
    uh_response r;
    uh_request(port, "GET", path, NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *meta = json_loads((char *)r.body, 0, NULL);
    uh_response_release(&r);
    json_t *shape = json_object_get(json_array_get(json_object_get(meta, "inputs"), 0), "shape");
    ck_assert_int_eq((int)json_array_size(shape), 4);
    size_t count = 1;
    for (size_t i = 1; i < 4; i++)
        count *= (size_t)json_integer_value(json_array_get(shape, i));
    size_t cap = count * 2 + 256;
    char *b = malloc(cap);
    ck_assert(b != NULL);
    int n = snprintf(b, cap,
                     "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,%d,%d,%d],\"datatype\":"
                     "\"FP32\",\"data\":[",
                     (int)json_integer_value(json_array_get(shape, 1)),
                     (int)json_integer_value(json_array_get(shape, 2)),
                     (int)json_integer_value(json_array_get(shape, 3)));
    for (size_t i = 0; i < count; i++)
        n += snprintf(b + n, cap - (size_t)n, i ? ",0" : "0");
    snprintf(b + n, cap - (size_t)n, "]}]}");
    json_decref(meta);
    return b;
}

static void infer(int port, const char *model, const char *body, long want) {
    char path[128];
    snprintf(path, sizeof path, "/v2/models/%s/infer", model);
    const char *h[] = {"Content-Type: application/json", NULL};
    uh_response r;
    uh_request(port, "POST", path, h, body, strlen(body), &r);
    ck_assert_msg(r.status == want, "%s: %ld, want %ld: %s", path, r.status, want,
                  r.body ? (char *)r.body : "");
    uh_response_release(&r);
}

/* The per-model series of `model`: images, inference requests answered 200 and 422, queue
 * waits, forward passes (at least one, at most one per image) and the images in them. */
static void expect_model_counts(const char *text, const char *model, int images, int bad) {
    ck_assert_msg(model_metric(text, "resattn_inferences_total", model, "") == images,
                  "%s: resattn_inferences_total %g, want %d", model,
                  model_metric(text, "resattn_inferences_total", model, ""), images);
    double ok = model_metric(text, "resattn_inference_requests_total", model,
                             ",protocol=\"http\",code=\"200\"");
    double e422 = model_metric(text, "resattn_inference_requests_total", model,
                               ",protocol=\"http\",code=\"422\"");
    ck_assert_msg(ok == (images ? images : -1), "%s: requests 200 = %g, want %d", model, ok,
                  images);
    ck_assert_msg(e422 == (bad ? bad : -1), "%s: requests 422 = %g, want %d", model, e422, bad);
    ck_assert_msg(model_metric(text, "resattn_queue_wait_seconds_count", model, "") == images,
                  "%s: queue waits", model);
    double passes = model_metric(text, "resattn_inference_duration_seconds_count", model, "");
    ck_assert_msg(images ? passes >= 1 && passes <= images : passes == 0,
                  "%s: %g forward passes for %d images", model, passes, images);
    ck_assert_msg(model_metric(text, "resattn_batch_size_count", model, "") == passes,
                  "%s: batch-size observations", model);
    ck_assert_msg(model_metric(text, "resattn_batch_size_sum", model, "") == images,
                  "%s: images in batches", model);
    ck_assert_msg(model_metric(text, "resattn_batch_size_bucket", model, ",le=\"+Inf\"") == passes,
                  "%s: +Inf bucket", model);
    double cpu = model_metric(text, "resattn_inference_cpu_seconds_total", model, "");
    ck_assert_msg(images ? cpu > 0 : cpu == 0, "%s: forward CPU %g s", model, cpu);
}

START_TEST(test_two_models_labels) {
    uh_server s;
    const char *args[] = {"--model",     "models/default.safetensors",
                          "--model",     "tests/fixtures/" OTHER ".safetensors",
                          "--max-batch", "4",
                          NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char out[4096];

    /* before any inference: both models' series exist (zero), and the whole text is valid */
    char *text = scrape(s.port);
    ck_assert_msg(uh_promtool_ok(text, strlen(text), out, sizeof out), "promtool: %s", out);
    for (int i = 0; i < 2; i++) {
        const char *m = i ? OTHER : BUILTIN;
        ck_assert_msg(model_metric(text, "resattn_inferences_total", m, "") == 0, "%s", m);
        ck_assert_msg(model_metric(text, "resattn_queue_wait_seconds_bucket", m, ",le=\"0.001\"") ==
                          0,
                      "%s", m);
        ck_assert_msg(model_metric(text, "resattn_inference_duration_seconds_count", m, "") == 0,
                      "%s", m);
        ck_assert_msg(model_metric(text, "resattn_batch_size_bucket", m, ",le=\"1\"") == 0, "%s",
                      m);
        char info[128];
        snprintf(info, sizeof info, "resattn_model_info{model=\"%s\",", m);
        ck_assert_msg(strstr(text, info) != NULL, "no %s", info);
    }
    /* the readiness probes of the start-up are their own endpoint, no inference yet */
    ck_assert_int_ge(
        uh_metric(text,
                  "resattn_request_duration_seconds_count{endpoint=\"readyz\",protocol=\"http\"} "),
        1);
    ck_assert(
        uh_metric(
            text,
            "resattn_request_duration_seconds_count{endpoint=\"v2_infer\",protocol=\"http\"} ") <
        0);
    free(text);

    /* 3 good and 1 bad request to the fixture model, nothing to the built-in one */
    char *other = zeros_request(s.port, OTHER), *builtin = zeros_request(s.port, BUILTIN);
    for (int i = 0; i < 3; i++)
        infer(s.port, OTHER, other, 200);
    infer(s.port, OTHER, builtin, 422); /* the built-in model's shape: wrong for this one */
    text = scrape(s.port);
    ck_assert_msg(uh_promtool_ok(text, strlen(text), out, sizeof out), "promtool: %s", out);
    expect_model_counts(text, OTHER, 3, 1);
    expect_model_counts(text, BUILTIN, 0, 0);
    ck_assert_int_eq(
        (int)uh_metric(
            text,
            "resattn_request_duration_seconds_count{endpoint=\"v2_infer\",protocol=\"http\"} "),
        4);
    ck_assert_int_ge(
        (int)uh_metric(
            text,
            "resattn_request_duration_seconds_count{endpoint=\"metrics\",protocol=\"http\"} "),
        1);
    free(text);

    /* 2 requests to the built-in model: its counts move, the fixture model's stay */
    for (int i = 0; i < 2; i++)
        infer(s.port, BUILTIN, builtin, 200);
    text = scrape(s.port);
    expect_model_counts(text, OTHER, 3, 1);
    expect_model_counts(text, BUILTIN, 2, 0);
    ck_assert_int_eq(
        (int)uh_metric(
            text,
            "resattn_request_duration_seconds_count{endpoint=\"v2_infer\",protocol=\"http\"} "),
        6);

    /* build and compute paths */
    char build[128];
    snprintf(build, sizeof build, "resattn_build_info{version=\"%s\",commit=\"", resattn_version());
    ck_assert_msg(strstr(text, build) != NULL, "no %s", build);
    ck_assert_str_eq(resattn_version(), RESATTN_VERSION);
    const char *ci = strstr(text, "\nresattn_compute_info{");
    ck_assert(ci != NULL);
    char want[96];
    snprintf(want, sizeof want, "gemm=\"%s\"", resattn_gemm_path());
    ck_assert_msg(strstr(ci, want) != NULL, "no %s", want);
    snprintf(want, sizeof want, "winograd=\"%s\"", resattn_winograd_path());
    ck_assert_msg(strstr(ci, want) != NULL, "no %s", want);
    ck_assert(strstr(ci, "json_scan=\"") != NULL);
    ck_assert(strstr(ci, "openblas_core=\"") != NULL);
    ck_assert(strstr(text, "resattn_blas_info") == NULL);
    free(text);
    free(other);
    free(builtin);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
}
END_TEST

/* The portable paths, as CPUs without AVX-512 take them, are what resattn_compute_info names
 * when the variables ask for them. */
START_TEST(test_compute_info_portable) {
    setenv("RESATTN_GEMM", "openblas", 1);
    setenv("RESATTN_WINOGRAD", "generic", 1);
    setenv("RESATTN_JSON_SCAN", "portable", 1);
    uh_server s;
    ck_assert_msg(uh_server_start(&s, NULL) == 0, "server did not start (log %s)", s.log);
    char *text = scrape(s.port);
    ck_assert_msg(strstr(text, "resattn_compute_info{gemm=\"openblas\",winograd=\"generic\","
                               "json_scan=\"portable\",openblas_core=\"") != NULL,
                  "%s", strstr(text, "resattn_compute_info{"));
    free(text);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    setenv("RESATTN_WINOGRAD", "0", 1);
    ck_assert_msg(uh_server_start(&s, NULL) == 0, "server did not start (log %s)", s.log);
    text = scrape(s.port);
    ck_assert(strstr(text, "winograd=\"off\"") != NULL);
    free(text);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 30000), 0);
    unsetenv("RESATTN_GEMM");
    unsetenv("RESATTN_WINOGRAD");
    unsetenv("RESATTN_JSON_SCAN");
}
END_TEST

Suite *metrics_suite(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("served");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_two_models_labels);
    tcase_add_test(tc, test_compute_info_portable);
    suite_add_tcase(s, tc);
    return s;
}
