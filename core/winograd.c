/*
 * Winograd F(m x m, 3x3) convolution, m = 2 or 4 (alpha = m + 2 points per tile side),
 * after Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016).
 *
 * For a tile of output rows [ty*m, ty*m+m) and columns [tx*m, tx*m+m) the input patch d
 * (alpha x alpha, starting at (ty*m-1, tx*m-1), zero outside the image) gives
 *     Y = A^T [ (G g G^T) .* (B^T d B) ] A.
 * Over all tiles and channels, the element-wise product summed over cin is, for each of
 * the alpha^2 points p, one matrix product M[p] = U[p] [cout, cin] x V[p] [cin, tiles].
 *
 * The tiles are processed in chunks of whole tile rows (across images) so the scratch stays
 * bounded. Transforms are vectorised across the tiles of one tile row: the alpha input rows
 * of a tile row are first split by column phase (x mod m), so "column tx*m + k" of every
 * tile becomes one contiguous run D[k mod m][tx + k/m] and all transforms are plain
 * vector arithmetic (GCC/Clang vector extensions, 8 floats: AVX2 where the CPU has it,
 * pairs of SSE operations otherwise).
 */
#include "winograd.h"
#include "gemm.h"
#include "parallel.h"

#include <cblas.h>
#include <string.h>

#define VL 8
typedef float v4 __attribute__((vector_size(VL * sizeof(float))));
typedef int v4i __attribute__((vector_size(VL * sizeof(int))));
typedef float vload __attribute__((vector_size(VL * sizeof(float)), aligned(4), may_alias));

/* Chunk budget: bytes of V + M (transform-domain input and output) per chunk. */
#ifndef CHUNK_BYTES
#define CHUNK_BYTES (6u << 20)
#endif

/* Loads and stores through pointers: passing 32-byte vectors by value would change the
 * ABI between the AVX2 and the baseline clone. */
#define ld(p) (*(const vload *)(p))
#define st(p, v) (*(vload *)(p) = (v))

static inline int round_up(int x, int k) {
    return (x + k - 1) / k * k;
}

/* r = B^T d for one line of alpha values. */
static inline __attribute__((always_inline)) void bt_line(int m, const v4 *d, v4 *r) {
    if (m == 2) {
        r[0] = d[0] - d[2];
        r[1] = d[1] + d[2];
        r[2] = d[2] - d[1];
        r[3] = d[1] - d[3];
    } else {
        const float four = 4, five = 5, two = 2;
        r[0] = four * d[0] - five * d[2] + d[4];
        r[1] = d[3] + d[4] - four * (d[1] + d[2]);
        r[2] = four * (d[1] - d[2]) + d[4] - d[3];
        r[3] = two * (d[3] - d[1]) + d[4] - d[2];
        r[4] = two * (d[1] - d[3]) + d[4] - d[2];
        r[5] = four * d[1] - five * d[3] + d[5];
    }
}

/* o = A^T s for one line of alpha values -> m values. */
static inline __attribute__((always_inline)) void at_line(int m, const v4 *s, v4 *o) {
    if (m == 2) {
        o[0] = s[0] + s[1] + s[2];
        o[1] = s[1] - s[2] - s[3];
    } else {
        const float two = 2, four = 4, eight = 8;
        v4 a = s[1] + s[2], b = s[1] - s[2], c = s[3] + s[4], d = s[3] - s[4];
        o[0] = s[0] + a + c;
        o[1] = b + two * d;
        o[2] = a + four * c;
        o[3] = b + eight * d + s[5];
    }
}

/* Transform-domain sizes of one call: tiles, chunking and buffer strides. */
typedef struct plan {
    int alpha, th, tw; /* tile rows / columns per image */
    int rows;          /* tile rows in all: n * th */
    int chunk_rows;    /* tile rows per chunk */
    int ldv;           /* row stride of V and M: chunk tiles + padding for vector overrun */
    int jp;            /* length of one phase line in the row buffers */
} plan;

static plan make_plan(int m, int cin, int cout, int n, int h, int w) {
    plan p;
    p.alpha = m + 2;
    p.th = (h + m - 1) / m;
    p.tw = (w + m - 1) / m;
    p.rows = n * p.th;
    size_t per_tile = (size_t)p.alpha * p.alpha * (size_t)(cin + cout) * sizeof(float);
    size_t tiles = CHUNK_BYTES / per_tile;
    int cr = (int)(tiles / (size_t)p.tw);
    p.chunk_rows = cr < 1 ? 1 : cr > p.rows ? p.rows : cr;
    p.ldv = round_up(p.chunk_rows * p.tw + VL, 16);
    p.jp = round_up(p.tw, VL) + VL;
    return p;
}

size_t resattn_winograd_weight_floats(int m, int cin, int cout) {
    return (size_t)(m + 2) * (m + 2) * cout * cin;
}

static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double G4[6][3] = {
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};

void resattn_winograd_transform_weights(int m, const float *w, int cin, int cout, float *u) {
    int alpha = m + 2;
    const double *g = m == 2 ? &G2[0][0] : &G4[0][0];
    size_t plane = (size_t)cout * cin;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *k = w + ((size_t)co * cin + ci) * 9;
            double t[6][3]; /* G k: [alpha, 3] */
            for (int i = 0; i < alpha; i++)
                for (int j = 0; j < 3; j++)
                    t[i][j] = g[i * 3] * k[j] + g[i * 3 + 1] * k[3 + j] + g[i * 3 + 2] * k[6 + j];
            for (int i = 0; i < alpha; i++)
                for (int j = 0; j < alpha; j++) {
                    double s = t[i][0] * g[j * 3] + t[i][1] * g[j * 3 + 1] + t[i][2] * g[j * 3 + 2];
                    u[(size_t)(i * alpha + j) * plane + (size_t)co * cin + ci] = (float)s;
                }
        }
}

size_t resattn_winograd_scratch(int m, int cin, int cout, int n, int h, int w) {
    if (n <= 0) /* any batch: enough images that the chunk budget, not n, sets the size */
        n = (int)(CHUNK_BYTES / ((size_t)(m + 2) * (m + 2) * (cin + cout) * sizeof(float))) + 1;
    plan p = make_plan(m, cin, cout, n, h, w);
    size_t a2 = (size_t)p.alpha * p.alpha;
    return a2 * (size_t)(cin + cout) * p.ldv + 2 * (size_t)(p.th * m + 2 + p.alpha) * m * p.jp;
}

/*
 * Split one input row by column phase: d [m, jp], d[q][j] = row[j*m + q - 1], zero outside
 * [0, w) (and everywhere when row is NULL, a padding row). Read once per input row: the
 * tile rows of a chunk share the rows they overlap on.
 */
static inline __attribute__((always_inline)) void split_row(int m, int jp, const float *row, int w,
                                                            float *d) {
    if (!row) {
        memset(d, 0, (size_t)m * jp * sizeof *d);
        return;
    }
    int jhi = (w + 1) / m; /* j in [1, jhi): every j*m + q - 1 inside the row */
    for (int j = 0; j < jp; j++) {
        if (j == 1 && jhi > 1) {
            for (; j < jhi; j++)
                for (int q = 0; q < m; q++)
                    d[(size_t)q * jp + j] = row[j * m + q - 1];
            if (j >= jp)
                break;
        }
        for (int q = 0; q < m; q++) {
            int ix = j * m + q - 1;
            d[(size_t)q * jp + j] = (ix >= 0 && ix < w) ? row[ix] : 0.0f;
        }
    }
}

/* B^T d B for every tile of one tile row of one channel, into V[point][t0 + tx]. */
static inline __attribute__((always_inline)) void
input_row(int m, const plan *p, float *D, float *T, float *v, size_t vplane, int t0) {
    int alpha = p->alpha, jp = p->jp;
    v4 d[6], r[6];
    /* columns first (vertical transform), on the phase-split rows: T [alpha, m, jp] */
    for (int q = 0; q < m; q++)
        for (int j = 0; j < jp; j += VL) {
            for (int k = 0; k < alpha; k++)
                d[k] = ld(D + ((size_t)k * m + q) * jp + j);
            bt_line(m, d, r);
            for (int k = 0; k < alpha; k++)
                st(T + ((size_t)k * m + q) * jp + j, r[k]);
        }
    /* then rows: element k of tile tx sits at T[row][k % m][tx + k / m] */
    for (int rr = 0; rr < alpha; rr++) {
        const float *tr = T + (size_t)rr * m * jp;
        for (int j = 0; j < p->tw; j += VL) {
            for (int k = 0; k < alpha; k++)
                d[k] = ld(tr + (size_t)(k % m) * jp + j + k / m);
            bt_line(m, d, r);
            for (int c = 0; c < alpha; c++)
                st(v + (size_t)(rr * alpha + c) * vplane + t0 + j, r[c]);
        }
    }
}

/* A^T M A + bias (+ReLU) for every tile of one tile row of one output channel into y [h, w]. */
static inline __attribute__((always_inline)) void output_row(int m, const plan *p, const float *mm,
                                                             size_t mplane, int t0, float bias,
                                                             int relu, float *H, float *Y, float *y,
                                                             int h, int w, int ty) {
    int alpha = p->alpha, jp = p->jp;
    v4 s[6], o[4];
    /* rows first: H [alpha, m, jp] */
    for (int rr = 0; rr < alpha; rr++)
        for (int j = 0; j < p->tw; j += VL) {
            for (int c = 0; c < alpha; c++)
                s[c] = ld(mm + (size_t)(rr * alpha + c) * mplane + t0 + j);
            at_line(m, s, o);
            for (int q = 0; q < m; q++)
                st(H + ((size_t)rr * m + q) * jp + j, o[q]);
        }
    /* then columns, with the epilogue: Y [m, m, jp] */
    v4 zero = {0};
    /* ReLU as a bit mask (all ones where positive): C has no ternary on vectors */
    for (int q = 0; q < m; q++)
        for (int j = 0; j < p->tw; j += VL) {
            for (int rr = 0; rr < alpha; rr++)
                s[rr] = ld(H + ((size_t)rr * m + q) * jp + j);
            at_line(m, s, o);
            for (int oy = 0; oy < m; oy++) {
                v4 val = o[oy] + bias;
                if (relu)
                    val = (v4)((v4i)val & (val > zero));
                st(Y + ((size_t)oy * m + q) * jp + j, val);
            }
        }
    /* interleave the phases back into image rows, clipping the last tile */
    for (int oy = 0; oy < m && ty * m + oy < h; oy++) {
        float *dst = y + (size_t)(ty * m + oy) * w;
        const float *src = Y + (size_t)oy * m * jp;
        int full = w / m;
        for (int j = 0; j < full; j++)
            for (int q = 0; q < m; q++)
                dst[j * m + q] = src[(size_t)q * jp + j];
        for (int x = full * m; x < w; x++)
            dst[x] = src[(size_t)(x % m) * jp + x / m];
    }
}

/* One chunk's transforms, shared by the parts (threads) that split its channels. */
typedef struct stage {
    const plan *p;
    const float *in, *b;
    float *out, *V, *M;
    float *bufs[2]; /* per part: P [th*m + 2, m, jp] then B1 [alpha, m, jp] */
    int cin, cout, h, w, r0, rc, relu;
} stage;

/* Input transform of channels [cin*part/nparts, cin*(part+1)/nparts) of the chunk. */
static inline __attribute__((always_inline)) void input_stage(int m, const stage *s, int part,
                                                              int nparts) {
    const plan *p = s->p;
    size_t prow = (size_t)m * p->jp, vplane = (size_t)s->cin * p->ldv;
    float *P = s->bufs[part], *B1 = P + (size_t)(p->th * m + 2) * prow;
    int c0 = s->cin * part / nparts, c1 = s->cin * (part + 1) / nparts;
    for (int ci = c0; ci < c1; ci++)
        for (int rr = 0; rr < s->rc;) {
            /* the chunk's tile rows ty0 .. ty0+run-1 of one image need padded rows
             * [ty0*m, (ty0+run)*m + 2) */
            int g = s->r0 + rr, img = g / p->th, ty0 = g % p->th;
            int run = s->rc - rr < p->th - ty0 ? s->rc - rr : p->th - ty0;
            const float *x = s->in + ((size_t)img * s->cin + ci) * s->h * s->w;
            for (int r = ty0 * m; r < (ty0 + run) * m + 2; r++) {
                int iy = r - 1;
                split_row(m, p->jp, iy >= 0 && iy < s->h ? x + (size_t)iy * s->w : NULL, s->w,
                          P + r * prow);
            }
            for (int k = 0; k < run; k++)
                input_row(m, p, P + (size_t)(ty0 + k) * m * prow, B1, s->V + (size_t)ci * p->ldv,
                          vplane, (rr + k) * p->tw);
            rr += run;
        }
}

/* Output transform + epilogue of output channels [cout*part/nparts, ...) of the chunk. */
static inline __attribute__((always_inline)) void output_stage(int m, const stage *s, int part,
                                                               int nparts) {
    const plan *p = s->p;
    size_t mplane = (size_t)s->cout * p->ldv;
    float *H = s->bufs[part], *Y = H + (size_t)(p->th * m + 2) * m * p->jp;
    int c0 = s->cout * part / nparts, c1 = s->cout * (part + 1) / nparts;
    for (int co = c0; co < c1; co++)
        for (int rr = 0; rr < s->rc; rr++) {
            int g = s->r0 + rr, img = g / p->th, ty = g % p->th;
            float *y = s->out + ((size_t)img * s->cout + co) * s->h * s->w;
            output_row(m, p, s->M + (size_t)co * p->ldv, mplane, rr * p->tw, s->b[co], s->relu, H,
                       Y, y, s->h, s->w, ty);
        }
}

/* An AVX2 clone beside the baseline one on x86-64 (GCC/Clang pick it at load time). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define FAST_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FAST_CLONES
#endif

typedef void (*stage_fn)(void *s, int part, int nparts);
FAST_CLONES static void input_stage2(void *s, int part, int nparts) {
    input_stage(2, s, part, nparts);
}
FAST_CLONES static void input_stage4(void *s, int part, int nparts) {
    input_stage(4, s, part, nparts);
}
FAST_CLONES static void output_stage2(void *s, int part, int nparts) {
    output_stage(2, s, part, nparts);
}
FAST_CLONES static void output_stage4(void *s, int part, int nparts) {
    output_stage(4, s, part, nparts);
}

/* Below this many transformed floats per chunk, a thread hand-off costs more than it saves. */
#define TWO_PART_MIN (1 << 16)

/*
 * The whole layer as one two-part task (packed GEMM path): per chunk, the input transform
 * split by input channels, the alpha^2 products split by transform point (each part with
 * its own B-packing buffer), the output transform split by output channels, with a barrier
 * between the phases. One hand-off per layer instead of one per phase.
 */
typedef struct wino_task {
    stage s;
    const float *up;
    float *bbuf;
    int m;
    resattn_barrier bar;
} wino_task;

static void wino_part(void *arg, int part, int nparts) {
    wino_task *t = arg;
    stage s = t->s; /* own copy: r0 and rc advance in step on both parts */
    const plan *p = s.p;
    int a2 = p->alpha * p->alpha;
    size_t vplane = (size_t)s.cin * p->ldv, mplane = (size_t)s.cout * p->ldv;
    size_t upt = resattn_gemm_packed_floats(s.cout, s.cin);
    float *bbuf = t->bbuf + (size_t)part * resattn_gemm_scratch();
    stage_fn in = t->m == 2 ? input_stage2 : input_stage4;
    stage_fn out = t->m == 2 ? output_stage2 : output_stage4;
    for (s.r0 = 0; s.r0 < p->rows; s.r0 += p->chunk_rows) {
        s.rc = p->rows - s.r0 < p->chunk_rows ? p->rows - s.r0 : p->chunk_rows;
        int nt = s.rc * p->tw;
        in(&s, part, nparts);
        resattn_barrier_wait(&t->bar, nparts);
        for (int pt = a2 * part / nparts; pt < a2 * (part + 1) / nparts; pt++)
            resattn_gemm_run(t->up + pt * upt, s.cout, s.cin, s.V + (size_t)pt * vplane, p->ldv, nt,
                             s.M + (size_t)pt * mplane, p->ldv, NULL, 0, bbuf);
        resattn_barrier_wait(&t->bar, nparts);
        out(&s, part, nparts);
    }
}

void resattn_winograd_forward(int m, const float *u, const float *up, float *bbuf, const float *b,
                              int cin, int cout, const float *in, int n, int h, int w, float *out,
                              int relu, float *scratch) {
    plan p = make_plan(m, cin, cout, n, h, w);
    int a2 = p.alpha * p.alpha;
    size_t vplane = (size_t)cin * p.ldv, mplane = (size_t)cout * p.ldv;
    size_t part = (size_t)(p.th * m + 2 + p.alpha) * m * p.jp;
    stage s = {.p = &p,
               .in = in,
               .b = b,
               .out = out,
               .cin = cin,
               .cout = cout,
               .h = h,
               .w = w,
               .relu = relu};
    s.V = scratch;                   /* [a2, cin, ldv] */
    s.M = s.V + (size_t)a2 * vplane; /* [a2, cout, ldv] */
    s.bufs[0] = s.M + (size_t)a2 * mplane;
    s.bufs[1] = s.bufs[0] + part;
    int threads = resattn_parallel_wanted();
    if (up) {
        wino_task t = {.s = s, .up = up, .bbuf = bbuf, .m = m};
        int nt = (p.rows < p.chunk_rows ? p.rows : p.chunk_rows) * p.tw;
        resattn_parallel2(wino_part, &t,
                          threads && (size_t)a2 * nt * (cin < cout ? cin : cout) >= TWO_PART_MIN);
        return;
    }
    /* sgemm path: OpenBLAS threads the products; the transforms split over the helper */
    for (s.r0 = 0; s.r0 < p.rows; s.r0 += p.chunk_rows) {
        s.rc = p.rows - s.r0 < p.chunk_rows ? p.rows - s.r0 : p.chunk_rows;
        int nt = s.rc * p.tw;
        int two = threads && (size_t)a2 * nt * (cin < cout ? cin : cout) >= TWO_PART_MIN;
        resattn_parallel2(m == 2 ? input_stage2 : input_stage4, &s, two);
        for (int pt = 0; pt < a2; pt++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, nt, cin, 1.0f,
                        u + (size_t)pt * cout * cin, cin, s.V + (size_t)pt * vplane, p.ldv, 0.0f,
                        s.M + (size_t)pt * mplane, p.ldv);
        resattn_parallel2(m == 2 ? output_stage2 : output_stage4, &s, two);
    }
}
/*
 * Measured on the 2-core Zen 5 with OpenBLAS 0.3.21 (Haswell kernels), ResNet-18 widths,
 * one thread, against im2col + sgemm: F(4,3) ran 1.9-2.2x faster on 16x16 and larger maps,
 * F(2,3) 1.4-1.8x on 14x14 and smaller (F(4,3) wastes padded tiles there and its 36
 * transformed weight planes dominate), and neither helped below 16 channels.
 */
int resattn_winograd_choose(int cin, int cout, int h, int w) {
    if (cin < 16 || cout < 16 || h < 2 || w < 2)
        return 0;
    return h >= 16 && w >= 16 ? 4 : 2;
}

/*
 * With few tiles the transform-domain GEMMs are matrix-vector products that stream
 * alpha^2 / 9 times the weights of the direct GEMM: 512 -> 512 channels on a 4x4 map at
 * batch 1 took 1.15 ms direct, 1.79 ms with F(2,3). With the packed GEMM, a 7x7 map at
 * batch 1 (16 tiles) also went faster direct (1.33 vs 1.54 ms, ResNet-18 layer4): the
 * 16 weight planes of F(2,3) are 1.8x the bytes of the direct weights, read for 16 columns.
 */
int resattn_winograd_worth(int m, int n, int h, int w) {
    int tiles = ((h + m - 1) / m) * ((w + m - 1) / m);
    return (long)n * tiles >= 32;
}
