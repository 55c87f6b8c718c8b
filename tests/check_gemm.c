/*
 * The packed GEMM (core/kernels/gemm.c) against a double-precision naive product over odd shapes:
 * M, N, K of 1, one under / at / over the panel and block sizes (MR 8, NR 48, KC 256,
 * NC 384), padded strides, with and without bias and ReLU. Also checks that nothing is
 * written outside C's M x N window (the columns between N and ldc, rows past M) and that
 * packing zero-fills the last panel.
 */
#include "kernels/gemm.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned rng_state = 777u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static void run_case(int M, int N, int K, int use_bias, int relu) {
    int lda = K + 1, ldb = N + 3, ldc = N + 5;
    const float canary = 4242.0f;
    float *A = malloc((size_t)M * lda * sizeof *A), *B = malloc((size_t)K * ldb * sizeof *B);
    float *C = malloc(((size_t)M + 1) * ldc * sizeof *C), *bias = malloc((size_t)M * sizeof *bias);
    size_t np = resattn_gemm_packed_floats(M, K);
    float *Ap = aligned_alloc(64, (np * sizeof(float) + 63) / 64 * 64);
    float *bbuf = aligned_alloc(64, resattn_gemm_scratch() * sizeof(float));
    ck_assert(A && B && C && bias && Ap && bbuf);
    for (size_t i = 0; i < (size_t)M * lda; i++)
        A[i] = frand();
    for (size_t i = 0; i < (size_t)K * ldb; i++)
        B[i] = frand();
    for (int i = 0; i < M; i++)
        bias[i] = frand();
    for (size_t i = 0; i < ((size_t)M + 1) * ldc; i++)
        C[i] = canary;
    resattn_gemm_pack(A, lda, M, K, Ap);
    for (size_t i = 0; i < np; i++) /* rows past M are zero in the packing */
        if ((int)(i / ((size_t)K * RESATTN_GEMM_MR)) * RESATTN_GEMM_MR +
                (int)(i % RESATTN_GEMM_MR) >=
            M)
            ck_assert(Ap[i] == 0.0f);
    resattn_gemm_run(Ap, M, K, B, ldb, N, C, ldc, use_bias ? bias : NULL, relu, bbuf);
    for (int m = 0; m <= M; m++)
        for (int n = 0; n < ldc; n++) {
            float got = C[(size_t)m * ldc + n];
            if (m == M || n >= N) {
                ck_assert_msg(got == canary, "M%d N%d K%d: wrote outside C at (%d, %d)", M, N, K, m,
                              n);
                continue;
            }
            double s = use_bias ? bias[m] : 0.0, mag = fabs(s);
            for (int k = 0; k < K; k++) {
                double p = (double)A[(size_t)m * lda + k] * B[(size_t)k * ldb + n];
                s += p;
                mag += fabs(p);
            }
            if (relu && s < 0)
                s = 0;
            ck_assert_msg(fabs(got - s) <= 1e-6 * mag + 1e-30,
                          "M%d N%d K%d bias%d relu%d: C[%d][%d] = %.9g, want %.9g", M, N, K,
                          use_bias, relu, m, n, got, s);
        }
    free(A);
    free(B);
    free(C);
    free(bias);
    free(Ap);
    free(bbuf);
}

/* {M, N, K}. Most blocks of B fit the packing buffer whole (K unblocked); the last two do
 * not (K in blocks of 256, a partial one last, and two column blocks in the first). */
static const int shapes[][3] = {
    {1, 1, 1},      {7, 5, 3},      {8, 48, 256},    {9, 49, 257},   {64, 16, 64},
    {17, 100, 600}, {3, 1000, 27},  {130, 33, 513},  {16, 385, 300}, {8, 17, 1},
    {1, 770, 9},    {33, 32, 2304}, {20, 700, 1000}, {40, 49, 4608},
};

START_TEST(test_gemm_matches_naive) {
    if (!resattn_gemm_available()) {
        fprintf(stderr, "gemm: packed GEMM not available on this CPU (the sgemm path is used)\n");
        return;
    }
    for (unsigned i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int mode = 0; mode < 4; mode++)
            run_case(shapes[i][0], shapes[i][1], shapes[i][2], mode & 1, mode >> 1);
}
END_TEST

START_TEST(test_pack_layout) {
    /* 3 x 2 -> one panel of 8 rows: [a00 a10 a20 0 0 0 0 0, a01 a11 a21 0 ...] */
    const float A[6] = {1, 2, 3, 4, 5, 6};
    float Ap[16];
    ck_assert_uint_eq(resattn_gemm_packed_floats(3, 2), 16);
    resattn_gemm_pack(A, 2, 3, 2, Ap);
    const float want[16] = {1, 3, 5, 0, 0, 0, 0, 0, 2, 4, 6, 0, 0, 0, 0, 0};
    for (int i = 0; i < 16; i++)
        ck_assert_msg(Ap[i] == want[i], "Ap[%d] = %g, want %g", i, Ap[i], want[i]);
}
END_TEST

Suite *gemm_suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_gemm_matches_naive);
    tcase_add_test(tc, test_pack_layout);
    suite_add_tcase(s, tc);
    return s;
}
