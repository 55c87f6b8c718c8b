/*
 * `resattn bench`: time the forward pass of a model on this machine and print ONE JSON
 * object on stdout: median ms per image and per batch, p90, GFLOP/s, batch, threads,
 * OpenBLAS core, peak RSS, and the precision and kernel path (--precision). The input is
 * deterministic pseudo-random data.
 */
#include "cli/commands.h"

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

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    long v = strtol(s, &e, 10);
    if (*s == '\0' || *e != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: resattn bench [--model M.safetensors] [--batch B] [--threads T] "
               "[--iters K]\n"
               "                     [--precision fp32|bf16]\n\n"
               "Time K forward passes (after 2 warm-up passes) of B images with T OpenBLAS\n"
               "threads and print one JSON object. Defaults: B=1, T=1, K=20, precision fp32\n"
               "(or RESATTN_PRECISION); the JSON names the precision and kernel path that ran.\n");
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
        int bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            path = argv[++i];
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            bad = parse_int(argv[++i], 1, 4096, &batch);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            bad = parse_int(argv[++i], 1, 256, &threads);
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            precision = argv[++i];
        } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
            bad = parse_int(argv[++i], 1, 100000, &iters);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "resattn bench: bad or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    resattn_precision prec;
    int rc = resattn_cli_precision("bench", precision, &prec);
    if (rc)
        return rc;
    resattn_model *m = NULL;
    if ((rc = resattn_cli_load_model(path, prec, &m)))
        return rc;
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
        printf("{\"model\": \"%s\", \"batch\": %d, \"threads\": %d, \"iters\": %d, "
               "\"ms_per_image\": %.4f, \"ms_per_batch\": %.4f, \"p90_ms_per_batch\": %.4f, "
               "\"gflop_per_s\": %.3f, \"gflops_per_image\": %.5f, \"peak_rss_mb\": %.1f, "
               "\"blas_core\": \"%s\", \"blas_parallel\": %d, \"precision\": \"%s\", "
               "\"precision_requested\": \"%s\", \"kernel_path\": \"%s\"}\n",
               path ? path : "(built-in)", batch, threads, iters, med / batch, med, p90,
               in->flops_per_image * batch / (med / 1e3) / 1e9, in->flops_per_image / 1e9,
               ru.ru_maxrss / 1024.0, resattn_blas_corename(), resattn_blas_parallel(),
               resattn_precision_name(in->precision),
               resattn_precision_name(in->precision_requested), in->kernel_path);
    }
    free(times);
    resattn_model_free(m);
    return rc;
}
