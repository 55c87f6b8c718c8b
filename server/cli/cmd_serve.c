/*
 * `resattn serve`: reads the configuration, loads the models (the built-in one when no
 * --model is given), starts the worker pool and the HTTP server, and waits for SIGTERM or
 * SIGINT in main with sigtimedwait. The signals are blocked before our threads start, so
 * libmicrohttpd and worker threads never take them; OpenBLAS starts its own threads before
 * main, with signals unblocked, so a tiny handler that only records the signal covers a
 * signal delivered there (the default action would kill the process mid-drain). On a signal
 * it drains: readiness turns 503, the listener closes, queued and running requests finish
 * (within --drain-timeout-ms), then everything stops and the process exits 0.
 */
#include "cli/commands.h"
#include "cli/config.h"
#include "cli/default_model.h"
#include "http/http.h"
#include "runtime/metrics.h"
#include "runtime/pool.h"
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Time a drain waits for running batches after the queue was cancelled on timeout. */
#define DRAIN_GRACE_MS 5000

typedef struct server {
    resattn_server_config cfg;
    resattn_model *models[RESATTN_MAX_MODELS];
    char *names[RESATTN_MAX_MODELS];
    resattn_served_model served[RESATTN_MAX_MODELS];
    int num_models;
    resattn_metrics *metrics;
    resattn_pool *pool;
    resattn_http *http;
    char *tls_cert_pem, *tls_key_pem; /* --tls-cert/--tls-key contents, NUL-terminated */
} server;

/* A whole PEM file as a NUL-terminated string (libmicrohttpd takes certificates as text). */
static char *read_pem(const char *path, const char *flag, char *err, size_t err_len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s %s: cannot open", flag, path);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t n; buf && (n = fread(buf + len, 1, cap - 1 - len, f)) > 0;) {
        len += n;
        if (len + 1 == cap && cap < ((size_t)1 << 24)) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            } else
                buf = b;
        }
    }
    fclose(f);
    if (!buf) {
        snprintf(err, err_len, "%s %s: out of memory", flag, path);
        return NULL;
    }
    buf[len] = 0;
    if (!strstr(buf, "-----BEGIN ")) {
        snprintf(err, err_len, "%s %s: not a PEM file (no '-----BEGIN ' line)", flag, path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Server messages (not the access log): text, or JSON lines with --log-format json. */
static void say(const server *s, const char *level, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!s->cfg.log_json) {
        fprintf(stderr, "resattn: %s\n", msg);
        return;
    }
    json_t *o =
        json_pack("{s:f, s:s, s:s}", "time", (double)time(NULL), "level", level, "msg", msg);
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    fprintf(stderr, "%s\n", line ? line : msg);
    free(line);
}

/* "models/se-cifar.safetensors" -> "se-cifar" */
static char *file_stem(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    return strndup(b, dot && dot != b ? (size_t)(dot - b) : strlen(b));
}

static int add_model(server *s, resattn_model *m, const char *fallback_name) {
    const resattn_model_info *info = resattn_model_get_info(m);
    const char *name = info->name && *info->name ? info->name : fallback_name;
    for (const char *p = name; *p; p++)
        if (*p == '/' || *p == ':' || *p <= ' ') {
            say(s, "error", "model name '%s' cannot be used in URLs (no '/', ':' or spaces)", name);
            resattn_model_free(m);
            return -1;
        }
    for (int i = 0; i < s->num_models; i++)
        if (!strcmp(s->names[i], name)) {
            say(s, "error", "two models are named '%s'; model names must be unique", name);
            resattn_model_free(m);
            return -1;
        }
    s->models[s->num_models] = m;
    s->names[s->num_models] = strdup(name);
    s->served[s->num_models] = (resattn_served_model){s->names[s->num_models], m};
    s->num_models++;
    int bf16 = info->precision == RESATTN_PRECISION_BF16;
    say(s, "info", "model '%s': %d classes, input [%d, %d, %d], %zu parameters, precision %s%s%s",
        name, info->num_classes, info->in_channels, info->in_height, info->in_width,
        info->num_params, resattn_precision_name(info->precision), bf16 ? " on " : "",
        bf16 ? info->kernel_path : "");
    return 0;
}

/* One warning line for the process when BF16 was asked and the CPU has no BF16 path (every
 * model then runs FP32: the CPU decides, not the model). Returns 0. */
static int warn_precision(const server *s) {
    for (int i = 0; i < s->num_models; i++) {
        const resattn_model_info *in = resattn_model_get_info(s->models[i]);
        if (in->precision != in->precision_requested) {
            say(s, "warn", "%s", RESATTN_BF16_FALLBACK_WARNING);
            break;
        }
    }
    return 0;
}

static int load_models(server *s) {
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    resattn_model_options opts = {.precision = (resattn_precision)s->cfg.precision};
    if (s->cfg.num_models == 0) {
        if (resattn_default_model_size == 0) {
            say(s, "error",
                "no --model given and this build has no built-in model "
                "(models/default.safetensors was empty)");
            return -1;
        }
        if (resattn_model_load_buffer_opts(resattn_default_model_data,
                                           (size_t)resattn_default_model_size, &opts, &m, err,
                                           sizeof err) != RESATTN_OK) {
            say(s, "error", "built-in model: %s", err);
            return -1;
        }
        return add_model(s, m, "default") || warn_precision(s) ? -1 : 0;
    }
    for (int i = 0; i < s->cfg.num_models; i++) {
        if (resattn_model_load_file_opts(s->cfg.models[i], &opts, &m, err, sizeof err) !=
            RESATTN_OK) {
            say(s, "error", "%s: %s", s->cfg.models[i], err);
            return -1;
        }
        char *stem = file_stem(s->cfg.models[i]);
        int rc = add_model(s, m, stem);
        free(stem);
        if (rc)
            return -1;
    }
    return warn_precision(s);
}

static int write_port_file(const char *path, int port) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%d\n", port);
    if (fclose(f))
        return -1;
    return rename(tmp, path); /* readers never see a half-written file */
}

static void check_blas(server *s) {
    int par = resattn_blas_parallel();
    if (par == 0 && s->cfg.workers > 1) {
        /* the serial OpenBLAS build gives wrong sgemm results under concurrent callers */
        say(s, "warn", "OpenBLAS is the serial build (not thread-safe): using 1 worker");
        s->cfg.workers = 1;
    }
    if (par == 2 && s->cfg.workers > 1)
        say(s, "warn", "OpenBLAS is the OpenMP build: concurrent workers may be slow");
    resattn_set_blas_threads(s->cfg.blas_threads);
}

static int start(server *s) {
    char err[RESATTN_ERR_LEN];
    s->metrics = resattn_metrics_new();
    if (!s->metrics)
        return -1;
    for (int i = 0; i < s->num_models; i++)
        resattn_metrics_add_model(s->metrics, s->names[i], resattn_model_get_info(s->models[i]));
    resattn_pool_options po = {s->cfg.workers, s->cfg.max_batch, s->cfg.max_delay_ms,
                               s->cfg.queue_capacity};
    if (resattn_pool_new(s->models, s->num_models, &po, s->metrics, &s->pool, err, sizeof err)) {
        say(s, "error", "worker pool: %s", err);
        return -1;
    }
    resattn_http_options ho = {
        .host = s->cfg.host,
        .port = s->cfg.port,
        .max_body_bytes = s->cfg.max_body_bytes,
        .threads = s->cfg.http_threads,
        .request_timeout_ms = s->cfg.request_timeout_ms,
        .log_json = s->cfg.log_json,
        .log = stderr,
        .api_keys = (const char *const *)s->cfg.api_keys,
        .num_api_keys = s->cfg.num_api_keys,
        .auth_health = s->cfg.auth_health,
        .tls_cert = s->tls_cert_pem,
        .tls_key = s->tls_key_pem,
        .max_connections = s->cfg.max_connections,
        .connection_timeout_s = s->cfg.connection_timeout_s,
        .max_connections_per_ip = s->cfg.max_connections_per_ip,
        .max_header_bytes = s->cfg.max_header_bytes,
        .limits = {.max_batch = s->cfg.max_batch,
                   .allow_nonfinite = s->cfg.allow_nonfinite,
                   .max_json_depth = 64},
    };
    if (resattn_http_start(&ho, s->served, s->num_models, s->pool, s->metrics, &s->http, err,
                           sizeof err)) {
        say(s, "error", "%s", err);
        return s->tls_cert_pem ? -2 : -1; /* a certificate GnuTLS refused: a usage error */
    }
    int port = resattn_http_port(s->http);
    say(s, "info", "listening on %s%s:%d (%d workers x %d BLAS threads, max batch %d, %s)",
        s->tls_cert_pem ? "https://" : "", s->cfg.host, port, s->cfg.workers, s->cfg.blas_threads,
        s->cfg.max_batch, resattn_blas_corename());
    if (s->cfg.port == 0) {
        printf("%d\n", port);
        fflush(stdout);
    }
    if (s->cfg.port_file && write_port_file(s->cfg.port_file, port)) {
        say(s, "error", "cannot write --port-file %s", s->cfg.port_file);
        return -1;
    }
    if (resattn_pool_wait_ready(s->pool, err, sizeof err)) {
        say(s, "error", "%s", err);
        return -1;
    }
    resattn_http_set_ready(s->http, 1);
    say(s, "info", "ready (warm-up done)");
    return 0;
}

/* Returns 0 when every request was answered within the drain timeout. */
static int drain(server *s) {
    resattn_http_begin_drain(s->http);
    if (resattn_http_wait_idle(s->http, s->cfg.drain_timeout_ms) == 0)
        return 0;
    say(s, "warn", "drain timeout (%d ms): answering queued requests with 503",
        s->cfg.drain_timeout_ms);
    resattn_pool_cancel_queued(s->pool, 503, "server shutting down");
    return resattn_http_wait_idle(s->http, DRAIN_GRACE_MS) == 0 ? 1 : -1;
}

static void teardown(server *s) {
    resattn_pool_free(s->pool); /* the queue is empty: joins idle workers */
    resattn_http_stop(s->http);
    resattn_metrics_free(s->metrics);
    for (int i = 0; i < s->num_models; i++) {
        resattn_model_free(s->models[i]);
        free(s->names[i]);
    }
    resattn_server_config_release(&s->cfg);
    free(s->tls_cert_pem);
    free(s->tls_key_pem);
}

/* Set by on_signal when a thread that does not block the signals (OpenBLAS's) takes one. */
static volatile sig_atomic_t signal_seen;

static void on_signal(int sig) {
    signal_seen = sig;
}

/* Block until SIGTERM or SIGINT arrives, whichever thread the kernel gave it to. */
static int wait_signal(const sigset_t *set) {
    for (;;) {
        struct timespec tick = {0, 100 * 1000000L};
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig > 0)
            return sig;
        if (signal_seen)
            return signal_seen;
    }
}

int resattn_cmd_serve(int argc, char **argv) {
    static server s; /* large; zero-initialised */
    char err[RESATTN_ERR_LEN];
    int rc = resattn_server_config_parse(argc, argv, &s.cfg, stdout, err, sizeof err);
    if (rc) {
        if (rc == 2)
            fprintf(stderr, "resattn serve: %s\n", err);
        resattn_server_config_release(&s.cfg);
        return rc == 1 ? 0 : 2;
    }
    /* before our threads exist: they inherit the mask, main takes the signals below */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0);
    if (s.cfg.tls_cert &&
        (!(s.tls_cert_pem = read_pem(s.cfg.tls_cert, "--tls-cert", err, sizeof err)) ||
         !(s.tls_key_pem = read_pem(s.cfg.tls_key, "--tls-key", err, sizeof err)))) {
        fprintf(stderr, "resattn serve: %s\n", err);
        teardown(&s);
        return 2;
    }
    check_blas(&s);
    if (load_models(&s)) {
        teardown(&s);
        return 2;
    }
    if ((rc = start(&s))) {
        if (s.http) { /* nothing is in flight yet unless clients came early: drain anyway */
            resattn_http_begin_drain(s.http);
            if (resattn_http_wait_idle(s.http, DRAIN_GRACE_MS))
                return 1; /* cannot stop the daemon with suspended connections */
        }
        teardown(&s);
        return rc == -2 ? 2 : 1;
    }
    int sig = wait_signal(&set);
    say(&s, "info", "%s: draining (timeout %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
        s.cfg.drain_timeout_ms);
    rc = drain(&s);
    if (rc < 0) {
        say(&s, "error", "requests still running after the drain timeout; exiting anyway");
        return 1;
    }
    say(&s, "info", "stopped");
    teardown(&s);
    return 0;
}
