/*
 * Convolution (im2col + GEMM, 1x1 as plain GEMM), fused bias/ReLU, max pool, global
 * average pool, linear layers and the attention modules' vector steps. Per image, a
 * convolution is one GEMM: W [cout, cin*k*k] x col [cin*k*k, ho*wo] -> out [cout, ho*wo],
 * on the packed AVX-512 kernel (core/kernels/gemm.c, col made block by block in its packing
 * buffer) when the weights were packed at load, else im2col and cblas_sgemm. Pooling and
 * the vector steps have AVX-512 paths beside the portable loops, taken when the packed GEMM
 * runs (resattn_gemm_available()).
 * In a BF16 model the layers run on the BF16 GEMM (core/kernels/gemm_bf16.c).
 */
#include "kernels/ops.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "kernels/winograd.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
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
 * The packed path's implicit im2col (core/kernels/gemm.h resattn_gemm_run_rows): row
 * kk = (ci, ky, kx) of col [cin*k*k, ho*wo] at column n = oy*wo + ox is
 * x[ci][oy*s - pad + ky][ox*s - pad + kx], zero outside the image. Each block of col is made
 * straight into the GEMM's packing buffer while the image is in cache, instead of writing the
 * whole col to memory and reading it back (the 7x7 stem's col is 7.4 MB at 224x224).
 */
typedef struct conv_rows {
    const float *x; /* one image [cin, h, w] */
    int h, w, k, stride, pad, ho, wo;
    const int *idx; /* narrow maps: [k*k, ho*wo] offset in a plane of each tap's input, or -1
                       (outside the image); NULL: rows are copied run by run */
} conv_rows;

/* Output rows narrower than this are gathered through conv_rows.idx: a 4x4 or 7x7 map's row
 * of col is 4-7 short runs, and working them out costs more than the copying. */
#define GATHER_WO 16

static void conv_index(const resattn_conv *c, int h, int w, int ho, int wo, int *idx) {
    for (int ky = 0; ky < c->k; ky++)
        for (int kx = 0; kx < c->k; kx++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    int iy = oy * c->stride - c->pad + ky, ix = ox * c->stride - c->pad + kx;
                    *idx++ = iy >= 0 && iy < h && ix >= 0 && ix < w ? iy * w + ix : -1;
                }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

static inline AVX512 __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static AVX512 void zero_run(float *dst, int len) {
    for (int j = 0; j < len; j += 16)
        _mm512_mask_storeu_ps(dst + j, lanes(len - j), _mm512_setzero_ps());
}

/* dst[j] = src[j * s] for j < m (m >= 1, every index inside the row). Strides 1 and 2 are
 * vector loads (stride 2: the even lanes of two, no load past the last index); others one
 * by one. */
static inline AVX512 void copy_run(const float *src, int s, int m, float *dst) {
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int j = 0; j < m; j += 16, src += 16 * s, dst += 16) {
        int q = m - j < 16 ? m - j : 16;
        if (s == 1) {
            _mm512_mask_storeu_ps(dst, lanes(q), _mm512_maskz_loadu_ps(lanes(q), src));
        } else if (s == 2) {
            __m512 v0 = _mm512_maskz_loadu_ps(lanes(2 * q - 1), src);
            __m512 v1 = _mm512_maskz_loadu_ps(lanes(2 * q - 17), src + 16);
            _mm512_mask_storeu_ps(dst, lanes(q), _mm512_permutex2var_ps(v0, even, v1));
        } else {
            for (int i = 0; i < q; i++)
                dst[i] = src[(ptrdiff_t)i * s];
        }
    }
}

/* Columns [n0, n0 + nc) of row kk: one run per output row they touch, the columns whose
 * input falls outside the image zero. Divisions only once per row: a block of a 4x4 map's
 * layer has thousands of rows of 16 columns. */
static AVX512 void conv_row(const void *arg, int kk, int n0, int nc, float *row) {
    const conv_rows *r = arg;
    int k2 = r->k * r->k, ci = kk / k2, tap = kk - ci * k2, ky = tap / r->k, kx = tap - ky * r->k;
    if (r->idx) { /* 16 columns per gather, the lanes outside the image zero */
        const float *plane = r->x + (size_t)ci * r->h * r->w;
        const int *idx = r->idx + (size_t)tap * r->ho * r->wo + n0;
        for (int j = 0; j < nc; j += 16) {
            __m512i v = _mm512_maskz_loadu_epi32(lanes(nc - j), idx + j);
            __mmask16 in = _mm512_mask_cmpge_epi32_mask(lanes(nc - j), v, _mm512_setzero_si512());
            _mm512_storeu_ps(row + j,
                             _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, v, plane, 4));
        }
        return;
    }
    int s = r->stride, off = kx - r->pad, wo = r->wo;
    /* output columns [lo, hi) read input columns off + ox*s inside [0, w) */
    int lo = off >= 0 ? 0 : (s - 1 - off) / s;
    int hi = off > r->w - 1 ? 0 : (r->w - 1 - off) / s + 1;
    hi = hi < wo ? hi : wo;
    lo = lo < hi ? lo : hi;
    const float *plane = r->x + (size_t)ci * r->h * r->w;
    int oy = n0 / wo, ox = n0 - oy * wo, iy = oy * s - r->pad + ky;
    for (int left = nc; left > 0; iy += s, ox = 0) {
        int len = wo - ox < left ? wo - ox : left;
        int a = lo > ox ? lo : ox, b = hi < ox + len ? hi : ox + len;
        if (iy < 0 || iy >= r->h || b <= a) {
            zero_run(row, len);
        } else {
            zero_run(row, a - ox);
            copy_run(plane + (size_t)iy * r->w + off + (ptrdiff_t)a * s, s, b - a, row + (a - ox));
            zero_run(row + (b - ox), ox + len - b);
        }
        row += len;
        left -= len;
    }
}
#else /* the packed path never runs here (resattn_gemm_available() is 0) */
static void conv_row(const void *arg, int kk, int n0, int nc, float *row) {
    (void)arg, (void)kk, (void)n0;
    memset(row, 0, (size_t)nc * sizeof *row);
}
#endif

/* 1x1 stride 1: row k of B is channel k of the image. */
static void plain_row(const void *arg, int k, int n0, int nc, float *row) {
    const conv_rows *r = arg;
    memcpy(row, r->x + (size_t)k * r->h * r->w + n0, (size_t)nc * sizeof *row);
}

/*
 * The direct path as a task of one or two parts. On the packed GEMM the parts share the
 * implicit im2col (each makes half the rows of every block of col) and split the product by
 * output-channel panels: splitting M rather than N halves the weights each core streams,
 * which is what a single image is bound by. Without packed weights it runs as one part:
 * im2col (or the strided 1x1 gather) into the scratch, cblas_sgemm (OpenBLAS threads it)
 * and the bias/ReLU pass. BF16 layers take bf16_part instead.
 */
typedef struct direct_task {
    const resattn_conv *c;
    const float *in;
    float *out, *col, *bbuf;
    const int *idx; /* conv_rows.idx, or NULL */
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
    for (int i = 0; i < t->n; i++) {
        const float *x = t->in + (size_t)i * c->cin * h * w, *b = x;
        float *y = t->out + (size_t)i * c->cout * hw;
        if (c->wp) {
            conv_rows r = {x, h, w, c->k, c->stride, c->pad, ho, wo, t->idx};
            resattn_gemm_run_rows(c->wp, c->cout, kk, plain ? plain_row : conv_row, &r, hw, y, hw,
                                  c->b, t->relu, t->bbuf, part, nparts, &t->bar);
            if (i + 1 < t->n) /* the packing buffers are reused by the next image */
                resattn_barrier_wait(&t->bar, nparts);
            continue;
        }
        if (gather) { /* strided 1x1: the sampled pixels, [cin, ho*wo] */
            for (int ci = 0; ci < c->cin; ci++)
                for (int oy = 0; oy < ho; oy++)
                    for (int ox = 0; ox < wo; ox++)
                        t->col[((size_t)ci * ho + oy) * wo + ox] =
                            x[((size_t)ci * h + oy * c->stride) * w + ox * c->stride];
            b = t->col;
        } else if (!plain) {
            resattn_im2col(x, c->cin, h, w, c->k, c->stride, c->pad, ho, wo, t->col);
            b = t->col;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, hw, kk, 1.0f, c->w, kk, b,
                    hw, 0.0f, y, hw);
        bias_act(y, c->b, c->cout, hw, t->relu);
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
    if (c->wp && wo < GATHER_WO && !(c->k == 1 && c->pad == 0 && c->stride == 1)) {
        conv_index(c, h, w, ho, wo, (int *)scratch); /* k*k*hw ints: the col area is unused */
        t.idx = (const int *)scratch;
    }
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

#if defined(__x86_64__) && defined(__GNUC__)
/*
 * 16 outputs per step: the vertical max v of the (up to) three input rows over columns
 * [2*ox0, 2*ox0 + 32), split into its even and odd lanes E[j] = v[2j], O[j] = v[2j + 1];
 * output j is max(v[2j - 1], E[j], O[j]), where v[2j - 1] is O one lane up and, in lane 0,
 * the column left of the block. Columns past the row are -inf (padding never wins).
 */
static AVX512 void maxpool_rows16(const float *x, int h, int w, float *y) {
    int ho = resattn_conv_out(h, 3, 2, 1), wo = resattn_conv_out(w, 3, 2, 1);
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int oy = 0; oy < ho; oy++, y += wo) {
        int y0 = oy * 2 - 1 < 0 ? 0 : oy * 2 - 1, y1 = oy * 2 + 1 < h ? oy * 2 + 1 : h - 1;
        for (int ox0 = 0; ox0 < wo; ox0 += 16) {
            int c = 2 * ox0;
            __mmask16 m0 = lanes(w - c), m1 = lanes(w - c - 16);
            __m512 a = ninf, b = ninf;
            float left = -INFINITY;
            for (int r = y0; r <= y1; r++) {
                const float *row = x + (size_t)r * w + c;
                a = _mm512_max_ps(a, _mm512_mask_loadu_ps(ninf, m0, row));
                b = _mm512_max_ps(b, _mm512_mask_loadu_ps(ninf, m1, row + 16));
                if (c > 0)
                    left = row[-1] > left ? row[-1] : left;
            }
            __m512 e = _mm512_permutex2var_ps(a, even, b), o = _mm512_permutex2var_ps(a, odd, b);
            __m512 up = _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(o), _mm512_castps_si512(_mm512_set1_ps(left)), 15));
            _mm512_mask_storeu_ps(y + ox0, lanes(wo - ox0), _mm512_max_ps(_mm512_max_ps(e, o), up));
        }
    }
}
#endif

static void maxpool_part(void *arg, int part, int nparts) {
    const pool_task *t = arg;
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) { /* the AVX-512 path */
        int h = t->h, w = t->w, hw = resattn_conv_out(h, 3, 2, 1) * resattn_conv_out(w, 3, 2, 1);
        for (int c = t->nc * part / nparts; c < t->nc * (part + 1) / nparts; c++)
            maxpool_rows16(t->in + (size_t)c * h * w, h, w, t->out + (size_t)c * hw);
        return;
    }
#endif
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

#if defined(__x86_64__) && defined(__GNUC__)
static AVX512 void gap16(const float *in, int nc, int hw, float *out) {
    for (int c = 0; c < nc; c++, in += hw) {
        __m512 s0 = _mm512_setzero_ps(), s1 = s0;
        int i = 0;
        for (; i + 32 <= hw; i += 32) {
            s0 = _mm512_add_ps(s0, _mm512_loadu_ps(in + i));
            s1 = _mm512_add_ps(s1, _mm512_loadu_ps(in + i + 16));
        }
        for (; i < hw; i += 16)
            s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(lanes(hw - i), in + i));
        out[c] = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)hw;
    }
}

/*
 * e^x for 16 lanes, after Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two
 * parts), e^r by a degree-7 polynomial, times 2^n by vscalefps. Within 2 ulp of expf over
 * [-87, 88] (clamped outside: sigmoid needs no more).
 */
static inline AVX512 __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static AVX512 void sigmoid16(float *x, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = lanes((int)(n - i < 16 ? n - i : 16));
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        v = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_mask_storeu_ps(x + i, m, v);
    }
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* C [M, L] = bias + A [M, K] x B [K, L]: rows of C 64 columns at a time in registers. */
static AVX512 void small_matmul16(const float *A, int M, int K, const float *B, int ldb, int L,
                                  const float *bias, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int l0 = 0; l0 < L; l0 += 64) {
            __m512 acc[4];
            __mmask16 m[4];
            for (int v = 0; v < 4; v++) {
                m[v] = lanes(L - l0 - 16 * v);
                acc[v] = _mm512_set1_ps(bias ? bias[i] : 0.0f);
            }
            for (int k = 0; k < K; k++) {
                __m512 a = _mm512_set1_ps(A[(size_t)i * K + k]);
                const float *bk = B + (size_t)k * ldb + l0;
                for (int v = 0; v < 4; v++)
                    acc[v] = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m[v], bk + 16 * v), acc[v]);
            }
            for (int v = 0; v < 4; v++)
                _mm512_mask_storeu_ps(C + (size_t)i * ldc + l0 + 16 * v, m[v], acc[v]);
        }
}

/* out [h, w] = bias + the k x k convolution (zero padding k / 2) of map [ch, h, w] with
 * wk [ch, k, k]: an output row 64 columns at a time in registers, the taps in order. */
static AVX512 void conv_single16(const float *map, int ch, int h, int w, const float *wk, int k,
                                 float bias, float *out) {
    int pad = k / 2;
    for (int y = 0; y < h; y++)
        for (int x0 = 0; x0 < w; x0 += 64) {
            __m512 acc[4];
            for (int v = 0; v < 4; v++)
                acc[v] = _mm512_set1_ps(bias);
            for (int c = 0; c < ch; c++)
                for (int ky = 0; ky < k; ky++) {
                    int iy = y + ky - pad;
                    if (iy < 0 || iy >= h)
                        continue;
                    const float *row = map + ((size_t)c * h + iy) * w;
                    for (int kx = 0; kx < k; kx++) {
                        __m512 wv = _mm512_set1_ps(wk[(c * k + ky) * k + kx]);
                        int off = kx - pad; /* column x reads row[x + off], inside [0, w) */
                        for (int v = 0; v < 4; v++) {
                            int x = x0 + 16 * v, lo = -off - x, hi = w - off - x;
                            lo = lo < 0 ? 0 : lo;
                            hi = hi > 16 ? 16 : hi;
                            hi = hi < w - x ? hi : w - x;
                            if (hi <= lo)
                                continue;
                            __mmask16 m = (__mmask16)(lanes(hi) & ~lanes(lo));
                            acc[v] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, row + x + off),
                                                     acc[v]);
                        }
                    }
                }
            for (int v = 0; v < 4; v++)
                _mm512_mask_storeu_ps(out + (size_t)y * w + x0 + 16 * v, lanes(w - x0 - 16 * v),
                                      acc[v]);
        }
}

static AVX512 void scaled_sum_max16(const float *x, float g, int n, float *sum, float *mx) {
    __m512 vg = _mm512_set1_ps(g);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = lanes(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vg);
        _mm512_mask_storeu_ps(sum + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, sum + i), v));
        _mm512_mask_storeu_ps(mx + i, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, mx + i), v));
    }
}

static AVX512 void sum_max16(const float *x, int n, float *sum, float *mx) {
    __m512 s = _mm512_setzero_ps(), m = _mm512_set1_ps(-FLT_MAX);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = lanes(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        s = _mm512_add_ps(s, v);
        m = _mm512_mask_max_ps(m, k, m, v);
    }
    *sum = _mm512_reduce_add_ps(s);
    *mx = _mm512_reduce_max_ps(m);
}

static AVX512 void row_col_sums16(const float *x, int h, int w, float *rows, float *cols) {
    for (int y = 0; y < h; y++, x += w) {
        __m512 s = _mm512_setzero_ps();
        for (int i = 0; i < w; i += 16) {
            __mmask16 m = lanes(w - i);
            __m512 v = _mm512_maskz_loadu_ps(m, x + i);
            s = _mm512_add_ps(s, v);
            _mm512_mask_storeu_ps(cols + i, m,
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(m, cols + i), v));
        }
        rows[y] = _mm512_reduce_add_ps(s);
    }
}
#endif

void resattn_small_matmul(const float *A, int M, int K, const float *B, int ldb, int L,
                          const float *bias, float *C, int ldc) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        small_matmul16(A, M, K, B, ldb, L, bias, C, ldc);
        return;
    }
#endif
    for (int i = 0; i < M; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int l = 0; l < L; l++)
            ci[l] = bias ? bias[i] : 0.0f;
        for (int k = 0; k < K; k++) {
            float a = A[(size_t)i * K + k];
            const float *bk = B + (size_t)k * ldb;
            for (int l = 0; l < L; l++)
                ci[l] += a * bk[l];
        }
    }
}

void resattn_conv_single(const float *map, int ch, int h, int w, const float *wk, int k, float bias,
                         float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        conv_single16(map, ch, h, w, wk, k, bias, out);
        return;
    }
#endif
    int pad = k / 2, hw = h * w;
    for (int i = 0; i < hw; i++)
        out[i] = bias;
    for (int c = 0; c < ch; c++) /* shifted row updates, the taps in the same order */
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float wv = wk[(c * k + ky) * k + kx];
                int x0 = pad - kx > 0 ? pad - kx : 0, x1 = w + pad - kx < w ? w + pad - kx : w;
                for (int y = 0; y < h; y++) {
                    int iy = y + ky - pad;
                    if (iy < 0 || iy >= h)
                        continue;
                    const float *src = map + (size_t)c * hw + (size_t)iy * w + kx - pad;
                    float *dst = out + (size_t)y * w;
                    for (int x = x0; x < x1; x++)
                        dst[x] += wv * src[x];
                }
            }
}

void resattn_scaled_sum_max(const float *x, float g, int n, float *sum, float *mx) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        scaled_sum_max16(x, g, n, sum, mx);
        return;
    }
#endif
    for (int i = 0; i < n; i++) {
        float v = x[i] * g;
        sum[i] += v;
        mx[i] = v > mx[i] ? v : mx[i];
    }
}

void resattn_sum_max(const float *x, int n, float *sum, float *mx) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        sum_max16(x, n, sum, mx);
        return;
    }
#endif
    float s = 0.0f, m = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        s += x[i];
        m = x[i] > m ? x[i] : m;
    }
    *sum = s, *mx = m;
}

void resattn_row_col_sums(const float *x, int h, int w, float *rows, float *cols) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        row_col_sums16(x, h, w, rows, cols);
        return;
    }
#endif
    for (int y = 0; y < h; y++, x += w) {
        float s = 0.0f;
        for (int i = 0; i < w; i++) {
            s += x[i];
            cols[i] += x[i];
        }
        rows[y] = s;
    }
}

void resattn_sigmoid_inplace(float *x, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        sigmoid16(x, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        x[i] = resattn_sigmoid(x[i]);
}

/* Mean of each channel, with 8 partial sums in two vectors (-O2 keeps a float reduction in
 * order, one add at a time); 32 on the AVX-512 path. */
void resattn_gap(const float *in, int nc, int hw, float *out) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        gap16(in, nc, hw, out);
        return;
    }
#endif
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
