/*
 * `resattn serve`: reads the configuration, loads the models (the built-in one when neither
 * --model nor --model-repository is given), starts the worker pool, the model repository
 * (server/repository: --model files join it as fixed models) and the HTTP server, and waits
 * for SIGTERM or SIGINT in main with sigtimedwait; SIGHUP makes the repository rescan. The signals
 * are blocked before our threads start, so libmicrohttpd and worker threads never take them;
 * OpenBLAS starts its own threads before main, with signals unblocked, so a tiny handler that only
 * records the signal covers a signal delivered there (the default action would kill the process
 * mid-drain). On a signal it drains: readiness turns 503, (after --drain-delay-ms of serving on,
 * for load balancers to notice) the listener closes, queued and running requests finish
 * (within --drain-timeout-ms), then everything stops and the process exits 0.
 *
 * Before serving it sets the memory budget (runtime/budget.h): --max-memory-bytes, or the
 * cgroup memory limit (else physical memory) less what the loaded models, their workspaces,
 * the connection buffers and image decoding take, less a safety margin. Models that alone
 * do not fit the limit are an error here (exit 2), not an OOM kill later. The repository's
 * first versions are counted once they are loaded and warm (replan_after_warmup); versions
 * loaded later (poll, explicit loads) are not charged to the budget.
 */
#include "cli/commands.h"
#include "cli/config.h"
#include "data/image.h"
#include "grpc/grpc.h"
#include "http/http.h"
#include "net/listen.h"
#include "model/config.h"
#include "protocol/json_scan.h"
#include "runtime/budget.h"
#include "repository/repository.h"
#include "runtime/metrics.h"
#include "runtime/pool.h"
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longest part of the drain spent closing the listener without resets: usually a few
 * milliseconds, up to about 100 with many clients reconnecting on busy cores; a second try
 * to freeze it can wait for a handshake the kernel held back (a client's retransmission,
 * 200 ms or more). */
#define LISTENER_CLOSE_MS 2000
/* Time a drain waits for running batches after the queue was cancelled on timeout. */
#define DRAIN_GRACE_MS 5000
#define MIB (1024.0 * 1024.0)

typedef struct server {
    resattn_server_config cfg;
    resattn_model *models[RESATTN_MAX_MODELS];
    char *names[RESATTN_MAX_MODELS];
    int num_models;
    resattn_metrics *metrics;
    resattn_pool *pool;
    resattn_repository *repo;
    resattn_http *http;
    int listen_fd; /* bound before the models load; -1 once the HTTP server owns it */
    resattn_grpc *grpc;
    int grpc_fd;                      /* the same for gRPC (--grpc-port), -1 when off or owned */
    char *tls_cert_pem, *tls_key_pem; /* --tls-cert/--tls-key contents, NUL-terminated */
    resattn_budget *budget;
    resattn_memory_plan plan;
    const char *limit_source; /* "cgroup memory limit" or "physical memory" */
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

/* Serve m under name (what resattn_cli_model_name gave: --model NAME=, config, file stem). */
static int add_model(server *s, resattn_model *m, const char *name) {
    const resattn_model_info *info = resattn_model_get_info(m);
    if (!resattn_model_name_ok(name)) {
        say(s, "error",
            "model name '%s' cannot be used in URLs (%s); name it with --model NAME=PATH", name,
            RESATTN_MODEL_NAME_RULE);
        resattn_model_free(m);
        return -1;
    }
    for (int i = 0; i < s->num_models; i++)
        if (!strcmp(s->names[i], name)) {
            say(s, "error",
                "two models are named '%s'; model names must be unique (name one with --model "
                "NAME=PATH)",
                name);
            resattn_model_free(m);
            return -1;
        }
    s->models[s->num_models] = m;
    s->names[s->num_models] = strdup(name);
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

/* Every --model (PATH, NAME=PATH, builtin, NAME=builtin: server/cli/cli_common.c); none
 * given: the built-in model. */
static int load_models(server *s) {
    char err[RESATTN_ERR_LEN], name[128];
    static char *const builtin_only[] = {"builtin"};
    if (s->cfg.num_models == 0 && s->cfg.model_repository)
        return 0; /* the repository's models only */
    char *const *args = s->cfg.num_models ? s->cfg.models : builtin_only;
    int n = s->cfg.num_models ? s->cfg.num_models : 1;
    for (int i = 0; i < n; i++) {
        resattn_cli_model_spec spec;
        resattn_model *m = NULL;
        if (resattn_cli_model_arg(args[i], &spec)) {
            say(s, "error", "--model '%s' names no file", args[i]);
            return -1;
        }
        spec.precision = (resattn_precision)s->cfg.precision;
        if (resattn_cli_model_open(&spec, &m, err, sizeof err) != RESATTN_OK) {
            say(s, "error", "%s", err);
            return -1;
        }
        resattn_cli_model_name(&spec, resattn_model_get_info(m), name, sizeof name);
        if (add_model(s, m, name))
            return -1;
    }
    return warn_precision(s);
}

/* ---- memory ---------------------------------------------------------------------------- */

/* The memory this process may use: the cgroup limit, else physical memory. */
static long long memory_limit(server *s) {
    long long cg = resattn_cgroup_memory_limit("/sys/fs/cgroup", "/proc/self/cgroup");
    long long phys = resattn_physical_memory();
    s->limit_source =
        cg > 0 && (phys <= 0 || cg < phys) ? "cgroup memory limit" : "physical memory";
    return cg > 0 && (phys <= 0 || cg < phys) ? cg : phys;
}

/* Model files larger than the limit would be killed while loading: refuse them first. */
static int model_files_fit(server *s, long long limit) {
    long long total = 0;
    for (int i = 0; i < s->cfg.num_models; i++) {
        resattn_cli_model_spec spec;
        struct stat st;
        if (resattn_cli_model_arg(s->cfg.models[i], &spec) == 0 && !spec.builtin &&
            stat(spec.path, &st) == 0)
            total += st.st_size;
    }
    if (limit > 0 && total >= limit) {
        say(s, "error", "model files take %.1f MiB, more than the %.1f MiB %s", total / MIB,
            limit / MIB, s->limit_source);
        return -1;
    }
    return 0;
}

/* Workspace bytes the workers will allocate: one context per worker and model, sized for
 * --max-batch (made and freed here untouched, so nothing becomes resident). */
static long long workspace_bytes(server *s) {
    long long total = 0;
    char err[RESATTN_ERR_LEN];
    for (int i = 0; i < s->num_models; i++) {
        resattn_ctx *ctx = NULL;
        if (resattn_ctx_new(s->models[i], s->cfg.max_batch, &ctx, err, sizeof err) == RESATTN_OK)
            total += (long long)resattn_ctx_workspace_bytes(ctx);
        resattn_ctx_free(ctx);
    }
    return total * s->cfg.workers;
}

/* The worst case one inference request reserves at admission: a full batch, no body. */
static size_t largest_work(const server *s) {
    size_t most = 0;
    for (int i = 0; i < s->num_models; i++) {
        size_t w =
            resattn_budget_infer_bytes(resattn_model_get_info(s->models[i]), s->cfg.max_batch, 0);
        most = w > most ? w : most;
    }
    return most;
}

/* Derive (or take) the budget; exit-2 errors when the models leave nothing for requests. */
static int plan_memory(server *s, long long limit) {
    resattn_memory_plan *p = &s->plan;
    int channels = 1;
    for (int i = 0; i < s->num_models; i++) {
        int c = resattn_model_get_info(s->models[i])->in_channels;
        channels = c > channels ? c : channels;
    }
    if (s->cfg.max_image_pixels == 0) { /* 40 MP unless decoding one takes over limit / 4 */
        long long fit = limit / 4 / resattn_budget_decode_bytes(1, channels);
        s->cfg.max_image_pixels = fit < RESATTN_IMAGE_MAX_PIXELS ? fit : RESATTN_IMAGE_MAX_PIXELS;
    }
    *p = (resattn_memory_plan){
        .limit = limit,
        .resident = resattn_resident_bytes(0),
        .workspaces = workspace_bytes(s),
        .connections = (long long)s->cfg.max_connections * s->cfg.max_header_bytes,
        .parse =
            s->cfg.http_threads * resattn_budget_decode_bytes(s->cfg.max_image_pixels, channels),
    };
    resattn_memory_plan_compute(p);
    long long models = p->resident + p->workspaces;
    if (models + p->margin >= limit) {
        say(s, "error",
            "the models need %.1f MiB (%.1f MiB resident after loading + %.1f MiB of workspaces "
            "for %d workers at batch %d) and a %.1f MiB margin: more than the %.1f MiB %s",
            models / MIB, p->resident / MIB, p->workspaces / MIB, s->cfg.workers, s->cfg.max_batch,
            p->margin / MIB, limit / MIB, s->limit_source);
        return -1;
    }
    long long budget = s->cfg.max_memory_bytes ? s->cfg.max_memory_bytes : p->budget;
    long long need = (long long)largest_work(s) + (1 << 20);
    if (!s->cfg.max_memory_bytes && budget < need) {
        say(s, "error",
            "no memory left for requests: %.1f MiB %s - %.1f MiB models - %.1f MiB connection "
            "buffers (--max-connections x --max-header-bytes) - %.1f MiB image decoding "
            "(--http-threads x --max-image-pixels) - %.1f MiB margin; lower those or set "
            "--max-memory-bytes",
            limit / MIB, s->limit_source, models / MIB, p->connections / MIB, p->parse / MIB,
            p->margin / MIB);
        return -1;
    }
    if (s->cfg.max_memory_bytes && budget < need)
        say(s, "warn",
            "--max-memory-bytes %.1f MiB is less than one request of a full batch needs (%.1f "
            "MiB): inference requests will answer 413",
            budget / MIB, need / MIB);
    if (s->cfg.max_memory_bytes && budget > p->budget)
        say(s, "warn",
            "--max-memory-bytes %.1f MiB is more than the %.1f MiB the %s leaves: the process "
            "may be killed for memory",
            budget / MIB, p->budget / MIB, s->limit_source);
    s->budget = resattn_budget_new(budget);
    if (!s->budget)
        return -1;
    say(s, "info",
        "memory budget %.1f MiB for requests (%s; %.1f MiB %s - %.1f MiB resident after "
        "loading - %.1f MiB workspaces - %.1f MiB connection buffers - %.1f MiB image decoding "
        "(%.1f MP) - %.1f MiB margin = %.1f MiB)",
        budget / MIB, s->cfg.max_memory_bytes ? "--max-memory-bytes" : "derived", limit / MIB,
        s->limit_source, p->resident / MIB, p->workspaces / MIB, p->connections / MIB,
        p->parse / MIB, s->cfg.max_image_pixels / 1e6, p->margin / MIB, p->budget / MIB);
    /* a body of --max-body-bytes that could never be admitted answers 413, not 503 forever */
    long long json_body = 3 * s->cfg.max_body_bytes + (long long)largest_work(s);
    if (json_body > budget - budget / 8)
        say(s, "warn",
            "a JSON body of --max-body-bytes (%.1f MiB) needs %.1f MiB of the budget; requests "
            "that need more than %.1f MiB answer 413",
            s->cfg.max_body_bytes / MIB, json_body / MIB, (budget - budget / 8) / MIB);
    return 0;
}

/* After warm-up the workspaces are resident: if the process grew beyond the plan, a
 * derived budget gives up the difference. */
static void replan_after_warmup(server *s) {
    long long now = resattn_resident_bytes(0), planned = s->plan.resident + s->plan.workspaces;
    if (s->cfg.max_memory_bytes || now <= planned)
        return;
    long long budget = resattn_budget_limit(s->budget) - (now - planned);
    long long floor = (long long)largest_work(s) + (1 << 20);
    resattn_budget_set_limit(s->budget, budget > floor ? budget : floor);
    say(s, "info", "after warm-up: %.1f MiB resident (%.1f MiB planned); memory budget %.1f MiB",
        now / MIB, planned / MIB, resattn_budget_limit(s->budget) / MIB);
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
    int cpus = resattn_usable_cpus(), want = s->cfg.workers * s->cfg.blas_threads;
    if (want > cpus)
        say(s, "warn",
            "%d workers x %d BLAS threads = %d threads for %d usable CPU%s: they will compete "
            "for the cores",
            s->cfg.workers, s->cfg.blas_threads, want, cpus, cpus == 1 ? "" : "s");
    resattn_set_blas_threads(s->cfg.blas_threads);
}

/* The repository's log lines go to the server's log. */
static void repo_log(void *user, const char *level, const char *msg) {
    say(user, level, "%s", msg);
}

static void repo_metrics(void *user, FILE *f) {
    resattn_repository_render_metrics(user, f);
}

/* The repository over --model-repository (or none) with the --model files as fixed models. */
static int new_repository(server *s) {
    char err[RESATTN_ERR_LEN];
    resattn_repository_options ro = {
        .root = s->cfg.model_repository,
        .mode = (resattn_control_mode)s->cfg.model_control_mode,
        .poll_secs = s->cfg.repository_poll_secs,
        .precision = (resattn_precision)s->cfg.precision,
        .load_models = (const char *const *)s->cfg.load_models,
        .num_load_models = s->cfg.num_load_models,
        .log = repo_log,
        .log_user = s,
        .metrics = s->metrics,
    };
    if (resattn_repository_new(&ro, s->pool, &s->repo, err, sizeof err)) {
        say(s, "error", "%s", err);
        return -1;
    }
    for (int i = 0; i < s->num_models; i++)
        if (resattn_repository_add_fixed(s->repo, s->names[i], resattn_pool_fixed(s->pool, i), err,
                                         sizeof err)) {
            say(s, "error", "%s", err);
            return -1;
        }
    resattn_metrics_set_renderer(s->metrics, repo_metrics, s->repo);
    return 0;
}

/* Load what the mode asks for (the server listens meanwhile, not ready), start polling. */
static int start_repository(server *s) {
    char err[RESATTN_ERR_LEN];
    if (s->cfg.model_repository)
        say(s, "info", "model repository %s: mode %s", s->cfg.model_repository,
            resattn_control_mode_name((resattn_control_mode)s->cfg.model_control_mode));
    int failed = resattn_repository_start(s->repo, err, sizeof err);
    if (failed < 0) {
        say(s, "error", "%s", err);
        return -1;
    }
    if (failed)
        say(s, "warn", "%d repository model(s) have no ready version: not ready until they do",
            failed);
    return 0;
}

/* resattn_compute_info: the paths the forward pass and the JSON parser take on this CPU. The
 * OpenBLAS core name alone misleads on AVX-512 CPUs, where the packed GEMM runs instead. */
static int describe_compute(server *s) {
    static const char *const parallel[] = {"serial", "pthreads", "openmp"};
    int par = resattn_blas_parallel();
    char threads[16];
    snprintf(threads, sizeof threads, "%d", resattn_get_blas_threads());
    const char *const labels[][2] = {
        {"gemm", resattn_gemm_path()},
        {"winograd", resattn_winograd_path()},
        {"json_scan", resattn_json_scan_simd() ? "avx512" : "portable"},
        {"openblas_core", resattn_blas_corename()},
        {"openblas_parallel", par >= 0 && par <= 2 ? parallel[par] : "unknown"},
        {"blas_threads", threads},
    };
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
        if (resattn_metrics_add_compute_label(s->metrics, labels[i][0], labels[i][1]))
            return -1;
    return 0;
}

/* The gRPC listener (--grpc-port), with the HTTP server's limits, keys and certificate. */
static int start_grpc(server *s, const resattn_http_options *ho) {
    if (s->grpc_fd < 0)
        return 0;
    char err[RESATTN_ERR_LEN];
    int fd = s->grpc_fd;
    s->grpc_fd = -1; /* resattn_grpc_start owns it now */
    if (resattn_grpc_start(fd, ho, s->repo, s->pool, s->metrics, &s->grpc, err, sizeof err)) {
        say(s, "error", "%s", err);
        return -1;
    }
    char where[300]; /* [::1]:8001 for an IPv6 address */
    resattn_format_where(where, sizeof where, s->cfg.host, resattn_grpc_port(s->grpc));
    say(s, "info", "gRPC listening on %s%s", where, s->tls_cert_pem ? " (TLS)" : "");
    return 0;
}

static int start(server *s) {
    char err[RESATTN_ERR_LEN];
    s->metrics = resattn_metrics_new();
    if (!s->metrics)
        return -1;
    for (int i = 0; i < s->num_models; i++)
        if (resattn_metrics_add_model(s->metrics, s->names[i],
                                      resattn_model_get_info(s->models[i]))) {
            say(s, "error", "out of memory for the metrics of model '%s'", s->names[i]);
            return -1;
        }
    if (describe_compute(s)) {
        say(s, "error", "out of memory for the metrics");
        return -1;
    }
    resattn_metrics_set_budget(s->metrics, s->budget);
    resattn_pool_options po = {s->cfg.workers, s->cfg.max_batch, s->cfg.max_delay_ms,
                               s->cfg.queue_capacity};
    if (resattn_pool_new(s->models, s->num_models, &po, s->metrics, &s->pool, err, sizeof err)) {
        say(s, "error", "worker pool: %s", err);
        return -1;
    }
    if (new_repository(s))
        return -1;
    resattn_http_options ho = {
        .listen_fd = s->listen_fd,
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
        .budget = s->budget,
        .max_image_pixels = s->cfg.max_image_pixels,
        .limits = {.max_batch = s->cfg.max_batch,
                   .allow_nonfinite = s->cfg.allow_nonfinite,
                   .max_json_depth = 64},
    };
    s->listen_fd = -1; /* resattn_http_start owns it now, whatever it answers */
    if (resattn_http_start(&ho, s->repo, s->pool, s->metrics, &s->http, err, sizeof err)) {
        say(s, "error", "%s", err);
        return s->tls_cert_pem ? -2 : -1; /* a certificate GnuTLS refused: a usage error */
    }
    if (start_grpc(s, &ho))
        return -1;
    int port = resattn_http_port(s->http);
    char where[300]; /* [::1]:8080 for an IPv6 address */
    resattn_format_where(where, sizeof where, s->cfg.host, port);
    say(s, "info",
        "listening on %s%s (%d workers x %d BLAS threads, max batch %d, GEMM %s, Winograd %s)",
        s->tls_cert_pem ? "https://" : "", where, s->cfg.workers, s->cfg.blas_threads,
        s->cfg.max_batch, resattn_gemm_path(), resattn_winograd_path());
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
    if (start_repository(s))
        return -1;
    replan_after_warmup(s); /* after the repository's first versions are loaded and warm */
    resattn_http_set_ready(s->http, 1);
    if (s->grpc)
        resattn_grpc_set_ready(s->grpc, 1);
    say(s, "info", "ready (warm-up done)");
    return 0;
}

/* Returns 0 when every request was answered within the drain timeout. */
static int drain(server *s) {
    if (s->grpc) /* quick: closes its listener and sends every connection a GOAWAY */
        resattn_grpc_begin_drain(s->grpc);
    resattn_listener_close_info li;
    char err[RESATTN_ERR_LEN];
    /* the listener's close is part of the drain timeout, for at most LISTENER_CLOSE_MS */
    int close_ms =
        s->cfg.drain_timeout_ms < LISTENER_CLOSE_MS ? s->cfg.drain_timeout_ms : LISTENER_CLOSE_MS;
    double t0 = resattn_now();
    resattn_http_begin_drain(s->http, close_ms, &li, err, sizeof err);
    say(s, err[0] ? "warn" : "info",
        "listener closed after %d ms: %d connections accepted during the close, %d "
        "handshakes in progress at its start, %d tries to freeze it%s%s",
        li.waited_ms, li.taken, li.handshakes, li.attempts, err[0] ? "; " : "", err);
    int left = s->cfg.drain_timeout_ms - li.waited_ms;
    if (resattn_http_wait_idle(s->http, left > 0 ? left : 0) == 0 &&
        (!s->grpc || resattn_grpc_wait_idle(s->grpc, s->cfg.drain_timeout_ms -
                                                         (int)((resattn_now() - t0) * 1e3)) == 0))
        return 0;
    say(s, "warn", "drain timeout (%d ms): answering queued requests with 503",
        s->cfg.drain_timeout_ms);
    resattn_pool_cancel_queued(s->pool, 503, "server shutting down");
    int idle = resattn_http_wait_idle(s->http, DRAIN_GRACE_MS) == 0 &&
               (!s->grpc || resattn_grpc_wait_idle(s->grpc, DRAIN_GRACE_MS) == 0);
    return idle ? 1 : -1;
}

static void teardown(server *s) {
    resattn_grpc_stop(s->grpc);       /* idle: no call holds a version any more */
    resattn_http_stop(s->http);       /* idle: no request holds a version any more */
    resattn_repository_free(s->repo); /* before the pool: a load may be using it */
    resattn_pool_free(s->pool);       /* the queue is empty: joins idle workers */
    resattn_metrics_free(s->metrics);
    resattn_budget_free(s->budget); /* after the server: requests hold parts of it */
    for (int i = 0; i < s->num_models; i++) {
        resattn_model_free(s->models[i]);
        free(s->names[i]);
    }
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    s->listen_fd = -1;
    if (s->grpc_fd >= 0)
        close(s->grpc_fd);
    s->grpc_fd = -1;
    resattn_server_config_release(&s->cfg);
    free(s->tls_cert_pem);
    free(s->tls_key_pem);
}

/* Set by on_signal when a thread that does not block the signals (OpenBLAS's) takes one. */
static volatile sig_atomic_t signal_seen;

static void on_signal(int sig) {
    signal_seen = sig;
}

/* Block until SIGTERM or SIGINT arrives, whichever thread the kernel gave it to; a SIGHUP
 * meanwhile makes the model repository rescan. */
static int wait_signal(server *s, const sigset_t *set) {
    for (;;) {
        struct timespec tick = {0, 100 * 1000000L};
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig <= 0 && signal_seen) {
            sig = signal_seen;
            signal_seen = 0;
        }
        if (sig == SIGHUP) {
            say(s, "info", "SIGHUP: rescanning the model repository");
            resattn_repository_rescan(s->repo);
        } else if (sig > 0) {
            return sig;
        }
    }
}

/* --drain-delay-ms: keep serving with readiness 503 (and Connection: close on every answer)
 * before the listener closes. Load balancers notice the 503 only at their next health check,
 * and Kubernetes removes the pod from its endpoints asynchronously (each node's proxy on its
 * own schedule), so for this long new connections still arrive and must be answered. A
 * second SIGTERM/SIGINT ends the wait (an operator who means "now"); SIGHUP still rescans. */
static void drain_delay(server *s, const sigset_t *set, const char *why) {
    if (s->cfg.drain_delay_ms <= 0)
        return;
    resattn_http_announce_drain(s->http);
    if (s->grpc) /* Health/Check and ServerReady turn NOT_SERVING; calls are still served */
        resattn_grpc_set_ready(s->grpc, 0);
    say(s, "info", "%s: readiness 503, serving %d ms more before draining", why,
        s->cfg.drain_delay_ms);
    double until = resattn_now() + s->cfg.drain_delay_ms * 1e-3;
    for (double now = resattn_now(); now < until; now = resattn_now()) {
        double left = until - now < 0.1 ? until - now : 0.1;
        struct timespec tick = {0, (long)(left * 1e9)};
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig <= 0 && signal_seen) {
            sig = signal_seen;
            signal_seen = 0;
        }
        if (sig == SIGHUP) {
            resattn_repository_rescan(s->repo);
        } else if (sig > 0) {
            say(s, "info", "%s again: drain delay cut short", sig == SIGINT ? "SIGINT" : "SIGTERM");
            return;
        }
    }
}

int resattn_cmd_serve(int argc, char **argv) {
    static server s; /* large; zero-initialised */
    s.listen_fd = s.grpc_fd = -1;
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
    sigaddset(&set, SIGHUP);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
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
    /* bind first: a taken or forbidden port is a one-line error and exit 2 at once, before
     * any model is loaded, and never a second server sharing the port */
    if (resattn_http_listen(s.cfg.host, s.cfg.port, &s.listen_fd, err, sizeof err) ||
        (s.cfg.grpc_port &&
         resattn_listen(s.cfg.host, s.cfg.grpc_port, "--grpc-port", &s.grpc_fd, err, sizeof err))) {
        say(&s, "error", "%s", err);
        teardown(&s);
        return 2;
    }
    long long limit = memory_limit(&s);
    if (model_files_fit(&s, limit) || load_models(&s) || plan_memory(&s, limit)) {
        teardown(&s);
        return 2;
    }
    if ((rc = start(&s))) {
        if (s.http) { /* nothing is in flight yet unless clients came early: drain anyway */
            resattn_http_begin_drain(s.http, LISTENER_CLOSE_MS, NULL, err, sizeof err);
            if (resattn_http_wait_idle(s.http, DRAIN_GRACE_MS))
                return 1; /* cannot stop the daemon with suspended connections */
        }
        if (s.grpc) {
            resattn_grpc_begin_drain(s.grpc);
            if (resattn_grpc_wait_idle(s.grpc, DRAIN_GRACE_MS))
                return 1;
        }
        teardown(&s);
        return rc == -2 ? 2 : 1;
    }
    int sig = wait_signal(&s, &set);
    drain_delay(&s, &set, sig == SIGINT ? "SIGINT" : "SIGTERM");
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
