/*
 * Prometheus metrics of the server. Counters and histogram buckets are relaxed atomics so
 * HTTP threads and workers update them without locks; rendering reads them one by one (a
 * scrape may see a histogram mid-update, which Prometheus tolerates). Histogram sums are kept
 * in micro-units (microseconds, or images x 1e6) as integers. The process_* metrics come from
 * /proc/self at render time.
 */
#include "runtime/metrics.h"
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_CODE 600
#define MAX_BUCKETS 16
#define MAX_MODEL_LINES 16

typedef struct histogram {
    const char *name, *help;
    int nb;
    double le[MAX_BUCKETS];               /* upper bounds, ascending; +Inf implied */
    atomic_ullong count[MAX_BUCKETS + 1]; /* non-cumulative; last = above every bound */
    atomic_ullong sum_micro;
} histogram;

struct resattn_metrics {
    atomic_ullong requests[RESATTN_EP_COUNT][MAX_CODE];
    atomic_ullong errors[MAX_CODE];
    atomic_ullong rejected[RESATTN_REJECT_COUNT];
    atomic_long queue_depth, in_flight;
    atomic_ullong inference_cpu_ns; /* the workers' thread CPU time inside forward passes */
    histogram request_duration, queue_wait, inference, batch_size;
    char *model_lines[MAX_MODEL_LINES]; /* label sets of resattn_model_info, owned */
    int num_models;
};

static const char *endpoint_names[RESATTN_EP_COUNT] = {
    "v2_server",  "v2_live", "v2_ready", "v2_model", "v2_model_ready", "v2_infer", "v1_model",
    "v1_predict", "healthz", "readyz",   "metrics",  "predict",        "web",      "unknown",
};

static const char *reject_names[RESATTN_REJECT_COUNT] = {"queue_full", "timeout", "draining",
                                                         "body_too_large", "unauthorized"};

const char *resattn_endpoint_name(resattn_endpoint e) {
    return e >= 0 && e < RESATTN_EP_COUNT ? endpoint_names[e] : "unknown";
}

static void hist_init(histogram *h, const char *name, const char *help, const double *le, int nb) {
    h->name = name;
    h->help = help;
    h->nb = nb;
    memcpy(h->le, le, sizeof(double) * (size_t)nb);
}

static void hist_observe(histogram *h, double v) {
    int i = 0;
    while (i < h->nb && v > h->le[i])
        i++;
    atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_micro, (unsigned long long)(v * 1e6 + 0.5),
                              memory_order_relaxed);
}

resattn_metrics *resattn_metrics_new(void) {
    resattn_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    static const double secs[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128};
    int ns = (int)(sizeof secs / sizeof secs[0]);
    hist_init(&m->request_duration, "resattn_request_duration_seconds",
              "Time from the first byte of a request to its completion.", secs, ns);
    hist_init(&m->queue_wait, "resattn_queue_wait_seconds",
              "Time an inference request waited in the queue for a worker.", secs, ns);
    hist_init(&m->inference, "resattn_inference_duration_seconds",
              "Duration of one batched forward pass.", secs, ns);
    hist_init(&m->batch_size, "resattn_batch_size", "Images in one forward pass.", sizes,
              (int)(sizeof sizes / sizeof sizes[0]));
    return m;
}

void resattn_metrics_free(resattn_metrics *m) {
    if (!m)
        return;
    for (int i = 0; i < m->num_models; i++)
        free(m->model_lines[i]);
    free(m);
}

/* Write s as a label value: backslash, quote and newline escaped. */
static void put_label(FILE *f, const char *s) {
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        fputc(*s, f);
    }
}

static const char *attention_name(resattn_attention_kind k) {
    switch (k) {
    case RESATTN_ATTENTION_SE:
        return "se";
    case RESATTN_ATTENTION_ECA:
        return "eca";
    case RESATTN_ATTENTION_CBAM:
        return "cbam";
    case RESATTN_ATTENTION_CA:
        return "ca";
    default:
        return "none";
    }
}

int resattn_metrics_add_model(resattn_metrics *m, const char *name,
                              const resattn_model_info *info) {
    if (m->num_models == MAX_MODEL_LINES)
        return -1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return -1;
    fputs("model=\"", f);
    put_label(f, name);
    fprintf(f,
            "\",attention=\"%s\",block=\"%s\",stem=\"%s\",num_classes=\"%d\",input_shape=\"%d,%d,"
            "%d\",params=\"%zu\",precision=\"%s\",kernel_path=\"%s\"",
            attention_name(info->attention),
            info->block == RESATTN_BLOCK_BOTTLENECK ? "bottleneck" : "basic",
            info->stem == RESATTN_STEM_CIFAR ? "cifar" : "imagenet", info->num_classes,
            info->in_channels, info->in_height, info->in_width, info->num_params,
            resattn_precision_name(info->precision), info->kernel_path);
    if (fclose(f))
        return -1;
    m->model_lines[m->num_models++] = buf;
    return 0;
}

void resattn_metrics_request(resattn_metrics *m, resattn_endpoint e, int status, double seconds) {
    if (e < 0 || e >= RESATTN_EP_COUNT)
        e = RESATTN_EP_UNKNOWN;
    if (status < 0 || status >= MAX_CODE)
        status = 0;
    atomic_fetch_add_explicit(&m->requests[e][status], 1, memory_order_relaxed);
    hist_observe(&m->request_duration, seconds);
}

void resattn_metrics_error(resattn_metrics *m, int status) {
    if (status < 0 || status >= MAX_CODE)
        status = 0;
    atomic_fetch_add_explicit(&m->errors[status], 1, memory_order_relaxed);
}

void resattn_metrics_reject(resattn_metrics *m, resattn_reject_reason r) {
    if (r >= 0 && r < RESATTN_REJECT_COUNT)
        atomic_fetch_add_explicit(&m->rejected[r], 1, memory_order_relaxed);
}

void resattn_metrics_queue_wait(resattn_metrics *m, double seconds) {
    hist_observe(&m->queue_wait, seconds);
}

void resattn_metrics_batch(resattn_metrics *m, int batch, double seconds, double cpu_seconds) {
    hist_observe(&m->batch_size, batch);
    hist_observe(&m->inference, seconds);
    atomic_fetch_add_explicit(&m->inference_cpu_ns, (unsigned long long)(cpu_seconds * 1e9 + 0.5),
                              memory_order_relaxed);
}

void resattn_metrics_queue_depth_add(resattn_metrics *m, long delta) {
    atomic_fetch_add_explicit(&m->queue_depth, delta, memory_order_relaxed);
}

void resattn_metrics_in_flight_add(resattn_metrics *m, long delta) {
    atomic_fetch_add_explicit(&m->in_flight, delta, memory_order_relaxed);
}

long resattn_metrics_in_flight(const resattn_metrics *m) {
    return atomic_load_explicit(&((resattn_metrics *)m)->in_flight, memory_order_relaxed);
}

static void head(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_hist(FILE *f, histogram *h) {
    head(f, h->name, "histogram", h->help);
    unsigned long long cum = 0;
    for (int i = 0; i <= h->nb; i++) {
        cum += atomic_load_explicit(&h->count[i], memory_order_relaxed);
        if (i < h->nb)
            fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->le[i], cum);
        else
            fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", h->name, cum);
    }
    fprintf(f, "%s_sum %.6f\n%s_count %llu\n", h->name,
            atomic_load_explicit(&h->sum_micro, memory_order_relaxed) / 1e6, h->name, cum);
}

/* process_* metrics from /proc/self/stat (fields 14-15 CPU ticks, 22 start, 23-24 memory). */
static void render_process(FILE *f) {
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0, btime = 0;
    char buf[4096];
    FILE *s = fopen("/proc/self/stat", "r");
    if (s) {
        size_t n = fread(buf, 1, sizeof buf - 1, s);
        buf[n] = 0;
        fclose(s);
        char *p = strrchr(buf, ')'); /* the command name may contain spaces */
        if (p)
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                   "%*d %llu %llu %lld",
                   &utime, &stime, &start, &vsize, &rss);
    }
    FILE *st = fopen("/proc/stat", "r");
    if (st) {
        while (fgets(buf, sizeof buf, st))
            if (sscanf(buf, "btime %lld", &btime) == 1)
                break;
        fclose(st);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the directory stream itself */
    }
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    head(f, "process_cpu_seconds_total", "counter", "Total user and system CPU time in seconds.");
    fprintf(f, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
    head(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    fprintf(f, "process_resident_memory_bytes %lld\n", rss * page);
    head(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    fprintf(f, "process_virtual_memory_bytes %llu\n", vsize);
    head(f, "process_open_fds", "gauge", "Number of open file descriptors.");
    fprintf(f, "process_open_fds %d\n", fds);
    head(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    fprintf(f, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    head(f, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
    fprintf(f, "process_start_time_seconds %.2f\n", (double)btime + (double)start / (double)tck);
}

static void render_requests(FILE *f, resattn_metrics *m) {
    head(f, "resattn_http_requests_total", "counter", "HTTP requests by endpoint and status code.");
    for (int e = 0; e < RESATTN_EP_COUNT; e++)
        for (int c = 0; c < MAX_CODE; c++) {
            unsigned long long v = atomic_load_explicit(&m->requests[e][c], memory_order_relaxed);
            if (v)
                fprintf(f, "resattn_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                        endpoint_names[e], c, v);
        }
    head(f, "resattn_http_errors_total", "counter", "Error answers (4xx and 5xx) by status code.");
    for (int c = 0; c < MAX_CODE; c++) {
        unsigned long long v = atomic_load_explicit(&m->errors[c], memory_order_relaxed);
        if (v)
            fprintf(f, "resattn_http_errors_total{code=\"%d\"} %llu\n", c, v);
    }
    head(f, "resattn_requests_rejected_total", "counter",
         "Requests refused or abandoned, by reason.");
    for (int r = 0; r < RESATTN_REJECT_COUNT; r++)
        fprintf(f, "resattn_requests_rejected_total{reason=\"%s\"} %llu\n", reject_names[r],
                atomic_load_explicit(&m->rejected[r], memory_order_relaxed));
}

char *resattn_metrics_render(resattn_metrics *m, size_t *len) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    render_requests(f, m);
    render_hist(f, &m->request_duration);
    render_hist(f, &m->queue_wait);
    render_hist(f, &m->inference);
    render_hist(f, &m->batch_size);
    head(f, "resattn_inference_cpu_seconds_total", "counter",
         "CPU time of the worker threads inside forward passes (a worker's second compute "
         "thread not included).");
    fprintf(f, "resattn_inference_cpu_seconds_total %.9f\n",
            atomic_load_explicit(&m->inference_cpu_ns, memory_order_relaxed) * 1e-9);
    head(f, "resattn_queue_depth", "gauge", "Inference requests waiting for a worker.");
    fprintf(f, "resattn_queue_depth %ld\n",
            atomic_load_explicit(&m->queue_depth, memory_order_relaxed));
    head(f, "resattn_requests_in_flight", "gauge", "HTTP requests being handled.");
    fprintf(f, "resattn_requests_in_flight %ld\n",
            atomic_load_explicit(&m->in_flight, memory_order_relaxed));
    head(f, "resattn_model_info", "gauge", "Loaded models; the value is always 1.");
    for (int i = 0; i < m->num_models; i++)
        fprintf(f, "resattn_model_info{%s} 1\n", m->model_lines[i]);
    head(f, "resattn_blas_info", "gauge", "OpenBLAS build in use; the value is always 1.");
    fputs("resattn_blas_info{corename=\"", f);
    put_label(f, resattn_blas_corename());
    fprintf(f, "\",parallel=\"%d\",threads=\"%d\"} 1\n", resattn_blas_parallel(),
            resattn_get_blas_threads());
    render_process(f);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
