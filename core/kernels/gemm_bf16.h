/*
 * BF16 GEMM for convolutions and the classifier of a model loaded in BF16:
 *     C [M, N] = bf16(A) [M, K] x bf16(B) [K, N]  (+ bias[m], then ReLU when asked),
 * products of BF16 values summed in FP32 (a product of two BF16 numbers is exact in FP32).
 * A (the weights) is rounded and packed once at load (resattn_gemm_bf16_pack); B (the
 * activations, im2col columns or an input map, FP32 row-major) is rounded to BF16 (nearest
 * even) while it is packed per call into a caller-owned buffer; C and the epilogue are FP32.
 *
 * Packed layouts (both serve every path):
 *   A: blocks of 16 rows, each cut into chunks of 32 k: chunk (mb, kt) is a 16 x 32 BF16
 *      tile, row r at Ap[((mb * KT + kt) * 16 + r) * 32], zero past M and K (KT = K / 32
 *      rounded up). An AMX A tile as it is; a pair (k, k+1) of one row is one 32-bit word
 *      for vdpbf16ps broadcasts.
 *   B: groups of 16 columns; in a group, k-pair p holds 16 words (b[2p][n], b[2p+1][n]), the
 *      "VNNI" pairing both tdpbf16ps and vdpbf16ps read; 16 pairs (32 k) make an AMX B tile.
 *
 * Paths, chosen once per process (resattn_bf16_path_detect): AMX (tdpbf16ps on 16 x 16 FP32
 * accumulator tiles), AVX512-BF16 (vdpbf16ps, an 8 x 48 register tile), or none (bf16
 * models then run FP32). The scalar path and the AMX code on emulated tiles exist for the
 * tests (tests/check_bf16.c), which compare every path with a double-precision product of
 * the BF16-rounded inputs.
 */
#ifndef RESATTN_GEMM_BF16_H
#define RESATTN_GEMM_BF16_H

#include <stddef.h>
#include <stdint.h>

typedef enum resattn_bf16_path {
    RESATTN_BF16_PATH_NONE = 0,     /* no BF16 instructions: BF16 models run FP32 */
    RESATTN_BF16_PATH_AVX512,       /* AVX512-BF16: vdpbf16ps */
    RESATTN_BF16_PATH_AMX,          /* AMX-BF16 tiles: tdpbf16ps */
    RESATTN_BF16_PATH_SCALAR,       /* plain C on the packed operands (tests) */
    RESATTN_BF16_PATH_AMX_EMULATED, /* the AMX code with each tile instruction done in C (tests) */
} resattn_bf16_path;

/*
 * The path of this process: AMX when CPUID reports AMX-BF16 and AMX-TILE (leaf 7.0 EDX bits
 * 22, 24) and Linux grants the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, done here once,
 * before any tile instruction), else AVX512-BF16 (leaf 7.1 EAX bit 5, with AVX-512 enabled
 * by the OS), else NONE. RESATTN_BF16_PATH=amx|avx512bf16|none picks one instead (NONE when
 * the CPU lacks it; amx-emulated, for tests, the emulated tiles). Models call this as they
 * load; the tile permission is asked only once.
 */
resattn_bf16_path resattn_bf16_path_detect(void);
/* Whether this CPU and OS can run a path (ignores the environment; SCALAR: always; the
 * emulated AMX path: always). */
int resattn_bf16_path_supported(resattn_bf16_path path);
/* "amx", "avx512bf16", "fp32" (NONE), "scalar", "amx-emulated". */
const char *resattn_bf16_path_name(resattn_bf16_path path);

/* FP32 -> BF16, round to nearest even; NaN stays NaN (quiet), infinities stay. */
uint16_t resattn_bf16_from_f32(float x);
float resattn_bf16_to_f32(uint16_t h);
/* x[i] = bf16(x[i]) as FP32, in place. */
void resattn_bf16_round_inplace(float *x, size_t count);

#define RESATTN_BF16_MB 16 /* rows per packed block of A */
#define RESATTN_BF16_KB 32 /* k per packed chunk of A */

/* BF16 elements of a packed A: M rounded up to 16, times K rounded up to 32. */
size_t resattn_gemm_bf16_packed_elems(int M, int K);
/* A [M, K] (row stride lda) -> Ap, rounded to BF16, in the layout above. */
void resattn_gemm_bf16_pack(const float *A, int lda, int M, int K, uint16_t *Ap);
/* The packed rows from row m0 on (m0 a multiple of 16): the Ap of A's rows [m0, M). */
const uint16_t *resattn_gemm_bf16_rows(const uint16_t *Ap, int K, int m0);

/* Bytes of the B-packing buffer resattn_gemm_bf16_run needs (a constant, 384 KiB). */
size_t resattn_gemm_bf16_scratch(void);

/*
 * C [M, N] (row stride ldc) = Ap x bf16(B [K, N]) (row stride ldb), then + bias[m] when bias
 * is not NULL, then ReLU when relu != 0, on the given path (which must be supported).
 * bbuf holds resattn_gemm_bf16_scratch() bytes, 64-byte aligned.
 */
void resattn_gemm_bf16_run(resattn_bf16_path path, const uint16_t *Ap, int M, int K, const float *B,
                           int ldb, int N, float *C, int ldc, const float *bias, int relu,
                           void *bbuf);

/* An image whose im2col is the B of a convolution: B [cin*k*k, ho*wo], row (ci*k + ky)*k + kx,
 * column oy*wo + ox, holds in[ci][oy*stride - pad + ky][ox*stride - pad + kx] (0 outside). */
typedef struct resattn_bf16_image {
    const float *in; /* [cin, h, w] */
    int cin, h, w, k, stride, pad, ho, wo;
} resattn_bf16_image;

/*
 * The same with B = im2col(im), columns [n0, n1) only: C [M, n1 - n0] (C points at column n0
 * of the output, row stride ldc). B is never formed: each K x 192 block is built from the
 * image while it is packed (no im2col buffer, no second pass over one). With work memory of
 * resattn_gemm_bf16_conv_work bytes (64-byte aligned), a stride-1 layer first makes one
 * zero-padded BF16 copy of the image rows it needs, from which B's rows are contiguous
 * runs; work NULL, or other strides, build B's rows from the FP32 image. Same results.
 */
void resattn_gemm_bf16_conv(resattn_bf16_path path, const uint16_t *Ap, int M,
                            const resattn_bf16_image *im, int n0, int n1, float *C, int ldc,
                            const float *bias, int relu, void *bbuf, void *work);
/* Bytes of work memory for M output channels of this image's layer (0: stride is not 1). */
size_t resattn_gemm_bf16_conv_work(const resattn_bf16_image *im, int M);

/* x . bf16(w) over n values, FP32 accumulation; x should already be BF16-rounded. */
float resattn_dot_bf16(const float *x, const uint16_t *w, int n);

#endif
