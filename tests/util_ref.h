/*
 * Test helper: plain, obviously-correct reference implementations (double accumulators,
 * direct loops) of the engine's operators, used as the truth in check_ops and check_parity.
 */
#ifndef RESATTN_TEST_UTIL_REF_H
#define RESATTN_TEST_UTIL_REF_H

#include <stddef.h>

/* Direct convolution: in [n, cin, h, w], w [cout, cin, k, k], b [cout] or NULL
 * -> out [n, cout, ho, wo]; ReLU when relu != 0. */
void ref_conv(const float *in, int n, int cin, int h, int w, const float *wt, const float *b,
              int cout, int k, int stride, int pad, int relu, float *out);
/* Inference BatchNorm in place on x [n, c, hw]. */
void ref_bn(float *x, int n, int c, int hw, const float *g, const float *beta, const float *mean,
            const float *var, double eps);
void ref_maxpool3s2(const float *in, int nc, int h, int w, float *out);
void ref_gap(const float *in, int nc, int hw, float *out);
void ref_linear(const float *x, int n, int cin, const float *w, const float *b, int cout, float *y);
/* Largest |a - b| over count elements. */
double ref_max_abs_diff(const float *a, const float *b, size_t count);
double ref_max_abs(const float *a, size_t count);
/* Deterministic pseudo-random values in [-1, 1]. */
void ref_fill(float *x, size_t count, unsigned seed);

#endif
