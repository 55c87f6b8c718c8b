/*
 * Single-precision GEMM for convolutions whose weights are known at load time:
 *     C [M, N] = A [M, K] x B [K, N]  (+ bias[m], then ReLU when asked),
 * all row-major, A packed once into MR-row panels (resattn_gemm_pack), B (the activations,
 * im2col columns or Winograd tiles) packed per call into a caller-owned buffer.
 *
 * Why not only cblas_sgemm: OpenBLAS is pinned to its Haswell AVX2 kernels on this CPU
 * (OPENBLAS_CORETYPE, see DEPENDENCIES.md), which use half of an AVX-512 core's FMA width,
 * and it re-packs the weights on every call. The AVX-512 micro-kernel here runs only when
 * the CPU reports AVX-512F (cpuid at first use; valgrind's CPU does not); everywhere else,
 * and with RESATTN_GEMM=openblas, resattn_gemm_available() is 0 and the callers use
 * cblas_sgemm on the unpacked weights.
 */
#ifndef RESATTN_GEMM_H
#define RESATTN_GEMM_H

#include "kernels/parallel.h"

#include <stddef.h>

#define RESATTN_GEMM_MR 8 /* rows of A per packed panel */

/* 1 when the packed AVX-512 path runs on this CPU and is not turned off by the environment. */
int resattn_gemm_available(void);

/* Floats of a packed A: M rounded up to MR, times K. */
size_t resattn_gemm_packed_floats(int M, int K);

/* A [M, K] (row stride lda) -> Ap: panel p holds rows [p*MR, p*MR+MR) interleaved by k,
 * Ap[(p*K + k)*MR + r] = A[p*MR + r][k], zero past row M. */
void resattn_gemm_pack(const float *A, int lda, int M, int K, float *Ap);

/* Floats of the B-packing buffer resattn_gemm_run needs (a constant, 1.25 MiB). */
size_t resattn_gemm_scratch(void);

/*
 * C [M, N] (row stride ldc) = Ap x B [K, N] (row stride ldb), then + bias[m] when bias is
 * not NULL, then ReLU when relu != 0: the epilogue runs on the tile still in registers.
 * bbuf holds resattn_gemm_scratch() floats (64-byte aligned is fastest). Only valid when
 * resattn_gemm_available().
 */
void resattn_gemm_run(const float *Ap, int M, int K, const float *B, int ldb, int N, float *C,
                      int ldc, const float *bias, int relu, float *bbuf);

/* Writes columns [n0, n0 + nc) of row k of an implicit B into row[0 .. nc) (nc <= 384). */
typedef void (*resattn_gemm_row_fn)(const void *arg, int k, int n0, int nc, float *row);

/*
 * C [M, N] = Ap x B (+ bias, ReLU) as resattn_gemm_run, with B [K, N] never stored whole:
 * row(arg, k, ...) produces it a block at a time straight into the packing buffer (an
 * implicit im2col). Part `part` of `nparts` (1 or 2, one per thread, all called with the
 * same arguments) packs its share of the rows of every block, waits at bar for the other,
 * and computes its share of the MR-row panels of C, so no row of B is produced twice.
 * bbufs holds 2 * resattn_gemm_scratch() floats, shared by the parts (the blocks alternate
 * between its halves). Only valid when resattn_gemm_available().
 */
void resattn_gemm_run_rows(const float *Ap, int M, int K, resattn_gemm_row_fn row, const void *arg,
                           int N, float *C, int ldc, const float *bias, int relu, float *bbufs,
                           int part, int nparts, resattn_barrier *bar);

#endif
