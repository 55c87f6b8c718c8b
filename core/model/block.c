/*
 * The Pattern-1 residual block:
 *   f = F(x)                   basic: conv3x3(stride) bn relu conv3x3 bn
 *                              bottleneck: conv1x1 bn relu conv3x3(stride) bn relu conv1x1 bn
 *   a = A(f)                   masks from f only (attention.c)
 *   s = x or downsample(x)     1x1 conv(stride) + bn when the shape changes
 *   y = relu(s + a ⊙ f)        one pass over the output
 * BatchNorm is folded into the convolutions at load time.
 */
#include "model/model.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"

#include <string.h>

/* 4 floats as one value (baseline SSE: wider vectors would change the ABI of these
 * helpers); loads and stores go through memcpy so no alignment is assumed. */
typedef float v4 __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

static inline v4 ld4(const float *p) {
    v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v4 splat4(float x) {
    return (v4){x, x, x, x};
}

/* ReLU as a bit mask (all ones where positive): C has no ternary on vectors */
static inline void st4_relu(float *p, v4 v) {
    v = (v4)((v4i)v & (v > splat4(0.0f)));
    memcpy(p, &v, sizeof v);
}

static inline float relu1(float v) {
    return v > 0.0f ? v : 0.0f;
}

/* The operands of the tail; channels [q0, q1) of the n*C (image, channel) pairs per part. */
typedef struct tail_task {
    const resattn_block *b;
    const float *s, *f, *m0, *m1;
    float *y;
    int n;
} tail_task;

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

/* The same pass 16 wide: one plane [hw] of (image, channel) q with its mask values (a per
 * channel, a row mask ah [h] and column mask aw [w] for CA, sp [hw] for CBAM, else NULL). */
static AVX512 void tail_plane16(resattn_attention_kind kind, const float *ss, const float *fs,
                                float *ys, int h, int w, float a, const float *ah, const float *aw,
                                const float *sp) {
    const __m512 zero = _mm512_setzero_ps();
    int hw = h * w;
    if (kind == RESATTN_ATTENTION_CA) {
        for (int yy = 0; yy < h; yy++, ss += w, fs += w, ys += w) {
            __m512 va = _mm512_set1_ps(ah[yy]);
            for (int x = 0; x < w; x += 16) {
                __mmask16 m = (__mmask16)(w - x >= 16 ? 0xFFFF : (1u << (w - x)) - 1);
                __m512 f = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, fs + x),
                                         _mm512_maskz_loadu_ps(m, aw + x));
                __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, ss + x), _mm512_mul_ps(f, va));
                _mm512_mask_storeu_ps(ys + x, m, _mm512_max_ps(v, zero));
            }
        }
        return;
    }
    __m512 va = _mm512_set1_ps(a);
    for (int p = 0; p < hw; p += 16) {
        __mmask16 m = (__mmask16)(hw - p >= 16 ? 0xFFFF : (1u << (hw - p)) - 1);
        __m512 f = _mm512_maskz_loadu_ps(m, fs + p), s = _mm512_maskz_loadu_ps(m, ss + p);
        if (kind == RESATTN_ATTENTION_CBAM)
            f = _mm512_mul_ps(_mm512_mul_ps(f, va), _mm512_maskz_loadu_ps(m, sp + p));
        else if (kind != RESATTN_ATTENTION_NONE)
            f = _mm512_mul_ps(va, f);
        _mm512_mask_storeu_ps(ys + p, m, _mm512_max_ps(_mm512_add_ps(s, f), zero));
    }
}
#endif

/* y [n, C, H, W] = relu(s + a ⊙ f), the mask broadcast per its kind: one pass, 4 wide (16 on
 * the AVX-512 path). */
static void tail_part(void *arg, int part, int nparts) {
    const tail_task *t = arg;
#if defined(__x86_64__) && defined(__GNUC__)
    if (resattn_gemm_available()) {
        const resattn_block *b = t->b;
        int C = b->cout, h = b->ho, w = b->wo, nq = t->n * C;
        resattn_attention_kind kind = b->att.kind;
        for (int q = nq * part / nparts; q < nq * (part + 1) / nparts; q++) {
            size_t off = (size_t)q * h * w;
            int ca = kind == RESATTN_ATTENTION_CA, chan = kind != RESATTN_ATTENTION_NONE && !ca;
            tail_plane16(kind, t->s + off, t->f + off, t->y + off, h, w, chan ? t->m0[q] : 0.0f,
                         ca ? t->m0 + (size_t)q * h : NULL, ca ? t->m1 + (size_t)q * w : NULL,
                         kind == RESATTN_ATTENTION_CBAM ? t->m1 + (size_t)(q / C) * h * w : NULL);
        }
        return;
    }
#endif
    const resattn_block *b = t->b;
    int C = b->cout, h = b->ho, w = b->wo, hw = h * w, nq = t->n * C;
    resattn_attention_kind kind = b->att.kind;
    for (int q = nq * part / nparts; q < nq * (part + 1) / nparts; q++) {
        int i = q / C;
        size_t off = (size_t)q * hw;
        const float *fs = t->f + off, *ss = t->s + off;
        float *ys = t->y + off;
        if (kind == RESATTN_ATTENTION_CA) { /* a_h [C, H] along rows, a_w [C, W] along columns */
            const float *ah = t->m0 + (size_t)q * h, *aw = t->m1 + (size_t)q * w;
            for (int yy = 0; yy < h; yy++) {
                const float *fr = fs + (size_t)yy * w, *sr = ss + (size_t)yy * w;
                float *yr = ys + (size_t)yy * w;
                v4 a = splat4(ah[yy]);
                int x = 0;
                for (; x + 4 <= w; x += 4)
                    st4_relu(yr + x, ld4(sr + x) + ld4(fr + x) * ld4(aw + x) * a);
                for (; x < w; x++)
                    yr[x] = relu1(sr[x] + fr[x] * aw[x] * ah[yy]);
            }
            continue;
        }
        int p = 0;
        if (kind == RESATTN_ATTENTION_NONE) {
            for (; p + 4 <= hw; p += 4)
                st4_relu(ys + p, ld4(ss + p) + ld4(fs + p));
            for (; p < hw; p++)
                ys[p] = relu1(ss[p] + fs[p]);
        } else if (kind == RESATTN_ATTENTION_SE || kind == RESATTN_ATTENTION_ECA) {
            float a = t->m0[q];
            for (; p + 4 <= hw; p += 4)
                st4_relu(ys + p, ld4(ss + p) + splat4(a) * ld4(fs + p));
            for (; p < hw; p++)
                ys[p] = relu1(ss[p] + a * fs[p]);
        } else { /* CBAM: channel mask a, then the spatial mask of this image */
            float a = t->m0[q];
            const float *sp = t->m1 + (size_t)i * hw;
            for (; p + 4 <= hw; p += 4)
                st4_relu(ys + p, ld4(ss + p) + (ld4(fs + p) * splat4(a)) * ld4(sp + p));
            for (; p < hw; p++)
                ys[p] = relu1(ss[p] + (fs[p] * a) * sp[p]);
        }
    }
}

/* Below this many output floats the tail is not worth a thread hand-off. */
#define TWO_PART_FLOATS (1 << 16)

static void tail(const resattn_block *b, const float *s, const float *f, int n, float *y,
                 const float *m0, const float *m1) {
    tail_task t = {b, s, f, m0, m1, y, n};
    size_t count = (size_t)n * b->cout * b->ho * b->wo;
    resattn_parallel2(tail_part, &t, resattn_parallel_wanted() && count >= TWO_PART_FLOATS);
}

void resattn_block_forward(const resattn_block *b, const float *x, int n, float *y,
                           const resattn_block_ws *ws) {
    const float *f;
    if (b->conv3.w) { /* bottleneck */
        resattn_conv_forward(&b->conv1, x, n, b->h, b->w, ws->t1, 1, ws->scratch);
        resattn_conv_forward(&b->conv2, ws->t1, n, b->h, b->w, ws->t2, 1, ws->scratch);
        resattn_conv_forward(&b->conv3, ws->t2, n, b->ho, b->wo, ws->t3, 0, ws->scratch);
        f = ws->t3;
    } else {
        resattn_conv_forward(&b->conv1, x, n, b->h, b->w, ws->t1, 1, ws->scratch);
        resattn_conv_forward(&b->conv2, ws->t1, n, b->ho, b->wo, ws->t2, 0, ws->scratch);
        f = ws->t2;
    }
    const float *s = x;
    if (b->has_down) {
        resattn_conv_forward(&b->down, x, n, b->h, b->w, ws->s, 0, ws->scratch);
        s = ws->s;
    }
    resattn_attn_masks(&b->att, f, n, b->ho, b->wo, ws->m0, ws->m1, ws->att);
    tail(b, s, f, n, y, ws->m0, ws->m1);
}
