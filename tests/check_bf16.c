/*
 * BF16 inference (core/kernels/gemm_bf16.c and the --precision bf16 model plan).
 *  - Rounding: FP32 -> BF16 nearest-even, ties, NaN, infinities, overflow; and every path's
 *    B packer rounds the same way (C = 1 x bf16(b), compared bit for bit).
 *  - Each GEMM path against a double-precision product of the BF16-rounded inputs over odd
 *    shapes and tile tails (M, N, K of 1, around 8/16/32/48, past the 192-column and
 *    1024-k blocks), padded strides, bias and ReLU, nothing written outside C; and with B
 *    built from an image (the convolution form: kernels, strides, padding, column windows,
 *    with and without the padded BF16 copy) against a direct convolution; a BF16 layer on one
 *    and on two threads, bit for bit. Paths: the
 *    scalar reference and the AMX code on emulated tiles run everywhere; AVX512-BF16 and AMX
 *    run only where this CPU has them. A path the CPU lacks is not registered (so never
 *    counted as passed): the suite prints "not run" for it.
 *  - Whole models: BF16 logits of every PyTorch parity fixture within a relative L2 error of
 *    the FP32 reference (and not bit-identical to our FP32 logits, so BF16 really ran); the
 *    FP32 fallback where no BF16 path exists (RESATTN_BF16_PATH=none); the CLI's precision
 *    switch, its one warning line, and the precision and kernel path in inspect, bench,
 *    the v2 model metadata and the model info metric.
 */
#include "kernels/gemm_bf16.h"
#include "kernels/parallel.h"
#include "model/model.h"
#include "data/npy.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned rng_state = 4711u;
static float frand(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static double rb(float x) { /* the BF16 value of x, as the reference sees it */
    return (double)resattn_bf16_to_f32(resattn_bf16_from_f32(x));
}

/* ---- rounding --------------------------------------------------------------------------- */

START_TEST(test_round_to_nearest_even) {
    static const struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3F800000u, 0x3F80}, /* 1 */
        {0x3F808000u, 0x3F80}, /* 1 + 2^-8: halfway, even stays */
        {0x3F818000u, 0x3F82}, /* 1 + 3*2^-8: halfway, odd rounds up to even */
        {0x3F808001u, 0x3F81}, /* just above halfway */
        {0x3F807FFFu, 0x3F80}, /* just below */
        {0xBF808001u, 0xBF81}, /* negative, away from zero */
        {0x80000000u, 0x8000}, /* -0 */
        {0x7F800000u, 0x7F80}, /* +inf */
        {0xFF800000u, 0xFF80}, /* -inf */
        {0x7F7FFFFFu, 0x7F80}, /* FLT_MAX overflows to inf */
        {0x00000001u, 0x0000}, /* smallest denormal rounds to 0 */
        {0x00018000u, 0x0002}, /* denormal halfway, odd -> even */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = resattn_bf16_from_f32(bits_f32(cases[i].in));
        ck_assert_msg(got == cases[i].out, "bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].in, got,
                      cases[i].out);
    }
    /* NaNs stay NaN (a signalling NaN whose payload sits in the low bits too) */
    const uint32_t nans[] = {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        ck_assert(isnan(resattn_bf16_to_f32(resattn_bf16_from_f32(bits_f32(nans[i])))));
    float x[3] = {1.00390625f, -3.0f, 0.1f};
    resattn_bf16_round_inplace(x, 3);
    ck_assert(x[0] == 1.0f && x[1] == -3.0f && x[2] == resattn_bf16_to_f32(0x3DCD));
}
END_TEST

/* ---- one GEMM path against the double reference --------------------------------------- */

static void run_case(resattn_bf16_path path, int M, int N, int K, int use_bias, int relu) {
    int lda = K + 1, ldb = N + 3, ldc = N + 5;
    const float canary = 4242.0f;
    float *A = malloc((size_t)M * lda * sizeof *A), *B = malloc((size_t)K * ldb * sizeof *B);
    float *C = malloc(((size_t)M + 1) * ldc * sizeof *C), *bias = malloc((size_t)M * sizeof *bias);
    size_t np = resattn_gemm_bf16_packed_elems(M, K);
    uint16_t *Ap = aligned_alloc(64, (np * sizeof(uint16_t) + 63) / 64 * 64);
    void *bbuf = aligned_alloc(64, resattn_gemm_bf16_scratch());
    ck_assert(A && B && C && bias && Ap && bbuf);
    for (size_t i = 0; i < (size_t)M * lda; i++)
        A[i] = frand();
    for (size_t i = 0; i < (size_t)K * ldb; i++)
        B[i] = frand();
    for (int i = 0; i < M; i++)
        bias[i] = frand();
    for (size_t i = 0; i < ((size_t)M + 1) * ldc; i++)
        C[i] = canary;
    resattn_gemm_bf16_pack(A, lda, M, K, Ap);
    resattn_gemm_bf16_run(path, Ap, M, K, B, ldb, N, C, ldc, use_bias ? bias : NULL, relu, bbuf);
    for (int m = 0; m <= M; m++)
        for (int n = 0; n < ldc; n++) {
            float got = C[(size_t)m * ldc + n];
            if (m == M || n >= N) {
                ck_assert_msg(got == canary, "%s M%d N%d K%d: wrote outside C at (%d, %d)",
                              resattn_bf16_path_name(path), M, N, K, m, n);
                continue;
            }
            double s = use_bias ? bias[m] : 0.0, mag = fabs(s);
            for (int k = 0; k < K; k++) {
                double p = rb(A[(size_t)m * lda + k]) * rb(B[(size_t)k * ldb + n]);
                s += p;
                mag += fabs(p);
            }
            if (relu && s < 0)
                s = 0;
            /* any order of K + a few FP32 roundings; an unrounded input is off by ~2^-9 */
            double tol = (K + 4) * 0x1p-24 * mag + 1e-30;
            ck_assert_msg(fabs(got - s) <= tol,
                          "%s M%d N%d K%d bias%d relu%d: C[%d][%d] = %.9g, want %.9g (tol %.3g)",
                          resattn_bf16_path_name(path), M, N, K, use_bias, relu, m, n, got, s, tol);
        }
    free(A), free(B), free(C), free(bias), free(Ap), free(bbuf);
}

/* M, N, K: 1s, tile edges (8, 16, 32, 48), the 192-column and 1024-k blocks and past them */
static const int shapes[][3] = {
    {1, 1, 1},     {1, 1, 2},     {16, 16, 32}, {17, 17, 33}, {15, 47, 31},   {3, 49, 147},
    {33, 100, 65}, {64, 16, 1},   {8, 1, 3},    {7, 193, 5},  {40, 20, 1100}, {48, 50, 2049},
    {130, 33, 27}, {1, 385, 300}, {100, 3, 1},  {32, 32, 64}, {9, 196, 576},
};

static void run_shapes(resattn_bf16_path path) {
    for (unsigned i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int mode = 0; mode < 4; mode++)
            run_case(path, shapes[i][0], shapes[i][1], shapes[i][2], mode & 1, mode >> 1);
}

/* C = 1 x bf16(b) over special values: the path's B packer must round exactly as
 * resattn_bf16_from_f32 (and keep NaN, infinities and signs). */
static void check_packer_rounding(resattn_bf16_path path) {
    enum { N = 37 };
    float b[N], c[N];
    /* no denormals: vdpbf16ps and tdpbf16ps read them as zero */
    const uint32_t special[] = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0xBF808001u,
                                0x7F7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u,
                                0x7F800001u, 0x477FFF80u, 0xC77FFFC0u};
    for (int i = 0; i < N; i++)
        b[i] =
            i < (int)(sizeof special / sizeof special[0]) ? bits_f32(special[i]) : frand() * 1e3f;
    float one = 1.0f;
    uint16_t Ap[16 * 32];
    void *bbuf = aligned_alloc(64, resattn_gemm_bf16_scratch());
    resattn_gemm_bf16_pack(&one, 1, 1, 1, Ap);
    resattn_gemm_bf16_run(path, Ap, 1, 1, b, N, N, c, N, NULL, 0, bbuf);
    for (int i = 0; i < N; i++) {
        float want = resattn_bf16_to_f32(resattn_bf16_from_f32(b[i]));
        ck_assert_msg(isnan(want) ? isnan(c[i]) : c[i] == want, "%s: 1 x bf16(%a) = %a, want %a",
                      resattn_bf16_path_name(path), b[i], c[i], want);
    }
    free(bbuf);
}

/* resattn_gemm_bf16_conv on an image against a direct double-precision convolution of the
 * rounded inputs: odd maps, kernels larger than the map, strides, padding, 1 channel, and
 * column windows [n0, n1) that start and end inside output rows. */
static void run_conv_case(resattn_bf16_path path, int cin, int h, int w, int k, int stride, int pad,
                          int cout, int relu) {
    int ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1, N = ho * wo;
    int K = cin * k * k;
    float *in = malloc(sizeof(float) * (size_t)cin * h * w), *wt = malloc(sizeof(float) * cout * K);
    float *bias = malloc(sizeof(float) * cout), *C = malloc(sizeof(float) * (size_t)cout * N);
    uint16_t *Ap = aligned_alloc(64, (resattn_gemm_bf16_packed_elems(cout, K) * 2 + 63) / 64 * 64);
    void *bbuf = aligned_alloc(64, resattn_gemm_bf16_scratch());
    for (int i = 0; i < cin * h * w; i++)
        in[i] = frand();
    for (int i = 0; i < cout * K; i++)
        wt[i] = frand();
    for (int i = 0; i < cout; i++)
        bias[i] = frand();
    resattn_gemm_bf16_pack(wt, K, cout, K, Ap);
    resattn_bf16_image im = {in, cin, h, w, k, stride, pad, ho, wo};
    size_t wbytes = resattn_gemm_bf16_conv_work(&im, cout);
    void *work = wbytes ? aligned_alloc(64, (wbytes + 63) / 64 * 64) : NULL;
    float *C0 = malloc(sizeof(float) * (size_t)cout * N);
    const int windows[3][2] = {{0, N}, {N / 3, N - N / 5}, {N - 1, N}};
    for (int wi = 0; wi < 6; wi++) { /* each window without, then with the work memory */
        int n0 = windows[wi / 2][0], n1 = windows[wi / 2][1];
        if (n1 <= n0)
            continue;
        const float canary = 777.0f;
        for (int i = 0; i < cout * N; i++)
            C[i] = canary;
        resattn_gemm_bf16_conv(path, Ap, cout, &im, n0, n1, C + n0, N, bias, relu, bbuf,
                               wi & 1 ? work : NULL);
        if (wi & 1) /* the padded-copy route (stride 1) gives the same bits */
            ck_assert_msg(memcmp(C, C0, sizeof(float) * (size_t)cout * N) == 0,
                          "%s cin%d %dx%d k%d s%d: work memory changed the result",
                          resattn_bf16_path_name(path), cin, h, w, k, stride);
        else
            memcpy(C0, C, sizeof(float) * (size_t)cout * N);
        for (int m = 0; m < cout; m++)
            for (int n = 0; n < N; n++) {
                float got = C[(size_t)m * N + n];
                if (n < n0 || n >= n1) {
                    ck_assert_msg(got == canary, "%s: wrote outside [%d, %d) at %d",
                                  resattn_bf16_path_name(path), n0, n1, n);
                    continue;
                }
                int oy = n / wo, ox = n % wo;
                double s = bias[m], mag = fabs(s);
                for (int ci = 0; ci < cin; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            double p = rb(wt[((size_t)m * cin + ci) * k * k + ky * k + kx]) *
                                       rb(in[((size_t)ci * h + iy) * w + ix]);
                            s += p, mag += fabs(p);
                        }
                if (relu && s < 0)
                    s = 0;
                ck_assert_msg(fabs(got - s) <= (K + 4) * 0x1p-24 * mag + 1e-30,
                              "%s cin%d %dx%d k%d s%d p%d cout%d [%d,%d): y[%d][%d] = %.9g, want "
                              "%.9g",
                              resattn_bf16_path_name(path), cin, h, w, k, stride, pad, cout, n0, n1,
                              m, n, got, s);
            }
    }
    free(in), free(wt), free(bias), free(C), free(C0), free(Ap), free(bbuf), free(work);
}

static void run_convs(resattn_bf16_path path) {
    static const int cases[][7] = {
        /* cin, h, w, k, stride, pad, cout */
        {3, 45, 37, 7, 2, 3, 17},  {5, 9, 11, 3, 1, 1, 16}, {1, 5, 4, 3, 2, 1, 3},
        {16, 14, 14, 1, 2, 0, 33}, {2, 3, 3, 5, 1, 2, 7},   {4, 20, 30, 3, 1, 0, 8},
        {70, 7, 7, 3, 1, 1, 9},    {3, 200, 3, 3, 1, 1, 4}, {1, 1, 1, 1, 1, 0, 1},
        {3, 17, 19, 3, 3, 1, 5},   {2, 70, 75, 3, 2, 1, 6},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_conv_case(path, cases[i][0], cases[i][1], cases[i][2], cases[i][3], cases[i][4],
                      cases[i][5], cases[i][6], i & 1);
}

START_TEST(test_scalar) {
    run_shapes(RESATTN_BF16_PATH_SCALAR);
    run_convs(RESATTN_BF16_PATH_SCALAR);
    check_packer_rounding(RESATTN_BF16_PATH_SCALAR);
}
END_TEST

START_TEST(test_amx_emulated) {
    run_shapes(RESATTN_BF16_PATH_AMX_EMULATED);
    run_convs(RESATTN_BF16_PATH_AMX_EMULATED);
    check_packer_rounding(RESATTN_BF16_PATH_AMX_EMULATED);
}
END_TEST

START_TEST(test_avx512bf16) {
    run_shapes(RESATTN_BF16_PATH_AVX512);
    run_convs(RESATTN_BF16_PATH_AVX512);
    check_packer_rounding(RESATTN_BF16_PATH_AVX512);
}
END_TEST

START_TEST(test_amx) {
    run_shapes(RESATTN_BF16_PATH_AMX);
    run_convs(RESATTN_BF16_PATH_AMX);
    check_packer_rounding(RESATTN_BF16_PATH_AMX);
}
END_TEST

START_TEST(test_pack_layout) {
    /* 3 x 34 -> two 16 x 32 chunks of one row block: row r, k at chunk k/32, offset k%32 */
    float A[3 * 34];
    for (int i = 0; i < 3 * 34; i++)
        A[i] = (float)(i + 1);
    ck_assert_uint_eq(resattn_gemm_bf16_packed_elems(3, 34), 16 * 64);
    ck_assert_uint_eq(resattn_gemm_bf16_packed_elems(17, 1), 32 * 32);
    uint16_t Ap[16 * 64];
    memset(Ap, 0xFF, sizeof Ap);
    resattn_gemm_bf16_pack(A, 34, 3, 34, Ap);
    for (int kt = 0; kt < 2; kt++)
        for (int r = 0; r < 16; r++)
            for (int kk = 0; kk < 32; kk++) {
                int k = kt * 32 + kk;
                float want = r < 3 && k < 34 ? A[r * 34 + k] : 0.0f;
                ck_assert(resattn_bf16_to_f32(Ap[(kt * 16 + r) * 32 + kk]) == want);
            }
    ck_assert_ptr_eq(resattn_gemm_bf16_rows(Ap, 34, 16), Ap + 16 * 64);
}
END_TEST

START_TEST(test_dot) {
    for (int n = 0; n < 70; n += 7) {
        float x[70];
        uint16_t w[70];
        double s = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            x[i] = (float)rb(frand());
            w[i] = resattn_bf16_from_f32(frand());
            s += (double)x[i] * resattn_bf16_to_f32(w[i]);
            mag += fabs((double)x[i] * resattn_bf16_to_f32(w[i]));
        }
        ck_assert(fabs(resattn_dot_bf16(x, w, n) - s) <= (n + 2) * 0x1p-24 * mag);
    }
}
END_TEST

/* A BF16 layer through resattn_conv_forward on one and on two threads (the parts split the
 * columns, or the 16-row weight blocks when there are fewer columns than channels): the same
 * bits either way, and the direct convolution's values. The path: this CPU's, else the
 * emulated AMX one. */
START_TEST(test_conv_forward_threads) {
    static const int cases[][6] = {
        /* cin, h, w, cout, k, stride: columns >= channels, then fewer */
        {24, 40, 36, 32, 3, 1},
        {40, 8, 8, 130, 3, 1},
        {128, 48, 48, 96, 1, 2},
        {96, 20, 20, 64, 1, 1},
    };
    resattn_bf16_path path = resattn_bf16_path_detect();
    path = path ? path : RESATTN_BF16_PATH_AMX_EMULATED;
    for (int ci = 0; ci < 4; ci++) {
        int cin = cases[ci][0], h = cases[ci][1], w = cases[ci][2], cout = cases[ci][3];
        int k = cases[ci][4], st = cases[ci][5], pad = k / 2, n = 2;
        int ho = (h + 2 * pad - k) / st + 1, wo = (w + 2 * pad - k) / st + 1, K = cin * k * k;
        float *in = malloc(sizeof(float) * n * cin * h * w), *wt = malloc(sizeof(float) * cout * K);
        float *b = malloc(sizeof(float) * cout), *y[2];
        uint16_t *wb =
            aligned_alloc(64, (resattn_gemm_bf16_packed_elems(cout, K) * 2 + 63) / 64 * 64);
        for (int i = 0; i < n * cin * h * w; i++)
            in[i] = frand();
        for (int i = 0; i < cout * K; i++)
            wt[i] = frand();
        for (int i = 0; i < cout; i++)
            b[i] = frand();
        resattn_gemm_bf16_pack(wt, K, cout, K, wb);
        resattn_conv c = {.cin = cin,
                          .cout = cout,
                          .k = k,
                          .stride = st,
                          .pad = pad,
                          .w = wt,
                          .b = b,
                          .bf16 = path,
                          .wb = wb};
        size_t scr = resattn_conv_scratch(&c, h, w);
        float *scratch = aligned_alloc(64, (scr * sizeof(float) + 63) / 64 * 64);
        ck_assert_int_ge((long)cout * K * ho * wo, 1L << 21); /* big enough to be split */
        for (int t = 0; t < 2; t++) {
            y[t] = malloc(sizeof(float) * n * cout * ho * wo);
            resattn_parallel_set_threads(t + 1);
            resattn_conv_forward(&c, in, n, h, w, y[t], 1, scratch);
        }
        ck_assert(memcmp(y[0], y[1], sizeof(float) * n * cout * ho * wo) == 0);
        for (int i = 0; i < n; i++)
            for (int m = 0; m < cout; m += 7)
                for (int p = 0; p < ho * wo; p += 5) {
                    int oy = p / wo, ox = p % wo;
                    double s = b[m], mag = fabs(s);
                    for (int c2 = 0; c2 < cin; c2++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * st - pad + ky, ix = ox * st - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                    continue;
                                double q = rb(wt[((size_t)m * cin + c2) * k * k + ky * k + kx]) *
                                           rb(in[(((size_t)i * cin + c2) * h + iy) * w + ix]);
                                s += q, mag += fabs(q);
                            }
                    s = s < 0 ? 0 : s;
                    float got = y[1][((size_t)i * cout + m) * ho * wo + p];
                    ck_assert_msg(fabs(got - s) <= (K + 4) * 0x1p-24 * mag, "case %d: %g vs %g", ci,
                                  got, s);
                }
        free(in), free(wt), free(b), free(wb), free(scratch), free(y[0]), free(y[1]);
    }
    resattn_parallel_set_threads(1);
}
END_TEST

/* ---- whole models ----------------------------------------------------------------------- */

static const char *const blocks[] = {"basic", "bottleneck"};
static const char *const stems[] = {"cifar", "imagenet"};
static const char *const attentions[] = {"none", "se", "eca", "cbam", "ca"};
#define NUM_FIXTURES 22

static void fixture_name(int i, char *buf, size_t len) {
    if (i < 20)
        snprintf(buf, len, "%s_%s_%s", blocks[i / 10], stems[(i / 5) % 2], attentions[i % 5]);
    else
        snprintf(buf, len, "basic_cifar_se_%s", i == 20 ? "f16" : "bf16");
}

static void load_npy(const char *path, resattn_npy *a) {
    size_t len;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    char err[RESATTN_ERR_LEN];
    ck_assert_msg(resattn_npy_parse(buf, len, a, err, sizeof err) == RESATTN_OK, "%s: %s", path,
                  err);
    free(buf);
}

/* Logits of fixture `name` loaded with precision p; returns the model's info via *info_out
 * (the model is freed: only scalar fields are copied). */
static float *fixture_logits(const char *name, resattn_precision p, const resattn_npy *x,
                             resattn_model_info *info_out) {
    char path[256], err[RESATTN_ERR_LEN];
    snprintf(path, sizeof path, "tests/fixtures/%s.safetensors", name);
    resattn_model_options o = {.precision = p};
    resattn_model *m = NULL;
    ck_assert_msg(resattn_model_load_file_opts(path, &o, &m, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    *info_out = *resattn_model_get_info(m);
    int n = (int)x->shape[0];
    resattn_ctx *ctx = NULL;
    ck_assert(resattn_ctx_new(m, n, &ctx, err, sizeof err) == RESATTN_OK);
    float *y = malloc(sizeof(float) * (size_t)n * info_out->num_classes);
    ck_assert(resattn_forward(ctx, x->data, n, y, err, sizeof err) == RESATTN_OK);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    return y;
}

static double rel_l2(const float *a, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++)
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]), r += (double)ref[i] * ref[i];
    return sqrt(d / r);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The model-level paths: RESATTN_BF16_PATH as the loader reads it, and whether it runs here. */
static const struct {
    const char *env;
    resattn_bf16_path path;
} model_paths[] = {
    {"avx512bf16", RESATTN_BF16_PATH_AVX512},
    {"amx", RESATTN_BF16_PATH_AMX},
    {"amx-emulated", RESATTN_BF16_PATH_AMX_EMULATED},
};

/* BF16 logits of every parity fixture on one path against PyTorch's FP32 (float64-computed)
 * logits: relative L2 error at most 3e-2 each and 1e-2 as the median; much further from
 * them than our FP32 logits (BF16 really ran). */
START_TEST(test_fixtures_bf16) {
    setenv("RESATTN_BF16_PATH", model_paths[_i].env, 1);
    double errs[NUM_FIXTURES];
    for (int i = 0; i < NUM_FIXTURES; i++) {
        char name[64], path[256];
        fixture_name(i, name, sizeof name);
        resattn_npy x, y;
        snprintf(path, sizeof path, "tests/fixtures/%s.in.npy", name);
        load_npy(path, &x);
        snprintf(path, sizeof path, "tests/fixtures/%s.out.npy", name);
        load_npy(path, &y);
        resattn_model_info in32, in16;
        float *l32 = fixture_logits(name, RESATTN_PRECISION_FP32, &x, &in32);
        float *l16 = fixture_logits(name, RESATTN_PRECISION_BF16, &x, &in16);
        ck_assert_int_eq(in16.precision_requested, RESATTN_PRECISION_BF16);
        ck_assert_int_eq(in16.precision, RESATTN_PRECISION_BF16);
        ck_assert_int_eq(in32.precision, RESATTN_PRECISION_FP32);
        ck_assert_str_eq(in32.kernel_path, "fp32");
        ck_assert_str_eq(in16.kernel_path, resattn_bf16_path_name(model_paths[_i].path));
        errs[i] = rel_l2(l16, y.data, y.count);
        double e32 = rel_l2(l32, y.data, y.count);
        printf("bf16 (%s): %-26s relative L2 error of logits: bf16 %.3e, fp32 %.3e\n",
               model_paths[_i].env, name, errs[i], e32);
        ck_assert_msg(errs[i] <= 3e-2, "%s: BF16 relative L2 error %g", name, errs[i]);
        ck_assert_msg(errs[i] > 10 * e32, "%s: BF16 logits as close as FP32's (%g vs %g)", name,
                      errs[i], e32);
        free(l32), free(l16);
        resattn_npy_release(&x), resattn_npy_release(&y);
    }
    qsort(errs, NUM_FIXTURES, sizeof errs[0], cmp_double);
    double med = (errs[NUM_FIXTURES / 2 - 1] + errs[NUM_FIXTURES / 2]) / 2;
    printf("bf16 (%s): relative L2 error over %d fixtures: min %.3e, median %.3e, max %.3e\n",
           model_paths[_i].env, NUM_FIXTURES, errs[0], med, errs[NUM_FIXTURES - 1]);
    ck_assert_msg(med <= 1e-2, "median BF16 relative L2 error %g", med);
}
END_TEST

/* No BF16 path (RESATTN_BF16_PATH=none stands in for such a CPU): a BF16 request loads as
 * FP32 and computes exactly the FP32 logits. */
START_TEST(test_fallback_fp32) {
    setenv("RESATTN_BF16_PATH", "none", 1);
    resattn_npy x;
    load_npy("tests/fixtures/basic_imagenet_se.in.npy", &x);
    resattn_model_info in32, in16;
    float *l32 = fixture_logits("basic_imagenet_se", RESATTN_PRECISION_FP32, &x, &in32);
    float *l16 = fixture_logits("basic_imagenet_se", RESATTN_PRECISION_BF16, &x, &in16);
    ck_assert_int_eq(in16.precision_requested, RESATTN_PRECISION_BF16);
    ck_assert_int_eq(in16.precision, RESATTN_PRECISION_FP32);
    ck_assert_str_eq(in16.kernel_path, "fp32");
    ck_assert(memcmp(l32, l16, sizeof(float) * (size_t)x.shape[0] * in32.num_classes) == 0);
    free(l32), free(l16);
    resattn_npy_release(&x);
}
END_TEST

START_TEST(test_options) {
    resattn_precision p;
    ck_assert(resattn_precision_parse("bf16", &p) == 0 && p == RESATTN_PRECISION_BF16);
    ck_assert(resattn_precision_parse("FP32", &p) == 0 && p == RESATTN_PRECISION_FP32);
    ck_assert(resattn_precision_parse("fp16", &p) == -1);
    ck_assert(resattn_precision_parse("", &p) == -1);
    ck_assert_str_eq(resattn_precision_name(RESATTN_PRECISION_BF16), "bf16");
    resattn_model_options o = {.precision = (resattn_precision)7};
    resattn_model *m = (resattn_model *)&o;
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_model_load_file_opts("tests/fixtures/basic_cifar_se.safetensors", &o,
                                                  &m, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, "precision") != NULL, "%s", err);
}
END_TEST

/* ---- the command line and the server --------------------------------------------------- */

/* Run `resattn <args>` with an environment prefix; stdout and stderr into out/errs (NUL-
 * terminated, truncated to their size); returns the exit status. */
static int run_cli(const char *env, const char *args, char *out, size_t out_len, char *errs,
                   size_t errs_len) {
    char dir[] = "/tmp/resattn-bf16-XXXXXX", cmd[2048], po[128], pe[128];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(po, sizeof po, "%s/out", dir);
    snprintf(pe, sizeof pe, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "%s %s %s >%s 2>%s", env, uh_binary(), args, po, pe);
    int st = system(cmd);
    const char *paths[2] = {po, pe};
    char *bufs[2] = {out, errs};
    size_t lens[2] = {out_len, errs_len};
    for (int i = 0; i < 2; i++) {
        size_t len = 0;
        unsigned char *b = ut_read_file(paths[i], &len);
        len = len < lens[i] - 1 ? len : lens[i] - 1;
        memcpy(bufs[i], b ? (char *)b : "", b ? len : 0);
        bufs[i][b ? len : 0] = 0;
        free(b);
        unlink(paths[i]);
    }
    rmdir(dir);
    ck_assert_msg(WIFEXITED(st), "%s: killed", cmd);
    return WEXITSTATUS(st);
}

static int count_lines(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Field key of bench's one-line JSON object, as a string ("" when absent); the line must
 * parse. Copied into a static buffer: one value is read at a time. */
static const char *bench_field(const char *out, const char *key) {
    static char value[64];
    json_error_t e;
    json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, &e);
    ck_assert_msg(o != NULL, "bench printed no JSON (%s): %s", e.text, out);
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(value, sizeof value, "%s", v ? v : "");
    json_decref(o);
    return value;
}

/* bench, inspect and predict: --precision and RESATTN_PRECISION, the JSON fields, the one
 * warning line of the fallback, and the errors for a bad value. */
START_TEST(test_cli) {
    static char out[1 << 16], errs[1 << 16];
    const char *path = resattn_bf16_path_name(resattn_bf16_path_detect());
    int bf = resattn_bf16_path_detect() != RESATTN_BF16_PATH_NONE;
    const char *model = "--model tests/fixtures/basic_imagenet_se.safetensors";
    char args[512], want[128];
    snprintf(args, sizeof args, "bench --iters 1 --batch 2 --precision bf16 %s", model);
    ck_assert_int_eq(run_cli("", args, out, sizeof out, errs, sizeof errs), 0);
    ck_assert_str_eq(bench_field(out, "precision"), bf ? "bf16" : "fp32");
    ck_assert_str_eq(bench_field(out, "precision_requested"), "bf16");
    ck_assert_str_eq(bench_field(out, "kernel_path"), path);
    ck_assert_int_eq(count_lines(errs, "warning"), bf ? 0 : 1);
    /* no BF16 path: FP32 and exactly one warning line */
    ck_assert_int_eq(run_cli("RESATTN_BF16_PATH=none RESATTN_PRECISION=bf16", "bench --iters 1",
                             out, sizeof out, errs, sizeof errs),
                     0);
    ck_assert_str_eq(bench_field(out, "precision"), "fp32");
    ck_assert_str_eq(bench_field(out, "kernel_path"), "fp32");
    ck_assert_msg(count_lines(errs, "\n") == 1 && strstr(errs, "AVX512-BF16") &&
                      strstr(errs, "running FP32"),
                  "stderr: %s", errs);
    /* the default stays FP32, without a word */
    ck_assert_int_eq(run_cli("", "bench --iters 1", out, sizeof out, errs, sizeof errs), 0);
    ck_assert_str_eq(bench_field(out, "precision"), "fp32");
    ck_assert_msg(!*errs, "stderr: %s", errs);
    /* inspect --json: the effective precision and each layer's arithmetic */
    snprintf(args, sizeof args, "inspect --json --precision bf16 %s", model);
    ck_assert_int_eq(run_cli("", args, out, sizeof out, errs, sizeof errs), 0);
    snprintf(want, sizeof want, "\"kernel_path\": \"%s\"", path);
    ck_assert_msg(strstr(out, want), "%s", out);
    ck_assert_msg(strstr(out, bf ? "\"compute\": \"bf16" : "\"compute\": \"fp32"), "%s", out);
    ck_assert_msg(!bf || !strstr(out, "\"compute\": \"fp32"), "%s", out);
    ck_assert_int_eq(run_cli("", "inspect", out, sizeof out, errs, sizeof errs), 0);
    ck_assert_msg(strstr(out, "precision:  fp32 (asked fp32)"), "%s", out);
    /* predict: same classes as FP32 on the fixture's images */
    char o32[4096], o16[4096];
    snprintf(args, sizeof args, "predict %s --input tests/fixtures/basic_imagenet_se.in.npy",
             model);
    ck_assert_int_eq(run_cli("", args, o32, sizeof o32, errs, sizeof errs), 0);
    snprintf(args, sizeof args,
             "predict --precision bf16 %s --input tests/fixtures/basic_imagenet_se.in.npy", model);
    ck_assert_int_eq(run_cli("", args, o16, sizeof o16, errs, sizeof errs), 0);
    for (const char *a = o32, *b = o16; (a = strstr(a, "class ")) && (b = strstr(b, "class "));
         a++, b++)
        ck_assert_msg(atoi(a + 6) == atoi(b + 6), "fp32: %s\nbf16: %s", o32, o16);
    ck_assert_msg(!bf || strcmp(o32, o16), "BF16 logits equal FP32's: %s", o16);
    /* bad values: exit 2, one line naming the value */
    const char *bad[] = {"bench --precision fp16", "inspect --precision half",
                         "predict --input x.npy --precision int8"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(run_cli("", bad[i], out, sizeof out, errs, sizeof errs), 2);
        ck_assert_msg(strstr(errs, strrchr(bad[i], ' ') + 1) && strstr(errs, "fp32 or bf16"),
                      "%s: %s", bad[i], errs);
    }
    ck_assert_int_eq(run_cli("RESATTN_PRECISION=fp64", "bench", out, sizeof out, errs, sizeof errs),
                     2);
    ck_assert_msg(strstr(errs, "RESATTN_PRECISION 'fp64'"), "%s", errs);
}
END_TEST

static char *get_body(int port, const char *path) {
    uh_response r;
    ck_assert_int_eq(uh_request(port, "GET", path, NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    char *s = malloc(r.len + 1);
    memcpy(s, r.body, r.len);
    s[r.len] = 0;
    uh_response_release(&r);
    return s;
}

/* serve --precision bf16 with two models: the v2 model metadata and the model info metric
 * name the precision and kernel path; where there is no BF16 path, FP32 with one warning
 * line in the log for both models. */
static void check_serve(int fallback) {
    if (fallback)
        setenv("RESATTN_BF16_PATH", "none", 1);
    const char *path = resattn_bf16_path_name(resattn_bf16_path_detect());
    const char *prec = strcmp(path, "fp32") ? "bf16" : "fp32";
    const char *args[] = {"--precision", "bf16",
                          "--model",     "tests/fixtures/basic_cifar_se.safetensors",
                          "--model",     "tests/fixtures/bottleneck_imagenet_eca.safetensors",
                          NULL};
    uh_server s;
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start (log %s)", s.log);
    char want[256];
    const char *names[] = {"basic_cifar_se", "bottleneck_imagenet_eca"};
    for (int i = 0; i < 2; i++) {
        char url[128];
        snprintf(url, sizeof url, "/v2/models/%s", names[i]);
        char *b = get_body(s.port, url);
        snprintf(want, sizeof want,
                 "\"parameters\":{\"precision\":\"%s\",\"precision_requested\":\"bf16\","
                 "\"kernel_path\":\"%s\"}",
                 prec, path);
        ck_assert_msg(strstr(b, want), "%s: %s", url, b);
        free(b);
    }
    char *metrics = get_body(s.port, "/metrics");
    snprintf(want, sizeof want, "precision=\"%s\",kernel_path=\"%s\"} 1", prec, path);
    ck_assert_int_eq(count_lines(metrics, want), 2);
    free(metrics);
    size_t len = 0; /* the log goes with the server's directory: read it first */
    char *log = (char *)ut_read_file(s.log, &len);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 10000), 0);
    ck_assert_ptr_nonnull(log);
    log = realloc(log, len + 1);
    log[len] = 0;
    ck_assert_int_eq(count_lines(log, "precision bf16 asked"), fallback ? 1 : 0);
    snprintf(want, sizeof want, "parameters, precision %s%s%s\n", prec, fallback ? "" : " on ",
             fallback ? "" : path);
    ck_assert_msg(count_lines(log, want) == 2, "'%s' not twice in %s", want, log);
    free(log);
}

START_TEST(test_serve) {
    check_serve(0);
}
END_TEST

START_TEST(test_serve_fallback) {
    check_serve(1);
}
END_TEST

Suite *bf16_suite(void) {
    Suite *s = suite_create("bf16");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_round_to_nearest_even);
    tcase_add_test(tc, test_pack_layout);
    tcase_add_test(tc, test_dot);
    tcase_add_test(tc, test_scalar);
    tcase_add_test(tc, test_amx_emulated);
    /* the hardware paths only where they run; otherwise say so (never a pass) */
    if (resattn_bf16_path_supported(RESATTN_BF16_PATH_AVX512))
        tcase_add_test(tc, test_avx512bf16);
    else
        printf("bf16: path avx512bf16: not run (this CPU has no AVX512-BF16)\n");
    if (resattn_bf16_path_supported(RESATTN_BF16_PATH_AMX))
        tcase_add_test(tc, test_amx);
    else
        printf("bf16: path amx: not run (this CPU or OS gives no AMX-BF16 tiles)\n");
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("models");
    tcase_set_timeout(tm, 120);
    tcase_add_test(tm, test_options);
    tcase_add_test(tm, test_fallback_fp32);
    tcase_add_test(tm, test_conv_forward_threads);
    for (int i = 0; i < (int)(sizeof model_paths / sizeof model_paths[0]); i++)
        if (resattn_bf16_path_supported(model_paths[i].path))
            tcase_add_loop_test(tm, test_fixtures_bf16, i, i + 1);
        else
            printf("bf16: whole models on path %s: not run (not on this CPU)\n",
                   model_paths[i].env);
    suite_add_tcase(s, tm);
    TCase *tc2 = tcase_create("cli");
    tcase_set_timeout(tc2, 120);
    tcase_add_test(tc2, test_cli);
    tcase_add_test(tc2, test_serve);
    tcase_add_test(tc2, test_serve_fallback);
    suite_add_tcase(s, tc2);
    return s;
}
