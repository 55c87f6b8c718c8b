/*
 * The Pattern-1 residual block:
 *   f = F(x)                   basic: conv3x3(stride) bn relu conv3x3 bn
 *                              bottleneck: conv1x1 bn relu conv3x3(stride) bn relu conv1x1 bn
 *   a = A(f)                   masks from f only (attention.c)
 *   s = x or downsample(x)     1x1 conv(stride) + bn when the shape changes
 *   y = relu(s + a ⊙ f)        one pass over the output
 * BatchNorm is folded into the convolutions at load time.
 */
#include "model.h"

/* y [n, C, H, W] = relu(s + a ⊙ f), the mask broadcast per its kind. */
static void tail(const resattn_block *b, const float *s, const float *f, int n, float *y,
                 const float *m0, const float *m1) {
    int C = b->cout, h = b->ho, w = b->wo, hw = h * w;
    resattn_attention_kind kind = b->att.kind;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            size_t off = ((size_t)i * C + c) * hw;
            const float *fs = f + off, *ss = s + off;
            float *ys = y + off;
            if (kind == RESATTN_ATTENTION_NONE) {
                for (int p = 0; p < hw; p++) {
                    float v = ss[p] + fs[p];
                    ys[p] = v > 0.0f ? v : 0.0f;
                }
            } else if (kind == RESATTN_ATTENTION_SE || kind == RESATTN_ATTENTION_ECA) {
                float a = m0[(size_t)i * C + c];
                for (int p = 0; p < hw; p++) {
                    float v = ss[p] + a * fs[p];
                    ys[p] = v > 0.0f ? v : 0.0f;
                }
            } else if (kind == RESATTN_ATTENTION_CBAM) {
                float a = m0[(size_t)i * C + c];
                const float *sp = m1 + (size_t)i * hw;
                for (int p = 0; p < hw; p++) {
                    float v = ss[p] + (fs[p] * a) * sp[p];
                    ys[p] = v > 0.0f ? v : 0.0f;
                }
            } else { /* CA: a_h [C, H] along rows, a_w [C, W] along columns */
                const float *ah = m0 + ((size_t)i * C + c) * h, *aw = m1 + ((size_t)i * C + c) * w;
                for (int yy = 0; yy < h; yy++)
                    for (int x = 0; x < w; x++) {
                        int p = yy * w + x;
                        float v = ss[p] + fs[p] * aw[x] * ah[yy];
                        ys[p] = v > 0.0f ? v : 0.0f;
                    }
            }
        }
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
