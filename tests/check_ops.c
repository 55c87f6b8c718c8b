/*
 * Each operator of core/kernels/ops.c against the naive reference of tests/util_ref.c, over odd
 * shapes: 45x37 and 7x5 images, 1 and 3 channels, kernels 1/3/7, strides 1 and 2, padding.
 */
#include "kernels/ops.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "util_ref.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>

typedef struct {
    int n, cin, h, w, cout, k, stride, pad, relu;
} conv_case;

static const conv_case conv_cases[] = {
    {2, 1, 45, 37, 4, 3, 1, 1, 1}, /* 1 input channel, odd size */
    {2, 3, 45, 37, 5, 3, 2, 1, 0}, /* stride 2 */
    {1, 3, 45, 37, 8, 7, 2, 3, 1}, /* imagenet stem */
    {3, 6, 7, 5, 9, 1, 1, 0, 0},   /* 1x1 = plain GEMM */
    {2, 6, 7, 5, 4, 1, 2, 0, 1},   /* 1x1 stride 2 = gather + GEMM */
    {1, 1, 1, 1, 1, 3, 1, 1, 0},   /* 1x1 image, 3x3 kernel: only the centre tap */
    {2, 4, 9, 11, 3, 5, 1, 2, 1},  /* k = 5 */
    {1, 2, 8, 8, 3, 3, 2, 0, 0},   /* no padding */
    {1, 3, 20, 17, 5, 3, 3, 1, 1}, /* stride 3 (packed path: narrow output, gathered by index) */
    {1, 2, 20, 50, 3, 3, 3, 1, 0}, /* stride 3, 17 wide (packed path: runs, element-wise) */
    /* big enough (>= 2M multiply-adds) to split over two threads on the packed path: by
     * columns (small weights, >= 192 columns) or by row panels sharing the packed blocks */
    {1, 64, 30, 30, 60, 3, 2, 1, 1},   /* by columns, rows gathered by index */
    {1, 100, 20, 20, 132, 1, 1, 0, 0}, /* plain 1x1, by columns */
    {2, 256, 32, 31, 128, 1, 2, 0, 1}, /* strided 1x1, two images, by columns */
    {1, 128, 12, 12, 96, 3, 1, 1, 1},  /* 144 columns: by row panels */
    {2, 100, 16, 40, 300, 3, 1, 1, 0}, /* 1 MB of weights, 2 x 4 blocks of B: by row panels */
};

START_TEST(conv_matches_naive) {
    conv_case c = conv_cases[_i];
    int ho = (c.h + 2 * c.pad - c.k) / c.stride + 1, wo = (c.w + 2 * c.pad - c.k) / c.stride + 1;
    size_t nin = (size_t)c.n * c.cin * c.h * c.w, nout = (size_t)c.n * c.cout * ho * wo;
    size_t nw = (size_t)c.cout * c.cin * c.k * c.k;
    float *in = malloc(nin * 4), *w = malloc(nw * 4), *b = malloc((size_t)c.cout * 4);
    float *got = malloc(nout * 4), *want = malloc(nout * 4);
    ref_fill(in, nin, 1 + _i);
    ref_fill(w, nw, 100 + _i);
    ref_fill(b, (size_t)c.cout, 200 + _i);
    resattn_conv conv = {
        .cin = c.cin, .cout = c.cout, .k = c.k, .stride = c.stride, .pad = c.pad, .w = w, .b = b};
    ck_assert_int_eq(resattn_conv_out(c.h, c.k, c.stride, c.pad), ho);
    size_t scr = resattn_conv_scratch(&conv, c.h, c.w);
    float *scratch = malloc((scr ? scr : 1) * 4);
    ref_conv(in, c.n, c.cin, c.h, c.w, w, b, c.cout, c.k, c.stride, c.pad, c.relu, want);
    double scale = ref_max_abs(want, nout);
    /* the sgemm path, then (where the CPU has it) the packed AVX-512 GEMM of core/kernels/gemm.c */
    float *wp = NULL;
    if (resattn_gemm_available()) {
        int kk = c.cin * c.k * c.k;
        wp = malloc(resattn_gemm_packed_floats(c.cout, kk) * 4);
        resattn_gemm_pack(w, kk, c.cout, kk, wp);
    }
    for (int run = 0; run < (wp ? 4 : 1); run++) { /* packed x threads */
        conv.wp = run & 1 ? wp : NULL;
        resattn_parallel_set_threads(run & 2 ? 2 : 1);
        for (size_t i = 0; i < nout; i++)
            got[i] = NAN;
        resattn_conv_forward(&conv, in, c.n, c.h, c.w, got, c.relu, scratch);
        double err = ref_max_abs_diff(got, want, nout);
        ck_assert_msg(err <= 1e-5 * (scale > 1 ? scale : 1),
                      "case %d packed %d threads %d: max error %g (scale %g)", _i, run & 1,
                      run & 2 ? 2 : 1, err, scale);
    }
    resattn_parallel_set_threads(1);
    free(in), free(w), free(b), free(got), free(want), free(scratch), free(wp);
}
END_TEST

START_TEST(maxpool_matches_naive) {
    /* the last two: wider than one 256-column pass; big enough to split over two threads */
    static const int dims[][3] = {{3, 45, 37}, {1, 1, 1},   {2, 2, 3},
                                  {4, 23, 19}, {2, 9, 601}, {8, 130, 140}};
    resattn_parallel_set_threads(2);
    int nc = dims[_i][0], h = dims[_i][1], w = dims[_i][2];
    int ho = resattn_conv_out(h, 3, 2, 1), wo = resattn_conv_out(w, 3, 2, 1);
    float *in = malloc((size_t)nc * h * w * 4), *got = malloc((size_t)nc * ho * wo * 4),
          *want = malloc((size_t)nc * ho * wo * 4);
    ref_fill(in, (size_t)nc * h * w, 7 + _i);
    for (size_t i = 0; i < (size_t)nc * h * w; i++)
        in[i] -= 2.0f; /* all negative: zero padding would wrongly win */
    resattn_maxpool3s2(in, nc, h, w, got);
    ref_maxpool3s2(in, nc, h, w, want);
    ck_assert_double_eq(ref_max_abs_diff(got, want, (size_t)nc * ho * wo), 0.0);
    free(in), free(got), free(want);
}
END_TEST

START_TEST(gap_and_linear_match_naive) {
    int nc = 5, hw = 45 * 37, n = 3, cin = 7, cout = 11;
    float *in = malloc((size_t)nc * hw * 4), got[5], want[5];
    ref_fill(in, (size_t)nc * hw, 3);
    resattn_gap(in, nc, hw, got);
    ref_gap(in, nc, hw, want);
    ck_assert_double_le(ref_max_abs_diff(got, want, 5), 1e-6);
    float x[3 * 7], w[11 * 7], b[11], y[3 * 11], yr[3 * 11];
    ref_fill(x, sizeof x / 4, 4);
    ref_fill(w, sizeof w / 4, 5);
    ref_fill(b, sizeof b / 4, 6);
    resattn_linear(x, n, cin, w, b, cout, y);
    ref_linear(x, n, cin, w, b, cout, yr);
    ck_assert_double_le(ref_max_abs_diff(y, yr, (size_t)n * cout), 1e-5);
    resattn_linear(x, n, cin, w, NULL, cout, y);
    ref_linear(x, n, cin, w, NULL, cout, yr);
    ck_assert_double_le(ref_max_abs_diff(y, yr, (size_t)n * cout), 1e-5);
    free(in);
}
END_TEST

START_TEST(pointwise_functions) {
    for (double x = -8; x <= 8; x += 0.25) {
        double sig = 1 / (1 + exp(-x)), hs = x * fmin(fmax(x + 3, 0), 6) / 6;
        ck_assert_double_le(fabs(resattn_sigmoid((float)x) - sig), 1e-6);
        ck_assert_double_le(fabs(resattn_hardswish((float)x) - hs), 1e-6);
    }
    float r[4] = {-1.0f, 0.0f, 2.5f, -0.0f};
    resattn_relu_inplace(r, 4);
    ck_assert(r[0] == 0.0f && r[1] == 0.0f && r[2] == 2.5f && r[3] == 0.0f);
}
END_TEST

/* The attention modules' vector steps against double-precision loops, on odd lengths (one
 * lane, a partial vector, several vectors, more than one 64-column block); the unit target
 * runs this suite on the AVX-512 path and again on the portable one. */
START_TEST(attention_steps_match_naive) {
    static const int lens[] = {1, 5, 16, 17, 45, 70, 113};
    for (unsigned t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        int n = lens[t], h = 3 + n % 5, M = 2 + n % 3, K = 1 + n % 7;
        float *x = malloc((size_t)n * h * 2 * 4), *sum = malloc((size_t)n * 4),
              *mx = malloc((size_t)n * 4), *A = malloc((size_t)M * K * 4),
              *B = malloc((size_t)K * (n + 3) * 4), *C = malloc((size_t)M * n * 4),
              *bias = malloc((size_t)M * 4), *out = malloc((size_t)h * n * 4), wk[2 * 7 * 7],
              rows[8], cols[113];
        ref_fill(x, (size_t)n * h * 2, 30 + t);
        ref_fill(A, (size_t)M * K, 40 + t);
        ref_fill(B, (size_t)K * (n + 3), 50 + t);
        ref_fill(bias, (size_t)M, 60 + t);
        ref_fill(wk, 2 * 7 * 7, 70 + t);
        for (int i = 0; i < n; i++)
            sum[i] = 0.5f, mx[i] = -1.0f;
        resattn_scaled_sum_max(x, 0.75f, n, sum, mx);
        for (int i = 0; i < n; i++) {
            ck_assert_double_le(fabs(sum[i] - (0.5 + 0.75 * x[i])), 1e-6);
            ck_assert_double_eq(mx[i], fmax(-1.0, (double)(x[i] * 0.75f)));
        }
        float s, m;
        resattn_sum_max(x, n, &s, &m);
        double ds = 0, dm = -1e30;
        for (int i = 0; i < n; i++)
            ds += x[i], dm = fmax(dm, x[i]);
        ck_assert_double_le(fabs(s - ds), 1e-5);
        ck_assert_double_eq(m, dm);
        for (int i = 0; i < n; i++)
            cols[i] = 1.0f;
        resattn_row_col_sums(x, h, n, rows, cols);
        for (int y = 0; y < h; y++) {
            double r = 0;
            for (int i = 0; i < n; i++)
                r += x[y * n + i];
            ck_assert_double_le(fabs(rows[y] - r), 1e-5);
        }
        for (int i = 0; i < n; i++) {
            double c = 1;
            for (int y = 0; y < h; y++)
                c += x[y * n + i];
            ck_assert_double_le(fabs(cols[i] - c), 1e-5);
        }
        resattn_small_matmul(A, M, K, B, n + 3, n, bias, C, n);
        for (int i = 0; i < M; i++)
            for (int l = 0; l < n; l++) {
                double c = bias[i];
                for (int k = 0; k < K; k++)
                    c += (double)A[i * K + k] * B[k * (n + 3) + l];
                ck_assert_double_le(fabs(C[i * n + l] - c), 1e-5);
            }
        for (int k = 1; k <= 7; k += 2) { /* map [2, h, n] */
            resattn_conv_single(x, 2, h, n, wk, k, 0.25f, out);
            for (int y = 0; y < h; y++)
                for (int i = 0; i < n; i++) {
                    double c = 0.25;
                    for (int ch = 0; ch < 2; ch++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = y + ky - k / 2, ix = i + kx - k / 2;
                                if (iy >= 0 && iy < h && ix >= 0 && ix < n)
                                    c += (double)wk[(ch * k + ky) * k + kx] *
                                         x[(ch * h + iy) * n + ix];
                            }
                    ck_assert_double_le(fabs(out[y * n + i] - c), 1e-5);
                }
        }
        for (int i = 0; i < n; i++)
            out[i] = (float)(i - n / 2) * 0.7f;
        resattn_sigmoid_inplace(out, (size_t)n);
        for (int i = 0; i < n; i++)
            ck_assert_double_le(fabs(out[i] - 1 / (1 + exp(-(i - n / 2) * 0.7))), 1e-6);
        free(x), free(sum), free(mx), free(A), free(B), free(C), free(bias), free(out);
    }
}
END_TEST

START_TEST(im2col_layout) {
    /* 1 channel 3x3 image, k=3 pad 1: the centre-tap row is the image itself */
    float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, col[81];
    resattn_im2col(in, 1, 3, 3, 3, 1, 1, 3, 3, col);
    for (int i = 0; i < 9; i++)
        ck_assert_float_eq(col[4 * 9 + i], in[i]);
    ck_assert_float_eq(col[0], 0.0f); /* top-left tap at (0, 0) reads padding */
    ck_assert_float_eq(col[0 * 9 + 4], 1.0f);
}
END_TEST

Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, conv_matches_naive, 0, sizeof conv_cases / sizeof conv_cases[0]);
    tcase_add_loop_test(tc, maxpool_matches_naive, 0, 6);
    tcase_add_test(tc, gap_and_linear_match_naive);
    tcase_add_test(tc, pointwise_functions);
    tcase_add_test(tc, attention_steps_match_naive);
    tcase_add_test(tc, im2col_layout);
    suite_add_tcase(s, tc);
    return s;
}
