/*
 * The option table of `resattn serve` and the code that reads it: defaults first, then the
 * RESATTN_* environment variables, then the command line (so flags win). Every option is
 * declared once below; `--help` prints the same table. Also works out how many CPUs the
 * process may really use, for the automatic workers / BLAS threads split.
 */
#include "cli/config.h"
#include "repository/repository.h"
#include <resattn/resattn.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum opt_type {
    OPT_INT,
    OPT_LLONG,
    OPT_STR,
    OPT_BOOL,
    OPT_LOGFMT,
    OPT_PRECISION,
    OPT_MODELS,
    OPT_KEYS,
    OPT_CONTROL, /* none|poll|explicit */
    OPT_LOADS    /* --load-model list */
} opt_type;

typedef struct option_def {
    const char *name; /* flag without the leading "--" */
    const char *env;
    opt_type type;
    size_t offset;   /* of the field in resattn_server_config */
    const char *def; /* default as text; NULL = unset */
    long long min, max;
    const char *metavar;
    const char *help;
} option_def;

#define OFF(f) offsetof(resattn_server_config, f)

static const option_def options[] = {
    {"model", "RESATTN_MODEL", OPT_MODELS, OFF(models), NULL, 0, 0, "[NAME=]PATH",
     "model file; NAME= sets its URL name; 'builtin' is the built-in model (the default); "
     "repeatable (env: comma-separated)"},
    {"host", "RESATTN_HOST", OPT_STR, OFF(host), "0.0.0.0", 0, 0, "ADDR", "address to listen on"},
    {"port", "RESATTN_PORT", OPT_INT, OFF(port), "8080", 0, 65535, "N",
     "TCP port; 0 picks a free one and prints it"},
    {"grpc-port", "RESATTN_GRPC_PORT", OPT_INT, OFF(grpc_port), "0", 0, 65535, "N",
     "gRPC port (Open Inference Protocol inference.GRPCInferenceService and "
     "grpc.health.v1), on --host, TLS with --tls-cert; 0 = no gRPC (the default)"},
    {"workers", "RESATTN_WORKERS", OPT_INT, OFF(workers), "0", 0, 256, "N",
     "inference worker threads; 0 = usable CPUs / BLAS threads"},
    {"http-threads", "RESATTN_HTTP_THREADS", OPT_INT, OFF(http_threads), "1", 1, 64, "N",
     "libmicrohttpd threads (they parse request bodies); more on big machines"},
    {"blas-threads", "RESATTN_BLAS_THREADS", OPT_INT, OFF(blas_threads), "0", 0, 256, "N",
     "OpenBLAS threads per GEMM; 0 = usable CPUs / workers (at least 1)"},
    {"max-batch", "RESATTN_MAX_BATCH", OPT_INT, OFF(max_batch), "8", 1, 1024, "N",
     "most images in one forward pass (1 = batching off)"},
    {"max-delay-ms", "RESATTN_MAX_DELAY_MS", OPT_INT, OFF(max_delay_ms), "2", 0, 10000, "MS",
     "longest wait for more requests to fill a batch"},
    {"queue-capacity", "RESATTN_QUEUE_CAPACITY", OPT_INT, OFF(queue_capacity), "64", 1, 1000000,
     "N", "requests waiting for a worker; beyond it, 503 with Retry-After"},
    {"max-body-bytes", "RESATTN_MAX_BODY_BYTES", OPT_LLONG, OFF(max_body_bytes), "67108864", 1024,
     (long long)1 << 40, "BYTES", "largest request body accepted (413 beyond)"},
    {"request-timeout-ms", "RESATTN_REQUEST_TIMEOUT_MS", OPT_INT, OFF(request_timeout_ms), "30000",
     1, 86400000, "MS", "a request not computed within this answers 504"},
    {"drain-timeout-ms", "RESATTN_DRAIN_TIMEOUT_MS", OPT_INT, OFF(drain_timeout_ms), "30000", 0,
     86400000, "MS", "on SIGTERM/SIGINT, longest wait for queued and running requests"},
    {"drain-delay-ms", "RESATTN_DRAIN_DELAY_MS", OPT_INT, OFF(drain_delay_ms), "0", 0, 3600000,
     "MS",
     "on SIGTERM/SIGINT, keep serving this long with /readyz 503 and Connection: close "
     "before closing the listener (load balancers and endpoints catch up); a second signal "
     "ends it early"},
    {"log-format", "RESATTN_LOG_FORMAT", OPT_LOGFMT, OFF(log_json), "text", 0, 0, "text|json",
     "access log format (stderr)"},
    {"allow-nonfinite", "RESATTN_ALLOW_NONFINITE", OPT_BOOL, OFF(allow_nonfinite), "0", 0, 0, NULL,
     "accept NaN and Inf in input tensors"},
    {"port-file", "RESATTN_PORT_FILE", OPT_STR, OFF(port_file), NULL, 0, 0, "PATH",
     "write the bound port number to this file once listening"},
    {"api-key", "RESATTN_API_KEY", OPT_KEYS, OFF(api_keys), NULL, 0, 0, "KEY",
     "require 'Authorization: Bearer KEY' on inference and metadata endpoints; repeatable"},
    {"api-key-file", "RESATTN_API_KEY_FILE", OPT_STR, OFF(api_key_file), NULL, 0, 0, "PATH",
     "more API keys, one per line ('#' starts a comment)"},
    {"auth-health", "RESATTN_AUTH_HEALTH", OPT_BOOL, OFF(auth_health), "0", 0, 0, NULL,
     "with API keys, also protect /healthz, /readyz, /v2/health/* and /metrics"},
    {"tls-cert", "RESATTN_TLS_CERT", OPT_STR, OFF(tls_cert), NULL, 0, 0, "PATH",
     "serve HTTPS with this PEM certificate (needs --tls-key)"},
    {"tls-key", "RESATTN_TLS_KEY", OPT_STR, OFF(tls_key), NULL, 0, 0, "PATH",
     "PEM private key of --tls-cert"},
    {"max-connections", "RESATTN_MAX_CONNECTIONS", OPT_INT, OFF(max_connections), "1024", 1,
     1000000, "N", "most open connections; beyond it, new ones are closed at once"},
    {"connection-timeout-s", "RESATTN_CONNECTION_TIMEOUT_S", OPT_INT, OFF(connection_timeout_s),
     "30", 1, 86400, "S", "close a connection idle this long"},
    {"max-connections-per-ip", "RESATTN_MAX_CONNECTIONS_PER_IP", OPT_INT,
     OFF(max_connections_per_ip), "0", 0, 1000000, "N",
     "most connections from one address (0 = no limit)"},
    {"max-header-bytes", "RESATTN_MAX_HEADER_BYTES", OPT_INT, OFF(max_header_bytes), "65536", 8192,
     16777216, "BYTES", "memory per connection for the request line and headers (431 beyond)"},
    {"max-memory-bytes", "RESATTN_MAX_MEMORY_BYTES", OPT_LLONG, OFF(max_memory_bytes), "0", 0,
     (long long)1 << 50, "BYTES",
     "memory budget for requests in progress (503 beyond); 0 = the cgroup limit (else physical "
     "memory) less models, buffers and a margin"},
    {"max-image-pixels", "RESATTN_MAX_IMAGE_PIXELS", OPT_LLONG, OFF(max_image_pixels), "0", 0,
     (long long)1 << 40, "N",
     "most pixels in one decoded image (413 beyond); 0 = 40 million, or fewer when decoding "
     "one would take more than a quarter of the memory limit"},
    {"model-repository", "RESATTN_MODEL_REPOSITORY", OPT_STR, OFF(model_repository), NULL, 0, 0,
     "DIR", "serve the models of DIR/<model>/<version>/model.safetensors (with --model too)"},
    {"model-control-mode", "RESATTN_MODEL_CONTROL_MODE", OPT_CONTROL, OFF(model_control_mode),
     "none", 0, 0, "none|poll|explicit",
     "none: load the repository at start; poll: rescan it; explicit: load on request"},
    {"repository-poll-secs", "RESATTN_REPOSITORY_POLL_SECS", OPT_INT, OFF(repository_poll_secs),
     "15", 1, 86400, "S", "poll mode: seconds between two scans of the repository"},
    {"load-model", "RESATTN_LOAD_MODEL", OPT_LOADS, OFF(load_models), NULL, 0, 0, "NAME",
     "explicit mode: load this repository model at start; repeatable (env: comma-separated)"},
    {"precision", "RESATTN_PRECISION", OPT_PRECISION, OFF(precision), "fp32", 0, 0, "fp32|bf16",
     "bf16: BF16 products, FP32 sums, on AMX-BF16 or AVX512-BF16 (FP32 elsewhere, with a warning)"},
};

#define NUM_OPTIONS (sizeof options / sizeof options[0])

static void set_err(char *err, size_t err_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* The list an OPT_MODELS or OPT_LOADS option fills. */
static char **list_of(const option_def *o, resattn_server_config *cfg, int **count) {
    *count = o->type == OPT_MODELS ? &cfg->num_models : &cfg->num_load_models;
    return o->type == OPT_MODELS ? cfg->models : cfg->load_models;
}

static void list_clear(char **items, int *count) {
    for (int i = 0; i < *count; i++)
        free(items[i]);
    *count = 0;
}

static int list_add(const option_def *o, resattn_server_config *cfg, const char *s, size_t len,
                    char *err, size_t err_len) {
    int *count;
    char **items = list_of(o, cfg, &count);
    if (len == 0)
        return 0;
    if (*count == RESATTN_MAX_MODELS) {
        set_err(err, err_len, "--%s: at most %d models", o->name, RESATTN_MAX_MODELS);
        return -1;
    }
    items[(*count)++] = strndup(s, len);
    return 0;
}

/* Append one API key (owned copy); empty keys are refused so "" never authorizes. */
static int keys_add(resattn_server_config *cfg, const char *key, size_t len, const char *from,
                    char *err, size_t err_len) {
    if (len == 0) {
        set_err(err, err_len, "%s: an API key must not be empty", from);
        return -1;
    }
    char **k = realloc(cfg->api_keys, sizeof *k * (size_t)(cfg->num_api_keys + 1));
    if (!k || !(k[cfg->num_api_keys] = strndup(key, len))) {
        if (k)
            cfg->api_keys = k;
        set_err(err, err_len, "%s: out of memory", from);
        return -1;
    }
    cfg->api_keys = k;
    cfg->num_api_keys++;
    return 0;
}

/* --api-key-file: one key per line; blank lines and lines starting with '#' are skipped,
 * surrounding spaces trimmed. Messages name the file and line, never the key. */
static int keys_read_file(resattn_server_config *cfg, const char *path, char *err, size_t err_len) {
    FILE *f = fopen(path, "r");
    if (!f) {
        set_err(err, err_len, "--api-key-file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int rc = 0, n = 0, lineno = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line, *e = line + strlen(line);
        while (e > p && isspace((unsigned char)e[-1]))
            e--;
        while (p < e && isspace((unsigned char)*p))
            p++;
        if (p == e || *p == '#')
            continue;
        char from[64];
        snprintf(from, sizeof from, "--api-key-file line %d", lineno);
        rc = keys_add(cfg, p, (size_t)(e - p), from, err, err_len);
        n++;
    }
    fclose(f);
    if (!rc && n == 0) {
        set_err(err, err_len, "--api-key-file %s: no key in the file", path);
        rc = -1;
    }
    return rc;
}

static int parse_bool(const char *s, int *out) {
    if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") ||
        !strcasecmp(s, "on")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") ||
        !strcasecmp(s, "off")) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Store text value s into the option's field; `from` names the source for messages. */
static int set_value(const option_def *o, resattn_server_config *cfg, const char *s,
                     const char *from, char *err, size_t err_len) {
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case OPT_INT:
    case OPT_LLONG: {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || *end || v < o->min || v > o->max) {
            set_err(err, err_len, "%s: '%s' is not an integer in [%lld, %lld]", from, s, o->min,
                    o->max);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)field = (int)v;
        else
            *(long long *)field = v;
        return 0;
    }
    case OPT_STR:
        free(*(char **)field);
        *(char **)field = strdup(s);
        return 0;
    case OPT_BOOL:
        if (parse_bool(s, (int *)field)) {
            set_err(err, err_len, "%s: '%s' is not a boolean (1/0, true/false)", from, s);
            return -1;
        }
        return 0;
    case OPT_LOGFMT:
        if (strcmp(s, "text") && strcmp(s, "json")) {
            set_err(err, err_len, "%s: '%s' is not 'text' or 'json'", from, s);
            return -1;
        }
        *(int *)field = !strcmp(s, "json");
        return 0;
    case OPT_PRECISION: {
        resattn_precision p;
        if (resattn_precision_parse(s, &p)) {
            set_err(err, err_len, "%s: '%s' is not 'fp32' or 'bf16'", from, s);
            return -1;
        }
        *(int *)field = (int)p;
        return 0;
    }
    case OPT_KEYS:
        return keys_add(cfg, s, strlen(s), from, err, err_len);
    case OPT_CONTROL: {
        resattn_control_mode mode;
        if (resattn_control_mode_parse(s, &mode)) {
            set_err(err, err_len, "%s: '%s' is not 'none', 'poll' or 'explicit'", from, s);
            return -1;
        }
        *(int *)field = (int)mode;
        return 0;
    }
    case OPT_MODELS: /* environment: comma-separated list */
    case OPT_LOADS:
        for (const char *p = s;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if (list_add(o, cfg, p, len, err, err_len))
                return -1;
            if (!c)
                break;
            p = c + 1;
        }
        return 0;
    }
    return -1;
}

/* CPUs allowed by a CFS quota of quota/period microseconds (rounded up); 0 = no limit. */
static int quota_cpus(long long quota, long long period) {
    if (quota <= 0 || period <= 0)
        return 0;
    long long cap = (quota + period - 1) / period;
    return cap > 0 && cap < INT_MAX ? (int)cap : 0;
}

/* cgroup v2: cpu.max holds "max 100000" or "<quota> <period>". */
static int cgroup_v2_cpus(const char *root) {
    char path[512];
    snprintf(path, sizeof path, "%s/cpu.max", root);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char quota[32];
    long long period = 0;
    int cap = 0;
    if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max"))
        cap = quota_cpus(atoll(quota), period);
    fclose(f);
    return cap;
}

static long long read_ll(const char *path, int *ok) {
    FILE *f = fopen(path, "r");
    long long v = 0;
    *ok = f && fscanf(f, "%lld", &v) == 1;
    if (f)
        fclose(f);
    return v;
}

/* cgroup v1: cpu.cfs_quota_us (-1 = unlimited) / cpu.cfs_period_us, under cpu/ or
 * cpu,cpuacct/ depending on how the hierarchy was mounted. */
static int cgroup_v1_cpus(const char *root) {
    static const char *dirs[] = {"cpu", "cpu,cpuacct"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char qp[512], pp[512];
        snprintf(qp, sizeof qp, "%s/%s/cpu.cfs_quota_us", root, dirs[i]);
        snprintf(pp, sizeof pp, "%s/%s/cpu.cfs_period_us", root, dirs[i]);
        int okq, okp;
        long long q = read_ll(qp, &okq), p = read_ll(pp, &okp);
        if (okq && okp)
            return quota_cpus(q, p);
    }
    return -1;
}

int resattn_cgroup_cpu_limit(const char *root) {
    int cap = cgroup_v2_cpus(root);
    return cap < 0 ? cgroup_v1_cpus(root) : cap; /* no cgroup v2 file: try v1 */
}

/* ---- memory limit ---------------------------------------------------------------------- */

/* A limit file's value: a byte count, or "max" (v2) or a value near 2^63 (v1's "unlimited",
 * 9223372036854771712) for none: 0. -1 when the file is missing or unreadable. */
static long long read_limit(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char text[64] = "";
    int ok = fscanf(f, "%63s", text) == 1;
    fclose(f);
    if (!ok)
        return -1;
    if (!strcmp(text, "max"))
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno == ERANGE || *end || v <= 0 || v >= (1LL << 62))
        return 0;
    return v;
}

/* 1 when the comma-separated list has `name`. */
static int list_has(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list;;) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, name, n))
            return 1;
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

/* The cgroup path of `controller` ("" = the v2 line "0::") in a /proc/self/cgroup file. */
static int self_cgroup_path(const char *file, const char *controller, char *out, size_t len) {
    FILE *f = file ? fopen(file, "r") : NULL;
    if (!f)
        return -1;
    char line[1024];
    int found = -1;
    while (found && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = 0;
        const char *ctrls = c1 + 1, *path = c2 + 1;
        if (*controller ? list_has(ctrls, controller) : !*ctrls) {
            snprintf(out, len, "%.*s", (int)strcspn(path, "\n"), path);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

/* The smallest limit in file `name` of dir base/path and its ancestors up to base; a path
 * that does not exist under base is skipped (base alone is read). */
static long long limit_up_tree(const char *base, const char *path, const char *name) {
    char dir[1024], file[1200];
    snprintf(dir, sizeof dir, "%s%s", base, path);
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode))
        snprintf(dir, sizeof dir, "%s", base);
    size_t base_len = strlen(base);
    long long best = -1;
    for (;;) {
        snprintf(file, sizeof file, "%s/%s", dir, name);
        long long v = read_limit(file);
        if (v > 0 && (best <= 0 || v < best))
            best = v;
        else if (v == 0 && best < 0)
            best = 0;
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= base_len || !slash || (size_t)(slash - dir) < base_len)
            break;
        *slash = 0;
    }
    return best;
}

long long resattn_cgroup_memory_limit(const char *root, const char *self_cgroup) {
    char path[512] = "", base[600];
    if (self_cgroup_path(self_cgroup, "", path, sizeof path))
        path[0] = 0;
    long long v = limit_up_tree(root, path, "memory.max"); /* cgroup v2 */
    if (v >= 0)
        return v;
    if (self_cgroup_path(self_cgroup, "memory", path, sizeof path))
        path[0] = 0;
    snprintf(base, sizeof base, "%s/memory", root); /* cgroup v1 */
    return limit_up_tree(base, path, "memory.limit_in_bytes");
}

long long resattn_physical_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (long long)pages * page : 0;
}

long long resattn_resident_bytes(pid_t pid) {
    char path[64], line[256];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

int resattn_usable_cpus(void) {
    int n = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    int cap = resattn_cgroup_cpu_limit("/sys/fs/cgroup");
    if (cap >= 1 && cap < n)
        n = cap;
    return n < 1 ? 1 : n;
}

/* Automatic thread split: workers x BLAS threads <= usable CPUs. */
static void resolve_threads(resattn_server_config *cfg) {
    int cpus = resattn_usable_cpus();
    if (cfg->workers == 0 && cfg->blas_threads == 0) {
        cfg->workers = cpus;
        cfg->blas_threads = 1;
    } else if (cfg->workers == 0) {
        cfg->workers = cpus / cfg->blas_threads > 0 ? cpus / cfg->blas_threads : 1;
    } else if (cfg->blas_threads == 0) {
        cfg->blas_threads = cpus / cfg->workers > 0 ? cpus / cfg->workers : 1;
    }
}

static const option_def *find_option(const char *name, size_t len) {
    for (size_t i = 0; i < NUM_OPTIONS; i++)
        if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
            return &options[i];
    return NULL;
}

static int parse_args(int argc, char **argv, resattn_server_config *cfg, FILE *out, char *err,
                      size_t err_len) {
    int models_from_flags = 0, loads_from_flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            resattn_server_config_help(out);
            return 1;
        }
        if (strncmp(a, "--", 2)) {
            set_err(err, err_len, "unexpected argument '%s' (options start with --)", a);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        const option_def *o = find_option(name, eq ? (size_t)(eq - name) : strlen(name));
        if (!o) {
            set_err(err, err_len, "unknown option '%s' (see --help)", a);
            return 2;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val && o->type == OPT_BOOL)
            val = "1";
        if (!val) {
            if (i + 1 >= argc) {
                set_err(err, err_len, "option --%s needs a value", o->name);
                return 2;
            }
            val = argv[++i];
        }
        char from[64];
        snprintf(from, sizeof from, "--%s", o->name);
        if (o->type == OPT_MODELS || o->type == OPT_LOADS) {
            int *from_flags = o->type == OPT_MODELS ? &models_from_flags : &loads_from_flags, *n;
            char **items = list_of(o, cfg, &n);
            if (!*from_flags) /* flags replace the environment's list */
                list_clear(items, n);
            *from_flags = 1;
            if (!*val) {
                set_err(err, err_len,
                        o->type == OPT_MODELS
                            ? "--model: empty value (a file, NAME=FILE or builtin)"
                            : "--load-model: empty value (a model name)");
                return 2;
            }
            if (list_add(o, cfg, val, strlen(val), err, err_len))
                return 2;
            continue;
        }
        if (set_value(o, cfg, val, from, err, err_len))
            return 2;
    }
    return 0;
}

/* The repository options fit together: a mode other than none needs a repository, and
 * --load-model needs explicit mode and plain model names. */
static int check_repository_options(const resattn_server_config *cfg, char *err, size_t err_len) {
    const char *mode = resattn_control_mode_name((resattn_control_mode)cfg->model_control_mode);
    if (!cfg->model_repository && cfg->model_control_mode != RESATTN_CONTROL_NONE) {
        set_err(err, err_len, "--model-control-mode %s needs --model-repository", mode);
        return -1;
    }
    if (cfg->num_load_models && cfg->model_control_mode != RESATTN_CONTROL_EXPLICIT) {
        set_err(err, err_len,
                "--load-model needs --model-control-mode explicit (in mode %s every model of the "
                "repository is loaded)",
                mode);
        return -1;
    }
    for (int i = 0; i < cfg->num_load_models; i++) {
        char why[256];
        const char *n = cfg->load_models[i];
        if (resattn_repository_name_check(n, strlen(n), why, sizeof why)) {
            set_err(err, err_len, "--load-model: %s", why);
            return -1;
        }
    }
    return 0;
}

int resattn_server_config_parse(int argc, char **argv, resattn_server_config *cfg, FILE *out,
                                char *err, size_t err_len) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NUM_OPTIONS; i++)
        if (options[i].def && set_value(&options[i], cfg, options[i].def, "default", err, err_len))
            return 2;
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const char *v = getenv(options[i].env);
        if (v && *v && set_value(&options[i], cfg, v, options[i].env, err, err_len))
            return 2;
    }
    int rc = parse_args(argc, argv, cfg, out, err, err_len);
    if (rc)
        return rc;
    if (cfg->api_key_file && keys_read_file(cfg, cfg->api_key_file, err, err_len))
        return 2;
    if (!cfg->tls_cert != !cfg->tls_key) {
        set_err(err, err_len, "--tls-cert and --tls-key go together (only %s given)",
                cfg->tls_cert ? "--tls-cert" : "--tls-key");
        return 2;
    }
    if (check_repository_options(cfg, err, err_len))
        return 2;
    resolve_threads(cfg);
    return 0;
}

void resattn_server_config_release(resattn_server_config *cfg) {
    if (!cfg)
        return;
    list_clear(cfg->models, &cfg->num_models);
    list_clear(cfg->load_models, &cfg->num_load_models);
    free(cfg->model_repository);
    free(cfg->host);
    free(cfg->port_file);
    for (int i = 0; i < cfg->num_api_keys; i++)
        free(cfg->api_keys[i]);
    free(cfg->api_keys);
    free(cfg->api_key_file);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    memset(cfg, 0, sizeof *cfg);
}

void resattn_server_config_help(FILE *out) {
    fprintf(out, "usage: resattn serve [options]\n\nServes models over HTTP: Open Inference "
                 "Protocol (KServe v2), TensorFlow Serving REST,\n/healthz, /readyz, /metrics. "
                 "Each option may also be set by its environment variable;\nflags win.\n\n");
    for (size_t i = 0; i < NUM_OPTIONS; i++) {
        const option_def *o = &options[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(out, "  %-28s %s\n  %-28s [env %s", flag, o->help, "", o->env);
        if (o->def)
            fprintf(out, ", default %s", o->def);
        fprintf(out, "]\n");
    }
    fprintf(out, "\nA model's URL name is its config \"name\", else its file stem; a repository "
                 "model's is its folder name.\n");
    fprintf(out, "\nUsable CPUs here: %d (affinity and cgroup quota).\n", resattn_usable_cpus());
}
