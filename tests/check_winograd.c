/*
 * Winograd F(2x2,3x3) and F(4x4,3x3) against a naive double-precision direct convolution
 * (3x3, stride 1, pad 1) over odd shapes: 45x37, 1x1, 7x5, 2x9, 9x70 maps; 1-17 and 64
 * channels; batches 1-3; with and without ReLU. The error of each output is bounded
 * relative to its magnitude sum |b| + sum |w x| (the scale float rounding works on), and
 * the test also checks that the forward writes nothing outside `out`, does not depend on
 * what the scratch held before, and stays right with the two-thread transform split.
 */
#include "kernels/winograd.h"
#include "kernels/gemm.h"

#include <cblas.h>
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* Relative bounds (per output, against its magnitude sum). Measured worst cases over these
 * shapes were 4.5e-7 (m = 2) and 6.1e-6 (m = 4, with either transform path: it depends on
 * the random data); the bounds leave 1.6-4x room. Direct float convolution (im2col +
 * sgemm) stays near 1e-7 on the same measure. */
static const double BOUND2 = 2e-6, BOUND4 = 1e-5;

static unsigned rng_state = 12345u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* Naive reference: ref [n, cout, h, w] and mag (magnitude sum) of the same shape. */
static void conv_ref(const float *x, const float *wt, const float *b, int n, int cin, int cout,
                     int h, int w, int relu, double *ref, double *mag) {
    for (int i = 0; i < n; i++)
        for (int co = 0; co < cout; co++)
            for (int oy = 0; oy < h; oy++)
                for (int ox = 0; ox < w; ox++) {
                    double s = b[co], a = fabs(b[co]);
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = oy + ky - 1, ix = ox + kx - 1;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                double p = (double)wt[((co * cin + ci) * 3 + ky) * 3 + kx] *
                                           x[(((size_t)i * cin + ci) * h + iy) * w + ix];
                                s += p;
                                a += fabs(p);
                            }
                    size_t o = (((size_t)i * cout + co) * h + oy) * w + ox;
                    ref[o] = relu && s < 0 ? 0 : s;
                    mag[o] = a;
                }
}

/* 1: run the transform-domain products on the packed GEMM (core/kernels/gemm.c) instead of sgemm.
 */
static int use_packed;

/* Runs one shape with tile size m; returns the worst relative error seen. */
static double run_case(int m, int n, int cin, int cout, int h, int w, int relu) {
    size_t nin = (size_t)n * cin * h * w, nout = (size_t)n * cout * h * w;
    const size_t guard = 64;
    float *x = malloc(nin * sizeof *x), *wt = malloc((size_t)cout * cin * 9 * sizeof *wt);
    float *b = malloc((size_t)cout * sizeof *b), *buf = malloc((nout + 2 * guard) * sizeof *buf);
    float *out = buf + guard; /* guards on both sides of the output */
    float *u = malloc(resattn_winograd_weight_floats(m, cin, cout) * sizeof *u);
    size_t ns = resattn_winograd_scratch(m, cin, cout, n, h, w);
    ck_assert(ns <= resattn_winograd_scratch(m, cin, cout, 0, h, w));
    float *scratch = malloc(ns * sizeof *scratch);
    double *ref = malloc(nout * sizeof *ref), *mag = malloc(nout * sizeof *mag);
    ck_assert(x && wt && b && buf && u && scratch && ref && mag);
    for (size_t i = 0; i < nin; i++)
        x[i] = frand();
    for (size_t i = 0; i < (size_t)cout * cin * 9; i++)
        wt[i] = frand() * 0.5f;
    for (int i = 0; i < cout; i++)
        b[i] = frand() * 0.1f;
    for (size_t i = 0; i < nout + 2 * guard; i++)
        buf[i] = 12345.0f;
    for (size_t i = 0; i < ns; i++) /* stale scratch must not leak into the result */
        scratch[i] = NAN;

    resattn_winograd_transform_weights(m, wt, cin, cout, u);
    float *up = NULL, *bbuf = NULL;
    if (use_packed) {
        size_t per = resattn_gemm_packed_floats(cout, cin);
        up = aligned_alloc(64, ((size_t)(m + 2) * (m + 2) * per * sizeof *up + 63) / 64 * 64);
        bbuf = aligned_alloc(64, 2 * resattn_gemm_scratch() * sizeof *bbuf); /* 2 parts */
        ck_assert(up && bbuf);
        for (int pt = 0; pt < (m + 2) * (m + 2); pt++)
            resattn_gemm_pack(u + (size_t)pt * cout * cin, cin, cout, cin, up + pt * per);
    }
    resattn_winograd_forward(m, up ? NULL : u, up, bbuf, b, cin, cout, x, n, h, w, out, relu,
                             scratch);
    free(up);
    free(bbuf);
    conv_ref(x, wt, b, n, cin, cout, h, w, relu, ref, mag);

    double worst = 0;
    for (size_t i = 0; i < nout; i++) {
        ck_assert_msg(isfinite(out[i]), "m=%d n=%d cin=%d cout=%d %dx%d: out[%zu] = %f", m, n, cin,
                      cout, h, w, i, out[i]);
        double e = fabs(out[i] - ref[i]) / (mag[i] + 1e-30);
        if (e > worst)
            worst = e;
    }
    for (size_t i = 0; i < guard; i++) {
        ck_assert_msg(out[nout + i] == 12345.0f, "m=%d: wrote past the output at +%zu", m, i);
        ck_assert_msg(buf[i] == 12345.0f, "m=%d: wrote before the output", m);
    }
    double bound = m == 2 ? BOUND2 : BOUND4;
    ck_assert_msg(worst <= bound, "m=%d n=%d cin=%d cout=%d %dx%d relu=%d: rel err %.3g > %.3g", m,
                  n, cin, cout, h, w, relu, worst, bound);
    free(x);
    free(wt);
    free(b);
    free(buf);
    free(u);
    free(scratch);
    free(ref);
    free(mag);
    return worst;
}

static const struct {
    int n, cin, cout, h, w, relu;
} cases[] = {
    {1, 1, 1, 45, 37, 0},
    {2, 3, 17, 45, 37, 1},
    {3, 17, 3, 7, 5, 0},
    {1, 64, 64, 7, 5, 1},
    {3, 64, 17, 1, 1, 0},
    {2, 17, 64, 2, 9, 1},
    {1, 1, 64, 1, 1, 1},
    {2, 64, 64, 45, 37, 1},
    {3, 3, 1, 5, 7, 0},
    {1, 17, 17, 8, 8, 1},
    /* for the 16-tile vectors of the AVX-512 transforms: tile rows wider than 16 tiles (a
     * run continues in the next vector and needs its left neighbour column), widths below
     * the tile size, and a vector spanning many 1-tile rows and images */
    {2, 5, 7, 9, 70, 1},
    {3, 4, 6, 6, 3, 0},
    {2, 3, 5, 33, 2, 1},
    {5, 2, 3, 3, 1, 0},
};
#define NCASES ((int)(sizeof cases / sizeof cases[0]))

static void run_all(int m) {
    double worst = 0;
    for (int i = 0; i < NCASES; i++) {
        double e = run_case(m, cases[i].n, cases[i].cin, cases[i].cout, cases[i].h, cases[i].w,
                            cases[i].relu);
        worst = e > worst ? e : worst;
    }
    if (getenv("RESATTN_WINOGRAD_VERBOSE"))
        fprintf(stderr, "winograd F(%dx%d,3x3): worst relative error %.3g\n", m, m, worst);
}

START_TEST(test_f2_matches_direct) {
    run_all(2);
}
END_TEST

START_TEST(test_f4_matches_direct) {
    run_all(4);
}
END_TEST

/* Big chunks: more tiles than one chunk holds, so the chunk loop and its row split run. */
START_TEST(test_many_chunks) {
    run_case(4, 2, 64, 64, 64, 61, 1);
    run_case(2, 1, 128, 32, 57, 57, 0);
}
END_TEST

/* The same shapes with the products on the packed AVX-512 GEMM (where the CPU has it). */
START_TEST(test_packed_gemm) {
    if (!resattn_gemm_available()) {
        fprintf(stderr, "winograd: packed GEMM not available on this CPU; sgemm path only\n");
        return;
    }
    use_packed = 1;
    run_all(2);
    run_all(4);
    run_case(4, 2, 64, 64, 64, 61, 1);
    use_packed = 0;
}
END_TEST

/* The portable transforms (what CPUs without AVX-512 run) on this CPU too: the variable is
 * read at the first forward of the process, which check's default fork mode makes this
 * test's own. */
START_TEST(test_generic_transforms) {
    setenv("RESATTN_WINOGRAD", "generic", 1);
    run_all(2);
    run_all(4);
    run_case(4, 2, 64, 64, 64, 61, 1);
    unsetenv("RESATTN_WINOGRAD");
}
END_TEST

/* With OpenBLAS at 2 threads the transforms are split with a helper thread; two callers at
 * once must both get right answers (one of them runs without the helper). */
static void *concurrent_case(void *arg) {
    int m = *(const int *)arg;
    run_case(m, 2, 64, 64, 45, 37, 1);
    run_case(m, 3, 17, 64, 7, 5, 0);
    return NULL;
}

START_TEST(test_two_threads) {
    openblas_set_num_threads(2);
    run_all(2);
    run_all(4);
    pthread_t t[2];
    int ms[2] = {2, 4};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, concurrent_case, &ms[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    openblas_set_num_threads(1);
}
END_TEST

START_TEST(test_choose) {
    /* tiny channel counts stay direct; wide layers use a Winograd tile size */
    ck_assert_int_eq(resattn_winograd_choose(3, 64, 224, 224), 0);
    ck_assert_int_eq(resattn_winograd_choose(1, 1, 45, 37), 0);
    ck_assert_int_eq(resattn_winograd_choose(64, 64, 56, 56), 4);
    ck_assert_int_eq(resattn_winograd_choose(512, 512, 7, 7), 2);
    /* a single image of a 4x4 map is 4 tiles: direct; a batch of 8 is 32 tiles */
    ck_assert(!resattn_winograd_worth(2, 1, 4, 4));
    ck_assert(resattn_winograd_worth(2, 8, 4, 4));
    ck_assert(resattn_winograd_worth(4, 1, 56, 56));
}
END_TEST

Suite *winograd_suite(void) {
    Suite *s = suite_create("winograd");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_f2_matches_direct);
    tcase_add_test(tc, test_f4_matches_direct);
    tcase_add_test(tc, test_many_chunks);
    tcase_add_test(tc, test_packed_gemm);
    tcase_add_test(tc, test_two_threads);
    tcase_add_test(tc, test_generic_transforms);
    tcase_add_test(tc, test_choose);
    suite_add_tcase(s, tc);
    return s;
}
