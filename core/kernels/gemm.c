/*
 * Packed-weight SGEMM with an AVX-512 micro-kernel (see gemm.h for why it exists).
 *
 * Blocking, after Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication"
 * (2008), sized for a Zen 5 core (48 KiB L1d, 1 MiB L2):
 *   for each block of NC columns, for each block of KC rows of K:
 *     pack B[KC, NC] into NR-column panels (KC x NR contiguous, zero-filled past N)  -> L2
 *     for each MR-row panel of A (KC x MR, 8 KiB, stays in L1 across the inner loop):
 *       for each NR-column panel of the packed B: the micro-kernel,
 * which holds an MR x NR tile of C in 24 zmm registers and per k does 3 loads of B,
 * 8 broadcasts of A and 24 FMAs. The tile is loaded from C only after the first K block
 * (no separate zeroing pass), and the bias + ReLU epilogue runs on the last K block while
 * the tile is still in registers. Partial panels (N not a multiple of NR) use a narrower
 * kernel (1 or 2 vectors) and masked loads and stores; rows past M are computed on the
 * zero padding of A and not stored.
 *
 * With few columns (a single image's late layers: 7x7 maps, 16 Winograd tiles) the product
 * is a stream of weights that each meet only 16-49 columns, read once per forward pass from
 * memory: the weights of a network at batch 1 do not stay in the caches between passes. Two
 * things keep that stream flowing. When the whole K x nc block of B fits the packing buffer,
 * K is not blocked at all (KC = K), so each panel of A is read as one contiguous run and the
 * panels follow one another in memory; and the micro-kernel prefetches A PF_A floats ahead
 * of the row it reads. Measured on a Sapphire Rapids VM with the weights cold (cycled
 * through more than the L3 holds): 16 Winograd products 512x512x16 went from 2.7 to 1.9 ms,
 * a 512x4608x49 product from 2.4 to 1.8 ms; with the weights in L3, 1.2 to 0.95 ms and 1.6
 * ms unchanged. The column tail of a panel pair runs right after the pair, while its A is
 * still in L1 rather than in a second pass over all of A.
 */
#include "kernels/gemm.h"

#include <stdlib.h>
#include <string.h>

#define MR RESATTN_GEMM_MR
#define NV 3                     /* zmm vectors per row of a C tile */
#define NR (16 * NV)             /* columns per B panel */
#define KC 256                   /* rows of K per block */
#define NC (8 * NR)              /* columns per block */
#define BBUF_FLOATS (320 * 1024) /* the B-packing buffer: a whole K x NC block up to 1.25 MiB */
#define COLS_SPLIT_FLOATS (256 * 1024) /* weights up to 1 MiB: two threads split by columns */
#define PF_A 512                       /* floats (2 KiB) the micro-kernel prefetches A ahead */

size_t resattn_gemm_packed_floats(int M, int K) {
    return (size_t)(M + MR - 1) / MR * MR * (size_t)K;
}

void resattn_gemm_pack(const float *A, int lda, int M, int K, float *Ap) {
    for (int p = 0; p < (M + MR - 1) / MR; p++)
        for (int k = 0; k < K; k++)
            for (int r = 0; r < MR; r++) {
                int m = p * MR + r;
                Ap[((size_t)p * K + k) * MR + r] = m < M ? A[(size_t)m * lda + k] : 0.0f;
            }
}

size_t resattn_gemm_scratch(void) {
    return BBUF_FLOATS; /* at least KC * NC */
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

/* Mask of the first n (clamped to 0..16) lanes. */
static inline AVX512 __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/*
 * C[0..mr, 0..ncols) (+)= a [kc, MR] x b [kc, 16*nv], then bias and ReLU. nv is a constant
 * in each instantiation, so the accumulators are named registers after unrolling; rows are
 * unrolled to MR with a bound test, never indexed by the run-time mr.
 */
static inline __attribute__((always_inline)) AVX512 void kernel(int nv, int kc, const float *a,
                                                                const float *b, float *c, int ldc,
                                                                int mr, int ncols, int accumulate,
                                                                const float *bias, int relu) {
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            acc[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        _mm_prefetch((const char *)(a + PF_A), _MM_HINT_T0); /* past a panel's end: the next */
        __m512 bv[NV];
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        a += MR;
        b += 16 * nv;
    }
    __mmask16 mask[NV];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
        mask[v] = lanes(ncols - 16 * v);
    __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if (i >= mr)
            break;
        float *ci = c + (size_t)i * ldc;
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) {
            __m512 r = acc[i][v];
            if (accumulate)
                r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask[v], ci + 16 * v));
            if (bias)
                r = _mm512_add_ps(r, _mm512_set1_ps(bias[i]));
            if (relu)
                r = _mm512_max_ps(r, zero);
            _mm512_mask_storeu_ps(ci + 16 * v, mask[v], r);
        }
    }
}

static AVX512 void kernel1(int kc, const float *a, const float *b, float *c, int ldc, int mr,
                           int ncols, int acc, const float *bias, int relu) {
    kernel(1, kc, a, b, c, ldc, mr, ncols, acc, bias, relu);
}
static AVX512 void kernel2(int kc, const float *a, const float *b, float *c, int ldc, int mr,
                           int ncols, int acc, const float *bias, int relu) {
    kernel(2, kc, a, b, c, ldc, mr, ncols, acc, bias, relu);
}
static AVX512 void kernel3(int kc, const float *a, const float *b, float *c, int ldc, int mr,
                           int ncols, int acc, const float *bias, int relu) {
    kernel(3, kc, a, b, c, ldc, mr, ncols, acc, bias, relu);
}

/* B [kc, nc] (row stride ldb) -> panels of NR columns (the last one 16*nv wide), each
 * [kc, width] contiguous, zero past nc. Masked loads never touch memory past nc. */
static AVX512 void pack_b(const float *B, int ldb, int kc, int nc, float *bp) {
    for (int j0 = 0; j0 < nc; j0 += NR) {
        int w = nc - j0 < NR ? nc - j0 : NR, nv = (w + 15) / 16;
        const float *src = B + j0;
        if (nv == NV && w == NR) {
            for (int k = 0; k < kc; k++, src += ldb, bp += NR) {
                _mm512_storeu_ps(bp, _mm512_loadu_ps(src));
                _mm512_storeu_ps(bp + 16, _mm512_loadu_ps(src + 16));
                _mm512_storeu_ps(bp + 32, _mm512_loadu_ps(src + 32));
            }
        } else {
            for (int k = 0; k < kc; k++, src += ldb)
                for (int v = 0; v < nv; v++, bp += 16)
                    _mm512_storeu_ps(bp, _mm512_maskz_loadu_ps(lanes(w - 16 * v), src + 16 * v));
        }
    }
}

/*
 * The last few columns (a block's tail of at most COLS_MAX) turned the other way: 16 rows
 * of A (two panels) in one register per k, each column's B value broadcast, one
 * accumulator per column. The row-vector kernels would spend a whole 16-column vector (and
 * 8 broadcasts) per k on them; this spends one FMA per column. Matters for 7x7 maps (49 =
 * 48 + 1 columns) and 14x14 (196 = 4 * 48 + 4). The columns come back through a small
 * buffer: C's rows are ldc apart.
 */
#define COLS_MAX 8

static AVX512 void col_kernel(int kc, const float *a0, const float *a1, const float *b, float *c,
                              int ldc, int rows, int ncols, int accumulate, const float *bias,
                              int relu) {
    __m512 acc[COLS_MAX];
#pragma GCC unroll 8
    for (int j = 0; j < COLS_MAX; j++)
        acc[j] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++, b += 16) {
        __m256 lo = _mm256_loadu_ps(a0 + (size_t)k * MR);
        __m256 hi = a1 ? _mm256_loadu_ps(a1 + (size_t)k * MR) : _mm256_setzero_ps();
        __m512 av = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
#pragma GCC unroll 8
        for (int j = 0; j < COLS_MAX; j++)
            if (j < ncols)
                acc[j] = _mm512_fmadd_ps(av, _mm512_set1_ps(b[j]), acc[j]);
    }
    float col[16];
    for (int j = 0; j < ncols; j++) {
        _mm512_storeu_ps(col, acc[j]);
        for (int r = 0; r < rows; r++) {
            float v = col[r] + (accumulate ? c[(size_t)r * ldc + j] : 0.0f);
            v += bias ? bias[r] : 0.0f;
            c[(size_t)r * ldc + j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* One K block of one column block: the MR-row panels of A two at a time, each pair's column
 * tail right after the pair's row-vector tiles. */
static AVX512 void gemm_block(const float *Ap, int M, int K, int k0, int kc, const float *bp,
                              int nc, float *C, int ldc, const float *bias, int relu,
                              int accumulate) {
    int panels = (M + MR - 1) / MR;
    int tail = nc % NR <= COLS_MAX ? nc % NR : 0, body = nc - tail;
    for (int p0 = 0; p0 < panels; p0 += 2) {
        for (int p = p0; p < p0 + 2 && p < panels; p++) {
            const float *a = Ap + ((size_t)p * K + k0) * MR;
            float *c = C + (size_t)p * MR * ldc;
            int mr = M - p * MR < MR ? M - p * MR : MR;
            const float *pb = bias ? bias + p * MR : NULL;
            for (int j0 = 0; j0 < body; j0 += NR) {
                int w = body - j0 < NR ? body - j0 : NR;
                const float *b = bp + (size_t)j0 * kc;
                if (w > 32)
                    kernel3(kc, a, b, c + j0, ldc, mr, w, accumulate, pb, relu);
                else if (w > 16)
                    kernel2(kc, a, b, c + j0, ldc, mr, w, accumulate, pb, relu);
                else
                    kernel1(kc, a, b, c + j0, ldc, mr, w, accumulate, pb, relu);
            }
        }
        if (tail) {
            const float *a0 = Ap + ((size_t)p0 * K + k0) * MR;
            const float *a1 = p0 + 1 < panels ? Ap + ((size_t)(p0 + 1) * K + k0) * MR : NULL;
            int rows = M - p0 * MR < 2 * MR ? M - p0 * MR : 2 * MR;
            col_kernel(kc, a0, a1, bp + (size_t)body * kc, C + (size_t)p0 * MR * ldc + body, ldc,
                       rows, tail, accumulate, bias ? bias + p0 * MR : NULL, relu);
        }
    }
}

static AVX512 void gemm_avx512(const float *Ap, int M, int K, const float *B, int ldb, int N,
                               float *C, int ldc, const float *bias, int relu, float *bbuf) {
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC;
        size_t packed = (size_t)(nc + NR - 1) / NR * NR * K; /* B block with K unblocked */
        int kb = packed <= BBUF_FLOATS ? K : KC;
        for (int k0 = 0; k0 < K; k0 += kb) {
            int kc = K - k0 < kb ? K - k0 : kb, last = k0 + kc == K;
            pack_b(B + (size_t)k0 * ldb + n0, ldb, kc, nc, bbuf);
            gemm_block(Ap, M, K, k0, kc, bbuf, nc, C + n0, ldc, last ? bias : NULL, last && relu,
                       k0 > 0);
        }
    }
}

/* Rows [r0, r1) of the K block [k0, k0 + kc) x columns [n0, n0 + nc) of an implicit B, in
 * pack_b's layout: each row produced into a small buffer, then split over the panels. */
static AVX512 void pack_rows(resattn_gemm_row_fn fn, const void *arg, int k0, int kc, int r0,
                             int r1, int n0, int nc, float *bp) {
    float row[NC + 16] __attribute__((aligned(64)));
    for (int r = r0; r < r1; r++) {
        fn(arg, k0 + r, n0, nc, row);
        for (int j0 = 0; j0 < nc; j0 += NR) {
            int w = nc - j0 < NR ? nc - j0 : NR, nv = (w + 15) / 16;
            float *dst = bp + (size_t)j0 * kc + (size_t)r * 16 * nv;
            for (int v = 0; v < nv; v++)
                _mm512_storeu_ps(dst + 16 * v,
                                 _mm512_maskz_loadu_ps(lanes(w - 16 * v), row + j0 + 16 * v));
        }
    }
}

/* The columns [n0, n1) of C with every panel, packing into bp alone (no other part reads it). */
static AVX512 void gemm_rows_cols(const float *Ap, int M, int K, resattn_gemm_row_fn fn,
                                  const void *arg, int n0, int n1, float *C, int ldc,
                                  const float *bias, int relu, float *bp) {
    for (; n0 < n1; n0 += NC) {
        int nc = n1 - n0 < NC ? n1 - n0 : NC;
        size_t packed = (size_t)(nc + NR - 1) / NR * NR * K;
        int kb = packed <= BBUF_FLOATS ? K : KC;
        for (int k0 = 0; k0 < K; k0 += kb) {
            int kc = K - k0 < kb ? K - k0 : kb, last = k0 + kc == K;
            pack_rows(fn, arg, k0, kc, 0, kc, n0, nc, bp);
            gemm_block(Ap, M, K, k0, kc, bp, nc, C + n0, ldc, last ? bias : NULL, last && relu,
                       k0 > 0);
        }
    }
}

static AVX512 void gemm_rows_avx512(const float *Ap, int M, int K, resattn_gemm_row_fn fn,
                                    const void *arg, int N, float *C, int ldc, const float *bias,
                                    int relu, float *bbufs, int part, int nparts,
                                    resattn_barrier *bar) {
    /*
     * Two ways to split. Small weights (the stem's 37 KB, the early layers') and many columns:
     * by columns, each part packing and computing its own; nothing crosses between the cores.
     * Otherwise by panels of A, so that each core streams half the weights, sharing the
     * packed blocks of B (each part packs half of every block's rows).
     */
    if (nparts == 1 || ((size_t)M * K <= COLS_SPLIT_FLOATS && N >= 4 * NR)) {
        int c0 = N / NR * part / nparts * NR,
            c1 = part + 1 < nparts ? N / NR * (part + 1) / nparts * NR : N;
        gemm_rows_cols(Ap, M, K, fn, arg, c0, c1, C, ldc, bias, relu,
                       bbufs + (size_t)part * BBUF_FLOATS);
        return;
    }
    int panels = (M + MR - 1) / MR, p0 = panels * part / nparts, p1 = panels * (part + 1) / nparts;
    int m0 = p0 * MR, m1 = p1 * MR < M ? p1 * MR : M;
    unsigned blocks = 0;
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC;
        size_t packed = (size_t)(nc + NR - 1) / NR * NR * K;
        int kb = packed <= BBUF_FLOATS ? K : KC;
        for (int k0 = 0; k0 < K; k0 += kb) {
            int kc = K - k0 < kb ? K - k0 : kb, last = k0 + kc == K;
            /* alternate halves: a part packs block b + 1 while the other may still read b */
            float *bp = bbufs + (size_t)(blocks++ % 2) * BBUF_FLOATS;
            pack_rows(fn, arg, k0, kc, kc * part / nparts, kc * (part + 1) / nparts, n0, nc, bp);
            resattn_barrier_wait(bar, nparts);
            if (m1 > m0)
                gemm_block(Ap + (size_t)m0 * K, m1 - m0, K, k0, kc, bp, nc,
                           C + (size_t)m0 * ldc + n0, ldc, last && bias ? bias + m0 : NULL,
                           last && relu, k0 > 0);
        }
    }
}

static int detect(void) {
    const char *env = getenv("RESATTN_GEMM");
    if (env && strcmp(env, "openblas") == 0)
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
}

int resattn_gemm_available(void) {
    static int state = -1; /* racing first calls compute the same answer */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        s = detect();
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
}

void resattn_gemm_run(const float *Ap, int M, int K, const float *B, int ldb, int N, float *C,
                      int ldc, const float *bias, int relu, float *bbuf) {
    if (M > 0 && N > 0 && K > 0)
        gemm_avx512(Ap, M, K, B, ldb, N, C, ldc, bias, relu, bbuf);
}

void resattn_gemm_run_rows(const float *Ap, int M, int K, resattn_gemm_row_fn row, const void *arg,
                           int N, float *C, int ldc, const float *bias, int relu, float *bbufs,
                           int part, int nparts, resattn_barrier *bar) {
    if (M > 0 && N > 0 && K > 0)
        gemm_rows_avx512(Ap, M, K, row, arg, N, C, ldc, bias, relu, bbufs, part, nparts, bar);
}

#else /* not x86-64 GCC/Clang: always the OpenBLAS path */

int resattn_gemm_available(void) {
    return 0;
}

void resattn_gemm_run(const float *Ap, int M, int K, const float *B, int ldb, int N, float *C,
                      int ldc, const float *bias, int relu, float *bbuf) {
    (void)Ap, (void)M, (void)K, (void)B, (void)ldb, (void)N, (void)C, (void)ldc, (void)bias;
    (void)relu, (void)bbuf;
    abort(); /* callers check resattn_gemm_available() */
}

void resattn_gemm_run_rows(const float *Ap, int M, int K, resattn_gemm_row_fn row, const void *arg,
                           int N, float *C, int ldc, const float *bias, int relu, float *bbufs,
                           int part, int nparts, resattn_barrier *bar) {
    (void)Ap, (void)M, (void)K, (void)row, (void)arg, (void)N, (void)C, (void)ldc, (void)bias;
    (void)relu, (void)bbufs, (void)part, (void)nparts, (void)bar;
    abort(); /* callers check resattn_gemm_available() */
}
#endif
