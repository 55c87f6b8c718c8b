/*
 * Tests of the model repository (server/repository) and of the pool's per-version handles,
 * in-process, with real model files in a private temporary directory: the layout and version
 * policies, name safety on the file system and from the API (.., separators, percent escapes,
 * hidden folders, symlinks leading outside), a failed or half-written version never replacing
 * a good one, reference counting (a replaced version serves the requests that hold it and is
 * freed after the last), polling, explicit load and unload, batching that never mixes
 * versions, and the statistics and metrics views. Versions are told apart by their weights:
 * every answer is compared with a forward pass of the file it should come from.
 */
#include "repository/repository.h"
#include "runtime/pool.h"
#include "util_st.h"

#include <check.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define C 3
#define H 8
#define W 8
#define K 5
#define PER (C * H * W)

/* ---- files ------------------------------------------------------------------------------- */

static char root[256]; /* this test's repository */
static char outside[256];

/* The bytes of a small SE-ResNet whose weights depend on seed. */
static unsigned char *model_bytes(unsigned seed, size_t *len) {
    static const int layers[1] = {1}, widths[1] = {4};
    ut_model m;
    ut_model_init(&m, NULL, seed);
    ut_build_resnet(&m, "basic", "cifar", "se", 1, layers, widths, C, H, W, K);
    unsigned char *b = ut_serialize(&m, len);
    ut_model_free(&m);
    return b;
}

/* DIR/<model>/<version>/model.safetensors with weights from seed, written in place. */
static void put_version(const char *dir, const char *model, int version, unsigned seed) {
    char d[512], f[600];
    snprintf(d, sizeof d, "%s/%s/%d", dir, model, version);
    ut_mkdirs(d);
    snprintf(f, sizeof f, "%s/model.safetensors", d);
    size_t len;
    unsigned char *b = model_bytes(seed, &len);
    ck_assert_int_eq(ut_write_file(f, b, len), 0);
    free(b);
}

/* The same, the way operators should do it: written under a hidden name, then renamed. */
static void drop_version(const char *model, int version, unsigned seed) {
    char tmp[512], dst[512];
    put_version(root, model, 0, seed); /* "0" is not a version: never loaded */
    snprintf(tmp, sizeof tmp, "%s/%s/0", root, model);
    snprintf(dst, sizeof dst, "%s/%s/%d", root, model, version);
    ck_assert_int_eq(rename(tmp, dst), 0);
}

static void put_config(const char *model, const char *json) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, model);
    ut_mkdirs(p);
    snprintf(p, sizeof p, "%s/%s/config.json", root, model);
    ck_assert_int_eq(ut_write_file(p, json, strlen(json)), 0);
}

static void setup(void) {
    snprintf(root, sizeof root, "/tmp/resattn-repo-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    snprintf(outside, sizeof outside, "/tmp/resattn-out-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(outside));
}

static void teardown(void) {
    ut_rm_tree(root);
    ut_rm_tree(outside);
}

/* ---- the log --------------------------------------------------------------------------- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static void log_line(void *user, const char *level, const char *msg) {
    (void)user;
    ck_assert_msg(!strchr(msg, '\n'), "log message with a newline: %s", msg);
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof log_text - n, "%s: %s\n", level, msg);
    pthread_mutex_unlock(&log_mu);
}

static int log_count(const char *needle) {
    pthread_mutex_lock(&log_mu);
    int n = 0;
    for (const char *p = log_text; (p = strstr(p, needle)); p++)
        n++;
    pthread_mutex_unlock(&log_mu);
    return n;
}

/* ---- a pool and a repository ------------------------------------------------------------ */

static resattn_pool *pool;
static resattn_repository *repo;
static const char *repo_root; /* the repository's path when not `root` */

static void start_with(resattn_control_mode mode, int poll_secs, const char *const *load, int nload,
                       int want_failed) {
    char err[RESATTN_ERR_LEN];
    resattn_pool_options po = {.workers = 2, .max_batch = 8, .max_delay_ms = 0, .capacity = 64};
    ck_assert_msg(resattn_pool_new(NULL, 0, &po, NULL, &pool, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    ck_assert_int_eq(resattn_pool_wait_ready(pool, err, sizeof err), 0);
    resattn_repository_options ro = {.root = repo_root ? repo_root : root,
                                     .mode = mode,
                                     .poll_secs = poll_secs,
                                     .load_models = load,
                                     .num_load_models = nload,
                                     .log = log_line};
    ck_assert_msg(resattn_repository_new(&ro, pool, &repo, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    log_text[0] = 0;
    int failed = resattn_repository_start(repo, err, sizeof err);
    ck_assert_msg(failed == want_failed, "%d models failed at start (want %d); log:\n%s", failed,
                  want_failed, log_text);
}

static void start_repo(resattn_control_mode mode) {
    start_with(mode, 1, NULL, 0, 0);
}

static void stop_repo(void) {
    resattn_repository_free(repo);
    resattn_pool_free(pool);
    repo = NULL;
    pool = NULL;
}

static resattn_model_version *get(const char *model, const char *version, int *status) {
    char err[512];
    int st = 0;
    resattn_model_version *v = resattn_repository_acquire(
        repo, model, strlen(model), version, version ? strlen(version) : 0, &st, err, sizeof err);
    if (status)
        *status = v ? 0 : st;
    return v;
}

static resattn_model_version *must_get(const char *model, const char *version) {
    char err[512];
    int st = 0;
    resattn_model_version *v = resattn_repository_acquire(
        repo, model, strlen(model), version, version ? strlen(version) : 0, &st, err, sizeof err);
    ck_assert_msg(v != NULL, "%s/%s: %d %s", model, version ? version : "-", st, err);
    return v;
}

static void expect_missing(const char *model, const char *version, int status, const char *needle) {
    char err[512] = "";
    int st = 0;
    resattn_model_version *v = resattn_repository_acquire(
        repo, model, strlen(model), version, version ? strlen(version) : 0, &st, err, sizeof err);
    ck_assert_msg(!v, "%s/%s was routed", model, version ? version : "-");
    ck_assert_msg(st == status, "%s/%s: status %d, want %d (%s)", model, version ? version : "-",
                  st, status, err);
    ck_assert_msg(!needle || strstr(err, needle), "'%s' does not say '%s'", err, needle);
}

static resattn_version_state state_of(const char *model, long long version, char *reason,
                                      size_t len) {
    resattn_version_state s;
    ck_assert_msg(resattn_repository_version_state(repo, model, version, &s, reason, len) == 0,
                  "%s version %lld unknown", model, version);
    return s;
}

/* Seconds to wait for something asynchronous, longer under valgrind (CK_TIMEOUT_MULTIPLIER). */
static double patience(double seconds) {
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    return seconds * (m && atof(m) > 1 ? atof(m) : 1);
}

/* Wait (up to seconds) until model's version reaches state; 0 on success. */
static int wait_state(const char *model, long long version, resattn_version_state want,
                      double seconds) {
    for (int i = 0; i < patience(seconds) * 100; i++) {
        resattn_version_state s;
        if (resattn_repository_version_state(repo, model, version, &s, NULL, 0) == 0 && s == want)
            return 0;
        usleep(10000);
    }
    return -1;
}

/* Wait (up to seconds) until unversioned requests of model get `version` (a loaded version
 * is AVAILABLE a moment before the scan that loaded it makes it the one served); 0 on
 * success. */
static int wait_serving(const char *model, long long version, double seconds) {
    for (int i = 0; i < patience(seconds) * 100; i++) {
        resattn_model_version *v = get(model, NULL, NULL);
        long long n = v ? resattn_model_version_number(v) : 0;
        resattn_model_version_release(v);
        if (n == version)
            return 0;
        usleep(10000);
    }
    return -1;
}

/* ---- running a version --------------------------------------------------------------- */

static void fill(float *x, size_t n, unsigned seed) {
    unsigned s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) * (2.0 / 16777216.0) - 1.0);
    }
}

/* Logits of x [n, C, H, W] by the model built from seed, computed directly. */
static void expected(unsigned seed, const float *x, int n, float *logits) {
    size_t len;
    unsigned char *b = model_bytes(seed, &len);
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    resattn_ctx *ctx = NULL;
    ck_assert_int_eq(resattn_model_load_buffer(b, len, &m, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(resattn_ctx_new(m, n, &ctx, err, sizeof err), RESATTN_OK);
    for (int i = 0; i < n; i++) /* one at a time: batch composition must not matter */
        ck_assert_int_eq(
            resattn_forward(ctx, x + (size_t)i * PER, 1, logits + (size_t)i * K, err, sizeof err),
            RESATTN_OK);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    free(b);
}

static int close_enough(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (fabsf(a[i] - b[i]) > 1e-5f * (1 + fabsf(b[i])))
            return 0;
    return 1;
}

static atomic_int done_count;
static atomic_int hold; /* while set, a job's done() blocks its worker */

static void on_done(resattn_job *job) {
    (void)job;
    atomic_fetch_add(&done_count, 1);
}

static void on_done_hold(resattn_job *job) {
    (void)job;
    atomic_fetch_add(&done_count, 1);
    while (atomic_load(&hold))
        usleep(1000);
}

static void push(resattn_job *j, resattn_model_version *v, const float *x, int n, float *logits,
                 resattn_job_done_fn done) {
    memset(j, 0, sizeof *j);
    j->model = resattn_model_version_pool_model(v);
    j->input = x;
    j->n = n;
    j->logits = logits;
    j->deadline = resattn_now() + 60;
    j->done = done;
    ck_assert_int_eq(resattn_pool_reserve(pool), 0);
    resattn_pool_push(pool, j);
}

static void wait_done(int n) {
    for (int i = 0; i < patience(5) * 1000 && atomic_load(&done_count) < n; i++)
        usleep(1000);
    ck_assert_int_eq(atomic_load(&done_count), n);
}

/* One job through the pool on v; its logits must be those of the model from seed. */
static void check_runs_as(resattn_model_version *v, unsigned seed) {
    float x[2 * PER], got[2 * K], want[2 * K];
    fill(x, 2 * PER, seed + 7);
    expected(seed, x, 2, want);
    atomic_store(&done_count, 0);
    resattn_job j;
    push(&j, v, x, 2, got, on_done);
    wait_done(1);
    ck_assert_int_eq(j.status, 0);
    ck_assert_msg(close_enough(got, want, 2 * K), "%s version %s does not compute model %u",
                  resattn_model_version_name(v), resattn_model_version_label(v), seed);
}

/* ---- names ----------------------------------------------------------------------------- */

START_TEST(test_name_check) {
    char err[256];
    static const char *good[] = {"resnet50", "se-cifar_v2.1", "A", "a..b"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        ck_assert_msg(resattn_repository_name_check(good[i], strlen(good[i]), err, sizeof err) == 0,
                      "%s refused: %s", good[i], err);
    static const struct {
        const char *name, *says;
    } bad[] = {
        {"", "empty"},
        {".", "starts with '.'"},
        {"..", "starts with '.'"},
        {".hidden", "starts with '.'"},
        {"../etc", "starts with '.'"},
        {"a/b", "path separator"},
        {"a\\b", "path separator"},
        {"..%2Fetc", "starts with '.'"},
        {"%2e%2e", "percent escape"},
        {"x%2Fy", "percent escape"},
        {"a b", "not allowed"},
        {"a:b", "not allowed"},
        {"caf\xc3\xa9", "byte 0xc3"},
        {"tab\there", "byte 0x09"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ck_assert_msg(
            resattn_repository_name_check(bad[i].name, strlen(bad[i].name), err, sizeof err) == -1,
            "'%s' accepted", bad[i].name);
        ck_assert_msg(strstr(err, bad[i].says), "'%s': '%s' does not say '%s'", bad[i].name, err,
                      bad[i].says);
    }
    char nul[4] = {'a', 0, 'b', 0}; /* a NUL inside the name */
    ck_assert_int_eq(resattn_repository_name_check(nul, 3, err, sizeof err), -1);
    char longname[200];
    memset(longname, 'a', sizeof longname);
    ck_assert_int_eq(resattn_repository_name_check(longname, 128, err, sizeof err), 0);
    ck_assert_int_eq(resattn_repository_name_check(longname, 129, err, sizeof err), -1);
}
END_TEST

/* Hidden folders, bad names and symlinks out of the repository are never models; a symlink
 * inside it is followed. */
START_TEST(test_unsafe_folders_refused) {
    put_version(root, "good", 1, 11);
    put_version(root, ".hidden", 1, 12);
    put_version(root, "bad name", 1, 13);
    put_version(outside, "elsewhere", 1, 14);
    char link[600], target[600];
    snprintf(link, sizeof link, "%s/escape", root); /* model folder leading outside */
    snprintf(target, sizeof target, "%s/elsewhere", outside);
    ck_assert_int_eq(symlink(target, link), 0);
    snprintf(link, sizeof link, "%s/alias", root); /* model folder leading inside */
    ck_assert_int_eq(symlink("good", link), 0);
    put_version(root, "sneaky", 1, 15); /* version file leading outside */
    snprintf(link, sizeof link, "%s/sneaky/2", root);
    ut_mkdirs(link);
    snprintf(link, sizeof link, "%s/sneaky/2/model.safetensors", root);
    snprintf(target, sizeof target, "%s/elsewhere/1/model.safetensors", outside);
    ck_assert_int_eq(symlink(target, link), 0);
    start_repo(RESATTN_CONTROL_NONE);

    resattn_model_version *v = must_get("good", NULL);
    check_runs_as(v, 11);
    resattn_model_version_release(v);
    v = must_get("alias", NULL);
    check_runs_as(v, 11);
    resattn_model_version_release(v);
    expect_missing(".hidden", NULL, 404, "not found");
    expect_missing("bad name", NULL, 404, "not found");
    expect_missing("escape", NULL, 404, "not loaded"); /* refused: not a model to serve */
    ck_assert(resattn_repository_ready(repo));
    /* "sneaky": version 2 leads outside and is refused; version 1 keeps serving */
    char reason[512];
    ck_assert_int_eq(state_of("sneaky", 2, reason, sizeof reason), RESATTN_VERSION_END);
    ck_assert_msg(strstr(reason, "outside the model repository"), "%s", reason);
    v = must_get("sneaky", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 1);
    check_runs_as(v, 15);
    resattn_model_version_release(v);
    expect_missing("sneaky", "2", 404, "outside");
    /* the index shows the refusals with their reasons */
    json_t *idx = resattn_repository_index(repo, 0);
    char *text = json_dumps(idx, JSON_COMPACT);
    ck_assert_msg(strstr(text, "{\"name\":\"escape\",\"state\":\"UNAVAILABLE\",\"reason\":"
                               "\"escape leads outside the model repository"),
                  "%s", text);
    ck_assert_msg(!strstr(text, "hidden") && !strstr(text, "bad name"), "%s", text);
    free(text);
    json_decref(idx);
    stop_repo();
}
END_TEST

/* Explicit loads of names that are not plain folder names are refused before any path is
 * built; unknown ones are 404. */
START_TEST(test_api_names_refused) {
    put_version(root, "m", 1, 21);
    put_version(outside, "victim", 1, 22);
    start_with(RESATTN_CONTROL_EXPLICIT, 1, NULL, 0, 0);
    char err[512];
    char up[300];
    snprintf(up, sizeof up, "../%s/victim", strrchr(outside, '/') + 1);
    const char *bad[] = {up, "..", ".", "%2e%2e", "..%2f..%2fetc", "a/b", ".m", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int st = resattn_repository_run(repo, RESATTN_REPO_LOAD, bad[i], err, sizeof err);
        ck_assert_msg(st == 400, "load '%s': %d %s", bad[i], st, err);
    }
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "nope", err, sizeof err), 404);
    ck_assert_msg(strstr(err, "no model 'nope'"), "%s", err);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "m", err, sizeof err), 0);
    resattn_model_version *v = must_get("m", "1");
    check_runs_as(v, 21);
    resattn_model_version_release(v);
    stop_repo();
}
END_TEST

/* ---- layout and policies --------------------------------------------------------------- */

START_TEST(test_latest_by_default) {
    put_version(root, "m", 1, 31);
    put_version(root, "m", 2, 32);
    put_version(root, "m", 10, 33); /* numeric order, not text order */
    char d[512];
    snprintf(d, sizeof d, "%s/m/007", root); /* not a canonical number: not a version */
    ut_mkdirs(d);
    snprintf(d, sizeof d, "%s/m/11", root); /* a folder without its file: not a version yet */
    ut_mkdirs(d);
    start_repo(RESATTN_CONTROL_NONE);
    ck_assert(resattn_repository_ready(repo));
    resattn_model_version *v = must_get("m", NULL);
    ck_assert_str_eq(resattn_model_version_label(v), "10");
    ck_assert_str_eq(resattn_model_version_name(v), "m");
    check_runs_as(v, 33);
    resattn_model_version_release(v);
    v = must_get("m", "10");
    resattn_model_version_release(v);
    expect_missing("m", "2", 404, "no version 2");
    expect_missing("m", "007", 404, "positive integers");
    expect_missing("m", "x", 404, NULL);
    expect_missing("other", NULL, 404, "not found");
    v = must_get("default", NULL); /* no model is called default: the first one */
    ck_assert_str_eq(resattn_model_version_name(v), "m");
    resattn_model_version_release(v);
    stop_repo();
}
END_TEST

START_TEST(test_policies) {
    for (int i = 1; i <= 3; i++) {
        put_version(root, "two", i, 40 + i);
        put_version(root, "all", i, 50 + i);
        put_version(root, "spec", i, 60 + i);
        put_version(root, "triton", i, 70 + i);
    }
    put_config("two", "{\"version_policy\": {\"latest\": 2}, \"max_batch\": 3}");
    put_config("all", "{\"version_policy\": {\"all\": true}, \"max_delay_ms\": 0}");
    put_config("spec", "{\"version_policy\": {\"specific\": [1, 3]}}");
    put_config("triton", "{\"version_policy\": {\"specific\": {\"versions\": [2]}}}");
    start_repo(RESATTN_CONTROL_NONE);
    static const struct {
        const char *model;
        int ready[3];
    } want[] = {{"two", {0, 1, 1}}, {"all", {1, 1, 1}}, {"spec", {1, 0, 1}}, {"triton", {0, 1, 0}}};
    for (size_t m = 0; m < 4; m++)
        for (int ver = 1; ver <= 3; ver++) {
            char label[16];
            snprintf(label, sizeof label, "%d", ver);
            int st;
            resattn_model_version *v = get(want[m].model, label, &st);
            ck_assert_msg(!!v == want[m].ready[ver - 1], "%s/%d: routed %d", want[m].model, ver,
                          !!v);
            if (v) {
                unsigned base = !strcmp(want[m].model, "two")    ? 40
                                : !strcmp(want[m].model, "all")  ? 50
                                : !strcmp(want[m].model, "spec") ? 60
                                                                 : 70;
                check_runs_as(v, base + (unsigned)ver);
                resattn_model_version_release(v);
            }
        }
    resattn_model_version *v = must_get("two", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 3);
    ck_assert_int_eq(resattn_pool_model_max_batch(resattn_model_version_pool_model(v)), 3);
    resattn_model_version_release(v);
    v = must_get("spec", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 3);
    ck_assert_int_eq(resattn_pool_model_max_batch(resattn_model_version_pool_model(v)), 8);
    resattn_model_version_release(v);
    /* TF Serving's view lists every version it knows with its state */
    int st;
    char err[256];
    json_t *s = resattn_repository_version_status(repo, "two", 3, NULL, 0, &st, err, sizeof err);
    char *text = json_dumps(s, JSON_COMPACT);
    ck_assert_str_eq(text, "{\"model_version_status\":[{\"version\":\"3\",\"state\":\"AVAILABLE\","
                           "\"status\":{\"error_code\":\"OK\",\"error_message\":\"\"}},{"
                           "\"version\":\"2\",\"state\":\"AVAILABLE\",\"status\":{\"error_code\":"
                           "\"OK\",\"error_message\":\"\"}}]}");
    free(text);
    json_decref(s);
    json_t *rv = resattn_repository_ready_versions(repo, "spec", 4);
    text = json_dumps(rv, JSON_COMPACT);
    ck_assert_str_eq(text, "[\"3\",\"1\"]");
    free(text);
    json_decref(rv);
    stop_repo();
}
END_TEST

START_TEST(test_bad_config) {
    static const struct {
        const char *json, *says;
    } bad[] = {
        {"{\"version_policy\": {\"latest\": 0}}", "positive integer"},
        {"{\"version_policy\": {\"newest\": 1}}", "not one of latest"},
        {"{\"max_batch\": 5000}", "[1, 1024]"},
        {"{\"max_bacth\": 4}", "unknown key 'max_bacth'"},
        {"{\"version_policy\": ", "invalid JSON"},
        {"[]", "must be a JSON object"},
        {"{\"precision\": \"fp16\"}", "precision must be"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%zu", i);
        put_version(root, name, 1, 80);
        put_config(name, bad[i].json);
    }
    put_version(root, "fine", 1, 81);
    start_with(RESATTN_CONTROL_NONE, 1, NULL, 0, 7);
    ck_assert(!resattn_repository_ready(repo)); /* models with versions that cannot serve */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%zu", i);
        expect_missing(name, NULL, 503, bad[i].says);
    }
    resattn_model_version *v = must_get("fine", NULL);
    resattn_model_version_release(v);
    ck_assert_int_eq(log_count("error: model 'm"), 7);
    stop_repo();
}
END_TEST

/* A model's config.json "precision" overrides the server's (here FP32) for its versions. */
START_TEST(test_precision_config) {
    put_version(root, "half", 1, 82);
    put_config("half", "{\"precision\": \"bf16\"}");
    put_version(root, "full", 1, 83);
    start_repo(RESATTN_CONTROL_NONE);
    resattn_model_version *v = must_get("half", NULL);
    const resattn_model_info *info = resattn_model_get_info(resattn_model_version_model(v));
    ck_assert_int_eq(info->precision_requested, RESATTN_PRECISION_BF16);
    resattn_model_version_release(v);
    v = must_get("full", NULL);
    info = resattn_model_get_info(resattn_model_version_model(v));
    ck_assert_int_eq(info->precision_requested, RESATTN_PRECISION_FP32);
    ck_assert_int_eq(info->precision, RESATTN_PRECISION_FP32);
    resattn_model_version_release(v);
    stop_repo();
}
END_TEST

/* ---- failures never replace a good version -------------------------------------------- */

START_TEST(test_failed_version_keeps_good_one) {
    put_version(root, "m", 1, 91);
    start_repo(RESATTN_CONTROL_NONE);
    /* version 2 is corrupt: v1 keeps serving, v2 is END with its reason, one log line */
    char d[512];
    snprintf(d, sizeof d, "%s/m/2", root);
    ut_mkdirs(d);
    snprintf(d, sizeof d, "%s/m/2/model.safetensors", root);
    ck_assert_int_eq(ut_write_file(d, "not a model", 11), 0);
    resattn_repository_rescan(repo);
    ck_assert_int_eq(wait_state("m", 2, RESATTN_VERSION_END, 10), 0);
    char reason[512];
    state_of("m", 2, reason, sizeof reason);
    ck_assert_msg(strstr(reason, "model.safetensors"), "%s", reason);
    resattn_model_version *v = must_get("m", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 1);
    check_runs_as(v, 91);
    resattn_model_version_release(v);
    ck_assert(resattn_repository_ready(repo));
    ck_assert_int_eq(log_count("version 2: load failed"), 1);
    /* the index shows it; the metrics count it */
    json_t *idx = resattn_repository_index(repo, 0);
    char *text = json_dumps(idx, JSON_COMPACT);
    ck_assert_msg(strstr(text, "{\"name\":\"m\",\"version\":\"2\",\"state\":\"UNAVAILABLE\","
                               "\"reason\":\"model.safetensors: "),
                  "%s", text);
    ck_assert_msg(strstr(text, "{\"name\":\"m\",\"version\":\"1\",\"state\":\"READY\"}"), "%s",
                  text);
    free(text);
    json_decref(idx);
    idx = resattn_repository_index(repo, 1);
    text = json_dumps(idx, JSON_COMPACT);
    ck_assert_str_eq(text, "[{\"name\":\"m\",\"version\":\"1\",\"state\":\"READY\"}]");
    free(text);
    json_decref(idx);
    /* fixed by an atomic rename: the next scan loads it and it takes over */
    snprintf(d, sizeof d, "%s/m/2", root);
    ut_rm_tree(d);
    drop_version("m", 2, 92);
    resattn_repository_rescan(repo);
    ck_assert_int_eq(wait_serving("m", 2, 10), 0);
    v = must_get("m", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 2);
    check_runs_as(v, 92);
    resattn_model_version_release(v);
    ck_assert_int_eq(wait_state("m", 1, RESATTN_VERSION_END, 10), 0);
    char *metrics = NULL;
    size_t mlen = 0;
    FILE *f = open_memstream(&metrics, &mlen);
    resattn_repository_render_metrics(repo, f);
    fclose(f);
    ck_assert_msg(strstr(metrics, "resattn_model_loads_total{model=\"m\",result=\"failure\"} 1\n"),
                  "%s", metrics);
    ck_assert_msg(strstr(metrics, "resattn_model_loads_total{model=\"m\",result=\"success\"} 2\n"),
                  "%s", metrics);
    ck_assert_msg(strstr(metrics, "resattn_model_serving_version{model=\"m\"} 2\n"), "%s", metrics);
    ck_assert_msg(strstr(metrics, "resattn_model_versions_loaded{model=\"m\"} 1\n"), "%s", metrics);
    free(metrics);
    stop_repo();
}
END_TEST

/* A half-written file (written in place, no rename) fails without harm; once complete, the
 * changed file is tried again by the next poll. An unchanged failed file is not re-read. */
START_TEST(test_half_written_file) {
    put_version(root, "m", 1, 101);
    start_with(RESATTN_CONTROL_POLL, 1, NULL, 0, 0);
    size_t len;
    unsigned char *b = model_bytes(102, &len);
    char d[512], f[600];
    snprintf(d, sizeof d, "%s/m/2", root);
    ut_mkdirs(d);
    snprintf(f, sizeof f, "%s/model.safetensors", d);
    ck_assert_int_eq(ut_write_file(f, b, len / 2), 0);
    ck_assert_int_eq(wait_state("m", 2, RESATTN_VERSION_END, 10), 0);
    resattn_model_version *v = must_get("m", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 1);
    resattn_model_version_release(v);
    sleep(2); /* two more polls: the same file is not tried again */
    ck_assert_int_eq(log_count("version 2: load failed"), 1);
    FILE *fp = fopen(f, "ab"); /* the writer finishes */
    ck_assert_int_eq(fwrite(b + len / 2, 1, len - len / 2, fp), len - len / 2);
    fclose(fp);
    free(b);
    ck_assert_int_eq(wait_serving("m", 2, 10), 0);
    v = must_get("m", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 2);
    check_runs_as(v, 102);
    resattn_model_version_release(v);
    stop_repo();
}
END_TEST

/* ---- reference counting and swaps ------------------------------------------------------ */

START_TEST(test_swap_refcount) {
    put_version(root, "m", 1, 111);
    start_repo(RESATTN_CONTROL_NONE);
    resattn_model_version *old = must_get("m", NULL); /* a request routed before the swap */
    drop_version("m", 2, 112);
    char err[256];
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_RESCAN, NULL, err, sizeof err), 0);
    resattn_model_version *now = must_get("m", NULL);
    ck_assert_int_eq(resattn_model_version_number(now), 2);
    /* version 1 is out of routing but alive for the request that holds it */
    ck_assert_int_eq(state_of("m", 1, NULL, 0), RESATTN_VERSION_UNLOADING);
    expect_missing("m", "1", 404, NULL);
    check_runs_as(old, 111);
    check_runs_as(now, 112);
    ck_assert(resattn_repository_ready(repo));
    resattn_model_version_retain(old); /* two references: freed after both */
    resattn_model_version_release(old);
    usleep(100000);
    ck_assert_int_eq(state_of("m", 1, NULL, 0), RESATTN_VERSION_UNLOADING);
    resattn_model_version_release(old);
    ck_assert_int_eq(wait_state("m", 1, RESATTN_VERSION_END, 10), 0);
    resattn_model_version_release(now);
    ck_assert_int_eq(log_count("version 1: unloading"), 1);
    stop_repo();
}
END_TEST

/* A reload of the same version number (file replaced) takes over unversioned requests. */
START_TEST(test_reload_same_version) {
    put_version(root, "m", 1, 121);
    start_repo(RESATTN_CONTROL_NONE);
    resattn_model_version *a = must_get("m", NULL);
    char d[512];
    snprintf(d, sizeof d, "%s/m/1", root);
    ut_rm_tree(d);
    drop_version("m", 1, 122);
    char err[256];
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_RESCAN, NULL, err, sizeof err), 0);
    resattn_model_version *b = must_get("m", NULL);
    ck_assert_ptr_ne(a, b);
    check_runs_as(a, 121);
    check_runs_as(b, 122);
    ck_assert_int_eq(state_of("m", 1, NULL, 0), RESATTN_VERSION_AVAILABLE);
    resattn_model_version_release(a);
    resattn_model_version_release(b);
    ck_assert_int_eq(log_count("version 1: reloaded"), 1);
    stop_repo();
}
END_TEST

/* Jobs of two versions queued together are batched per version, never mixed. */
START_TEST(test_batches_never_mix_versions) {
    for (int i = 1; i <= 2; i++)
        put_version(root, "m", i, 130 + (unsigned)i);
    put_config("m", "{\"version_policy\": {\"all\": true}, \"max_delay_ms\": 0}");
    start_repo(RESATTN_CONTROL_NONE);
    resattn_model_version *v[2] = {must_get("m", "1"), must_get("m", "2")};
    enum { J = 8 };
    float x[J][PER], got[J][K], want[J][K], y[PER], z[K];
    atomic_store(&done_count, 0);
    atomic_store(&hold, 1);
    /* two jobs whose done() blocks keep both workers busy while the others queue up */
    resattn_job block[2], jobs[J];
    fill(y, PER, 1);
    push(&block[0], v[0], y, 1, z, on_done_hold);
    push(&block[1], v[1], y, 1, z, on_done_hold);
    wait_done(2);
    for (int i = 0; i < J; i++) {
        fill(x[i], PER, 200 + (unsigned)i);
        expected(131 + (unsigned)(i % 2), x[i], 1, want[i]);
        push(&jobs[i], v[i % 2], x[i], 1, got[i], on_done);
    }
    atomic_store(&hold, 0);
    wait_done(2 + J);
    for (int i = 0; i < J; i++) {
        ck_assert_int_eq(jobs[i].status, 0);
        ck_assert_msg(close_enough(got[i], want[i], K), "job %d computed by the wrong version", i);
        ck_assert_msg(jobs[i].batch_size <= J / 2, "job %d in a batch of %d: versions mixed", i,
                      jobs[i].batch_size);
    }
    int batched = 0;
    for (int i = 0; i < J; i++)
        batched |= jobs[i].batch_size > 1;
    ck_assert_msg(batched, "no batching happened at all");
    /* per-version statistics: executions by the pool */
    int st;
    char err[256];
    json_t *s = resattn_repository_stats(repo, "m", 1, "2", 1, &st, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    json_t *e = json_array_get(json_object_get(s, "model_stats"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(e, "name")), "m");
    ck_assert_str_eq(json_string_value(json_object_get(e, "version")), "2");
    long long execs = json_integer_value(json_object_get(e, "execution_count"));
    ck_assert_msg(execs >= 2 && execs <= 1 + J / 2, "%lld executions", execs);
    json_t *bs = json_object_get(e, "batch_stats");
    long long images = 0;
    for (size_t i = 0; i < json_array_size(bs); i++) {
        json_t *b = json_array_get(bs, i);
        images += json_integer_value(json_object_get(b, "batch_size")) *
                  json_integer_value(json_object_get(json_object_get(b, "compute_infer"), "count"));
    }
    ck_assert_int_eq(images, 1 + J / 2); /* the blocking job and four queued ones */
    ck_assert_ptr_nonnull(json_object_get(json_object_get(e, "inference_stats"), "queue"));
    json_decref(s);
    ck_assert_ptr_null(resattn_repository_stats(repo, "m", 1, "3", 1, &st, err, sizeof err));
    ck_assert_int_eq(st, 404);
    s = resattn_repository_stats(repo, NULL, 0, NULL, 0, &st, err, sizeof err);
    ck_assert_int_eq(json_array_size(json_object_get(s, "model_stats")), 2);
    json_decref(s);
    resattn_model_version_release(v[0]);
    resattn_model_version_release(v[1]);
    stop_repo();
}
END_TEST

/* ---- modes ------------------------------------------------------------------------------ */

START_TEST(test_poll_picks_up_new_version) {
    put_version(root, "m", 1, 141);
    start_with(RESATTN_CONTROL_POLL, 1, NULL, 0, 0);
    double t0 = resattn_now();
    drop_version("m", 2, 142);
    int found = 0;
    while (!found && resattn_now() - t0 < patience(10)) {
        resattn_model_version *v = must_get("m", NULL);
        found = resattn_model_version_number(v) == 2;
        if (found)
            check_runs_as(v, 142);
        resattn_model_version_release(v);
        usleep(20000);
    }
    double dt = resattn_now() - t0;
    ck_assert_msg(found && dt < patience(1 + 3), "version 2 after %.2f s (poll every 1 s)", dt);
    /* a new model folder is picked up too, and one removed is unloaded */
    put_version(root, "n", 1, 143);
    ck_assert_int_eq(wait_serving("n", 1, 5), 0);
    char d[512];
    snprintf(d, sizeof d, "%s/n", root);
    ut_rm_tree(d);
    for (int i = 0; i < patience(5) * 100; i++) {
        resattn_model_version *gone = get("n", NULL, NULL);
        if (!gone)
            break;
        resattn_model_version_release(gone);
        usleep(10000);
    }
    expect_missing("n", NULL, 404, "not loaded");
    ck_assert(resattn_repository_ready(repo));
    stop_repo();
}
END_TEST

START_TEST(test_explicit_load_unload) {
    put_version(root, "a", 1, 151);
    put_version(root, "b", 1, 152);
    put_version(root, "b", 2, 153);
    const char *load[] = {"a"};
    start_with(RESATTN_CONTROL_EXPLICIT, 1, load, 1, 0);
    ck_assert(resattn_repository_ready(repo));
    resattn_model_version *v = must_get("a", NULL);
    resattn_model_version_release(v);
    expect_missing("b", NULL, 404, "not found");
    json_t *idx = resattn_repository_index(repo, 0);
    char *text = json_dumps(idx, JSON_COMPACT);
    ck_assert_msg(strstr(text, "{\"name\":\"b\"}"), "%s", text); /* in DIR, not loaded */
    free(text);
    json_decref(idx);
    char err[512];
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "b", err, sizeof err), 0);
    v = must_get("b", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 2);
    check_runs_as(v, 153);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_UNLOAD, "b", err, sizeof err), 0);
    expect_missing("b", NULL, 404, "not loaded");
    check_runs_as(v, 153); /* a request that holds it still finishes on it */
    resattn_model_version_release(v);
    ck_assert_int_eq(wait_state("b", 2, RESATTN_VERSION_END, 10), 0);
    ck_assert(resattn_repository_ready(repo)); /* b is not wanted any more */
    /* unloading what is not loaded is fine; load brings it back */
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_UNLOAD, "b", err, sizeof err), 0);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "b", err, sizeof err), 0);
    v = must_get("b", "2");
    resattn_model_version_release(v);
    /* a load that fails says why, and the model stays out */
    char d[512];
    snprintf(d, sizeof d, "%s/c/1", root);
    ut_mkdirs(d);
    snprintf(d, sizeof d, "%s/c/1/model.safetensors", root);
    ck_assert_int_eq(ut_write_file(d, "garbage", 7), 0);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "c", err, sizeof err), 400);
    ck_assert_msg(strstr(err, "failed to load model 'c': version 1: model.safetensors"), "%s", err);
    expect_missing("c", NULL, 404, NULL);
    ck_assert(resattn_repository_ready(repo));
    stop_repo();
}
END_TEST

/* A --load-model model that cannot load holds readiness until a rescan loads it; a version
 * that failed beside one that loads is reported while the other serves. */
START_TEST(test_explicit_start_failure) {
    char d[512];
    snprintf(d, sizeof d, "%s/bad/1", root);
    ut_mkdirs(d);
    snprintf(d, sizeof d, "%s/bad/1/model.safetensors", root);
    ck_assert_int_eq(ut_write_file(d, "garbage", 7), 0);
    put_version(root, "half", 1, 191);
    snprintf(d, sizeof d, "%s/half/2", root);
    ut_mkdirs(d);
    snprintf(d, sizeof d, "%s/half/2/model.safetensors", root);
    ck_assert_int_eq(ut_write_file(d, "garbage", 7), 0);
    const char *load[] = {"bad", "half"};
    start_with(RESATTN_CONTROL_EXPLICIT, 1, load, 2, 1); /* only "bad" has nothing to serve */
    ck_assert(!resattn_repository_ready(repo));
    expect_missing("bad", NULL, 503, "no ready version");
    resattn_model_version *v = must_get("half", NULL);
    ck_assert_int_eq(resattn_model_version_number(v), 1);
    resattn_model_version_release(v);
    ck_assert_int_eq(log_count("--load-model half: failed to load model 'half': version 2: "), 1);
    ck_assert_int_eq(log_count("(version 1 serves)"), 1);
    snprintf(d, sizeof d, "%s/bad/1", root);
    ut_rm_tree(d);
    drop_version("bad", 1, 192);
    resattn_repository_rescan(repo);
    ck_assert_int_eq(wait_serving("bad", 1, 10), 0);
    ck_assert(resattn_repository_ready(repo));
    stop_repo();
}
END_TEST

START_TEST(test_load_refused_outside_explicit) {
    put_version(root, "m", 1, 161);
    start_repo(RESATTN_CONTROL_POLL);
    char err[512];
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "m", err, sizeof err), 400);
    ck_assert_msg(strstr(err, "--model-control-mode explicit"), "%s", err);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_UNLOAD, "m", err, sizeof err), 400);
    resattn_model_version *v = must_get("m", NULL);
    resattn_model_version_release(v);
    stop_repo();
}
END_TEST

/* Models given by file join the repository as version 1 of their own. */
START_TEST(test_fixed_models) {
    put_version(root, "m", 1, 171);
    put_version(root, "fixed", 1, 172); /* same name as the fixed model: ignored */
    size_t len;
    unsigned char *b = model_bytes(173, &len);
    char err[RESATTN_ERR_LEN];
    resattn_model *fm = NULL;
    ck_assert_int_eq(resattn_model_load_buffer(b, len, &fm, err, sizeof err), RESATTN_OK);
    free(b);
    resattn_model *models[] = {fm};
    resattn_pool_options po = {.workers = 1, .max_batch = 4, .max_delay_ms = 0, .capacity = 8};
    ck_assert_int_eq(resattn_pool_new(models, 1, &po, NULL, &pool, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(resattn_pool_wait_ready(pool, err, sizeof err), 0);
    resattn_repository_options ro = {
        .root = root, .mode = RESATTN_CONTROL_EXPLICIT, .log = log_line};
    ck_assert_int_eq(resattn_repository_new(&ro, pool, &repo, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(
        resattn_repository_add_fixed(repo, "fixed", resattn_pool_fixed(pool, 0), err, sizeof err),
        RESATTN_OK);
    ck_assert_int_eq(
        resattn_repository_add_fixed(repo, "fixed", resattn_pool_fixed(pool, 0), err, sizeof err),
        RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(resattn_repository_start(repo, err, sizeof err), 0);
    resattn_model_version *v = must_get("default", NULL);
    ck_assert_str_eq(resattn_model_version_name(v), "fixed");
    check_runs_as(v, 173);
    resattn_model_version_release(v);
    v = must_get("fixed", "1");
    resattn_model_version_release(v);
    expect_missing("fixed", "2", 404, "only '1'");
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_UNLOAD, "fixed", err, sizeof err),
                     400);
    ck_assert_msg(strstr(err, "--model"), "%s", err);
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_LOAD, "m", err, sizeof err), 0);
    ck_assert(resattn_repository_ready(repo));
    int st;
    json_t *s = resattn_repository_version_status(repo, "fixed", 5, NULL, 0, &st, err, sizeof err);
    char *text = json_dumps(s, JSON_COMPACT);
    ck_assert_str_eq(text, "{\"model_version_status\":[{\"version\":\"1\",\"state\":\"AVAILABLE\","
                           "\"status\":{\"error_code\":\"OK\",\"error_message\":\"\"}}]}");
    free(text);
    json_decref(s);
    stop_repo();
    resattn_model_free(fm);
}
END_TEST

/* A repository root that is a symlink swapped to a new tree (as git-sync or a projected
 * volume does) is followed at the next scan: the new tree's files load. */
START_TEST(test_root_symlink_swap) {
    char a[512], b[512], cur[512], tmp[512];
    snprintf(a, sizeof a, "%s/tree-a", root);
    snprintf(b, sizeof b, "%s/tree-b", root);
    put_version(a, "m", 1, 181);
    put_version(b, "m", 1, 182);
    snprintf(cur, sizeof cur, "%s/current", root);
    ck_assert_int_eq(symlink("tree-a", cur), 0);
    repo_root = cur;
    start_repo(RESATTN_CONTROL_NONE);
    resattn_model_version *v = must_get("m", NULL);
    check_runs_as(v, 181);
    resattn_model_version_release(v);
    snprintf(tmp, sizeof tmp, "%s/current.new", root);
    ck_assert_int_eq(symlink("tree-b", tmp), 0);
    ck_assert_int_eq(rename(tmp, cur), 0); /* atomic swap of the whole tree */
    char err[256];
    ck_assert_int_eq(resattn_repository_run(repo, RESATTN_REPO_RESCAN, NULL, err, sizeof err), 0);
    v = must_get("m", NULL);
    check_runs_as(v, 182);
    resattn_model_version_release(v);
    ck_assert_int_eq(log_count("now leads to"), 1);
    stop_repo();
}
END_TEST

Suite *repository_suite(void) {
    Suite *s = suite_create("repository");
    TCase *names = tcase_create("names");
    tcase_add_checked_fixture(names, setup, teardown);
    tcase_set_timeout(names, 30);
    tcase_add_test(names, test_name_check);
    tcase_add_test(names, test_unsafe_folders_refused);
    tcase_add_test(names, test_api_names_refused);
    suite_add_tcase(s, names);
    TCase *life = tcase_create("lifecycle");
    tcase_add_checked_fixture(life, setup, teardown);
    tcase_set_timeout(life, 60);
    tcase_add_test(life, test_latest_by_default);
    tcase_add_test(life, test_policies);
    tcase_add_test(life, test_bad_config);
    tcase_add_test(life, test_precision_config);
    tcase_add_test(life, test_failed_version_keeps_good_one);
    tcase_add_test(life, test_half_written_file);
    tcase_add_test(life, test_swap_refcount);
    tcase_add_test(life, test_reload_same_version);
    tcase_add_test(life, test_batches_never_mix_versions);
    tcase_add_test(life, test_poll_picks_up_new_version);
    tcase_add_test(life, test_explicit_load_unload);
    tcase_add_test(life, test_explicit_start_failure);
    tcase_add_test(life, test_load_refused_outside_explicit);
    tcase_add_test(life, test_fixed_models);
    tcase_add_test(life, test_root_symlink_swap);
    suite_add_tcase(s, life);
    return s;
}
