/*
 * The resattn side of tests/bench/bench_ort.sh: one model and one context kept loaded in
 * this process and driven over stdin, one command per line, one answer line each (the same
 * protocol as tests/bench/ort_worker.mjs), through the public API only:
 *   logits PATH   one forward pass on the input, logits written to PATH (raw float32), "ok"
 *   run [cpu]     one untimed pass, then one timed pass; answers its milliseconds (with
 *                 "cpu": the process's CPU time instead of wall time, steadier on a busy
 *                 machine for comparing builds at one thread: tests/bench/ab_resattn.py)
 *   flops         the model's direct-convolution FLOPs per image
 *   peak MS       FP32 FMA peak of one core in GFLOP/s: the best of several slices of MS ms
 *                 in total of independent AVX-512 FMA chains (0 without AVX-512F)
 *   quit          exit
 *
 *   resattn_worker MODEL.safetensors THREADS INPUT.f32 BATCH
 *
 * THREADS goes to resattn_set_blas_threads, as `resattn bench --threads` does.
 */
#include <resattn/resattn.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_ms(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double now_ms(void) {
    return clock_ms(CLOCK_MONOTONIC);
}

static float *read_floats(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    float *x = malloc(count * sizeof *x);
    size_t got = f && x ? fread(x, sizeof *x, count, f) : 0;
    int extra = f ? fgetc(f) != EOF : 1;
    if (f)
        fclose(f);
    if (got != count || extra) {
        free(x);
        return NULL;
    }
    return x;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/*
 * 24 independent accumulators: FMA latency (4 cycles) times 2 FMA ports needs at least 8
 * in flight; 24 leaves margin, as the 8x48 GEMM tile does. FLOPs = iters * 24 * 16 * 2.
 */
__attribute__((target("avx512f"), noinline)) static float fma_chains(long iters) {
    __m512 acc[24];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 24; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < 24; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 24; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

static double fma_peak(double total_ms) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f"))
        return 0.0;
    const long iters = 100000; /* 77 MFLOP: about half a millisecond */
    double best = 0.0, t_end = now_ms() + total_ms;
    volatile float sink = 0.0f;
    while (now_ms() < t_end) {
        double t0 = now_ms();
        sink += fma_chains(iters);
        double ms = now_ms() - t0;
        double gflops = (double)iters * 24 * 16 * 2 / (ms * 1e6);
        best = gflops > best ? gflops : best;
    }
    (void)sink;
    return best;
}
#else
static double fma_peak(double total_ms) {
    (void)total_ms;
    return 0.0;
}
#endif

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: resattn_worker MODEL.safetensors THREADS INPUT.f32 BATCH\n");
        return 2;
    }
    int threads = atoi(argv[2]), batch = atoi(argv[4]);
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    resattn_ctx *ctx = NULL;
    if (resattn_model_load_file(argv[1], &m, err, sizeof err) ||
        resattn_ctx_new(m, batch, &ctx, err, sizeof err)) {
        fprintf(stderr, "resattn_worker: %s\n", err);
        resattn_model_free(m);
        return 1;
    }
    const resattn_model_info *in = resattn_model_get_info(m);
    size_t count = (size_t)batch * in->in_channels * in->in_height * in->in_width;
    float *x = read_floats(argv[3], count);
    float *y = malloc((size_t)batch * in->num_classes * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "resattn_worker: %s is not %zu floats (or out of memory)\n", argv[3],
                count);
        return 1;
    }
    resattn_set_blas_threads(threads);
    printf("ready\n");
    fflush(stdout);
    char line[4096];
    int rc = 0;
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = "", arg[4000] = "";
        if (sscanf(line, "%15s %3999s", cmd, arg) < 1)
            continue;
        if (!strcmp(cmd, "quit"))
            break;
        if (!strcmp(cmd, "logits") || !strcmp(cmd, "run")) {
            int timed = !strcmp(cmd, "run");
            clockid_t id = !strcmp(arg, "cpu") ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
            double t0 = 0.0;
            for (int i = 0; i <= timed; i++) {
                t0 = clock_ms(id);
                if (resattn_forward(ctx, x, batch, y, err, sizeof err)) {
                    fprintf(stderr, "resattn_worker: %s\n", err);
                    rc = 1;
                    goto out;
                }
            }
            if (timed) {
                printf("%.4f\n", clock_ms(id) - t0);
            } else {
                FILE *f = fopen(arg, "wb");
                size_t n = (size_t)batch * in->num_classes;
                int ok = f && fwrite(y, sizeof *y, n, f) == n;
                ok = (f && fclose(f) == 0) && ok;
                printf(ok ? "ok\n" : "error cannot write %s\n", arg);
            }
        } else if (!strcmp(cmd, "flops")) {
            printf("%.0f\n", in->flops_per_image);
        } else if (!strcmp(cmd, "peak")) {
            printf("%.2f\n", fma_peak(arg[0] ? atof(arg) : 300.0));
        } else {
            printf("error unknown command %s\n", cmd);
        }
        fflush(stdout);
    }
out:
    free(x);
    free(y);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    return rc;
}
