/*
 * The AMX BF16 GEMM, included twice by core/kernels/gemm_bf16.c (no include guard on
 * purpose): once on the tile instructions (AMX_NAME amx_gemm_hw, AMX_ATTR the amx-tile,
 * amx-bf16 target) and once on a C emulation of each tile instruction (amx_gemm_emu), so the
 * tests check the tiling, packing and tails of this code on CPUs without AMX too. The
 * includer defines AMX_NAME, AMX_ATTR, AMX_PACK_B and T_CONFIG / T_ZERO / T_LOAD / T_DP /
 * T_STORE / T_RELEASE.
 *
 * Tiles (configured once per call: all eight 16 rows x 64 bytes):
 *   tmm0..3  C: 16 x 16 FP32 accumulators, a 2 x 2 block of them = 32 rows x 32 columns
 *   tmm4, 5  A: 16 rows x 32 k (BF16), two row blocks
 *   tmm6, 7  B: 16 k-pairs x 16 columns (BF16 pairs), two column groups
 * Per 32 k: 4 tile loads, 4 tdpbf16ps (each 16 x 16 x 32 multiply-adds). The accumulators
 * stay in the tiles over a whole K block (KC); then each goes through a 1 KiB buffer to the
 * FP32 epilogue (add the previous K block's partial sums, bias, ReLU, store the M x N part).
 * Row blocks past M and column groups past N are computed on zero padding only as part of
 * a 2 x 2 block (never alone), and never stored.
 */

static AMX_ATTR void AMX_NAME(const uint16_t *Ap, int M, int K, const bsrc *B, int N, float *C,
                              int ldc, const float *bias, int relu, uint32_t *bbuf) {
    _Alignas(64) float tbuf[4][256];
    int KT = (K + 31) / 32, MB = (M + 15) / 16;
    T_CONFIG(&tile_cfg);
    for (int n0 = 0; n0 < N; n0 += NC) {
        int nc = N - n0 < NC ? N - n0 : NC, ng = (nc + 15) / 16;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, kcp = pairs_of(kc), first = k0 == 0;
            int last = k0 + kc == K;
            size_t gs = (size_t)kcp * 16; /* words per column group */
            AMX_PACK_B(B, k0, kc, n0, nc, kcp, bbuf);
            for (int mb = 0; mb < MB; mb += 2) {
                int m2 = mb + 1 < MB;
                const uint16_t *a0 = Ap + ((size_t)mb * KT + k0 / 32) * 512;
                const uint16_t *a1 = a0 + (size_t)KT * 512;
                for (int g = 0; g < ng; g += 2) {
                    int g2 = g + 1 < ng;
                    const uint32_t *b0 = bbuf + g * gs, *b1 = b0 + gs;
                    T_ZERO(0);
                    T_ZERO(1);
                    T_ZERO(2);
                    T_ZERO(3);
                    for (int kt = 0; kt < kcp / 16; kt++) {
                        T_LOAD(4, a0 + (size_t)kt * 512, 64);
                        T_LOAD(6, b0 + (size_t)kt * 256, 64);
                        T_DP(0, 4, 6);
                        if (g2) {
                            T_LOAD(7, b1 + (size_t)kt * 256, 64);
                            T_DP(1, 4, 7);
                        }
                        if (m2) {
                            T_LOAD(5, a1 + (size_t)kt * 512, 64);
                            T_DP(2, 5, 6);
                            if (g2)
                                T_DP(3, 5, 7);
                        }
                    }
                    T_STORE(0, tbuf[0], 64);
                    T_STORE(1, tbuf[1], 64);
                    T_STORE(2, tbuf[2], 64);
                    T_STORE(3, tbuf[3], 64);
                    for (int t = 0; t < 4; t++) {
                        int m = (mb + (t >> 1)) * 16, n = n0 + (g + (t & 1)) * 16;
                        if (m >= M || n >= n0 + nc)
                            continue;
                        int rows = M - m < 16 ? M - m : 16,
                            cols = n0 + nc - n < 16 ? n0 + nc - n : 16;
                        tile_epilogue(tbuf[t], C + (size_t)m * ldc + n, ldc, rows, cols, !first,
                                      last && bias ? bias + m : NULL, last && relu);
                    }
                }
            }
        }
    }
    T_RELEASE();
}
