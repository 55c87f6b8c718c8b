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
 * pairs of SSE operations otherwise). CPUs with AVX-512F run 16-lane transforms instead
 * (below input_generic2), chosen at run time.
 */
#include "kernels/winograd.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include <resattn/resattn.h>

#include <cblas.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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
FAST_CLONES static void input_generic2(void *s, int part, int nparts) {
    input_stage(2, s, part, nparts);
}
FAST_CLONES static void input_generic4(void *s, int part, int nparts) {
    input_stage(4, s, part, nparts);
}
FAST_CLONES static void output_generic2(void *s, int part, int nparts) {
    output_stage(2, s, part, nparts);
}
FAST_CLONES static void output_generic4(void *s, int part, int nparts) {
    output_stage(4, s, part, nparts);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/*
 * AVX-512 transforms: one 16-lane vector holds 16 consecutive tiles of the chunk (the
 * columns t0 .. t0+15 of V and M), so every load and store of the transform domain is one
 * full vector even when a tile row has only 2-8 tiles (maps of 8-32 pixels). The lanes of
 * a group fall into segments, runs of tiles of one tile row; each input row a segment
 * needs is read with masked loads into a window W of m vectors where W[m*lane + q] is
 * column m*tx + q of the lane's tile (zero outside the image), and two permute stages
 * split W into its m phases, e_q[lane] = W[m*lane + q]. The neighbour columns m*tx - 1 and
 * m*tx + m are the phases shifted by one lane, except at segment ends, which take one
 * masked single-lane load each. The output transform runs the same steps backwards:
 * permutes interleave the phases into W, and masked stores write the segments' rows.
 *
 * The loads and stores a group needs depend on its tiles but not on the channel, so they
 * are worked out once per group (an `xfers` list) and replayed for every channel of the
 * part. Everything between the loads and the stores stays in the 32 zmm registers, so the
 * 6x6 transform of 16 tiles costs no stack traffic beyond the 36 intermediate vectors.
 */
#define AVX512 __attribute__((target("avx512f")))
#define GROUP 16 /* tiles per vector */
#define XMAX 64  /* transfers per row of a group: <= 16 + m window pieces, 32 end lanes */
#define PFMAX 96 /* prefetched lines per group (more are left to the hardware) */
#define PFDIST 2 /* channels ahead */
/*
 * Above this many bytes of V per chunk, V is written with streaming stores: it cannot stay
 * in the core's cache until the products read it anyway, and the streaming stores save the
 * read of each line before it is written. Measured on the Zen 5 (1 MiB L2): with 3.2 MB
 * per chunk (CIFAR ResNet-18 layers at batch 32) the layers ran 10-15% faster streaming;
 * with 0.8-0.9 MB (224x224 layers 2-3 at batch 1) 5-10% slower; 1.8 MB was even.
 */
#define STREAM_BYTES (2u << 20)

/* A masked load or store of one vector: the lanes in mask, from or to base + off. */
typedef struct xfer {
    ptrdiff_t off;
    unsigned mask;
} xfer;

/* Per row of the group (alpha input rows or m output rows), the transfers into or out of
 * each vector v (m window vectors, then the left and right neighbour vectors on input):
 * x[row][beg[row][v] .. beg[row][v + 1]). */
typedef struct xfers {
    int beg[6][7];
    xfer x[6][XMAX];
    unsigned starts, ends; /* lanes that begin / end a segment */
    int npf;               /* cache lines of one channel plane the group reads */
    ptrdiff_t pf[PFMAX];
} xfers;

/* One run of tiles of one tile row: lanes [l0, l1) hold tiles tx .. of tile row ty of img. */
typedef struct seg {
    int l0, l1, img, ty, tx;
} seg;

/* Segments of the group of tiles [t0, t0 + 16) of the chunk (fewer at its end). */
static int group_segs(const stage *s, int t0, seg *sg, xfers *xf) {
    const plan *p = s->p;
    int nt = s->rc * p->tw, end = t0 + GROUP < nt ? t0 + GROUP : nt;
    int rr = t0 / p->tw, tx = t0 % p->tw, n = 0;
    xf->starts = xf->ends = 0;
    for (int t = t0; t < end; rr++, tx = 0) {
        int len = p->tw - tx < end - t ? p->tw - tx : end - t, g = s->r0 + rr;
        sg[n++] = (seg){t - t0, t - t0 + len, g / p->th, g % p->th, tx};
        xf->starts |= 1u << (t - t0);
        xf->ends |= 1u << (t - t0 + len - 1);
        t += len;
    }
    return n;
}

/* Appends the piece of window vector v covering W positions [plo, phi) of one segment, whose
 * position 0 is at offset off0 of the channel plane. */
static int add_window(xfer *x, int n, int v, int plo, int phi, ptrdiff_t off0) {
    int lo = plo - GROUP * v, hi = phi - GROUP * v;
    lo = lo < 0 ? 0 : lo;
    hi = hi > GROUP ? GROUP : hi;
    if (lo < hi)
        x[n++] = (xfer){off0 + GROUP * v, ((1u << hi) - 1) & ~((1u << lo) - 1)};
    return n;
}

/* The transfers of one group: rows r of each segment are image row ty*m + r + dy (dy = -1
 * on input: the patch starts one row above the tile; 0 on output); c planes per image. */
static void group_xfers(int m, const stage *s, int t0, int rows, int dy, int c, xfers *xf) {
    seg sg[GROUP];
    int ns = group_segs(s, t0, sg, xf), h = s->h, w = s->w;
    xf->npf = 0;
    size_t hw = (size_t)h * w;
    for (int r = 0; r < rows; r++) {
        xfer *x = xf->x[r];
        int n = 0;
        ptrdiff_t rowoff[GROUP];
        for (int i = 0; i < ns; i++) {
            int iy = sg[i].ty * m + r + dy;
            rowoff[i] = iy >= 0 && iy < h ? (ptrdiff_t)((size_t)sg[i].img * c * hw) + iy * w : -1;
        }
        for (int v = 0; v < m; v++) {
            xf->beg[r][v] = n;
            for (int i = 0; i < ns; i++)
                if (rowoff[i] >= 0) /* W position q <-> column q + m*(tx - l0), inside [0, w) */
                    n = add_window(x, n, v, m * sg[i].l0,
                                   m * sg[i].l1 < w + m * (sg[i].l0 - sg[i].tx)
                                       ? m * sg[i].l1
                                       : w + m * (sg[i].l0 - sg[i].tx),
                                   rowoff[i] + m * (sg[i].tx - sg[i].l0));
        }
        xf->beg[r][m] = n;
        if (dy == 0)
            continue;
        for (int i = 0; i < ns; i++) /* the lines of columns [m*tx - 1, m*(tx + len)] */
            if (rowoff[i] >= 0) {
                int lo = m * sg[i].tx - 1, hi = m * (sg[i].tx + sg[i].l1 - sg[i].l0);
                lo = lo < 0 ? 0 : lo;
                hi = hi > w - 1 ? w - 1 : hi;
                for (int c = lo; c <= hi && xf->npf < PFMAX; c += GROUP)
                    xf->pf[xf->npf++] = rowoff[i] + c;
                if (xf->npf < PFMAX)
                    xf->pf[xf->npf++] = rowoff[i] + hi;
            }
        for (int i = 0; i < ns; i++) /* left neighbour of the first tile: column m*tx - 1 */
            if (rowoff[i] >= 0 && sg[i].tx > 0)
                x[n++] = (xfer){rowoff[i] + m * sg[i].tx - 1 - sg[i].l0, 1u << sg[i].l0};
        xf->beg[r][m + 1] = n;
        for (int i = 0; i < ns; i++) { /* right neighbour of the last tile */
            int col = m * (sg[i].tx + sg[i].l1 - sg[i].l0);
            if (rowoff[i] >= 0 && col < w)
                x[n++] = (xfer){rowoff[i] + col - (sg[i].l1 - 1), 1u << (sg[i].l1 - 1)};
        }
        xf->beg[r][m + 2] = n;
    }
}

/* Replays the loads of vector v of row r: lanes nobody loads stay zero (padding). */
static inline __attribute__((always_inline)) AVX512 __m512 gather_vec(const xfers *xf, int r, int v,
                                                                      const float *base) {
    __m512 z = _mm512_setzero_ps();
    for (int j = xf->beg[r][v]; j < xf->beg[r][v + 1]; j++)
        z = _mm512_mask_loadu_ps(z, (__mmask16)xf->x[r][j].mask, base + xf->x[r][j].off);
    return z;
}

/* The permute indices: lanes 2L+q <- 4L+q of a pair of vectors (q = 0, 1), the same for
 * q = 2, 3, even lanes, odd lanes; and their inverses. */
#define IDX_SPLIT01 _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
#define IDX_SPLIT23 _mm512_setr_epi32(2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)
#define IDX_EVEN _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
#define IDX_ODD _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
#define IDX_ZIPLO _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23)
#define IDX_ZIPHI _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)
#define IDX_PAIRLO _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23)
#define IDX_PAIRHI _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31)
#define P2(a, i, b) _mm512_permutex2var_ps(a, i, b)

/* W (m vectors) -> its m phases e. */
static inline __attribute__((always_inline)) AVX512 void split16(int m, const __m512 *z,
                                                                 __m512 *e) {
    if (m == 2) {
        e[0] = P2(z[0], IDX_EVEN, z[1]);
        e[1] = P2(z[0], IDX_ODD, z[1]);
    } else {
        __m512 u0 = P2(z[0], IDX_SPLIT01, z[1]), u1 = P2(z[0], IDX_SPLIT23, z[1]);
        __m512 u2 = P2(z[2], IDX_SPLIT01, z[3]), u3 = P2(z[2], IDX_SPLIT23, z[3]);
        e[0] = P2(u0, IDX_EVEN, u2);
        e[1] = P2(u0, IDX_ODD, u2);
        e[2] = P2(u1, IDX_EVEN, u3);
        e[3] = P2(u1, IDX_ODD, u3);
    }
}

/* The m phases e -> W (m vectors). */
static inline __attribute__((always_inline)) AVX512 void merge16(int m, const __m512 *e,
                                                                 __m512 *z) {
    if (m == 2) {
        z[0] = P2(e[0], IDX_ZIPLO, e[1]);
        z[1] = P2(e[0], IDX_ZIPHI, e[1]);
    } else {
        __m512 u0 = P2(e[0], IDX_ZIPLO, e[1]), u2 = P2(e[0], IDX_ZIPHI, e[1]);
        __m512 u1 = P2(e[2], IDX_ZIPLO, e[3]), u3 = P2(e[2], IDX_ZIPHI, e[3]);
        z[0] = P2(u0, IDX_PAIRLO, u1);
        z[1] = P2(u0, IDX_PAIRHI, u1);
        z[2] = P2(u2, IDX_PAIRLO, u3);
        z[3] = P2(u2, IDX_PAIRHI, u3);
    }
}

/* bt_line and at_line on 16 lanes, with fused multiply-adds. */
static inline __attribute__((always_inline)) AVX512 void bt16(int m, const __m512 *d, __m512 *r) {
    if (m == 2) {
        r[0] = _mm512_sub_ps(d[0], d[2]);
        r[1] = _mm512_add_ps(d[1], d[2]);
        r[2] = _mm512_sub_ps(d[2], d[1]);
        r[3] = _mm512_sub_ps(d[1], d[3]);
    } else {
        const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), five = _mm512_set1_ps(5);
        __m512 s12 = _mm512_add_ps(d[1], d[2]), s34 = _mm512_add_ps(d[3], d[4]);
        __m512 d12 = _mm512_sub_ps(d[1], d[2]), d43 = _mm512_sub_ps(d[4], d[3]);
        __m512 d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
        r[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
        r[1] = _mm512_fnmadd_ps(four, s12, s34);
        r[2] = _mm512_fmadd_ps(four, d12, d43);
        r[3] = _mm512_fmadd_ps(two, d31, d42);
        r[4] = _mm512_fnmadd_ps(two, d31, d42);
        r[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
    }
}

static inline __attribute__((always_inline)) AVX512 void at16(int m, const __m512 *s, __m512 *o) {
    if (m == 2) {
        o[0] = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
        o[1] = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
    } else {
        __m512 a = _mm512_add_ps(s[1], s[2]), b = _mm512_sub_ps(s[1], s[2]);
        __m512 c = _mm512_add_ps(s[3], s[4]), d = _mm512_sub_ps(s[3], s[4]);
        o[0] = _mm512_add_ps(_mm512_add_ps(s[0], a), c);
        o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2), d, b);
        o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4), c, a);
        o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8), d, b), s[5]);
    }
}

/* Input transform of one group for channels [c0, c1): rows first (each of the alpha input
 * rows of the tiles split by phase and transformed across), then columns, into V. */
static inline __attribute__((always_inline)) AVX512 void
input_group(int m, const stage *s, const xfers *xf, int t0, int c0, int c1, int stream) {
    enum { A = 6 };
    const plan *p = s->p;
    int alpha = m + 2;
    size_t hw = (size_t)s->h * s->w, vplane = (size_t)s->cin * p->ldv;
    __mmask16 inner_l = (__mmask16)~xf->starts, inner_r = (__mmask16)~xf->ends;
    for (int ci = c0; ci < c1; ci++) {
        const float *base = s->in + (size_t)ci * hw;
        __m512 hb[A][A];
        /* the lines of a channel are spread over its plane, a pattern the hardware does not
         * prefetch when the planes are pages apart */
        if (ci + PFDIST < c1)
            for (int j = 0; j < xf->npf; j++)
                _mm_prefetch((const char *)(base + PFDIST * hw + xf->pf[j]), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int k = 0; k < alpha; k++) {
            __m512 z[4], d[A];
#pragma GCC unroll 4
            for (int v = 0; v < m; v++)
                z[v] = gather_vec(xf, k, v, base);
            split16(m, z, d + 1);
            /* d[0][L] = column m*tx - 1 = last phase one lane down; d[m+1] = first phase one
             * lane up; the segment ends take the loaded neighbours instead */
            __m512i last = _mm512_castps_si512(d[m]), first = _mm512_castps_si512(d[1]);
            d[0] = _mm512_castsi512_ps(_mm512_mask_alignr_epi32(
                _mm512_castps_si512(gather_vec(xf, k, m, base)), inner_l, last, last, 15));
            d[m + 1] = _mm512_castsi512_ps(_mm512_mask_alignr_epi32(
                _mm512_castps_si512(gather_vec(xf, k, m + 1, base)), inner_r, first, first, 1));
            bt16(m, d, hb[k]);
        }
        float *v = s->V + (size_t)ci * p->ldv + t0;
#pragma GCC unroll 6
        for (int c = 0; c < alpha; c++) {
            __m512 d[A], r[A];
#pragma GCC unroll 6
            for (int k = 0; k < alpha; k++)
                d[k] = hb[k][c];
            bt16(m, d, r);
#pragma GCC unroll 6
            for (int k = 0; k < alpha; k++)
                if (stream)
                    _mm512_stream_ps(v + (size_t)(k * alpha + c) * vplane, r[k]);
                else
                    _mm512_storeu_ps(v + (size_t)(k * alpha + c) * vplane, r[k]);
        }
    }
}

/* Output transform + bias (+ReLU) of one group for output channels [c0, c1). */
static inline __attribute__((always_inline)) AVX512 void
output_group(int m, const stage *s, const xfers *xf, int t0, int c0, int c1) {
    enum { A = 6 };
    const plan *p = s->p;
    int alpha = m + 2;
    size_t hw = (size_t)s->h * s->w, mplane = (size_t)s->cout * p->ldv;
    const __m512 zero = _mm512_setzero_ps();
    for (int co = c0; co < c1; co++) {
        const float *mm = s->M + (size_t)co * p->ldv + t0;
        float *base = s->out + (size_t)co * hw;
        __m512 hh[A][4], bias = _mm512_set1_ps(s->b[co]);
        if (co + PFDIST < c1)
            for (int pt = 0; pt < alpha * alpha; pt++)
                _mm_prefetch((const char *)(mm + PFDIST * p->ldv + pt * mplane), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int r = 0; r < alpha; r++) {
            __m512 x[A];
#pragma GCC unroll 6
            for (int c = 0; c < alpha; c++)
                x[c] = _mm512_loadu_ps(mm + (size_t)(r * alpha + c) * mplane);
            at16(m, x, hh[r]);
        }
        __m512 y[4][4]; /* [output row][phase] */
#pragma GCC unroll 4
        for (int q = 0; q < m; q++) {
            __m512 x[A], o[4];
#pragma GCC unroll 6
            for (int r = 0; r < alpha; r++)
                x[r] = hh[r][q];
            at16(m, x, o);
#pragma GCC unroll 4
            for (int oy = 0; oy < m; oy++) {
                y[oy][q] = _mm512_add_ps(o[oy], bias);
                if (s->relu)
                    y[oy][q] = _mm512_max_ps(y[oy][q], zero);
            }
        }
#pragma GCC unroll 4
        for (int oy = 0; oy < m; oy++) {
            __m512 z[4];
            merge16(m, y[oy], z);
#pragma GCC unroll 4
            for (int v = 0; v < m; v++)
                for (int j = xf->beg[oy][v]; j < xf->beg[oy][v + 1]; j++)
                    _mm512_mask_storeu_ps(base + xf->x[oy][j].off, (__mmask16)xf->x[oy][j].mask,
                                          z[v]);
        }
    }
}

static inline __attribute__((always_inline)) AVX512 void input_wide(int m, void *arg, int part,
                                                                    int nparts) {
    const stage *s = arg;
    int nt = s->rc * s->p->tw;
    int c0 = s->cin * part / nparts, c1 = s->cin * (part + 1) / nparts;
    int stream = (size_t)(m + 2) * (m + 2) * s->cin * s->p->ldv * sizeof(float) > STREAM_BYTES &&
                 ((uintptr_t)s->V & 63) == 0; /* streaming stores need aligned lines */
    xfers xf;
    for (int t0 = 0; t0 < nt; t0 += GROUP) {
        group_xfers(m, s, t0, m + 2, -1, s->cin, &xf);
        input_group(m, s, &xf, t0, c0, c1, stream);
    }
    _mm_sfence();
}

static inline __attribute__((always_inline)) AVX512 void output_wide(int m, void *arg, int part,
                                                                     int nparts) {
    const stage *s = arg;
    int nt = s->rc * s->p->tw;
    int c0 = s->cout * part / nparts, c1 = s->cout * (part + 1) / nparts;
    xfers xf;
    for (int t0 = 0; t0 < nt; t0 += GROUP) {
        group_xfers(m, s, t0, m, 0, s->cout, &xf);
        output_group(m, s, &xf, t0, c0, c1);
    }
}

static AVX512 void input_wide2(void *s, int part, int nparts) {
    input_wide(2, s, part, nparts);
}
static AVX512 void input_wide4(void *s, int part, int nparts) {
    input_wide(4, s, part, nparts);
}
static AVX512 void output_wide2(void *s, int part, int nparts) {
    output_wide(2, s, part, nparts);
}
static AVX512 void output_wide4(void *s, int part, int nparts) {
    output_wide(4, s, part, nparts);
}

/* 1 when the CPU has AVX-512F and RESATTN_WINOGRAD is not "generic" (which keeps the
 * portable transforms, e.g. to test them on an AVX-512 machine). */
static int wide_available(void) {
    static int state = -1; /* racing first calls compute the same answer */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        const char *env = getenv("RESATTN_WINOGRAD");
        __builtin_cpu_init();
        s = !(env && strcmp(env, "generic") == 0) && __builtin_cpu_supports("avx512f");
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
}
#define PICK(wide, generic) (wide_available() ? (wide) : (generic))
#define WIDE_AVAILABLE() wide_available()
#else
#define PICK(wide, generic) (generic)
#define WIDE_AVAILABLE() 0
#endif

int resattn_winograd_env_tile(void) {
    const char *env = getenv("RESATTN_WINOGRAD");
    return env && *env >= '0' && *env <= '9' ? atoi(env) : -1;
}

const char *resattn_winograd_path(void) {
    if (resattn_winograd_env_tile() == 0)
        return "off";
    return WIDE_AVAILABLE() ? "avx512" : "generic";
}

/* The stage entry points: the AVX-512 transforms where the CPU has them. */
static void input_stage2(void *s, int part, int nparts) {
    PICK(input_wide2, input_generic2)(s, part, nparts);
}
static void input_stage4(void *s, int part, int nparts) {
    PICK(input_wide4, input_generic4)(s, part, nparts);
}
static void output_stage2(void *s, int part, int nparts) {
    PICK(output_wide2, output_generic2)(s, part, nparts);
}
static void output_stage4(void *s, int part, int nparts) {
    PICK(output_wide4, output_generic4)(s, part, nparts);
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
 * batch 1 took 1.15 ms direct, 1.79 ms with F(2,3). At 16 tiles it pays again with the
 * packed GEMM and the AVX-512 transforms: whole CIFAR ResNet-18 at batch 1 (8x8 maps, 16
 * tiles) 6.9 ms with the threshold at 16 against 9.3 ms at 32; ResNet-18 at 224 (7x7,
 * 16 tiles) was within 4 % either way.
 */
int resattn_winograd_worth(int m, int n, int h, int w) {
    int tiles = ((h + m - 1) / m) * ((w + m - 1) / m);
    return (long)n * tiles >= 16;
}
