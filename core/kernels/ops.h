/*
 * The numerical operators of the forward pass, on float32 NCHW tensors. All take their
 * scratch memory from the caller (no allocation). A naive reference of each lives in
 * tests/check_ops.c.
 */
#ifndef RESATTN_OPS_H
#define RESATTN_OPS_H

#include "kernels/gemm_bf16.h"

#include <stddef.h>

/* A convolution with BatchNorm already folded in: out = w * in + b. */
typedef struct resattn_conv {
    int cin, cout, k, stride, pad;
    const float *w;       /* [cout, cin, k, k]; the packed layout instead when wp == w */
    const float *b;       /* [cout] */
    int wino_m;           /* Winograd output tile (2 or 4) for 3x3/1 pad-1 layers, 0: direct only */
    const float *wino_u;  /* [(wino_m+2)^2, cout, cin] transformed w (core/kernels/winograd.h), or
                             NULL  when wino_up holds them */
    const float *wp;      /* w packed for resattn_gemm_run ([cout, cin*k*k]), or NULL */
    const float *wino_up; /* each point's [cout, cin] of the transformed w, packed, one after
                             another resattn_gemm_packed_floats(cout, cin) apart, or NULL */
    resattn_bf16_path bf16; /* a BF16 model's layer: its direct path multiplies in BF16 on this
                               path (wb); RESATTN_BF16_PATH_NONE: FP32 */
    const uint16_t *wb;     /* w rounded and packed by resattn_gemm_bf16_pack, or NULL */
} resattn_conv;

static inline int resattn_conv_out(int in, int k, int stride, int pad) {
    return (in + 2 * pad - k) / stride + 1;
}

/* Floats of scratch resattn_conv_forward needs for one image of h x w input (for any batch
 * when the layer has a Winograd plan), including the B-packing buffers of the packed GEMM. */
size_t resattn_conv_scratch(const resattn_conv *c, int h, int w);

/*
 * in [n, cin, h, w] -> out [n, cout, ho, wo], out = conv(in) + b, then ReLU when relu != 0.
 * The single dispatch point for convolution algorithms: Winograd when the layer has a plan
 * and the batch has enough tiles (resattn_winograd_worth), 1x1 stride 1 is one GEMM on the
 * input, 1x1 stride s gathers then GEMMs, others go through im2col; the direct GEMM is the
 * BF16 one (core/kernels/gemm_bf16.h) when the layer has wb. scratch holds
 * resattn_conv_scratch floats.
 */
void resattn_conv_forward(const resattn_conv *c, const float *in, int n, int h, int w, float *out,
                          int relu, float *scratch);

/* im2col: in [cin, h, w] -> col [cin*k*k, ho*wo], rows ordered (ci, ky, kx). */
void resattn_im2col(const float *in, int cin, int h, int w, int k, int stride, int pad, int ho,
                    int wo, float *col);

/* Max pool 3x3, stride 2, pad 1 (padding never wins): in [nc, h, w] -> out [nc, ho, wo]. */
void resattn_maxpool3s2(const float *in, int nc, int h, int w, float *out);

/* Global average pool: in [nc, hw] -> out [nc]. */
void resattn_gap(const float *in, int nc, int hw, float *out);

/* Linear: x [n, cin], w [cout, cin], b [cout] or NULL -> y [n, cout]. */
void resattn_linear(const float *x, int n, int cin, const float *w, const float *b, int cout,
                    float *y);
/* The same with BF16 weights w [cout, cin]; x should be BF16-rounded already (FP32 sums). */
void resattn_linear_bf16(const float *x, int n, int cin, const uint16_t *w, const float *b,
                         int cout, float *y);

void resattn_relu_inplace(float *x, size_t count);

/* x = 1 / (1 + e^-x) over count floats (16 at a time on the AVX-512 path). */
void resattn_sigmoid_inplace(float *x, size_t count);

/* The attention modules' vector steps (16 lanes on the AVX-512 path, else one by one). */
/* C [M, L] (row stride ldc) = bias[i] (or 0 when NULL) + A [M, K] x B [K, L] (row stride ldb),
 * each element summed in k order. For the tiny dense layers of coordinate attention. */
void resattn_small_matmul(const float *A, int M, int K, const float *B, int ldb, int L,
                          const float *bias, float *C, int ldc);
/* out [h, w] = bias + k x k convolution (odd k, zero padding k / 2) of map [ch, h, w] with
 * wk [ch, k, k], the taps summed in (channel, row, column) order: CBAM's spatial gate. */
void resattn_conv_single(const float *map, int ch, int h, int w, const float *wk, int k, float bias,
                         float *out);
/* v = x[i] * g; sum[i] += v; mx[i] = max(mx[i], v) for i < n. */
void resattn_scaled_sum_max(const float *x, float g, int n, float *sum, float *mx);
/* *sum = sum of x[0..n), *mx = their max (-FLT_MAX when n is 0). */
void resattn_sum_max(const float *x, int n, float *sum, float *mx);
/* x [h, w]: rows[y] = sum over the row; cols[i] += sum over the column. */
void resattn_row_col_sums(const float *x, int h, int w, float *rows, float *cols);

/* x . w over n floats. */
float resattn_dot(const float *x, const float *w, int n);

static inline float resattn_sigmoid(float x) {
    return 1.0f / (1.0f + __builtin_expf(-x));
}

static inline float resattn_hardswish(float x) {
    float r = x + 3.0f;
    r = r < 0.0f ? 0.0f : r > 6.0f ? 6.0f : r;
    return x * r / 6.0f;
}

#endif
