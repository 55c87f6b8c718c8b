/*
 * The ceiling resattn's direct convolution can reach: cblas_sgemm GFLOP/s on a conv-shaped
 * matrix (ResNet layer-1-like im2col product: W [128, 1152] x col [1152, 3136]) with the
 * given number of OpenBLAS threads. Prints one JSON object, the median of 7 timed calls
 * after 2 warm-ups. Built and run by tests/bench/bench_core.py.
 *     sgemm_probe THREADS [M N K]
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void openblas_set_num_threads(int n);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    int m = argc > 4 ? atoi(argv[2]) : 128, n = argc > 4 ? atoi(argv[3]) : 3136;
    int k = argc > 4 ? atoi(argv[4]) : 1152;
    if (threads < 1 || m < 1 || n < 1 || k < 1) {
        fprintf(stderr, "usage: sgemm_probe THREADS [M N K]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n);
    float *c = malloc(sizeof(float) * m * n);
    if (!a || !b || !c)
        return 1;
    for (long i = 0; i < (long)m * k; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (long i = 0; i < (long)k * n; i++)
        b[i] = (float)(i % 7) * 0.01f;
    double t[7];
    for (int r = -2; r < 7; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, n, 0.0f, c,
                    n);
        if (r >= 0)
            t[r] = now() - t0;
    }
    qsort(t, 7, sizeof t[0], cmp);
    printf("{\"threads\": %d, \"m\": %d, \"n\": %d, \"k\": %d, \"gflop_per_s\": %.2f}\n", threads,
           m, n, k, 2.0 * m * n * k / t[3] * 1e-9);
    free(a);
    free(b);
    free(c);
    return 0;
}
