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
    for (int c = 0; c < a->c; c++)
        m[c] = resattn_sigmoid(m[c]);
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
    int C = a->c, hw = h * w, k = a->k, pad = k / 2;
    float *avg = scr, *mx = scr + C, *hid = mx + C, *o2 = hid + a->r, *map = o2 + C;
    mean_hw(f, C, hw, avg);
    for (int c = 0; c < C; c++) {
        float m = -FLT_MAX;
        for (int i = 0; i < hw; i++)
            m = f[(size_t)c * hw + i] > m ? f[(size_t)c * hw + i] : m;
        mx[c] = m;
    }
    cbam_mlp(a, avg, hid, mc);
    cbam_mlp(a, mx, hid, o2);
    for (int c = 0; c < C; c++)
        mc[c] = resattn_sigmoid(mc[c] + o2[c]);
    /* map [2, H, W] = [mean_c f', max_c f'] with f' = mc ⊙ f, not materialised; channel
     * by channel so every pass is contiguous (and vectorisable); per pixel the channels
     * still add up in order */
    float *sum = map, *mxm = map + hw;
    for (int i = 0; i < hw; i++)
        sum[i] = 0.0f, mxm[i] = -FLT_MAX;
    for (int c = 0; c < C; c++) {
        const float *fc = f + (size_t)c * hw;
        float g = mc[c];
        for (int i = 0; i < hw; i++) {
            float v = fc[i] * g;
            sum[i] += v;
            mxm[i] = v > mxm[i] ? v : mxm[i];
        }
    }
    for (int i = 0; i < hw; i++)
        sum[i] /= (float)C;
    /* the k x k conv as shifted row updates (taps in the same order for every pixel) */
    for (int i = 0; i < hw; i++)
        ms[i] = a->bk;
    for (int ch = 0; ch < 2; ch++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float wv = a->wk[(ch * k + ky) * k + kx];
                int x0 = pad - kx > 0 ? pad - kx : 0, x1 = w + pad - kx < w ? w + pad - kx : w;
                for (int y = 0; y < h; y++) {
                    int iy = y + ky - pad;
                    if (iy < 0 || iy >= h)
                        continue;
                    const float *src = map + (size_t)ch * hw + (size_t)iy * w + kx - pad;
                    float *dst = ms + (size_t)y * w;
                    for (int x = x0; x < x1; x++)
                        dst[x] += wv * src[x];
                }
            }
    for (int i = 0; i < hw; i++)
        ms[i] = resattn_sigmoid(ms[i]);
}

static void ca_masks(const resattn_attn *a, const float *f, int h, int w, float *mh, float *mw,
                     float *scr) {
    int C = a->c, m = a->r, L = h + w;
    float *z = scr, *y = scr + (size_t)C * L;
    /* z [C, H+W]: the H-strip means (over W) then the W-strip means (over H) */
    for (int c = 0; c < C; c++) {
        const float *fc = f + (size_t)c * h * w;
        float *zc = z + (size_t)c * L;
        for (int x = 0; x < w; x++)
            zc[h + x] = 0.0f;
        for (int yy = 0; yy < h; yy++) {
            float s = 0.0f;
            for (int x = 0; x < w; x++) {
                s += fc[yy * w + x];
                zc[h + x] += fc[yy * w + x];
            }
            zc[yy] = s / (float)w;
        }
        for (int x = 0; x < w; x++)
            zc[h + x] /= (float)h;
    }
    /* y [m, H+W] = hardswish(W1 z + b1) */
    for (int o = 0; o < m; o++)
        for (int l = 0; l < L; l++) {
            float s = a->b1[o];
            for (int c = 0; c < C; c++)
                s += a->w1[(size_t)o * C + c] * z[(size_t)c * L + l];
            y[(size_t)o * L + l] = resattn_hardswish(s);
        }
    for (int c = 0; c < C; c++)
        for (int l = 0; l < L; l++) {
            const float *wr = l < h ? a->wh : a->ww;
            float s = l < h ? a->bh[c] : a->bw[c];
            for (int o = 0; o < m; o++)
                s += wr[(size_t)c * m + o] * y[(size_t)o * L + l];
            if (l < h)
                mh[(size_t)c * h + l] = resattn_sigmoid(s);
            else
                mw[(size_t)c * w + (l - h)] = resattn_sigmoid(s);
        }
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
