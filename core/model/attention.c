/*
 * The attention modules of Pattern 1, computing masks from the branch output f only:
 *   SE:   a[C]   = sigmoid(fc2(relu(fc1(mean_hw f))))
 *   ECA:  a[C]   = sigmoid(conv1d_k(mean_hw f))          (zero padding (k-1)/2 over channels)
 *   CBAM: a_c[C] = sigmoid(mlp(mean_hw f) + mlp(max_hw f)), f' = a_c ⊙ f,
 *         a_s[H,W] = sigmoid(bn(conv_kxk([mean_c f', max_c f'])))
 *   CA:   z = [mean_w f (C x H), mean_h f (C x W)], y = hardswish(bn1(conv1 z)) [m, H+W],
 *         a_h[C,H] = sigmoid(conv_h y_h), a_w[C,W] = sigmoid(conv_w y_w)
 * The masks are written straight into the context's mask area; the block applies them.
 */
#include "model/model.h"

#include <float.h>
#include <string.h>

int resattn_attn_mask_count(resattn_attention_kind kind) {
    switch (kind) {
    case RESATTN_ATTENTION_SE:
    case RESATTN_ATTENTION_ECA:
        return 1;
    case RESATTN_ATTENTION_CBAM:
    case RESATTN_ATTENTION_CA:
        return 2;
    default:
        return 0;
    }
}

void resattn_attn_mask_shape(const resattn_attn *a, int j, int h, int w, resattn_mask_kind *kind,
                             int *mc, int *mh, int *mw) {
    *mc = a->c, *mh = 1, *mw = 1, *kind = RESATTN_MASK_CHANNEL;
    if (a->kind == RESATTN_ATTENTION_CBAM && j == 1)
        *kind = RESATTN_MASK_SPATIAL, *mc = 1, *mh = h, *mw = w;
    if (a->kind == RESATTN_ATTENTION_CA)
        *kind = j ? RESATTN_MASK_COORD_W : RESATTN_MASK_COORD_H, *mh = j ? 1 : h, *mw = j ? w : 1;
}

size_t resattn_attn_scratch(const resattn_attn *a, int h, int w) {
    return 2 * (size_t)a->c + 2 * (size_t)a->r + 2 * (size_t)h * w +
           ((size_t)a->c + a->r) * (h + w) + 16;
}

/* y[o] = b[o] + sum_i w[o, i] x[i]: tiny dense layers of the attention modules. */
static void dense(const float *w, const float *b, const float *x, int in, int out, float *y) {
    for (int o = 0; o < out; o++)
        y[o] = (b ? b[o] : 0.0f) + resattn_dot(w + (size_t)o * in, x, in);
}

static void mean_hw(const float *f, int c, int hw, float *out) {
    resattn_gap(f, c, hw, out);
}

static void se_masks(const resattn_attn *a, const float *f, int hw, float *m, float *scr) {
    float *pooled = scr, *hid = scr + a->c;
    mean_hw(f, a->c, hw, pooled);
    dense(a->w1, a->b1, pooled, a->c, a->r, hid);
    resattn_relu_inplace(hid, (size_t)a->r);
    dense(a->w2, a->b2, hid, a->r, a->c, m);
    resattn_sigmoid_inplace(m, (size_t)a->c);
}

static void eca_masks(const resattn_attn *a, const float *f, int hw, float *m, float *scr) {
    int pad = (a->k - 1) / 2;
    mean_hw(f, a->c, hw, scr);
    for (int c = 0; c < a->c; c++) {
        float s = 0.0f;
        for (int j = 0; j < a->k; j++) {
            int src = c + j - pad;
            if (src >= 0 && src < a->c)
                s += a->wk[j] * scr[src];
        }
        m[c] = resattn_sigmoid(s);
    }
}

/* mlp(v) = fc2(relu(fc1(v))), no biases; out [C]. */
static void cbam_mlp(const resattn_attn *a, const float *v, float *hid, float *out) {
    dense(a->w1, NULL, v, a->c, a->r, hid);
    resattn_relu_inplace(hid, (size_t)a->r);
    dense(a->w2, NULL, hid, a->r, a->c, out);
}

static void cbam_masks(const resattn_attn *a, const float *f, int h, int w, float *mc, float *ms,
                       float *scr) {
    int C = a->c, hw = h * w, k = a->k;
    float *avg = scr, *mx = scr + C, *hid = mx + C, *o2 = hid + a->r, *map = o2 + C;
    for (int c = 0; c < C; c++) {
        resattn_sum_max(f + (size_t)c * hw, hw, &avg[c], &mx[c]);
        avg[c] /= (float)hw;
    }
    cbam_mlp(a, avg, hid, mc);
    cbam_mlp(a, mx, hid, o2);
    for (int c = 0; c < C; c++)
        mc[c] += o2[c];
    resattn_sigmoid_inplace(mc, (size_t)C);
    /* map [2, H, W] = [mean_c f', max_c f'] with f' = mc ⊙ f, not materialised; channel
     * by channel so every pass is contiguous (and vectorisable); per pixel the channels
     * still add up in order */
    float *sum = map, *mxm = map + hw;
    for (int i = 0; i < hw; i++)
        sum[i] = 0.0f, mxm[i] = -FLT_MAX;
    for (int c = 0; c < C; c++)
        resattn_scaled_sum_max(f + (size_t)c * hw, mc[c], hw, sum, mxm);
    for (int i = 0; i < hw; i++)
        sum[i] /= (float)C;
    resattn_conv_single(map, 2, h, w, a->wk, k, a->bk, ms);
    resattn_sigmoid_inplace(ms, (size_t)hw);
}

static void ca_masks(const resattn_attn *a, const float *f, int h, int w, float *mh, float *mw,
                     float *scr) {
    int C = a->c, m = a->r, L = h + w;
    float *z = scr, *y = scr + (size_t)C * L;
    /* z [C, H+W]: the H-strip means (over W) then the W-strip means (over H) */
    for (int c = 0; c < C; c++) {
        float *zc = z + (size_t)c * L;
        for (int x = 0; x < w; x++)
            zc[h + x] = 0.0f;
        resattn_row_col_sums(f + (size_t)c * h * w, h, w, zc, zc + h);
        for (int yy = 0; yy < h; yy++)
            zc[yy] /= (float)w;
        for (int x = 0; x < w; x++)
            zc[h + x] /= (float)h;
    }
    /* y [m, H+W] = hardswish(W1 z + b1) */
    resattn_small_matmul(a->w1, m, C, z, L, L, a->b1, y, L);
    for (size_t i = 0; i < (size_t)m * L; i++)
        y[i] = resattn_hardswish(y[i]);
    /* a_h = sigmoid(conv_h y_h) [C, H], a_w = sigmoid(conv_w y_w) [C, W] */
    resattn_small_matmul(a->wh, C, m, y, L, h, a->bh, mh, h);
    resattn_small_matmul(a->ww, C, m, y + h, L, w, a->bw, mw, w);
    resattn_sigmoid_inplace(mh, (size_t)C * h);
    resattn_sigmoid_inplace(mw, (size_t)C * w);
}

void resattn_attn_masks(const resattn_attn *a, const float *f, int n, int h, int w, float *m0,
                        float *m1, float *scratch) {
    size_t fimg = (size_t)a->c * h * w;
    for (int i = 0; i < n; i++) {
        const float *fi = f + i * fimg;
        switch (a->kind) {
        case RESATTN_ATTENTION_SE:
            se_masks(a, fi, h * w, m0 + (size_t)i * a->c, scratch);
            break;
        case RESATTN_ATTENTION_ECA:
            eca_masks(a, fi, h * w, m0 + (size_t)i * a->c, scratch);
            break;
        case RESATTN_ATTENTION_CBAM:
            cbam_masks(a, fi, h, w, m0 + (size_t)i * a->c, m1 + (size_t)i * h * w, scratch);
            break;
        case RESATTN_ATTENTION_CA:
            ca_masks(a, fi, h, w, m0 + (size_t)i * a->c * h, m1 + (size_t)i * a->c * w, scratch);
            break;
        default:
            break;
        }
    }
}
