/*
 * Winograd convolution for 3x3, stride 1, pad 1 layers on float32 NCHW tensors:
 * F(2x2,3x3) (4x4 transform domain, 2.25x fewer multiplications) and F(4x4,3x3)
 * (6x6 domain, 4x fewer). Weights are transformed once at model load; the forward pass
 * transforms the input tiles, runs one cblas_sgemm per transform-domain point
 * (alpha*alpha of them: M = cout, N = tiles of a chunk, K = cin) and transforms back with
 * the bias (+ReLU) epilogue fused. It allocates nothing: the caller supplies the scratch
 * whose size resattn_winograd_scratch gives.
 */
#ifndef RESATTN_WINOGRAD_H
#define RESATTN_WINOGRAD_H

#include <stddef.h>

/* Floats of transformed weights for output tile m (2 or 4): (m+2)^2 * cout * cin. */
size_t resattn_winograd_weight_floats(int m, int cin, int cout);

/*
 * w [cout, cin, 3, 3] -> u [(m+2)^2, cout, cin], u[p] = (G g G^T)[p] for each filter g,
 * computed in double. Called once per eligible layer when the model is loaded.
 */
void resattn_winograd_transform_weights(int m, const float *w, int cin, int cout, float *u);

/*
 * Floats of scratch resattn_winograd_forward needs for n images of h x w; n <= 0 gives the
 * bound for every batch size (the tiles go through a bounded chunk, about 6 MiB).
 */
size_t resattn_winograd_scratch(int m, int cin, int cout, int n, int h, int w);

/*
 * in [n, cin, h, w] -> out [n, cout, h, w] = conv3x3(in, pad 1) + b, then ReLU when
 * relu != 0. u from resattn_winograd_transform_weights with the same m; or, when u is NULL,
 * up: each point's u[p] packed by resattn_gemm_pack, run on the packed GEMM with bbuf's
 * 2 * resattn_gemm_scratch() floats (one B-packing buffer per thread). b [cout].
 * scratch holds resattn_winograd_scratch(m, cin, cout, n, h, w) floats.
 */
void resattn_winograd_forward(int m, const float *u, const float *up, float *bbuf, const float *b,
                              int cin, int cout, const float *in, int n, int h, int w, float *out,
                              int relu, float *scratch);

/*
 * Which algorithm a 3x3/1 pad-1 layer of cin -> cout channels on h x w maps should use:
 * 0 (direct im2col + GEMM), 2 or 4 (Winograd tile size). Small channel counts and tiny
 * maps stay direct (the transforms would cost more than the multiplications saved).
 */
int resattn_winograd_choose(int cin, int cout, int h, int w);

/*
 * Whether a layer given Winograd tile size m should run it for a batch of n images of
 * h x w, or fall back to direct convolution (too few tiles to amortise the transforms).
 */
int resattn_winograd_worth(int m, int n, int h, int w);

/* RESATTN_WINOGRAD as a tile size: 0 (off), 2 or 4 (forced on every eligible layer), or -1
 * (unset or "generic": each layer's own choice). */
int resattn_winograd_env_tile(void);

#endif
