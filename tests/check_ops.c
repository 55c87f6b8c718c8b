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
    resattn_conv conv = {c.cin, c.cout, c.k, c.stride, c.pad, w, b, 0, NULL, NULL, NULL};
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
    tcase_add_test(tc, im2col_layout);
    suite_add_tcase(s, tc);
    return s;
}
