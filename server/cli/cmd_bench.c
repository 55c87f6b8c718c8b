/*
 * `resattn bench`: time the forward pass of a model on this machine and print ONE JSON
 * object on stdout: median ms per image and per batch, p90, GFLOP/s, batch, threads,
 * OpenBLAS core, peak RSS, and the precision and kernel path (--precision). The input is
 * deterministic pseudo-random data.
 */
#include "cli/commands.h"
#include "cli/config.h"

#include <jansson.h>
#include <resattn/resattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f) {
    fprintf(f, "usage: resattn bench [--model [NAME=]M.safetensors|builtin] [--batch B] "
               "[--threads T] [--iters K]\n"
               "                     [--precision fp32|bf16]\n\n"
               "Time K forward passes (after 2 warm-up passes) of B images with T threads and\n"
               "print one JSON object naming the model as `resattn serve` would, and the\n"
               "precision and kernel path that ran. Defaults: the built-in model, B=1, T=1,\n"
               "K=20, precision fp32 (or RESATTN_PRECISION). More threads than usable CPUs is\n"
               "warned about on stderr (they would compete for the cores).\n");
}

/* Time iters passes; times[] gets ms per pass. */
static int time_passes(resattn_model *m, int batch, int iters, double *times) {
    const resattn_model_info *in = resattn_model_get_info(m);
    size_t count = (size_t)batch * in->in_channels * in->in_height * in->in_width;
    float *x = malloc(count * sizeof *x);
    float *y = malloc((size_t)batch * in->num_classes * sizeof *y);
    char err[RESATTN_ERR_LEN];
    resattn_ctx *ctx = NULL;
    int rc = 1;
    if (!x || !y) {
        fprintf(stderr, "resattn bench: out of memory\n");
        goto out;
    }
    uint32_t r = 12345;
    for (size_t i = 0; i < count; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    if (resattn_ctx_new(m, batch, &ctx, err, sizeof err)) {
        fprintf(stderr, "resattn bench: %s\n", err);
        goto out;
    }
    for (int i = -2; i < iters; i++) {
        double t0 = now_ms();
        if (resattn_forward(ctx, x, batch, y, err, sizeof err)) {
            fprintf(stderr, "resattn bench: %s\n", err);
            goto out;
        }
        if (i >= 0)
            times[i] = now_ms() - t0;
    }
    rc = 0;
out:
    resattn_ctx_free(ctx);
    free(x);
    free(y);
    return rc;
}

int resattn_cmd_bench(int argc, char **argv) {
    const char *path = NULL, *precision = NULL;
    int batch = 1, threads = 1, iters = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int is_model = !strcmp(a, "--model"), is_batch = !strcmp(a, "--batch"),
            is_threads = !strcmp(a, "--threads"), is_iters = !strcmp(a, "--iters"),
            is_precision = !strcmp(a, "--precision");
        if (!is_model && !is_batch && !is_threads && !is_iters && !is_precision) {
            resattn_cli_unknown_option("bench", a);
            return 2;
        }
        if (!(v = resattn_cli_value("bench", argc, argv, &i)))
            return 2;
        if (is_model)
            path = v;
        else if (is_precision)
            precision = v;
        else if ((is_batch && resattn_cli_int("bench", a, v, 1, 4096, &batch)) ||
                 (is_threads && resattn_cli_int("bench", a, v, 1, 256, &threads)) ||
                 (is_iters && resattn_cli_int("bench", a, v, 1, 100000, &iters)))
            return 2;
    }
    resattn_precision prec;
    int rc = resattn_cli_precision("bench", precision, &prec);
    if (rc)
        return rc;
    resattn_model *m = NULL;
    char name[128];
    if ((rc = resattn_cli_load_model("bench", path, prec, &m, name, sizeof name)))
        return rc;
    resattn_cli_model_spec spec; /* for model_file; the load above parsed it the same way */
    resattn_cli_model_arg(path ? path : "builtin", &spec);
    int cpus = resattn_usable_cpus();
    if (threads > cpus)
        fprintf(stderr,
                "resattn bench: warning: --threads %d is more than the %d usable CPU%s; the "
                "threads will compete for them\n",
                threads, cpus, cpus == 1 ? "" : "s");
    resattn_set_blas_threads(threads);
    double *times = malloc((size_t)iters * sizeof *times);
    rc = times ? time_passes(m, batch, iters, times) : 1;
    if (!rc) {
        qsort(times, (size_t)iters, sizeof *times, cmp_double);
        double med = iters % 2 ? times[iters / 2] : (times[iters / 2 - 1] + times[iters / 2]) / 2;
        double p90 = times[(int)(0.9 * (iters - 1) + 0.5)];
        const resattn_model_info *in = resattn_model_get_info(m);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        /* jansson, so a path with quotes stays valid JSON; key order as listed */
        json_t *o = json_pack(
            "{s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:s, s:i, s:s, s:s, s:s}",
            "model", name, "model_file", spec.builtin ? "(built-in)" : spec.path, "batch", batch,
            "threads", threads, "iters", iters, "ms_per_image", med / batch, "ms_per_batch", med,
            "p90_ms_per_batch", p90, "gflop_per_s", in->flops_per_image * batch / (med / 1e3) / 1e9,
            "gflops_per_image", in->flops_per_image / 1e9, "peak_rss_mb", ru.ru_maxrss / 1024.0,
            "blas_core", resattn_blas_corename(), "blas_parallel", resattn_blas_parallel(),
            "precision", resattn_precision_name(in->precision), "precision_requested",
            resattn_precision_name(in->precision_requested), "kernel_path", in->kernel_path);
        char *line =
            o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) : NULL;
        printf("%s\n", line ? line : "{}");
        free(line);
        json_decref(o);
    }
    free(times);
    resattn_model_free(m);
    return rc;
}
