/*
 * Model loading: parse the safetensors table and resattn.config, bind every tensor by its
 * timm/torchvision name, infer channel widths from shapes and check each shape against the
 * config and its neighbours, fold BatchNorm into the preceding convolution
 * (w' = w*g/sqrt(v+eps), b' = beta + (bias-mean)*g/sqrt(v+eps)), reject missing and extra
 * tensors, and plan the per-image workspace. Integer tensors (num_batches_tracked) are
 * ignored. The input buffer is not kept. A model loaded in BF16 (where the CPU has a BF16
 * path) also gets its convolution and classifier weights rounded and packed in BF16,
 * after the folding, which stays FP32.
 */
#include "model/model.h"
#include "kernels/gemm.h"
#include "kernels/gemm_bf16.h"
#include "kernels/winograd.h"
#include "model/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ANY -1 /* a shape entry inferred from the file */

typedef struct binder {
    resattn_st *st;
    float *arena;
    size_t used, cap; /* floats */
    double eps;
    resattn_bf16_path bf16; /* set on every convolution bound: a BF16 model's path */
    char *err;
    size_t err_len;
} binder;

static resattn_status failf(binder *b, resattn_status s, const char *fmt, ...) {
    if (b->err && b->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->err_len, fmt, ap);
        va_end(ap);
    }
    return s;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *d) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %lld" : "%lld", (long long)d[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

/* Floats from the arena, 16-aligned; the arena was sized for all tensors up front. */
static float *take(binder *b, size_t n) {
    size_t start = (b->used + 15) & ~(size_t)15;
    if (start + n > b->cap)
        return NULL;
    b->used = start + n;
    return b->arena + start;
}

/* Find a float tensor and check its shape (ANY entries are filled in). */
static resattn_status need(binder *b, const char *name, int ndim, int64_t *dims,
                           resattn_st_tensor **out) {
    resattn_st_tensor *t = resattn_st_find(b->st, name);
    if (!t)
        return failf(b, RESATTN_ERR_TENSOR, "missing tensor %s", name);
    if (t->dtype != RESATTN_DT_F32 && t->dtype != RESATTN_DT_F16 && t->dtype != RESATTN_DT_BF16)
        return failf(b, RESATTN_ERR_TENSOR, "tensor %s has dtype %s; expected F32, F16 or BF16",
                     name, t->dtype_name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = dims[i] == ANY ? t->shape[i] > 0 && t->shape[i] <= 1 << 20 : t->shape[i] == dims[i];
    if (!ok) {
        char got[96], want[96];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, dims);
        for (char *p = strstr(want, "-1"); p; p = strstr(p, "-1"))
            *p++ = '*', memmove(p, p + 1, strlen(p));
        return failf(b, RESATTN_ERR_TENSOR, "tensor %s has shape %s; expected %s", name, got, want);
    }
    for (int i = 0; i < ndim; i++)
        dims[i] = t->shape[i];
    t->used = 1;
    *out = t;
    return RESATTN_OK;
}

/* Load a checked tensor as float32 into the arena. */
static resattn_status fetch(binder *b, const char *name, int ndim, int64_t *dims, float **out) {
    resattn_st_tensor *t = NULL;
    resattn_status s = need(b, name, ndim, dims, &t);
    if (s)
        return s;
    if (!(*out = take(b, t->count)))
        return failf(b, RESATTN_ERR_NOMEM, "weight arena exhausted at %s", name);
    resattn_st_read_f32(b->st, t, *out);
    return RESATTN_OK;
}

static int has(binder *b, const char *name) {
    return resattn_st_find(b->st, name) != NULL;
}

/*
 * Fold BatchNorm "<bn>.{weight,bias,running_mean,running_var}" [cout] into w [cout, per]
 * and bias (may hold a conv bias on entry, or be zero).
 */
static resattn_status fold_bn(binder *b, const char *bn, int cout, float *w, size_t per,
                              float *bias) {
    static const char *const parts[] = {"weight", "bias", "running_mean", "running_var"};
    float *p[4];
    char name[160];
    for (int i = 0; i < 4; i++) {
        int64_t d[1] = {cout};
        snprintf(name, sizeof name, "%s.%s", bn, parts[i]);
        resattn_status s = fetch(b, name, 1, d, &p[i]);
        if (s)
            return s;
    }
    for (int c = 0; c < cout; c++) {
        double var = (double)p[3][c] + b->eps;
        if (!(var > 0.0))
            return failf(b, RESATTN_ERR_TENSOR, "tensor %s.running_var[%d] is negative", bn, c);
        double scale = (double)p[0][c] / sqrt(var);
        for (size_t i = 0; i < per; i++)
            w[(size_t)c * per + i] = (float)((double)w[(size_t)c * per + i] * scale);
        bias[c] = (float)((double)p[1][c] + ((double)bias[c] - (double)p[2][c]) * scale);
    }
    return RESATTN_OK;
}

/* Whether a convolution's "<conv>.bias" is absent, may be present, or must be present. */
enum { BIAS_NONE, BIAS_OPTIONAL, BIAS_REQUIRED };

/*
 * Conv "<conv>.weight" [cout, cin, k, k] (+ "<conv>.bias" per bias_mode) followed by
 * BatchNorm "<bn>" when bn != NULL. cout/cin may be ANY (inferred, written back).
 */
static resattn_status bind_conv(binder *b, const char *conv, const char *bn, int bias_mode,
                                int *cin, int *cout, int k, int stride, int pad,
                                resattn_conv *out) {
    char name[160];
    int64_t d[4] = {*cout, *cin, k, k};
    float *w, *bias;
    snprintf(name, sizeof name, "%s.weight", conv);
    resattn_status s = fetch(b, name, 4, d, &w);
    if (s)
        return s;
    *cout = (int)d[0];
    *cin = (int)d[1];
    snprintf(name, sizeof name, "%s.bias", conv);
    if (bias_mode == BIAS_REQUIRED || (bias_mode == BIAS_OPTIONAL && has(b, name))) {
        int64_t db[1] = {*cout};
        if ((s = fetch(b, name, 1, db, &bias)))
            return s;
    } else {
        if (!(bias = take(b, (size_t)*cout)))
            return failf(b, RESATTN_ERR_NOMEM, "weight arena exhausted at %s", name);
        memset(bias, 0, (size_t)*cout * sizeof *bias);
    }
    if (bn && (s = fold_bn(b, bn, *cout, w, (size_t)*cin * k * k, bias)))
        return s;
    *out = (resattn_conv){.cin = *cin,
                          .cout = *cout,
                          .k = k,
                          .stride = stride,
                          .pad = pad,
                          .w = w,
                          .b = bias,
                          .bf16 = b->bf16};
    return RESATTN_OK;
}

static resattn_status bind_se(binder *b, const char *p, resattn_attn *a) {
    char name[160];
    int r = ANY, c = a->c;
    resattn_conv fc1, fc2;
    snprintf(name, sizeof name, "%s.fc1", p);
    resattn_status s = bind_conv(b, name, NULL, BIAS_REQUIRED, &c, &r, 1, 1, 0, &fc1);
    if (s)
        return s;
    snprintf(name, sizeof name, "%s.fc2", p);
    int c2 = a->c;
    if ((s = bind_conv(b, name, NULL, BIAS_REQUIRED, &r, &c2, 1, 1, 0, &fc2)))
        return s;
    a->r = r;
    a->w1 = fc1.w, a->b1 = fc1.b, a->w2 = fc2.w, a->b2 = fc2.b;
    return RESATTN_OK;
}

static resattn_status bind_eca(binder *b, const char *p, resattn_attn *a) {
    char name[160];
    int64_t d[3] = {1, 1, ANY};
    float *w;
    snprintf(name, sizeof name, "%s.conv.weight", p);
    resattn_status s = fetch(b, name, 3, d, &w);
    if (s)
        return s;
    if (d[2] % 2 == 0)
        return failf(b, RESATTN_ERR_TENSOR, "tensor %s has even kernel size %lld; expected odd",
                     name, (long long)d[2]);
    a->k = (int)d[2];
    a->wk = w;
    return RESATTN_OK;
}

/* CBAM: channel MLP without biases, then a k x k conv + BN on [mean_c, max_c]. */
static resattn_status bind_cbam(binder *b, const char *p, resattn_attn *a) {
    char name[160], bn[160];
    int64_t d1[4] = {ANY, a->c, 1, 1}, d2[4];
    float *w1, *w2;
    snprintf(name, sizeof name, "%s.channel.fc1.weight", p);
    resattn_status s = fetch(b, name, 4, d1, &w1);
    if (s)
        return s;
    a->r = (int)d1[0];
    d2[0] = a->c, d2[1] = a->r, d2[2] = d2[3] = 1;
    snprintf(name, sizeof name, "%s.channel.fc2.weight", p);
    if ((s = fetch(b, name, 4, d2, &w2)))
        return s;
    a->w1 = w1, a->w2 = w2;
    int64_t ds[4] = {1, 2, ANY, ANY};
    float *ws;
    snprintf(name, sizeof name, "%s.spatial.conv.conv.weight", p);
    if ((s = fetch(b, name, 4, ds, &ws)))
        return s;
    if (ds[2] != ds[3] || ds[2] % 2 == 0)
        return failf(b, RESATTN_ERR_TENSOR, "tensor %s must have an odd square kernel", name);
    float bias = 0.0f;
    snprintf(bn, sizeof bn, "%s.spatial.conv.bn", p);
    if ((s = fold_bn(b, bn, 1, ws, (size_t)(2 * ds[2] * ds[3]), &bias)))
        return s;
    a->k = (int)ds[2];
    a->wk = ws;
    a->bk = bias;
    return RESATTN_OK;
}

static resattn_status bind_ca(binder *b, const char *p, resattn_attn *a) {
    char name[160], bn[160];
    int c = a->c, m = ANY;
    resattn_conv c1, ch, cw;
    snprintf(name, sizeof name, "%s.conv1", p);
    snprintf(bn, sizeof bn, "%s.bn1", p);
    resattn_status s = bind_conv(b, name, bn, BIAS_OPTIONAL, &c, &m, 1, 1, 0, &c1);
    if (s)
        return s;
    int c2 = a->c, m2 = m;
    snprintf(name, sizeof name, "%s.conv_h", p);
    if ((s = bind_conv(b, name, NULL, BIAS_OPTIONAL, &m2, &c2, 1, 1, 0, &ch)))
        return s;
    snprintf(name, sizeof name, "%s.conv_w", p);
    if ((s = bind_conv(b, name, NULL, BIAS_OPTIONAL, &m2, &c2, 1, 1, 0, &cw)))
        return s;
    a->r = m;
    a->w1 = c1.w, a->b1 = c1.b, a->wh = ch.w, a->bh = ch.b, a->ww = cw.w, a->bw = cw.b;
    return RESATTN_OK;
}

static resattn_status bind_attention(binder *b, const char *blk, resattn_attn *a) {
    char p[128];
    snprintf(p, sizeof p, "%s.se", blk);
    switch (a->kind) {
    case RESATTN_ATTENTION_SE:
        return bind_se(b, p, a);
    case RESATTN_ATTENTION_ECA:
        return bind_eca(b, p, a);
    case RESATTN_ATTENTION_CBAM:
        return bind_cbam(b, p, a);
    case RESATTN_ATTENTION_CA:
        return bind_ca(b, p, a);
    default:
        return RESATTN_OK;
    }
}

/* One residual block; k->cin and k->h/w are set by the caller. */
static resattn_status bind_block(binder *b, const resattn_config *cfg, resattn_block *k) {
    char c[160], n[160];
    resattn_status s;
    int cin = k->cin, mid = ANY, out = ANY;
#define CONV(i) (snprintf(c, sizeof c, "%s.conv%d", k->name, i), c)
#define BN(i) (snprintf(n, sizeof n, "%s.bn%d", k->name, i), n)
    if (cfg->block == RESATTN_BLOCK_BASIC) {
        if ((s = bind_conv(b, CONV(1), BN(1), BIAS_NONE, &cin, &mid, 3, k->stride, 1, &k->conv1)))
            return s;
        if ((s = bind_conv(b, CONV(2), BN(2), BIAS_NONE, &mid, &out, 3, 1, 1, &k->conv2)))
            return s;
    } else {
        int mid2 = ANY;
        if ((s = bind_conv(b, CONV(1), BN(1), BIAS_NONE, &cin, &mid, 1, 1, 0, &k->conv1)))
            return s;
        mid2 = mid;
        if ((s = bind_conv(b, CONV(2), BN(2), BIAS_NONE, &mid, &mid2, 3, k->stride, 1, &k->conv2)))
            return s;
        if ((s = bind_conv(b, CONV(3), BN(3), BIAS_NONE, &mid2, &out, 1, 1, 0, &k->conv3)))
            return s;
    }
#undef CONV
#undef BN
    k->cmid = mid;
    k->cout = out;
    k->ho = resattn_conv_out(k->h, 3, k->stride, 1);
    k->wo = resattn_conv_out(k->w, 3, k->stride, 1);
    k->has_down = k->stride != 1 || k->cin != k->cout;
    if (k->has_down) {
        int dcin = k->cin, dout = k->cout;
        snprintf(c, sizeof c, "%s.downsample.0", k->name);
        snprintf(n, sizeof n, "%s.downsample.1", k->name);
        if ((s = bind_conv(b, c, n, BIAS_NONE, &dcin, &dout, 1, k->stride, 0, &k->down)))
            return s;
    }
    k->att.kind = cfg->attention;
    k->att.c = k->cout;
    return bind_attention(b, k->name, &k->att);
}

static double conv_flops(const resattn_conv *c, int ho, int wo) {
    return 2.0 * c->cout * c->cin * c->k * c->k * ho * wo;
}

static double attn_flops(const resattn_attn *a, int h, int w) {
    double C = a->c, r = a->r, k = a->k;
    switch (a->kind) {
    case RESATTN_ATTENTION_SE:
        return 2.0 * 2 * r * C;
    case RESATTN_ATTENTION_ECA:
        return 2.0 * C * k;
    case RESATTN_ATTENTION_CBAM:
        return 2.0 * 2 * 2 * r * C + 2.0 * 2 * k * k * h * w;
    case RESATTN_ATTENTION_CA:
        return 2.0 * (r * C * (h + w) + C * r * (h + w));
    default:
        return 0;
    }
}

static size_t max_sz(size_t a, size_t b) {
    return a > b ? a : b;
}

/* Stem, then every block, then the head; records the workspace plan and FLOPs. */
static resattn_status bind_network(binder *b, resattn_model *m) {
    const resattn_config *cfg = &m->cfg;
    int img = cfg->stem == RESATTN_STEM_IMAGENET;
    int cin = cfg->in_channels, c0 = ANY;
    resattn_status s = bind_conv(b, "conv1", "bn1", BIAS_NONE, &cin, &c0, img ? 7 : 3, img ? 2 : 1,
                                 img ? 3 : 1, &m->stem);
    if (s)
        return s;
    m->stem_h = resattn_conv_out(cfg->in_height, m->stem.k, m->stem.stride, m->stem.pad);
    m->stem_w = resattn_conv_out(cfg->in_width, m->stem.k, m->stem.stride, m->stem.pad);
    m->pool_h = img ? resattn_conv_out(m->stem_h, 3, 2, 1) : m->stem_h;
    m->pool_w = img ? resattn_conv_out(m->stem_w, 3, 2, 1) : m->stem_w;
    double flops = conv_flops(&m->stem, m->stem_h, m->stem_w);
    size_t act = max_sz((size_t)cfg->in_channels * cfg->in_height * cfg->in_width,
                        (size_t)c0 * m->stem_h * m->stem_w);
    size_t scr = resattn_conv_scratch(&m->stem, cfg->in_height, cfg->in_width), att = 0, mk = 0;
    int ch = c0, h = m->pool_h, w = m->pool_w, nb = 0;
    for (int st = 0; st < cfg->num_stages; st++)
        for (int i = 0; i < cfg->layers[st]; i++) {
            resattn_block *k = &m->blocks[nb++];
            snprintf(k->name, sizeof k->name, "layer%d.%d", st + 1, i);
            k->cin = ch, k->h = h, k->w = w;
            k->stride = st > 0 && i == 0 ? 2 : 1;
            if ((s = bind_block(b, cfg, k)))
                return s;
            act = max_sz(act, (size_t)k->cmid * h * w);
            act = max_sz(act, (size_t)max_sz(k->cmid, k->cout) * k->ho * k->wo);
            flops += conv_flops(&k->conv1, cfg->block ? h : k->ho, cfg->block ? w : k->wo);
            flops += conv_flops(&k->conv2, k->ho, k->wo);
            scr = max_sz(scr, resattn_conv_scratch(&k->conv1, h, w));
            scr = max_sz(scr, resattn_conv_scratch(&k->conv2, cfg->block ? h : k->ho,
                                                   cfg->block ? w : k->wo));
            if (cfg->block == RESATTN_BLOCK_BOTTLENECK)
                flops += conv_flops(&k->conv3, k->ho, k->wo);
            if (k->has_down) {
                flops += conv_flops(&k->down, k->ho, k->wo);
                scr = max_sz(scr, resattn_conv_scratch(&k->down, h, w));
            }
            flops += attn_flops(&k->att, k->ho, k->wo);
            att = max_sz(att, resattn_attn_scratch(&k->att, k->ho, k->wo));
            for (int j = 0; j < resattn_attn_mask_count(k->att.kind); j++) {
                resattn_mask_kind kind;
                int mc, mh, mw;
                resattn_attn_mask_shape(&k->att, j, k->ho, k->wo, &kind, &mc, &mh, &mw);
                k->mask_off[j] = mk;
                mk += (size_t)mc * mh * mw;
            }
            ch = k->cout, h = k->ho, w = k->wo;
        }
    int64_t dw[2] = {cfg->num_classes, ch}, db[1] = {cfg->num_classes};
    float *fw, *fb;
    if ((s = fetch(b, "fc.weight", 2, dw, &fw)) || (s = fetch(b, "fc.bias", 1, db, &fb)))
        return s;
    m->fc_w = fw, m->fc_b = fb;
    m->feat_c = ch, m->feat_h = h, m->feat_w = w;
    m->act_max = act, m->scratch_max = scr, m->att_max = att, m->mask_floats = mk;
    m->info.flops_per_image = flops + 2.0 * cfg->num_classes * ch;
    return RESATTN_OK;
}

/* Every float tensor must have been bound; integer ones are ignored. */
static resattn_status check_extra(binder *b) {
    for (int i = 0; i < b->st->num_tensors; i++) {
        resattn_st_tensor *t = &b->st->tensors[i];
        if (!t->used && t->dtype != RESATTN_DT_INT)
            return failf(b, RESATTN_ERR_TENSOR, "unexpected tensor %s (not used by this config)",
                         t->name);
    }
    return RESATTN_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static void fill_info(resattn_model *m, const resattn_st *st) {
    resattn_model_info *in = &m->info;
    const resattn_config *c = &m->cfg;
    in->name = c->name;
    in->block = c->block, in->stem = c->stem, in->attention = c->attention;
    in->num_stages = c->num_stages;
    memcpy(in->layers, c->layers, sizeof in->layers);
    in->num_classes = c->num_classes;
    in->in_channels = c->in_channels, in->in_height = c->in_height, in->in_width = c->in_width;
    in->labels = (const char *const *)c->labels;
    in->preprocess_json = c->preprocess;
    in->config_json = c->json;
    in->precision = m->bf16 ? RESATTN_PRECISION_BF16 : RESATTN_PRECISION_FP32;
    in->kernel_path = resattn_bf16_path_name(m->bf16); /* "fp32" for an FP32 model */
    /* as PyTorch counts: parameters() holds weights and biases; BatchNorm's running
     * statistics are buffers, counted apart */
    in->num_params = in->num_bn_stats = 0;
    for (int i = 0; i < st->num_tensors; i++) {
        const resattn_st_tensor *t = &st->tensors[i];
        if (t->dtype == RESATTN_DT_INT)
            continue;
        if (ends_with(t->name, ".running_mean") || ends_with(t->name, ".running_var"))
            in->num_bn_stats += t->count;
        else
            in->num_params += t->count;
    }
}

/*
 * The 3x3 stride-1 convolutions of the blocks, each with the h x w it runs on: the layers
 * Winograd may take. Returns how many were written to convs/hs/ws (at most 2 per block).
 */
static int winograd_candidates(resattn_model *m, resattn_conv **convs, int *hs, int *ws) {
    int k = 0;
    for (int i = 0; i < m->info.num_blocks; i++) {
        resattn_block *b = &m->blocks[i];
        int bottleneck = b->conv3.w != NULL;
        resattn_conv *cs[2] = {bottleneck ? &b->conv2 : &b->conv1, bottleneck ? NULL : &b->conv2};
        int h[2] = {b->h, b->ho}, w[2] = {b->w, b->wo};
        for (int j = 0; j < 2; j++)
            if (cs[j] && cs[j]->k == 3 && cs[j]->stride == 1 && cs[j]->pad == 1)
                convs[k] = cs[j], hs[k] = h[j], ws[k++] = w[j];
    }
    return k;
}

/*
 * Give eligible layers a Winograd plan (tile size from resattn_winograd_choose) and their
 * transformed weights, kept beside the direct ones (small batches fall back to direct), and
 * grow the scratch to fit. RESATTN_WINOGRAD=0 turns it off; =2 or =4 forces that tile size
 * on every 3x3 stride-1 layer (tests and benchmarks); =generic keeps the plan and picks the
 * portable transforms (core/kernels/winograd.c).
 */
static resattn_status plan_winograd(resattn_model *m, char *err, size_t err_len) {
    int force = resattn_winograd_env_tile();
    if (force == 0)
        return RESATTN_OK;
    /* On AMX, BF16 tiles multiply several times faster than FP32 Winograd saves: a BF16
     * model there runs every layer direct (unless a tile size is forced). On AVX512-BF16,
     * vdpbf16ps does at most twice the FP32 products per instruction (half as many here, see
     * docs/precision.md) while F(4x4,3x3) needs a quarter of them: Winograd layers stay FP32. */
    if ((m->bf16 == RESATTN_BF16_PATH_AMX || m->bf16 == RESATTN_BF16_PATH_AMX_EMULATED) &&
        force < 0)
        return RESATTN_OK;
    int nb = m->info.num_blocks, *hs = malloc(sizeof(int) * 4 * (size_t)nb), *ws = hs + 2 * nb;
    resattn_conv **convs = malloc(sizeof *convs * 2 * (size_t)nb);
    if (!hs || !convs) {
        free(hs);
        free(convs);
        snprintf(err, err_len, "out of memory planning Winograd layers");
        return RESATTN_ERR_NOMEM;
    }
    int n = winograd_candidates(m, convs, hs, ws);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        resattn_conv *c = convs[i];
        int tm = resattn_winograd_choose(c->cin, c->cout, hs[i], ws[i]);
        c->wino_m = force == 2 || force == 4 ? force : tm;
        if (c->wino_m)
            total += resattn_winograd_weight_floats(c->wino_m, c->cin, c->cout);
    }
    /* with the packed GEMM, plan_packing transforms and packs layer by layer instead */
    int packed = resattn_gemm_available();
    m->wino_arena = total && !packed ? malloc(total * sizeof(float)) : NULL;
    if (total && !packed && !m->wino_arena) {
        free(hs);
        free(convs);
        snprintf(err, err_len, "out of memory for Winograd weights (%zu floats)", total);
        return RESATTN_ERR_NOMEM;
    }
    float *u = m->wino_arena;
    for (int i = 0; i < n; i++) {
        resattn_conv *c = convs[i];
        if (!c->wino_m)
            continue;
        if (!packed) {
            resattn_winograd_transform_weights(c->wino_m, c->w, c->cin, c->cout, u);
            c->wino_u = u;
            u += resattn_winograd_weight_floats(c->wino_m, c->cin, c->cout);
        }
        m->scratch_max = max_sz(m->scratch_max, resattn_conv_scratch(c, hs[i], ws[i]));
    }
    free(hs);
    free(convs);
    return RESATTN_OK;
}

/* Every convolution of the network that goes through resattn_conv_forward; returns the count
 * written to convs (at most 1 + 4 per block). */
static int all_convs(resattn_model *m, resattn_conv **convs) {
    int k = 0;
    convs[k++] = &m->stem;
    for (int i = 0; i < m->info.num_blocks; i++) {
        resattn_block *b = &m->blocks[i];
        resattn_conv *cs[4] = {&b->conv1, &b->conv2, &b->conv3, b->has_down ? &b->down : NULL};
        for (int j = 0; j < 4; j++)
            if (cs[j] && cs[j]->w)
                convs[k++] = cs[j];
    }
    return k;
}

static size_t round16(size_t n) {
    return (n + 15) & ~(size_t)15;
}

/*
 * When the packed AVX-512 GEMM runs on this CPU (core/kernels/gemm.h), pack every convolution's
 * weights for it once: the direct [cout, cin*k*k] matrix and, for Winograd layers, each
 * transform point's [cout, cin] (transformed here, one layer at a time). Peak memory is
 * what the benchmark holds us to, so the direct weights are packed in place when cout is a
 * multiple of the panel height (every real network: the packing is then a permutation of
 * the same floats, and wp == w); only other layers and the Winograd planes take new memory.
 * In a BF16 model only the Winograd planes are packed here (its direct weights are BF16).
 */
static resattn_status plan_packing(resattn_model *m, char *err, size_t err_len) {
    if (!resattn_gemm_available())
        return RESATTN_OK;
    resattn_conv **convs = malloc(sizeof *convs * (1 + 4 * (size_t)m->info.num_blocks));
    if (!convs) {
        snprintf(err, err_len, "out of memory planning packed weights");
        return RESATTN_ERR_NOMEM;
    }
    int n = all_convs(m, convs);
    size_t total = 0, tmp_floats = 0;
    for (int i = 0; i < n; i++) {
        resattn_conv *c = convs[i];
        size_t direct = (size_t)c->cout * c->cin * c->k * c->k;
        tmp_floats = max_sz(tmp_floats, c->bf16 ? 0 : direct);
        if (!c->bf16 && c->cout % RESATTN_GEMM_MR)
            total += round16(resattn_gemm_packed_floats(c->cout, c->cin * c->k * c->k));
        if (c->wino_m) {
            total += round16((size_t)(c->wino_m + 2) * (c->wino_m + 2) *
                             resattn_gemm_packed_floats(c->cout, c->cin));
            tmp_floats =
                max_sz(tmp_floats, resattn_winograd_weight_floats(c->wino_m, c->cin, c->cout));
        }
    }
    m->pack_arena = total ? aligned_alloc(64, total * sizeof(float)) : NULL;
    float *tmp = malloc(tmp_floats * sizeof(float));
    if ((total && !m->pack_arena) || !tmp) {
        free(convs);
        free(tmp);
        snprintf(err, err_len, "out of memory for packed weights (%zu floats)", total);
        return RESATTN_ERR_NOMEM;
    }
    float *p = m->pack_arena;
    for (int i = 0; i < n; i++) {
        resattn_conv *c = convs[i];
        int kk = c->cin * c->k * c->k;
        if (c->wino_m) { /* from the row-major weights, before they are packed below */
            size_t per = resattn_gemm_packed_floats(c->cout, c->cin);
            int a2 = (c->wino_m + 2) * (c->wino_m + 2);
            resattn_winograd_transform_weights(c->wino_m, c->w, c->cin, c->cout, tmp);
            for (int pt = 0; pt < a2; pt++)
                resattn_gemm_pack(tmp + (size_t)pt * c->cout * c->cin, c->cin, c->cout, c->cin,
                                  p + pt * per);
            c->wino_up = p;
            p += round16(a2 * per);
        }
        if (c->bf16) /* its direct weights go to plan_bf16 */
            continue;
        if (c->cout % RESATTN_GEMM_MR == 0) {
            size_t count = (size_t)c->cout * kk;
            resattn_gemm_pack(c->w, kk, c->cout, kk, tmp);
            memcpy((float *)c->w, tmp, count * sizeof(float)); /* the arena is ours */
            c->wp = c->w;
        } else {
            resattn_gemm_pack(c->w, kk, c->cout, kk, p);
            c->wp = p;
            p += round16(resattn_gemm_packed_floats(c->cout, kk));
        }
    }
    free(convs);
    free(tmp);
    return RESATTN_OK;
}

static size_t round32(size_t n) {
    return (n + 31) & ~(size_t)31;
}

/*
 * Give the whole pages inside x[0, n) back to the OS. A BF16 model never reads the FP32
 * copies of its convolution and classifier weights again (the pointers stay, as the "this
 * layer exists" flags the code tests; the memory would read as zeros), so after packing they
 * stop counting against the process's resident memory. Only pages wholly inside the tensor,
 * which lies inside the arena's allocation, are touched.
 */
static void release_floats(const float *x, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    uintptr_t a = ((uintptr_t)x + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t e = (uintptr_t)(x + n) & ~((uintptr_t)page - 1);
    if (e > a)
        madvise((void *)a, e - a, MADV_DONTNEED);
}

/*
 * A BF16 model: every convolution's direct weights rounded and packed for
 * core/kernels/gemm_bf16.c (Winograd layers keep their FP32 planes beside them for the
 * batches that take Winograd), and the classifier's weights rounded, in one 64-byte aligned
 * arena; their FP32 copies are released.
 */
static resattn_status plan_bf16(resattn_model *m, char *err, size_t err_len) {
    if (!m->bf16)
        return RESATTN_OK;
    resattn_conv **convs = malloc(sizeof *convs * (1 + 4 * (size_t)m->info.num_blocks));
    if (!convs) {
        snprintf(err, err_len, "out of memory planning BF16 weights");
        return RESATTN_ERR_NOMEM;
    }
    int n = all_convs(m, convs);
    size_t fc = (size_t)m->cfg.num_classes * m->feat_c, total = round32(fc);
    for (int i = 0; i < n; i++)
        total += round32(resattn_gemm_bf16_packed_elems(convs[i]->cout,
                                                        convs[i]->cin * convs[i]->k * convs[i]->k));
    m->bf16_arena = aligned_alloc(64, total * sizeof(uint16_t));
    if (!m->bf16_arena) {
        free(convs);
        snprintf(err, err_len, "out of memory for BF16 weights (%zu values)", total);
        return RESATTN_ERR_NOMEM;
    }
    uint16_t *p = m->bf16_arena;
    for (int i = 0; i < n; i++) {
        resattn_conv *c = convs[i];
        int kk = c->cin * c->k * c->k;
        resattn_gemm_bf16_pack(c->w, kk, c->cout, kk, p);
        release_floats(c->w, (size_t)c->cout * kk);
        c->wb = p;
        p += round32(resattn_gemm_bf16_packed_elems(c->cout, kk));
    }
    for (size_t i = 0; i < fc; i++)
        p[i] = resattn_bf16_from_f32(m->fc_w[i]);
    release_floats(m->fc_w, fc);
    m->fc_wb = p;
    free(convs);
    return RESATTN_OK;
}

static resattn_status build(resattn_model *m, resattn_st *st, const resattn_model_options *opts,
                            char *err, size_t err_len) {
    resattn_status s = resattn_config_parse(st->config_json, &m->cfg, err, err_len);
    if (s)
        return s;
    int nb = 0;
    for (int i = 0; i < m->cfg.num_stages; i++)
        nb += m->cfg.layers[i];
    m->info.num_blocks = nb;
    size_t total = 0, maxdim = 0;
    for (int i = 0; i < st->num_tensors; i++) {
        total += st->tensors[i].count;
        if (st->tensors[i].ndim)
            maxdim = max_sz(maxdim, (size_t)st->tensors[i].shape[0]);
    }
    /* room for every tensor, zero biases of bias-free convs, and 16-float alignment */
    size_t cap = total + (size_t)(nb + 1) * (8 * maxdim + 40 * 16) + 1024;
    m->blocks = calloc((size_t)nb, sizeof *m->blocks);
    m->arena = malloc(cap * sizeof(float));
    if (!m->blocks || !m->arena) {
        snprintf(err, err_len, "out of memory for the model's weights (%zu floats)", cap);
        return RESATTN_ERR_NOMEM;
    }
    /* BF16 only where this CPU has a BF16 path; the CLI warns when it falls back */
    m->info.precision_requested = opts ? opts->precision : RESATTN_PRECISION_FP32;
    if (m->info.precision_requested == RESATTN_PRECISION_BF16)
        m->bf16 = resattn_bf16_path_detect();
    binder b = {.st = st,
                .arena = m->arena,
                .cap = cap,
                .eps = m->cfg.bn_eps,
                .bf16 = m->bf16,
                .err = err,
                .err_len = err_len};
    if ((s = bind_network(&b, m)) || (s = check_extra(&b)) ||
        (s = plan_winograd(m, err, err_len)) || (s = plan_packing(m, err, err_len)) ||
        (s = plan_bf16(m, err, err_len)))
        return s;
    fill_info(m, st);
    return RESATTN_OK;
}

resattn_status resattn_model_load_buffer_opts(const void *data, size_t len,
                                              const resattn_model_options *opts,
                                              resattn_model **out, char *err, size_t err_len) {
    char dummy[RESATTN_ERR_LEN];
    if (!err || !err_len)
        err = dummy, err_len = sizeof dummy;
    if (!out) {
        snprintf(err, err_len, "out is NULL");
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    if (opts && opts->precision != RESATTN_PRECISION_FP32 &&
        opts->precision != RESATTN_PRECISION_BF16) {
        *out = NULL;
        snprintf(err, err_len, "unknown precision %d (expected FP32 or BF16)",
                 (int)opts->precision);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    *out = NULL;
    resattn_st st;
    resattn_status s = resattn_st_parse(data, len, &st, err, err_len);
    if (s)
        return s;
    resattn_model *m = calloc(1, sizeof *m);
    if (!m) {
        resattn_st_release(&st);
        snprintf(err, err_len, "out of memory");
        return RESATTN_ERR_NOMEM;
    }
    s = build(m, &st, opts, err, err_len);
    resattn_st_release(&st);
    if (s) {
        resattn_model_free(m);
        return s;
    }
    *out = m;
    return RESATTN_OK;
}

resattn_status resattn_model_load_buffer(const void *data, size_t len, resattn_model **out,
                                         char *err, size_t err_len) {
    return resattn_model_load_buffer_opts(data, len, NULL, out, err, err_len);
}

resattn_status resattn_model_load_file(const char *path, resattn_model **out, char *err,
                                       size_t err_len) {
    return resattn_model_load_file_opts(path, NULL, out, err, err_len);
}

resattn_status resattn_model_load_file_opts(const char *path, const resattn_model_options *opts,
                                            resattn_model **out, char *err, size_t err_len) {
    char dummy[RESATTN_ERR_LEN];
    if (!err || !err_len)
        err = dummy, err_len = sizeof dummy;
    if (out)
        *out = NULL;
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) {
        snprintf(err, err_len, "cannot open model file %s: %s", path ? path : "(null)",
                 path ? strerror(errno) : "no path");
        return RESATTN_ERR_IO;
    }
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(err, err_len, "out of memory reading %s", path);
                return RESATTN_ERR_NOMEM;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        snprintf(err, err_len, "read error on model file %s", path);
        return RESATTN_ERR_IO;
    }
    if (len > 8 && !resattn_st_looks_like(buf, len)) {
        free(buf);
        snprintf(err, err_len, "not a safetensors file: %s (" RESATTN_ST_NOT_ST_REASON ")", path);
        return RESATTN_ERR_FORMAT;
    }
    resattn_status s = resattn_model_load_buffer_opts(buf, len, opts, out, err, err_len);
    free(buf);
    if (s) { /* name the file: callers print the message as it is */
        char msg[RESATTN_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, err_len, "%s: %s", path, msg);
    }
    return s;
}

void resattn_model_free(resattn_model *m) {
    if (!m)
        return;
    resattn_config_release(&m->cfg);
    free(m->blocks);
    free(m->arena);
    free(m->wino_arena);
    free(m->pack_arena);
    free(m->bf16_arena);
    free(m);
}

const resattn_model_info *resattn_model_get_info(const resattn_model *m) {
    return m ? &m->info : NULL;
}

const char *resattn_model_block_name(const resattn_model *m, int i) {
    if (!m || i < 0 || i >= m->info.num_blocks)
        return NULL;
    return m->blocks[i].name;
}
