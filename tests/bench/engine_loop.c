/*
 * A loaded resattn engine driven over stdin, for side-by-side timing (tests/bench/bench_bf16.py):
 *
 *     engine_loop MODEL PRECISION BATCH THREADS
 *
 * loads MODEL in PRECISION (fp32|bf16), makes a context for BATCH images and a deterministic
 * pseudo-random input, prints one JSON line (precision, kernel path, FLOPs per image), then
 * for every "pass" line on stdin runs one untimed and one timed forward pass and prints the
 * timed one's milliseconds. Keeping several engines loaded and alternating single passes is
 * how ratios stay meaningful on a machine whose speed drifts (../shared/DEPENDENCIES.md).
 * Built by the benchmark script against build/libresattn.a.
 */
#include <resattn/resattn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: engine_loop MODEL fp32|bf16 BATCH THREADS\n");
        return 2;
    }
    char err[RESATTN_ERR_LEN];
    resattn_model_options o = {0};
    if (resattn_precision_parse(argv[2], &o.precision)) {
        fprintf(stderr, "engine_loop: bad precision %s\n", argv[2]);
        return 2;
    }
    int batch = atoi(argv[3]), threads = atoi(argv[4]);
    resattn_model *m = NULL;
    resattn_ctx *ctx = NULL;
    if (resattn_model_load_file_opts(argv[1], &o, &m, err, sizeof err) ||
        resattn_ctx_new(m, batch, &ctx, err, sizeof err)) {
        fprintf(stderr, "engine_loop: %s\n", err);
        return 1;
    }
    resattn_set_blas_threads(threads);
    const resattn_model_info *in = resattn_model_get_info(m);
    size_t count = (size_t)batch * in->in_channels * in->in_height * in->in_width;
    float *x = malloc(count * sizeof *x), *y = malloc(sizeof *y * batch * in->num_classes);
    uint32_t r = 12345;
    for (size_t i = 0; i < count; i++) {
        r = r * 1664525u + 1013904223u;
        x[i] = (float)(r >> 8) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    printf("{\"precision\": \"%s\", \"kernel_path\": \"%s\", \"flops_per_image\": %.0f}\n",
           resattn_precision_name(in->precision), in->kernel_path, in->flops_per_image);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) && !strncmp(line, "pass", 4)) {
        double t = 0;
        for (int i = 0; i < 2; i++) {
            double t0 = now_ms();
            if (resattn_forward(ctx, x, batch, y, err, sizeof err)) {
                fprintf(stderr, "engine_loop: %s\n", err);
                return 1;
            }
            t = now_ms() - t0;
        }
        printf("%.4f\n", t);
        fflush(stdout);
    }
    free(x), free(y);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    return 0;
}
