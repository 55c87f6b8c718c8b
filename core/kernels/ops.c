/*
 * Convolution (im2col + GEMM, 1x1 as plain GEMM), fused bias/ReLU, max pool, global
 * average pool and linear layers. Per image, a convolution is one GEMM:
 * W [cout, cin*k*k] x col [cin*k*k, ho*wo] -> out [cout, ho*wo], on the packed AVX-512
 * kernel (core/kernels/gemm.c) when the weights were packed at load, else on cblas_sgemm;
 * in a BF16 model on the BF16 GEMM (core/kernels/gemm_bf16.c).
 */
#include "kernels/ops.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "kernels/winograd.h"

#include <cblas.h>
#include <float.h>
#include <string.h>

/* Floats of one part's work memory for resattn_gemm_bf16_conv (64-byte multiple). */
static size_t bf16_work_floats(const resattn_conv *c, int h, int w) {
    resattn_bf16_image im = {NULL,
                             c->cin,
                             h,
                             w,
                             c->k,
                             c->stride,
                             c->pad,
                             resattn_conv_out(h, c->k, c->stride, c->pad),
                             resattn_conv_out(w, c->k, c->stride, c->pad)};
    return (resattn_gemm_bf16_conv_work(&im, c->cout) + 63) / 64 * 16;
}

static size_t conv_work(const resattn_conv *c, int h, int w) {
    int ho = resattn_conv_out(h, c->k, c->stride, c->pad);
    int wo = resattn_conv_out(w, c->k, c->stride, c->pad);
    size_t direct = (size_t)c->cin * c->k * c->k * ho * wo;
    if (c->k == 1 && c->stride == 1 && c->pad == 0)
        direct = 0;
    else if (c->bf16) /* no column buffer: the padded BF16 copy of each of two parts */
        direct = 2 * bf16_work_floats(c, h, w);
    if (c->wino_m) {
        size_t wino = resattn_winograd_scratch(c->wino_m, c->cin, c->cout, 0, h, w);
        return wino > direct ? wino : direct;
    }
    return direct;
}

/* Floats of one thread's B-packing buffer: the packed FP32 GEMM's (when that path is
 * available: Winograd layers use it in BF16 models too) or the BF16 GEMM's, the larger. */
static size_t gemm_buf(const resattn_conv *c) {
    size_t f = resattn_gemm_available() ? resattn_gemm_scratch() : 0;
    size_t b = c->bf16 ? (resattn_gemm_bf16_scratch() + sizeof(float) - 1) / sizeof(float) : 0;
    size_t most = f > b ? f : b;
    return (most + 15) & ~(size_t)15; /* a 64-byte multiple: the second buffer stays aligned */
}

/* The scratch starts with two B-packing buffers (one per thread of a split layer); the
 * im2col / Winograd buffers follow. */
size_t resattn_conv_scratch(const resattn_conv *c, int h, int w) {
    return 2 * gemm_buf(c) + conv_work(c, h, w);
}

void resattn_im2col(const float *in, int cin, int h, int w, int k, int stride, int pad, int ho,
                    int wo, float *col) {
    for (int ci = 0; ci < cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = in + (size_t)ci * h * w;
                float *dst = col + ((size_t)(ci * k + ky) * k + kx) * ho * wo;
                for (int oy = 0; oy < ho; oy++) {
                    int iy = oy * stride - pad + ky;
                    float *d = dst + (size_t)oy * wo;
                    if (iy < 0 || iy >= h) {
                        memset(d, 0, (size_t)wo * sizeof *d);
                        continue;
                    }
                    const float *s = src + (size_t)iy * w;
                    for (int ox = 0; ox < wo; ox++) {
                        int ix = ox * stride - pad + kx;
                        d[ox] = (ix >= 0 && ix < w) ? s[ix] : 0.0f;
                    }
                }
            }
}

/* 4-float vectors (GCC/Clang extensions, baseline SSE): -O2 does not vectorise these loops. */
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

/* out [cout, hw] += b, then ReLU if asked: the GEMM epilogue in one pass. */
static void bias_act(float *out, const float *b, int cout, int hw, int relu) {
    v4f zero = {0, 0, 0, 0};
    for (int co = 0; co < cout; co++) {
        float *o = out + (size_t)co * hw, bb = b[co];
        v4f vb = {bb, bb, bb, bb};
        int i = 0;
        for (; i + 4 <= hw; i += 4) {
            v4f v;
            memcpy(&v, o + i, sizeof v);
            v += vb;
            if (relu) /* ReLU as a bit mask: C has no ternary on vectors */
                v = (v4f)((v4i)v & (v > zero));
            memcpy(o + i, &v, sizeof v);
        }
        for (; i < hw; i++) {
            float v = o[i] + bb;
            o[i] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/*
 * The direct path as a task of one or two parts: the columns (im2col or the strided 1x1
 * gather) split by input channel, a barrier, then the GEMM. On the packed GEMM the parts
 * split it by output-channel panels, each with its own B-packing buffer: splitting M
 * rather than N halves the weights each core streams, which is what a single image is
 * bound by. Without packed weights it runs as one part with cblas_sgemm (OpenBLAS threads
 * it) and the bias/ReLU pass. BF16 layers take bf16_part instead.
 */
typedef struct direct_task {
    const resattn_conv *c;
    const float *in;
    float *out, *col, *bbuf;
    int n, h, w, ho, wo, relu;
    resattn_barrier bar;
} direct_task;

/*
 * A BF16 layer's direct path: the BF16 GEMM builds its B from the image while packing it
 * (no column buffer), so the parts need no barrier. They split the output columns, each
 * packing only its own, when there are at least as many columns as output channels; else
 * the 16-row blocks of the weights, each streaming half of them.
 */
static void bf16_part(const direct_task *t, int part, int nparts) {
    const resattn_conv *c = t->c;
    int hw = t->ho * t->wo, kk = c->cin * c->k * c->k;
    int m0 = 0, m1 = c->cout, n0 = 0, n1 = hw;
    if (nparts > 1 && hw >= c->cout) {
        int groups = (hw + 15) / 16;
        n0 = groups * part / nparts * 16;
        n1 = groups * (part + 1) / nparts * 16;
        n1 = n1 < hw ? n1 : hw;
    } else if (nparts > 1) {
        int blocks = (c->cout + RESATTN_BF16_MB - 1) / RESATTN_BF16_MB;
        m0 = blocks * part / nparts * RESATTN_BF16_MB;
        m1 = blocks * (part + 1) / nparts * RESATTN_BF16_MB;
        m1 = m1 < c->cout ? m1 : c->cout;
    }
    if (m1 <= m0 || n1 <= n0)
        return;
    const uint16_t *a = resattn_gemm_bf16_rows(c->wb, kk, m0);
    float *bbuf = t->bbuf + (size_t)part * gemm_buf(c);
    for (int i = 0; i < t->n; i++) {
        const float *x = t->in + (size_t)i * c->cin * t->h * t->w;
        float *y = t->out + ((size_t)i * c->cout + m0) * hw + n0;
        if (c->k == 1 && c->stride == 1 && c->pad == 0) { /* B is the input itself */
            resattn_gemm_bf16_run(c->bf16, a, m1 - m0, kk, x + n0, hw, n1 - n0, y, hw, c->b + m0,
                                  t->relu, bbuf);
        } else {
            resattn_bf16_image im = {x, c->cin, t->h, t->w, c->k, c->stride, c->pad, t->ho, t->wo};
            float *work = t->col + (size_t)part * bf16_work_floats(c, t->h, t->w);
            resattn_gemm_bf16_conv(c->bf16, a, m1 - m0, &im, n0, n1, y, hw, c->b + m0, t->relu,
                                   bbuf, work);
        }
    }
}

static void direct_part(void *arg, int part, int nparts) {
    direct_task *t = arg;
    const resattn_conv *c = t->c;
    if (c->wb) {
        bf16_part(t, part, nparts);
        return;
    }
    int h = t->h, w = t->w, ho = t->ho, wo = t->wo, hw = ho * wo, kk = c->cin * c->k * c->k;
    int plain = c->k == 1 && c->pad == 0 && c->stride == 1;
    int gather = c->k == 1 && c->pad == 0 && c->stride != 1;
    int c0 = c->cin * part / nparts, c1 = c->cin * (part + 1) / nparts;
    int panels = (c->cout + RESATTN_GEMM_MR - 1) / RESATTN_GEMM_MR;
    int m0 = panels * part / nparts * RESATTN_GEMM_MR;
    int m1 = panels * (part + 1) / nparts * RESATTN_GEMM_MR;
    m1 = m1 < c->cout ? m1 : c->cout;
    float *bbuf = t->bbuf + (size_t)part * gemm_buf(c);
    for (int i = 0; i < t->n; i++) {
        const float *x = t->in + (size_t)i * c->cin * h * w, *b = x;
        float *y = t->out + (size_t)i * c->cout * hw;
        if (gather) { /* strided 1x1: the sampled pixels, [cin, ho*wo] */
            for (int ci = c0; ci < c1; ci++)
                for (int oy = 0; oy < ho; oy++)
                    for (int ox = 0; ox < wo; ox++)
                        t->col[((size_t)ci * ho + oy) * wo + ox] =
                            x[((size_t)ci * h + oy * c->stride) * w + ox * c->stride];
        } else if (!plain) {
            resattn_im2col(x + (size_t)c0 * h * w, c1 - c0, h, w, c->k, c->stride, c->pad, ho, wo,
                           t->col + (size_t)c0 * c->k * c->k * hw);
        }
        if (!plain) {
            b = t->col;
            resattn_barrier_wait(&t->bar, nparts); /* every column written */
        }
        if (!c->wp) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, hw, kk, 1.0f, c->w, kk,
                        b, hw, 0.0f, y, hw);
            bias_act(y, c->b, c->cout, hw, t->relu);
        } else if (m1 > m0) {
            resattn_gemm_run(c->wp + (size_t)m0 * kk, m1 - m0, kk, b, hw, hw, y + (size_t)m0 * hw,
                             hw, c->b + m0, t->relu, bbuf);
        }
        if (!plain && i + 1 < t->n)
            resattn_barrier_wait(&t->bar, nparts); /* columns read before the next image's */
    }
}

/* Below this many multiply-adds a thread hand-off costs more than it saves. */
#define TWO_PART_MACS (1L << 21)

void resattn_conv_forward(const resattn_conv *c, const float *in, int n, int h, int w, float *out,
                          int relu, float *scratch) {
    int ho = resattn_conv_out(h, c->k, c->stride, c->pad);
    int wo = resattn_conv_out(w, c->k, c->stride, c->pad);
    int kk = c->cin * c->k * c->k, hw = ho * wo;
    float *bbuf = scratch;
    scratch += 2 * gemm_buf(c);
    if (c->wino_m && resattn_winograd_worth(c->wino_m, n, h, w)) {
        resattn_winograd_forward(c->wino_m, c->wino_u, c->wino_up, bbuf, c->b, c->cin, c->cout, in,
                                 n, h, w, out, relu, scratch);
        return;
    }
    direct_task t = {.c = c,
                     .in = in,
                     .out = out,
                     .col = scratch,
                     .bbuf = bbuf,
                     .n = n,
                     .h = h,
                     .w = w,
                     .ho = ho,
                     .wo = wo,
                     .relu = relu};
    long macs = (long)c->cout * kk * hw;
    resattn_parallel2(direct_part, &t,
                      (c->wp || c->wb) && resattn_parallel_wanted() && macs >= TWO_PART_MACS);
}

/*
 * Max pool 3x3 stride 2 pad 1 per output row: the vertical max of the (up to) three input
 * rows first, contiguous and vectorisable, then the horizontal stride-2 max over it.
 * Channels split over two threads for a single image.
 */
typedef struct pool_task {
    const float *in;
    float *out;
    int nc, h, w;
} pool_task;

#define POOL_COLS 256 /* columns per pass of the vertical max (stack buffer) */

static void maxpool_part(void *arg, int part, int nparts) {
    const pool_task *t = arg;
    int h = t->h, w = t->w, ho = resattn_conv_out(h, 3, 2, 1), wo = resattn_conv_out(w, 3, 2, 1);
    float vmax[POOL_COLS + 2];
    for (int c = t->nc * part / nparts; c < t->nc * (part + 1) / nparts; c++) {
        const float *x = t->in + (size_t)c * h * w;
        float *y = t->out + (size_t)c * ho * wo;
        for (int oy = 0; oy < ho; oy++) {
            int y0 = oy * 2 - 1 < 0 ? 0 : oy * 2 - 1, y1 = oy * 2 + 1 < h ? oy * 2 + 1 : h - 1;
            /* output columns [o0, o1) read input columns [2*o0 - 1, 2*o1) */
            for (int o0 = 0; o0 < wo; o0 += POOL_COLS / 2) {
                int o1 = o0 + POOL_COLS / 2 < wo ? o0 + POOL_COLS / 2 : wo;
                int x0 = 2 * o0 - 1 < 0 ? 0 : 2 * o0 - 1, x1 = 2 * o1 < w ? 2 * o1 : w;
                memcpy(vmax, x + (size_t)y0 * w + x0, (size_t)(x1 - x0) * sizeof *vmax);
                for (int yy = y0 + 1; yy <= y1; yy++) {
                    const float *r = x + (size_t)yy * w + x0;
                    for (int k = 0; k < x1 - x0; k++)
                        vmax[k] = r[k] > vmax[k] ? r[k] : vmax[k];
                }
                for (int ox = o0; ox < o1; ox++) { /* padding never wins: clip the window */
                    int a = 2 * ox - 1 < 0 ? 0 : 2 * ox - 1,
                        e = 2 * ox + 1 < w ? 2 * ox + 1 : w - 1;
                    float m = vmax[a - x0];
                    for (int xx = a + 1; xx <= e; xx++)
                        m = vmax[xx - x0] > m ? vmax[xx - x0] : m;
                    y[(size_t)oy * wo + ox] = m;
                }
            }
        }
    }
}

void resattn_maxpool3s2(const float *in, int nc, int h, int w, float *out) {
    pool_task t = {in, out, nc, h, w};
    resattn_parallel2(maxpool_part, &t,
                      resattn_parallel_wanted() && (size_t)nc * h * w >= (size_t)1 << 17);
}

/* Mean of each channel, with 8 partial sums in two vectors (-O2 keeps a float reduction in
 * order, one add at a time). */
void resattn_gap(const float *in, int nc, int hw, float *out) {
    for (int c = 0; c < nc; c++) {
        const float *x = in + (size_t)c * hw;
        v4f s0 = {0, 0, 0, 0}, s1 = s0;
        int i = 0;
        for (; i + 8 <= hw; i += 8) {
            v4f a, b;
            memcpy(&a, x + i, sizeof a), memcpy(&b, x + i + 4, sizeof b);
            s0 += a, s1 += b;
        }
        s0 += s1;
        float s = (s0[0] + s0[1]) + (s0[2] + s0[3]);
        for (; i < hw; i++)
            s += x[i];
        out[c] = s / (float)hw;
    }
}

/* 8 independent partial sums (vector extension; -O2 would not reorder a float reduction
 * itself). */
float resattn_dot(const float *x, const float *w, int n) {
    v4f s0 = {0, 0, 0, 0}, s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f a0, a1, b0, b1;
        memcpy(&a0, x + i, sizeof a0), memcpy(&a1, x + i + 4, sizeof a1);
        memcpy(&b0, w + i, sizeof b0), memcpy(&b1, w + i + 4, sizeof b1);
        s0 += a0 * b0, s1 += a1 * b1;
    }
    s0 += s1;
    float s = s0[0] + s0[1] + s0[2] + s0[3];
    for (; i < n; i++)
        s += x[i] * w[i];
    return s;
}

/*
 * The classifier is a few hundred thousand multiply-adds per image: with the packed GEMM
 * available it runs as plain dot products, so a forward pass never wakes OpenBLAS's thread
 * pool (its idle workers spin for tens of milliseconds after each call and would compete
 * with the helper thread of core/kernels/parallel.c on a small machine).
 */
void resattn_linear(const float *x, int n, int cin, const float *w, const float *b, int cout,
                    float *y) {
    if (resattn_gemm_available()) {
        for (int i = 0; i < n; i++)
            for (int o = 0; o < cout; o++)
                y[(size_t)i * cout + o] =
                    resattn_dot(x + (size_t)i * cin, w + (size_t)o * cin, cin) + (b ? b[o] : 0.0f);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, cout, cin, 1.0f, x, cin, w, cin, 0.0f,
                y, cout);
    if (b)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < cout; o++)
                y[(size_t)i * cout + o] += b[o];
}

void resattn_linear_bf16(const float *x, int n, int cin, const uint16_t *w, const float *b,
                         int cout, float *y) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++)
            y[(size_t)i * cout + o] =
                resattn_dot_bf16(x + (size_t)i * cin, w + (size_t)o * cin, cin) + (b ? b[o] : 0.0f);
}

void resattn_relu_inplace(float *x, size_t count) {
    for (size_t i = 0; i < count; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
