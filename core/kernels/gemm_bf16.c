/*
 * BF16 GEMM (see gemm_bf16.h for the maths and the packed layouts): the scalar reference,
 * the AVX512-BF16 micro-kernel, the AMX tile kernel (core/kernels/gemm_bf16_amx.h, built
 * twice: on the tile instructions and on their C emulation), the B packers, and the CPU
 * detection that picks a path once per process.
 *
 * Blocking, the same for every path: for each block of NC = 192 columns (12 groups of 16),
 * for each block of KC = 1024 k: B[KC, NC] is rounded and packed (384 KiB, in L2); then
 *   AVX512-BF16: per 8 rows of A (8 x KC BF16 = 16 KiB, in L1), per 48 columns: an 8 x 48
 *     FP32 register tile (24 zmm), per k-pair 3 loads of B, 8 broadcasts of A pairs and
 *     24 vdpbf16ps; bias + ReLU applied on the tile in registers on the last K block;
 *   AMX: per 32 rows x 32 columns, a 2 x 2 block of accumulator tiles (gemm_bf16_amx.h).
 * Partial sums of earlier K blocks are added back from C (K > KC is rare: 3x3 x 512
 * channels is 4608).
 *
 * Rounding: round to nearest even, NaN kept as a quiet NaN; the same bit arithmetic in the
 * scalar and AVX-512 packers.
 */
#include "kernels/gemm_bf16.h"

#include <stdlib.h>
#include <string.h>

#define NC 192  /* columns per block: 12 groups of 16 (divisible by the 3 and 2 groups of the */
                /* AVX512-BF16 and AMX tiles) */
#define KC 1024 /* k per block (multiple of 32) */

/* k-pairs of a block of kc rows, rounded up to whole 32-k chunks (16 pairs) */
static int pairs_of(int kc) {
    return ((kc + 1) / 2 + 15) / 16 * 16;
}

size_t resattn_gemm_bf16_scratch(void) {
    return (size_t)NC * pairs_of(KC) * 2 * sizeof(uint16_t);
}

/* ---- conversions ------------------------------------------------------------------------ */

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* The FP32 bit pattern rounded so that its upper 16 bits are the BF16 result. */
static uint32_t round_bits(uint32_t u) {
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: keep it, quiet */
        return u | 0x00400000u;
    return u + 0x7FFFu + ((u >> 16) & 1u);
}

uint16_t resattn_bf16_from_f32(float x) {
    return (uint16_t)(round_bits(f32_bits(x)) >> 16);
}

float resattn_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

void resattn_bf16_round_inplace(float *x, size_t count) {
    for (size_t i = 0; i < count; i++)
        x[i] = resattn_bf16_to_f32(resattn_bf16_from_f32(x[i]));
}

/* ---- packing ---------------------------------------------------------------------------- */

size_t resattn_gemm_bf16_packed_elems(int M, int K) {
    return (size_t)(M + 15) / 16 * 16 * (size_t)((K + 31) / 32 * 32);
}

void resattn_gemm_bf16_pack(const float *A, int lda, int M, int K, uint16_t *Ap) {
    int KT = (K + 31) / 32;
    for (int mb = 0; mb < (M + 15) / 16; mb++)
        for (int kt = 0; kt < KT; kt++)
            for (int r = 0; r < 16; r++)
                for (int kk = 0; kk < 32; kk++) {
                    int m = mb * 16 + r, k = kt * 32 + kk;
                    Ap[(((size_t)mb * KT + kt) * 16 + r) * 32 + kk] =
                        m < M && k < K ? resattn_bf16_from_f32(A[(size_t)m * lda + k]) : 0;
                }
}

const uint16_t *resattn_gemm_bf16_rows(const uint16_t *Ap, int K, int m0) {
    return Ap + (size_t)m0 / 16 * ((size_t)(K + 31) / 32) * 512;
}

/*
 * Where B comes from: a dense matrix b [K, N] (row stride ldb), or, when im is set, the
 * im2col of an image, whose rows are built NC columns at a time while packing (never stored
 * whole); nbase is the image column of B's column 0.
 */
typedef struct bsrc {
    const float *b;
    int ldb;
    const resattn_bf16_image *im;
    int nbase;
    /* or, when pb is set, a stride-1 image already rounded and zero-padded (pad_image):
     * row (ci, ky, kx) of B is pb + ci * plane + ky * wp + kx + nbase, contiguous */
    const uint16_t *pb;
    size_t plane;
    int kw, wp;
} bsrc;

/* Row k of im2col(image) over columns [n0, n0 + nc): dst[j] = in[ci][iy][ix] for output
 * pixel n0 + j, zero in the padding. Stride 1 copies each output row's valid run whole. */
static void image_row(const resattn_bf16_image *s, int k, int n0, int nc, float *dst) {
    int kk = s->k * s->k, ci = k / kk, ky = k % kk / s->k, kx = k % s->k;
    const float *plane = s->in + (size_t)ci * s->h * s->w;
    int oy = n0 / s->wo, ox = n0 % s->wo;
    for (int j = 0; j < nc; oy++, ox = 0) {
        int run = s->wo - ox < nc - j ? s->wo - ox : nc - j;
        int iy = oy * s->stride - s->pad + ky, ix0 = ox * s->stride - s->pad + kx;
        float *d = dst + j;
        j += run;
        if (iy < 0 || iy >= s->h) {
            memset(d, 0, (size_t)run * sizeof *d);
            continue;
        }
        const float *src = plane + (size_t)iy * s->w;
        if (s->stride == 1) { /* d[t] = src[ix0 + t] for 0 <= ix0 + t < w */
            int t0 = ix0 < 0 ? (-ix0 < run ? -ix0 : run) : 0;
            int t1 = s->w - ix0 < run ? s->w - ix0 : run;
            t1 = t1 < t0 ? t0 : t1;
            memset(d, 0, (size_t)t0 * sizeof *d);
            memcpy(d + t0, src + ix0 + t0, (size_t)(t1 - t0) * sizeof *d);
            memset(d + t1, 0, (size_t)(run - t1) * sizeof *d);
        } else {
            for (int t = 0; t < run; t++) {
                int ix = ix0 + t * s->stride;
                d[t] = ix >= 0 && ix < s->w ? src[ix] : 0.0f;
            }
        }
    }
}

/* Row k of a padded BF16 image source. */
static const uint16_t *padded_row(const bsrc *s, int k) {
    int kk = s->kw * s->kw, ci = k / kk, ky = k % kk / s->kw, kx = k % s->kw;
    return s->pb + (size_t)ci * s->plane + (size_t)ky * s->wp + kx + s->nbase;
}

/* Two BF16 rows (r1 NULL: zero) -> the words of pair p: r0[n] | r1[n] << 16. */
static void pair16_scalar(const uint16_t *r0, const uint16_t *r1, int nc, int kcp, uint32_t *bp) {
    for (int g = 0; g < (nc + 15) / 16; g++)
        for (int j = 0; j < 16; j++) {
            int n = g * 16 + j;
            bp[(size_t)g * kcp * 16 + j] =
                n < nc ? (uint32_t)r0[n] | (r1 ? (uint32_t)r1[n] << 16 : 0) : 0;
        }
}

/*
 * A stride-1 image's rows [oy0, oy0 + rows) of the zero-padded map (padded row oy0 + r is input
 * row oy0 + r - pad), rounded to BF16: out [cin][rows][w + 2 pad]. Done once per call, it replaces
 * building each of the k*k shifted rows of B from FP32: B's rows are then contiguous runs
 * of this copy (the output is computed over the padded width, see resattn_gemm_bf16_conv).
 */
static void pad_image_scalar(const resattn_bf16_image *im, int oy0, int rows, uint16_t *out) {
    int wp = im->w + 2 * im->pad;
    for (int ci = 0; ci < im->cin; ci++)
        for (int r = 0; r < rows; r++) {
            uint16_t *d = out + ((size_t)ci * rows + r) * wp;
            int iy = oy0 + r - im->pad;
            memset(d, 0, (size_t)wp * sizeof *d);
            if (iy < 0 || iy >= im->h)
                continue;
            const float *src = im->in + ((size_t)ci * im->h + iy) * im->w;
            for (int x = 0; x < im->w; x++)
                d[im->pad + x] = resattn_bf16_from_f32(src[x]);
        }
}

/* The two rows of k-pair p (r1 NULL: zero) -> word j of each group of 16 columns,
 * bf16(r0[n]) | bf16(r1[n]) << 16, zero past nc. bp points at pair p of group 0. */
static void pair_scalar(const float *r0, const float *r1, int nc, int kcp, uint32_t *bp) {
    for (int g = 0; g < (nc + 15) / 16; g++)
        for (int j = 0; j < 16; j++) {
            int n = g * 16 + j;
            uint32_t lo = n < nc ? round_bits(f32_bits(r0[n])) : 0;
            uint32_t hi = n < nc && r1 ? round_bits(f32_bits(r1[n])) : 0;
            bp[(size_t)g * kcp * 16 + j] = lo >> 16 | (hi & 0xFFFF0000u);
        }
}

/*
 * B's block [k0, k0 + kc) x [n0, n0 + nc) -> groups of 16 columns, each [kcp pairs][16]
 * words (zero past kc and nc), through the pair packer PAIR. The rows of an image are
 * built into two NC-float buffers first.
 */
#define DEFINE_PACK(name, PAIR, PAIR16, ROW, ATTR)                                                 \
    static ATTR void name(const bsrc *s, int k0, int kc, int n0, int nc, int kcp, uint32_t *bp) {  \
        _Alignas(64) float rows[2][NC];                                                            \
        for (int p = 0; p < kcp; p++) {                                                            \
            int k = 2 * p;                                                                         \
            const float *r0 = rows[0], *r1 = k + 1 < kc ? rows[1] : NULL;                          \
            if (k >= kc) {                                                                         \
                memset(rows[0], 0, sizeof rows[0]);                                                \
                r1 = NULL;                                                                         \
            } else if (s->pb) {                                                                    \
                PAIR16(padded_row(s, k0 + k) + n0, r1 ? padded_row(s, k0 + k + 1) + n0 : NULL, nc, \
                       kcp, bp + (size_t)p * 16);                                                  \
                continue;                                                                          \
            } else if (s->im) {                                                                    \
                ROW(s->im, k0 + k, s->nbase + n0, nc, rows[0]);                                    \
                if (r1)                                                                            \
                    ROW(s->im, k0 + k + 1, s->nbase + n0, nc, rows[1]);                            \
            } else {                                                                               \
                r0 = s->b + (size_t)(k0 + k) * s->ldb + n0;                                        \
                r1 = r1 ? r0 + s->ldb : NULL;                                                      \
            }                                                                                      \
            PAIR(r0, r1, nc, kcp, bp + (size_t)p * 16);                                            \
        }                                                                                          \
    }

DEFINE_PACK(pack_scalar, pair_scalar, pair16_scalar, image_row, )

/* One 16 x 16 FP32 tile (row stride 16) into C: + C when accumulating, + bias, ReLU. */
static void tile_epilogue(const float *t, float *c, int ldc, int rows, int cols, int accumulate,
                          const float *bias, int relu) {
    for (int r = 0; r < rows; r++) {
        float *cr = c + (size_t)r * ldc, b = bias ? bias[r] : 0.0f;
        for (int j = 0; j < cols; j++) {
            float v = t[r * 16 + j] + (accumulate ? cr[j] : 0.0f) + b;
            cr[j] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* ---- the scalar reference --------------------------------------------------------------- */

/* Same blocking and packed operands as the fast paths, products summed pair by pair. */
static void gemm_scalar(const uint16_t *Ap, int M, int K, const bsrc *B, int N, float *C, int ldc,
                        const float *bias, int relu, uint32_t *bbuf) {
    int KT = (K + 31) / 32;
    float t[256];
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, kcp = pairs_of(kc), last = k0 + kc == K;
            pack_scalar(B, k0, kc, n0, nc, kcp, bbuf);
            for (int m = 0; m < M; m += 16)
                for (int g = 0; g < (nc + 15) / 16; g++) {
                    const uint32_t *b = bbuf + (size_t)g * kcp * 16;
                    for (int r = 0; r < 16; r++)
                        for (int j = 0; j < 16; j++) {
                            float s = 0.0f;
                            for (int p = 0; p < kcp; p++) {
                                const uint16_t *a =
                                    Ap + ((size_t)(m / 16) * KT + k0 / 32 + p / 16) * 512 + r * 32 +
                                    (p % 16) * 2;
                                uint32_t w = b[(size_t)p * 16 + j];
                                s += resattn_bf16_to_f32(a[0]) * resattn_bf16_to_f32((uint16_t)w);
                                s += resattn_bf16_to_f32(a[1]) *
                                     resattn_bf16_to_f32((uint16_t)(w >> 16));
                            }
                            t[r * 16 + j] = s;
                        }
                    int rows = M - m < 16 ? M - m : 16, n = g * 16;
                    tile_epilogue(t, C + (size_t)m * ldc + n0 + n, ldc, rows,
                                  nc - n < 16 ? nc - n : 16, k0 > 0, last && bias ? bias + m : NULL,
                                  last && relu);
                }
        }
    }
}

/* ---- AMX on emulated tiles -------------------------------------------------------------- */

/* The palette-1 tile configuration (64 bytes) every AMX call loads. */
typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static const _Alignas(64) tile_config tile_cfg = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

/*
 * The tile instructions in C, per the Intel SDM: a configuration gives each of 8 tiles its
 * rows and bytes per row; tdpbf16ps adds, for each row m and column n of C, the BF16 pair
 * products of A's row m and B's rows (k-pairs) in column n. Misuse that faults on hardware
 * (no configuration, an unconfigured tile, mismatched shapes) aborts here.
 */
static _Thread_local struct {
    int configured;
    int rows[8], colsb[8];
    unsigned char data[8][16][64];
} emu;

static void emu_config(const tile_config *c) {
    emu.configured = c->palette == 1;
    for (int t = 0; t < 8; t++)
        emu.rows[t] = c->rows[t], emu.colsb[t] = c->colsb[t];
}

static void emu_check(int t) {
    if (!emu.configured || t < 0 || t > 7 || emu.rows[t] < 1 || emu.rows[t] > 16 ||
        emu.colsb[t] < 4 || emu.colsb[t] > 64)
        abort();
}

static void emu_zero(int t) {
    emu_check(t);
    memset(emu.data[t], 0, sizeof emu.data[t]);
}

static void emu_load(int t, const void *p, size_t stride) {
    emu_check(t);
    for (int r = 0; r < emu.rows[t]; r++)
        memcpy(emu.data[t][r], (const unsigned char *)p + r * stride, (size_t)emu.colsb[t]);
}

static void emu_store(int t, void *p, size_t stride) {
    emu_check(t);
    for (int r = 0; r < emu.rows[t]; r++)
        memcpy((unsigned char *)p + r * stride, emu.data[t][r], (size_t)emu.colsb[t]);
}

static void emu_dp(int c, int a, int b) {
    emu_check(c), emu_check(a), emu_check(b);
    if (emu.rows[a] != emu.rows[c] || emu.colsb[b] != emu.colsb[c] ||
        emu.colsb[a] / 4 != emu.rows[b])
        abort();
    for (int m = 0; m < emu.rows[c]; m++)
        for (int n = 0; n < emu.colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &emu.data[c][m][4 * n], 4);
            for (int k = 0; k < emu.colsb[a] / 4; k++) {
                uint16_t a0, a1, b0, b1;
                memcpy(&a0, &emu.data[a][m][4 * k], 2), memcpy(&a1, &emu.data[a][m][4 * k + 2], 2);
                memcpy(&b0, &emu.data[b][k][4 * n], 2), memcpy(&b1, &emu.data[b][k][4 * n + 2], 2);
                acc += resattn_bf16_to_f32(a0) * resattn_bf16_to_f32(b0);
                acc += resattn_bf16_to_f32(a1) * resattn_bf16_to_f32(b1);
            }
            memcpy(&emu.data[c][m][4 * n], &acc, 4);
        }
}

static void emu_release(void) {
    emu.configured = 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define AVX512 __attribute__((target("avx512f")))
#define AVXBF16 __attribute__((target("avx512f,avx512bf16")))

static int cpu_avx512f(void) {
    static int state = -1; /* racing first calls compute the same answer */
    int s = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = __builtin_cpu_supports("avx512f") != 0; /* also checks the OS saves zmm state */
        __atomic_store_n(&state, s, __ATOMIC_RELAXED);
    }
    return s;
}

/* The AVX-512 B packer: 16 columns of two rows per step, rounded in integer arithmetic. */
static inline AVX512 __m512i round_bits16(__m512i x) {
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7FFFFFFF)),
                                            _mm512_set1_epi32(0x7F800000));
    return _mm512_mask_or_epi32(r, nan, x, _mm512_set1_epi32(0x00400000));
}

/* Mask of the first n (clamped to 0..16) lanes. */
static inline AVX512 __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

static AVX512 void pair_avx512(const float *r0, const float *r1, int nc, int kcp, uint32_t *bp) {
    const __m512i hi_mask = _mm512_set1_epi32((int)0xFFFF0000u);
    for (int g = 0; g < (nc + 15) / 16; g++) {
        int w = nc - g * 16;
        __mmask16 m = w >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << w) - 1);
        __m512i lo = _mm512_maskz_loadu_epi32(m, r0 + g * 16);
        __m512i hi = r1 ? _mm512_maskz_loadu_epi32(m, r1 + g * 16) : _mm512_setzero_si512();
        __m512i v = _mm512_or_si512(_mm512_srli_epi32(round_bits16(lo), 16),
                                    _mm512_and_si512(round_bits16(hi), hi_mask));
        _mm512_storeu_si512(bp + (size_t)g * kcp * 16, v);
    }
}

/* d[0, n) = 0 */
static inline AVX512 void zero_avx512(float *d, int n) {
    for (int i = 0; i < n; i += 16)
        _mm512_mask_storeu_ps(d + i, lanes(n - i), _mm512_setzero_ps());
}

/* image_row, 16 columns per instruction: stride 1 as masked loads and stores, stride 2 as
 * two loads and an even-lane permute (the stem and the downsampling layers), others per
 * column. */
static AVX512 void image_row_avx512(const resattn_bf16_image *s, int k, int n0, int nc,
                                    float *dst) {
    int kk = s->k * s->k, ci = k / kk, ky = k % kk / s->k, kx = k % s->k, st = s->stride;
    const float *plane = s->in + (size_t)ci * s->h * s->w;
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    int oy = n0 / s->wo, ox = n0 % s->wo;
    for (int j = 0; j < nc; oy++, ox = 0) {
        int run = s->wo - ox < nc - j ? s->wo - ox : nc - j;
        int iy = oy * st - s->pad + ky, ix0 = ox * st - s->pad + kx;
        float *d = dst + j;
        j += run;
        if (iy < 0 || iy >= s->h) {
            zero_avx512(d, run);
            continue;
        }
        const float *src = plane + (size_t)iy * s->w + ix0; /* may point before the row */
        /* columns t with 0 <= ix0 + t * st < w */
        int t0 = ix0 < 0 ? (-ix0 + st - 1) / st : 0,
            t1 = ix0 < s->w ? (s->w - 1 - ix0) / st + 1 : 0;
        t0 = t0 < run ? t0 : run;
        t1 = t1 < run ? t1 : run;
        t1 = t1 < t0 ? t0 : t1;
        zero_avx512(d, t0);
        zero_avx512(d + t1, run - t1);
        for (int t = t0; t < t1; t += 16) {
            int cnt = t1 - t < 16 ? t1 - t : 16;
            if (st == 1) {
                _mm512_mask_storeu_ps(d + t, lanes(cnt),
                                      _mm512_maskz_loadu_ps(lanes(cnt), src + t));
            } else if (st == 2) {
                const float *p = src + 2 * t;
                __m512 a = _mm512_maskz_loadu_ps(lanes(2 * cnt), p);
                __m512 b = _mm512_maskz_loadu_ps(lanes(2 * cnt - 16), p + 16);
                _mm512_mask_storeu_ps(d + t, lanes(cnt), _mm512_permutex2var_ps(a, even, b));
            } else {
                for (int q = t; q < t + cnt; q++)
                    d[q] = src[q * st];
            }
        }
    }
}

/* pad_image_scalar, 16 values per step (the same rounding as round_bits). */
static AVX512 void pad_image_avx512(const resattn_bf16_image *im, int oy0, int rows,
                                    uint16_t *out) {
    int wp = im->w + 2 * im->pad;
    for (int ci = 0; ci < im->cin; ci++)
        for (int r = 0; r < rows; r++) {
            uint16_t *d = out + ((size_t)ci * rows + r) * wp;
            int iy = oy0 + r - im->pad;
            if (iy < 0 || iy >= im->h) {
                memset(d, 0, (size_t)wp * sizeof *d);
                continue;
            }
            memset(d, 0, (size_t)im->pad * sizeof *d);
            memset(d + im->pad + im->w, 0, (size_t)im->pad * sizeof *d);
            const float *src = im->in + ((size_t)ci * im->h + iy) * im->w;
            for (int x = 0; x < im->w; x += 16) {
                __mmask16 m = lanes(im->w - x);
                __m512i v =
                    _mm512_srli_epi32(round_bits16(_mm512_maskz_loadu_epi32(m, src + x)), 16);
                _mm512_mask_cvtepi32_storeu_epi16(d + im->pad + x, m, v);
            }
        }
}

/* pair16_scalar, 16 columns per step (zero-extend, shift, or). */
static AVX512 void pair16_avx512(const uint16_t *r0, const uint16_t *r1, int nc, int kcp,
                                 uint32_t *bp) {
    for (int g = 0; g < (nc + 15) / 16; g++) {
        int w = nc - g * 16;
        __m512i lo, hi = _mm512_setzero_si512();
        if (w >= 16) {
            lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r0 + g * 16)));
            if (r1)
                hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(r1 + g * 16)));
        } else { /* the last columns: through a zeroed copy, never reading past them */
            uint16_t t0[16] = {0}, t1[16] = {0};
            memcpy(t0, r0 + g * 16, (size_t)w * sizeof *t0);
            if (r1)
                memcpy(t1, r1 + g * 16, (size_t)w * sizeof *t1);
            lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)t0));
            hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)t1));
        }
        _mm512_storeu_si512(bp + (size_t)g * kcp * 16,
                            _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
}

DEFINE_PACK(pack_avx512, pair_avx512, pair16_avx512, image_row_avx512, AVX512)

/* The emulated AMX path packs B as the hardware path does where AVX-512 runs. */
static void pack_any(const bsrc *s, int k0, int kc, int n0, int nc, int kcp, uint32_t *bp) {
    if (cpu_avx512f())
        pack_avx512(s, k0, kc, n0, nc, kcp, bp);
    else
        pack_scalar(s, k0, kc, n0, nc, kcp, bp);
}

/* ---- AVX512-BF16 ------------------------------------------------------------------------ */

/*
 * C[0..mr, 0..ncols) (+)= A rows (8, from a: the K block's first chunk of these rows, chunks
 * 512 elements apart, rows 32 apart) x B groups (nv of them, gs words apart), then bias and
 * ReLU. nv is a constant in each instantiation, so the accumulators are registers.
 */
static inline __attribute__((always_inline)) AVXBF16 void
kernel(int nv, int kcp, const uint16_t *a, const uint32_t *b, size_t gs, float *c, int ldc, int mr,
       int ncols, int accumulate, const float *bias, int relu) {
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            acc[i][v] = _mm512_setzero_ps();
    for (int kt = 0; kt < kcp / 16; kt++, a += 512, b += 256) {
#pragma GCC unroll 2
        for (int j = 0; j < 16; j++) {
            __m512bh bv[3];
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                bv[v] = (__m512bh)_mm512_loadu_si512(b + v * gs + j * 16);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                int32_t pair;
                memcpy(&pair, a + i * 32 + 2 * j, sizeof pair);
                __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 3
                for (int v = 0; v < nv; v++)
                    acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
            }
        }
    }
    __mmask16 mask[3];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++)
        mask[v] = lanes(ncols - 16 * v);
    __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
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

#define KERNEL_ARGS                                                                                \
    int kcp, const uint16_t *a, const uint32_t *b, size_t gs, float *c, int ldc, int mr,           \
        int ncols, int acc, const float *bias, int relu
static AVXBF16 void kernel1(KERNEL_ARGS) {
    kernel(1, kcp, a, b, gs, c, ldc, mr, ncols, acc, bias, relu);
}
static AVXBF16 void kernel2(KERNEL_ARGS) {
    kernel(2, kcp, a, b, gs, c, ldc, mr, ncols, acc, bias, relu);
}
static AVXBF16 void kernel3(KERNEL_ARGS) {
    kernel(3, kcp, a, b, gs, c, ldc, mr, ncols, acc, bias, relu);
}

static AVXBF16 void gemm_avx512bf16(const uint16_t *Ap, int M, int K, const bsrc *B, int N,
                                    float *C, int ldc, const float *bias, int relu,
                                    uint32_t *bbuf) {
    int KT = (K + 31) / 32;
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC, ng = (nc + 15) / 16;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, kcp = pairs_of(kc), first = k0 == 0;
            int last = k0 + kc == K, rl = last && relu;
            size_t gs = (size_t)kcp * 16;
            pack_avx512(B, k0, kc, n0, nc, kcp, bbuf);
            for (int h = 0; h * 8 < M; h++) { /* 8-row halves of the 16-row blocks */
                const uint16_t *a = Ap + ((size_t)(h / 2) * KT + k0 / 32) * 512 + (h % 2) * 8 * 32;
                float *c = C + (size_t)h * 8 * ldc + n0;
                int mr = M - h * 8 < 8 ? M - h * 8 : 8;
                const float *pb = last && bias ? bias + h * 8 : NULL;
                for (int g = 0; g < ng; g += 3) {
                    int w = nc - g * 16 < 48 ? nc - g * 16 : 48;
                    const uint32_t *b = bbuf + g * gs;
                    if (w > 32)
                        kernel3(kcp, a, b, gs, c + g * 16, ldc, mr, w, !first, pb, rl);
                    else if (w > 16)
                        kernel2(kcp, a, b, gs, c + g * 16, ldc, mr, w, !first, pb, rl);
                    else
                        kernel1(kcp, a, b, gs, c + g * 16, ldc, mr, w, !first, pb, rl);
                }
            }
        }
    }
}

/* ---- AMX on the tile instructions ------------------------------------------------------- */

#define AMX_NAME amx_gemm_hw
#define AMX_ATTR __attribute__((target("amx-tile,amx-bf16,avx512f")))
#define AMX_PACK_B pack_avx512
#define T_CONFIG(c) _tile_loadconfig(c)
#define T_ZERO(t) _tile_zero(t)
#define T_LOAD(t, p, s) _tile_loadd(t, p, s)
#define T_DP(c, a, b) _tile_dpbf16ps(c, a, b)
#define T_STORE(t, p, s) _tile_stored(t, p, s)
#define T_RELEASE() _tile_release()
#include "kernels/gemm_bf16_amx.h"
#undef AMX_NAME
#undef AMX_ATTR
#undef AMX_PACK_B
#undef T_CONFIG
#undef T_ZERO
#undef T_LOAD
#undef T_DP
#undef T_STORE
#undef T_RELEASE

/* x . w with w's BF16 widened to FP32 (exact) by a shift, 16 per FMA. */
static AVX512 float dot_bf16_avx512(const float *x, const uint16_t *w, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i)));
        __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16)));
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)),
                             s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16),
                             _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)), s1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    for (; i < n; i++)
        s += x[i] * resattn_bf16_to_f32(w[i]);
    return s;
}

/* ---- detection -------------------------------------------------------------------------- */

static int cpu_has_avx512bf16(void) {
    unsigned a, b, c, d;
    if (!cpu_avx512f() || __get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (a < 1) /* no sub-leaf 1 */
        return 0;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* CPUID's AMX-BF16 and AMX-TILE bits, then Linux's permission to use the tile data state
 * (without which the first tile instruction faults). Asked once per process. */
static int amx_granted = -1;

static int cpu_has_amx(void) {
    int g = __atomic_load_n(&amx_granted, __ATOMIC_ACQUIRE);
    if (g >= 0)
        return g;
    unsigned a, b, c, d;
    g = 0;
    if (cpu_avx512f() && __get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if ((d >> 22 & 1) && (d >> 24 & 1))
            g = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    __atomic_store_n(&amx_granted, g, __ATOMIC_RELEASE); /* racing callers agree */
    return g;
}

#else /* not x86-64 GCC/Clang: the scalar code only, and no BF16 path */

static void pack_any(const bsrc *s, int k0, int kc, int n0, int nc, int kcp, uint32_t *bp) {
    pack_scalar(s, k0, kc, n0, nc, kcp, bp);
}
static int cpu_has_avx512bf16(void) {
    return 0;
}
static int cpu_has_amx(void) {
    return 0;
}
#endif

/* ---- AMX on emulated tiles -------------------------------------------------------------- */

#define AMX_NAME amx_gemm_emu
#define AMX_ATTR
#define AMX_PACK_B pack_any
#define T_CONFIG(c) emu_config(c)
#define T_ZERO(t) emu_zero(t)
#define T_LOAD(t, p, s) emu_load(t, p, s)
#define T_DP(c, a, b) emu_dp(c, a, b)
#define T_STORE(t, p, s) emu_store(t, p, s)
#define T_RELEASE() emu_release()
#include "kernels/gemm_bf16_amx.h"

int resattn_bf16_path_supported(resattn_bf16_path path) {
    switch (path) {
    case RESATTN_BF16_PATH_AVX512:
        return cpu_has_avx512bf16();
    case RESATTN_BF16_PATH_AMX:
        return cpu_has_amx();
    case RESATTN_BF16_PATH_SCALAR:
    case RESATTN_BF16_PATH_AMX_EMULATED:
        return 1;
    default:
        return 0;
    }
}

/* Read at every model load (cheap next to it), so tests can switch paths in one process. */
resattn_bf16_path resattn_bf16_path_detect(void) {
    const char *env = getenv("RESATTN_BF16_PATH");
    if (env && !strcmp(env, "none"))
        return RESATTN_BF16_PATH_NONE;
    if (env && !strcmp(env, "amx-emulated")) /* tests: the AMX plan and code on emulated tiles */
        return RESATTN_BF16_PATH_AMX_EMULATED;
    if (env && !strcmp(env, "amx"))
        return cpu_has_amx() ? RESATTN_BF16_PATH_AMX : RESATTN_BF16_PATH_NONE;
    if (env && !strcmp(env, "avx512bf16"))
        return cpu_has_avx512bf16() ? RESATTN_BF16_PATH_AVX512 : RESATTN_BF16_PATH_NONE;
    if (cpu_has_amx())
        return RESATTN_BF16_PATH_AMX;
    return cpu_has_avx512bf16() ? RESATTN_BF16_PATH_AVX512 : RESATTN_BF16_PATH_NONE;
}

const char *resattn_bf16_path_name(resattn_bf16_path path) {
    switch (path) {
    case RESATTN_BF16_PATH_AVX512:
        return "avx512bf16";
    case RESATTN_BF16_PATH_AMX:
        return "amx";
    case RESATTN_BF16_PATH_SCALAR:
        return "scalar";
    case RESATTN_BF16_PATH_AMX_EMULATED:
        return "amx-emulated";
    default:
        return "fp32";
    }
}

static void run(resattn_bf16_path path, const uint16_t *Ap, int M, int K, const bsrc *B, int N,
                float *C, int ldc, const float *bias, int relu, void *bbuf) {
    if (M <= 0 || N <= 0 || K <= 0)
        return;
    switch (path) {
    case RESATTN_BF16_PATH_SCALAR:
        gemm_scalar(Ap, M, K, B, N, C, ldc, bias, relu, bbuf);
        return;
    case RESATTN_BF16_PATH_AMX_EMULATED:
        amx_gemm_emu(Ap, M, K, B, N, C, ldc, bias, relu, bbuf);
        return;
#if defined(__x86_64__) && defined(__GNUC__)
    case RESATTN_BF16_PATH_AVX512:
        gemm_avx512bf16(Ap, M, K, B, N, C, ldc, bias, relu, bbuf);
        return;
    case RESATTN_BF16_PATH_AMX:
        amx_gemm_hw(Ap, M, K, B, N, C, ldc, bias, relu, bbuf);
        return;
#endif
    default:
        abort(); /* callers only pass a path resattn_bf16_path_supported() accepts */
    }
}

void resattn_gemm_bf16_run(resattn_bf16_path path, const uint16_t *Ap, int M, int K, const float *B,
                           int ldb, int N, float *C, int ldc, const float *bias, int relu,
                           void *bbuf) {
    bsrc src = {.b = B, .ldb = ldb};
    run(path, Ap, M, K, &src, N, C, ldc, bias, relu, bbuf);
}

size_t resattn_gemm_bf16_conv_work(const resattn_bf16_image *im, int M) {
    if (im->stride != 1)
        return 0;
    size_t wp = (size_t)im->w + 2 * im->pad, hp = (size_t)im->h + 2 * im->pad;
    return (im->cin * hp * wp * sizeof(uint16_t) + 63) / 64 * 64 +
           (size_t)M * im->ho * wp * sizeof(float);
}

/*
 * Stride 1 with work memory: the output is computed over the padded width (output pixel
 * (oy, ox) is column (oy - oy0) * wp + ox of a [M, ...] buffer, the wp - wo columns past
 * each row are computed and dropped), so that every row of B is one contiguous run of the
 * padded BF16 copy; then the pixels asked for are copied to C. Otherwise B's rows are built
 * from the FP32 image while packing.
 */
void resattn_gemm_bf16_conv(resattn_bf16_path path, const uint16_t *Ap, int M,
                            const resattn_bf16_image *im, int n0, int n1, float *C, int ldc,
                            const float *bias, int relu, void *bbuf, void *work) {
    int K = im->cin * im->k * im->k;
    if (im->stride != 1 || !work) {
        bsrc src = {.im = im, .nbase = n0};
        run(path, Ap, M, K, &src, n1 - n0, C, ldc, bias, relu, bbuf);
        return;
    }
    int wp = im->w + 2 * im->pad, wo = im->wo;
    int oy0 = n0 / wo, ox0 = n0 % wo, oyl = (n1 - 1) / wo, oxl = (n1 - 1) % wo;
    int rows = oyl - oy0 + im->k, cols = (oyl - oy0) * wp + oxl + 1 - ox0;
    size_t plane = (size_t)rows * wp;
    uint16_t *pb = work;
    float *out = (float *)((char *)work + (im->cin * plane * sizeof *pb + 63) / 64 * 64);
#if defined(__x86_64__) && defined(__GNUC__)
    if (path != RESATTN_BF16_PATH_SCALAR && cpu_avx512f())
        pad_image_avx512(im, oy0, rows, pb);
    else
#endif
        pad_image_scalar(im, oy0, rows, pb);
    bsrc src = {.pb = pb, .plane = plane, .kw = im->k, .wp = wp, .nbase = ox0};
    run(path, Ap, M, K, &src, cols, out, cols, bias, relu, bbuf);
    for (int m = 0; m < M; m++)
        for (int oy = oy0; oy <= oyl; oy++) {
            int a = oy == oy0 ? ox0 : 0, e = oy == oyl ? oxl + 1 : wo;
            memcpy(C + (size_t)m * ldc + (size_t)oy * wo + a - n0,
                   out + (size_t)m * cols + (size_t)(oy - oy0) * wp + a - ox0,
                   (size_t)(e - a) * sizeof *C);
        }
}

float resattn_dot_bf16(const float *x, const uint16_t *w, int n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_avx512f())
        return dot_bf16_avx512(x, w, n);
#endif
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += x[i] * resattn_bf16_to_f32(w[i]);
    return s;
}
