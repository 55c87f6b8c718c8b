/*
 * Parity and the Pattern-1 checklist.
 *  - Every committed PyTorch fixture (tests/fixtures/<block>_<stem>_<attention>[_f16|_bf16]):
 *    logits within 1e-4 of max|ref| and every attention mask within 1e-5, whole batch and
 *    image by image.
 *  - The checklist, on networks built in memory (tests/util_st.c) against naive double
 *    references (tests/util_ref.c): the mask is computed from F(x), not x; it multiplies,
 *    it does not add; a zeroed branch (last BN gamma = beta = 0, so F(x) = 0) gives
 *    relu(x) or relu(downsample(x)); the masks have the documented shapes.
 */
#include "model/model.h"
#include "data/npy.h"
#include "model/safetensors.h"
#include "util_ref.h"
#include "util_st.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const blocks[] = {"basic", "bottleneck"};
static const char *const stems[] = {"cifar", "imagenet"};
static const char *const attentions[] = {"none", "se", "eca", "cbam", "ca"};

static void case_name(int i, char *buf, size_t len) {
    if (i < 20)
        snprintf(buf, len, "%s_%s_%s", blocks[i / 10], stems[(i / 5) % 2], attentions[i % 5]);
    else
        snprintf(buf, len, "basic_cifar_se_%s", i == 20 ? "f16" : "bf16");
}

static void load_npy(const char *path, resattn_npy *a) {
    size_t len;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    char err[RESATTN_ERR_LEN];
    ck_assert_msg(resattn_npy_parse(buf, len, a, err, sizeof err) == RESATTN_OK, "%s: %s", path,
                  err);
    free(buf);
}

static const char *const kind_names[] = {"channel", "spatial", "coord_h", "coord_w"};

/* Compare every reference mask of <case>.masks.safetensors with the captured ones. */
static void check_masks(const char *name, const resattn_model *m, const resattn_ctx *ctx, int n) {
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/%s.masks.safetensors", name);
    size_t len;
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    resattn_st st;
    char err[RESATTN_ERR_LEN];
    ck_assert_msg(resattn_st_parse(buf, len, &st, err, sizeof err) == RESATTN_OK, "%s", err);
    ck_assert_int_eq(st.num_tensors, resattn_ctx_mask_count(ctx));
    double worst = 0;
    for (int t = 0; t < st.num_tensors; t++) {
        const resattn_st_tensor *rt = &st.tensors[t];
        const char *slash = strchr(rt->name, '/');
        ck_assert_ptr_nonnull(slash);
        const resattn_mask *found = NULL;
        for (int i = 0; i < resattn_ctx_mask_count(ctx); i++) {
            const resattn_mask *mk = resattn_ctx_mask(ctx, i);
            const char *bn = resattn_model_block_name(m, mk->block);
            if (strlen(bn) == (size_t)(slash - rt->name) && !strncmp(bn, rt->name, strlen(bn)) &&
                !strcmp(kind_names[mk->kind], slash + 1))
                found = mk;
        }
        ck_assert_msg(found != NULL, "%s: no captured mask %s", name, rt->name);
        /* reference shapes: channel [N,C], spatial [N,H,W], coord_h [N,C,H], coord_w [N,C,W] */
        int64_t want[3];
        int nd = 0;
        want[nd++] = n;
        if (found->kind != RESATTN_MASK_SPATIAL)
            want[nd++] = found->c;
        if (found->kind == RESATTN_MASK_SPATIAL || found->kind == RESATTN_MASK_COORD_H)
            want[nd++] = found->h;
        if (found->kind == RESATTN_MASK_SPATIAL || found->kind == RESATTN_MASK_COORD_W)
            want[nd++] = found->w;
        ck_assert_int_eq(rt->ndim, nd);
        for (int d = 0; d < nd; d++)
            ck_assert_msg(rt->shape[d] == want[d], "%s %s dim %d: %lld vs %lld", name, rt->name, d,
                          (long long)rt->shape[d], (long long)want[d]);
        float *ref = malloc(rt->count * sizeof *ref);
        resattn_st_read_f32(&st, rt, ref);
        double e = ref_max_abs_diff(ref, found->data, rt->count);
        worst = e > worst ? e : worst;
        ck_assert_msg(e <= 1e-5, "%s %s: mask error %g", name, rt->name, e);
        free(ref);
    }
    resattn_st_release(&st);
    free(buf);
}

START_TEST(fixture_parity) {
    char name[64], path[256], err[RESATTN_ERR_LEN];
    case_name(_i, name, sizeof name);
    snprintf(path, sizeof path, "tests/fixtures/%s.safetensors", name);
    resattn_model *m = NULL;
    ck_assert_msg(resattn_model_load_file(path, &m, err, sizeof err) == RESATTN_OK, "%s", err);
    const resattn_model_info *in = resattn_model_get_info(m);
    resattn_npy x, y;
    snprintf(path, sizeof path, "tests/fixtures/%s.in.npy", name);
    load_npy(path, &x);
    snprintf(path, sizeof path, "tests/fixtures/%s.out.npy", name);
    load_npy(path, &y);
    int n = (int)x.shape[0];
    ck_assert_int_eq(x.ndim, 4);
    ck_assert_int_eq(x.shape[1], in->in_channels);
    ck_assert_int_eq(y.shape[1], in->num_classes);
    resattn_ctx *ctx = NULL;
    ck_assert(resattn_ctx_new(m, n, &ctx, err, sizeof err) == RESATTN_OK);
    resattn_ctx_capture_masks(ctx, 1);
    float *logits = malloc(y.count * sizeof *logits), *one = malloc(y.count * sizeof *one);
    ck_assert(resattn_forward(ctx, x.data, n, logits, err, sizeof err) == RESATTN_OK);
    double scale = ref_max_abs(y.data, y.count), e = ref_max_abs_diff(logits, y.data, y.count);
    ck_assert_msg(e <= 1e-4 * scale, "%s: logits error %g (relative %g)", name, e, e / scale);
    check_masks(name, m, ctx, n);
    /* image by image gives the same answer as the batch */
    size_t img = x.count / (size_t)n;
    for (int i = 0; i < n; i++)
        ck_assert(resattn_forward(ctx, x.data + i * img, 1, one + (size_t)i * in->num_classes, err,
                                  sizeof err) == RESATTN_OK);
    ck_assert_double_le(ref_max_abs_diff(one, logits, y.count), 1e-5 * scale);
    free(logits), free(one);
    resattn_npy_release(&x), resattn_npy_release(&y);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
}
END_TEST

/* ---- in-memory networks ------------------------------------------------------------------ */

static resattn_model *load_ut(ut_model *um) {
    size_t len;
    unsigned char *buf = ut_serialize(um, &len);
    char err[RESATTN_ERR_LEN];
    resattn_model *m = NULL;
    ck_assert_msg(resattn_model_load_buffer(buf, len, &m, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    free(buf);
    return m;
}

static double sigm(double v) {
    return 1 / (1 + exp(-v));
}

/* Naive masks of f [C, H, W] (one image) from the block's attention parameters, in double. */
static void naive_masks(const resattn_attn *a, const float *f, int h, int w, float *m0, float *m1) {
    int C = a->c, hw = h * w;
    double *avg = calloc((size_t)C, sizeof *avg), *mx = calloc((size_t)C, sizeof *mx);
    for (int c = 0; c < C; c++) {
        mx[c] = -DBL_MAX;
        for (int p = 0; p < hw; p++) {
            avg[c] += f[c * hw + p] / (double)hw;
            mx[c] = fmax(mx[c], f[c * hw + p]);
        }
    }
    if (a->kind == RESATTN_ATTENTION_SE || a->kind == RESATTN_ATTENTION_CBAM) {
        int cb = a->kind == RESATTN_ATTENTION_CBAM;
        for (int c = 0; c < C; c++) {
            double s = cb ? 0 : a->b2[c];
            for (int pass = 0; pass <= cb; pass++) {
                const double *v = pass ? mx : avg;
                for (int j = 0; j < a->r; j++) {
                    double hj = cb ? 0 : a->b1[j];
                    for (int k = 0; k < C; k++)
                        hj += a->w1[j * C + k] * v[k];
                    s += a->w2[c * a->r + j] * fmax(hj, 0);
                }
            }
            m0[c] = (float)sigm(s);
        }
    }
    if (a->kind == RESATTN_ATTENTION_ECA)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int j = 0; j < a->k; j++) {
                int src = c + j - (a->k - 1) / 2;
                s += (src >= 0 && src < C) ? a->wk[j] * avg[src] : 0;
            }
            m0[c] = (float)sigm(s);
        }
    if (a->kind == RESATTN_ATTENTION_CBAM)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double s = a->bk;
                for (int ky = 0; ky < a->k; ky++)
                    for (int kx = 0; kx < a->k; kx++) {
                        int iy = y + ky - a->k / 2, ix = x + kx - a->k / 2;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                            continue;
                        double mean = 0, mxv = -DBL_MAX;
                        for (int c = 0; c < C; c++) {
                            double v = (double)f[c * hw + iy * w + ix] * m0[c];
                            mean += v / C;
                            mxv = fmax(mxv, v);
                        }
                        s += a->wk[ky * a->k + kx] * mean +
                             a->wk[a->k * a->k + ky * a->k + kx] * mxv;
                    }
                m1[y * w + x] = (float)sigm(s);
            }
    if (a->kind == RESATTN_ATTENTION_CA) {
        int L = h + w, m = a->r;
        double *z = calloc((size_t)C * L, sizeof *z), *t = calloc((size_t)m * L, sizeof *t);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    z[c * L + y] += f[c * hw + y * w + x] / (double)w;
                    z[c * L + h + x] += f[c * hw + y * w + x] / (double)h;
                }
        for (int o = 0; o < m; o++)
            for (int l = 0; l < L; l++) {
                double s = a->b1[o];
                for (int c = 0; c < C; c++)
                    s += a->w1[o * C + c] * z[c * L + l];
                t[o * L + l] = s * fmin(fmax(s + 3, 0), 6) / 6;
            }
        for (int c = 0; c < C; c++)
            for (int l = 0; l < L; l++) {
                double s = l < h ? a->bh[c] : a->bw[c];
                for (int o = 0; o < m; o++)
                    s += (l < h ? a->wh : a->ww)[c * m + o] * t[o * L + l];
                if (l < h)
                    m0[c * h + l] = (float)sigm(s);
                else
                    m1[c * w + l - h] = (float)sigm(s);
            }
        free(z), free(t);
    }
    free(avg), free(mx);
}

/* Workspace for running one block of model m directly, batch n. */
typedef struct {
    resattn_block_ws ws;
    float *bufs[8];
} block_ws;

static void ws_new(block_ws *b, const resattn_model *m, int n) {
    size_t act = (size_t)n * m->act_max + 16;
    size_t sizes[8] = {act, act, act, act, m->scratch_max + 16, m->att_max + 16, act, act};
    for (int i = 0; i < 8; i++)
        b->bufs[i] = calloc(sizes[i], sizeof(float));
    b->ws = (resattn_block_ws){b->bufs[0], b->bufs[1], b->bufs[2], b->bufs[3],
                               b->bufs[4], b->bufs[5], b->bufs[6], b->bufs[7]};
}

static void ws_free(block_ws *b) {
    for (int i = 0; i < 8; i++)
        free(b->bufs[i]);
}

/* F(x) of a basic block from its folded convolutions, with the naive convolution. */
static void naive_branch(const resattn_block *b, const float *x, int n, float *t, float *f) {
    const resattn_conv *c1 = &b->conv1, *c2 = &b->conv2;
    ref_conv(x, n, c1->cin, b->h, b->w, c1->w, c1->b, c1->cout, 3, c1->stride, 1, 1, t);
    ref_conv(t, n, c2->cin, b->ho, b->wo, c2->w, c2->b, c2->cout, 3, 1, 1, 0, f);
}

/*
 * One block (shape-preserving, so s = x): the engine's masks equal masks computed from
 * F(x) and differ from masks computed from x; y = relu(x + a ⊙ F(x)), which differs from
 * relu(x + a + F(x)).
 */
START_TEST(mask_from_branch_and_multiplies) {
    static const char *const kinds[] = {"se", "eca", "cbam", "ca"};
    const int layers[1] = {1}, widths[1] = {6};
    int n = 2, C = 6, H = 9, W = 7;
    ut_model um;
    ut_model_init(&um, NULL, 7 + _i);
    ut_build_resnet(&um, "basic", "cifar", kinds[_i], 1, layers, widths, 3, H, W, 4);
    resattn_model *m = load_ut(&um);
    const resattn_block *b = &m->blocks[0];
    ck_assert(!b->has_down && b->cin == C && b->cout == C);
    size_t cnt = (size_t)n * C * H * W, per = (size_t)C * H * W;
    float *x = malloc(cnt * 4), *t = malloc(cnt * 4), *f = malloc(cnt * 4), *y = malloc(cnt * 4);
    ref_fill(x, cnt, 99);
    for (size_t i = 0; i < cnt; i++)
        x[i] = x[i] * 2.0f + (float)(i % 7) * 0.3f; /* x far from F(x) */
    block_ws bw;
    ws_new(&bw, m, n);
    resattn_block_forward(b, x, n, y, &bw.ws);
    naive_branch(b, x, n, t, f);
    /* masks: [C] or [C,H] (m0) and [H,W] or [C,W] (m1) per image */
    size_t s0 = b->att.kind == RESATTN_ATTENTION_CA ? (size_t)C * H : (size_t)C;
    size_t s1 = b->att.kind == RESATTN_ATTENTION_CA ? (size_t)C * W : (size_t)H * W;
    float *r0 = calloc(s0 * n, 4), *r1 = calloc(s1 * n, 4), *x0 = calloc(s0 * n, 4),
          *x1 = calloc(s1 * n, 4);
    for (int i = 0; i < n; i++) {
        naive_masks(&b->att, f + i * per, H, W, r0 + i * s0, r1 + i * s1);
        naive_masks(&b->att, x + i * per, H, W, x0 + i * s0, x1 + i * s1);
    }
    int two = resattn_attn_mask_count(b->att.kind) == 2;
    double e = ref_max_abs_diff(bw.ws.m0, r0, s0 * n);
    if (two)
        e = fmax(e, ref_max_abs_diff(bw.ws.m1, r1, s1 * n));
    ck_assert_msg(e <= 1e-5, "%s: mask vs mask-of-F(x) error %g", kinds[_i], e);
    double ex = ref_max_abs_diff(bw.ws.m0, x0, s0 * n);
    if (two)
        ex = fmax(ex, ref_max_abs_diff(bw.ws.m1, x1, s1 * n));
    ck_assert_msg(ex > 1e-3, "%s: mask of x is indistinguishable (%g)", kinds[_i], ex);
    /* y = relu(x + a ⊙ f) with the reference masks, vs the additive alternative */
    double emul = 0, eadd = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++) {
                    size_t k = i * per + ((size_t)c * H + yy) * W + xx;
                    double a;
                    if (b->att.kind == RESATTN_ATTENTION_CA)
                        a = (double)r0[i * s0 + c * H + yy] * r1[i * s1 + c * W + xx];
                    else if (b->att.kind == RESATTN_ATTENTION_CBAM)
                        a = (double)r0[i * s0 + c] * r1[i * s1 + yy * W + xx];
                    else
                        a = r0[i * s0 + c];
                    emul = fmax(emul, fabs(y[k] - fmax(x[k] + a * f[k], 0)));
                    eadd = fmax(eadd, fabs(y[k] - fmax(x[k] + a + f[k], 0)));
                }
    ck_assert_msg(emul <= 1e-4, "%s: y != relu(x + a*f): %g", kinds[_i], emul);
    ck_assert_msg(eadd > 1e-2, "%s: additive mask indistinguishable (%g)", kinds[_i], eadd);
    free(x), free(t), free(f), free(y), free(r0), free(r1), free(x0), free(x1);
    ws_free(&bw);
    resattn_model_free(m);
    ut_model_free(&um);
}
END_TEST

/* Zero the last BN of each block's branch: gamma = beta = 0 makes F(x) = 0. */
static void zero_branches(ut_model *um, int bott) {
    for (int i = 0; i < um->n; i++) {
        ut_tensor *t = &um->t[i];
        const char *p = strstr(t->name, bott ? ".bn3." : ".bn2.");
        if (p && strncmp(t->name, "layer", 5) == 0 &&
            (!strcmp(p + 5, "weight") || !strcmp(p + 5, "bias")))
            memset(t->data, 0, t->count * sizeof(float));
    }
}

/*
 * Zeroed branch: each block returns relu(x) (no downsample) or relu(BN(conv1x1(x)))
 * computed here from the raw file tensors, whatever the attention.
 */
START_TEST(zeroed_branch_gives_relu_skip) {
    int bott = _i / 5;
    const char *att = attentions[_i % 5];
    const int layers[2] = {1, 1}, widths[2] = {4, 6};
    int n = 2, H = 9, W = 7;
    ut_model um;
    ut_model_init(&um, NULL, 300 + _i);
    ut_build_resnet(&um, blocks[bott], "cifar", att, 2, layers, widths, 4, H, W, 3);
    zero_branches(&um, bott);
    resattn_model *m = load_ut(&um);
    block_ws bw;
    ws_new(&bw, m, n);
    for (int k = 0; k < m->info.num_blocks; k++) {
        const resattn_block *b = &m->blocks[k];
        size_t nin = (size_t)n * b->cin * b->h * b->w, nout = (size_t)n * b->cout * b->ho * b->wo;
        float *x = malloc(nin * 4), *y = malloc(nout * 4), *want = malloc(nout * 4);
        ref_fill(x, nin, 5 + k);
        resattn_block_forward(b, x, n, y, &bw.ws);
        if (!b->has_down) {
            ck_assert_int_eq(nin, nout);
            memcpy(want, x, nin * 4);
        } else {
            char nm[4][96];
            const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
            const float *bn[4];
            for (int j = 0; j < 4; j++) {
                snprintf(nm[j], sizeof nm[j], "%s.downsample.1.%s", b->name, parts[j]);
                bn[j] = ut_find(&um, nm[j])->data;
            }
            snprintf(nm[0], sizeof nm[0], "%s.downsample.0.weight", b->name);
            ref_conv(x, n, b->cin, b->h, b->w, ut_find(&um, nm[0])->data, NULL, b->cout, 1,
                     b->stride, 0, 0, want);
            ref_bn(want, n, b->cout, b->ho * b->wo, bn[0], bn[1], bn[2], bn[3], 1e-5);
        }
        for (size_t i = 0; i < nout; i++)
            want[i] = want[i] > 0 ? want[i] : 0;
        double e = ref_max_abs_diff(y, want, nout);
        ck_assert_msg(e <= 1e-5 * fmax(1, ref_max_abs(want, nout)), "%s %s %s: error %g",
                      blocks[bott], att, b->name, e);
        free(x), free(y), free(want);
    }
    ws_free(&bw);
    resattn_model_free(m);
    ut_model_free(&um);
}
END_TEST

/* End to end through the public API: a zeroed-branch network is stem -> GAP -> fc. */
START_TEST(zeroed_network_end_to_end) {
    const int layers[1] = {2}, widths[1] = {5};
    int n = 3, C = 2, H = 11, W = 9, K = 4;
    ut_model um;
    ut_model_init(&um, NULL, 77);
    ut_build_resnet(&um, "basic", "cifar", attentions[_i], 1, layers, widths, C, H, W, K);
    zero_branches(&um, 0);
    resattn_model *m = load_ut(&um);
    resattn_ctx *ctx = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_ctx_new(m, n, &ctx, err, sizeof err) == RESATTN_OK);
    size_t nin = (size_t)n * C * H * W, nf = (size_t)n * 5 * H * W;
    float *x = malloc(nin * 4), *s = malloc(nf * 4), pooled[15], want[12], got[12];
    ref_fill(x, nin, 11);
    ref_conv(x, n, C, H, W, ut_find(&um, "conv1.weight")->data, NULL, 5, 3, 1, 1, 0, s);
    ref_bn(s, n, 5, H * W, ut_find(&um, "bn1.weight")->data, ut_find(&um, "bn1.bias")->data,
           ut_find(&um, "bn1.running_mean")->data, ut_find(&um, "bn1.running_var")->data, 1e-5);
    for (size_t i = 0; i < nf; i++)
        s[i] = s[i] > 0 ? s[i] : 0;
    ref_gap(s, n * 5, H * W, pooled);
    ref_linear(pooled, n, 5, ut_find(&um, "fc.weight")->data, ut_find(&um, "fc.bias")->data, K,
               want);
    ck_assert(resattn_forward(ctx, x, n, got, err, sizeof err) == RESATTN_OK);
    ck_assert_double_le(ref_max_abs_diff(got, want, (size_t)n * K),
                        1e-5 * fmax(1, ref_max_abs(want, (size_t)n * K)));
    free(x), free(s);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    ut_model_free(&um);
}
END_TEST

/* Mask count, kinds and shapes through the public API; nothing kept when capture is off. */
START_TEST(mask_shapes) {
    const char *att = attentions[_i];
    const int layers[2] = {1, 2}, widths[2] = {4, 8};
    int n = 2, H = 45, W = 37;
    ut_model um;
    ut_model_init(&um, NULL, 500 + _i);
    ut_build_resnet(&um, "basic", "imagenet", att, 2, layers, widths, 1, H, W, 3);
    resattn_model *m = load_ut(&um);
    resattn_ctx *ctx = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_ctx_new(m, n, &ctx, err, sizeof err) == RESATTN_OK);
    float *x = calloc((size_t)n * H * W, 4), logits[6];
    ref_fill(x, (size_t)n * H * W, 1);
    ck_assert(resattn_forward(ctx, x, n, logits, err, sizeof err) == RESATTN_OK);
    ck_assert_int_eq(resattn_ctx_mask_count(ctx), 0); /* capture off */
    resattn_ctx_capture_masks(ctx, 1);
    ck_assert(resattn_forward(ctx, x, n, logits, err, sizeof err) == RESATTN_OK);
    /* stem 45x37 -> 23x19 -> pool 12x10; layer2 11x... stride 2 -> 6x5 */
    static const int per_kind[5] = {0, 1, 1, 2, 2};
    ck_assert_int_eq(resattn_ctx_mask_count(ctx), 3 * per_kind[_i]);
    for (int i = 0; i < resattn_ctx_mask_count(ctx); i++) {
        const resattn_mask *mk = resattn_ctx_mask(ctx, i);
        int blk = i / per_kind[_i], h = blk == 0 ? 12 : 6, w = blk == 0 ? 10 : 5;
        int c = blk == 0 ? 4 : 8, j = i % per_kind[_i];
        ck_assert_int_eq(mk->block, blk);
        int ec = c, eh = 1, ew = 1;
        resattn_mask_kind ek = RESATTN_MASK_CHANNEL;
        if (!strcmp(att, "cbam") && j == 1)
            ek = RESATTN_MASK_SPATIAL, ec = 1, eh = h, ew = w;
        if (!strcmp(att, "ca"))
            ek = j ? RESATTN_MASK_COORD_W : RESATTN_MASK_COORD_H, eh = j ? 1 : h, ew = j ? w : 1;
        ck_assert_int_eq(mk->kind, ek);
        ck_assert_int_eq(mk->c, ec);
        ck_assert_int_eq(mk->h, eh);
        ck_assert_int_eq(mk->w, ew);
        for (size_t k = 0; k < (size_t)n * ec * eh * ew; k++) /* sigmoid outputs */
            ck_assert(mk->data[k] > 0.0f && mk->data[k] < 1.0f);
    }
    ck_assert_ptr_null(resattn_ctx_mask(ctx, resattn_ctx_mask_count(ctx)));
    ck_assert_ptr_null(resattn_ctx_mask(ctx, -1));
    resattn_ctx_capture_masks(ctx, 0);
    ck_assert_int_eq(resattn_ctx_mask_count(ctx), 0);
    free(x);
    resattn_ctx_free(ctx);
    resattn_model_free(m);
    ut_model_free(&um);
}
END_TEST

START_TEST(forward_rejects_bad_batch) {
    const int layers[1] = {1}, widths[1] = {4};
    ut_model um;
    ut_model_init(&um, NULL, 3);
    ut_build_resnet(&um, "basic", "cifar", "se", 1, layers, widths, 1, 5, 5, 2);
    resattn_model *m = load_ut(&um);
    resattn_ctx *ctx = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert(resattn_ctx_new(m, 0, &ctx, err, sizeof err) == RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert(resattn_ctx_new(m, 2, &ctx, err, sizeof err) == RESATTN_OK);
    ck_assert(resattn_ctx_workspace_bytes(ctx) > 0);
    float x[3 * 25] = {0}, y[6];
    ck_assert(resattn_forward(ctx, x, 3, y, err, sizeof err) == RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert(resattn_forward(ctx, x, 0, y, err, sizeof err) == RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert(resattn_forward(ctx, x, 2, y, err, sizeof err) == RESATTN_OK);
    resattn_ctx_free(ctx);
    resattn_ctx_free(NULL);
    resattn_model_free(m);
    ut_model_free(&um);
    ck_assert_str_eq(resattn_version(), "0.1.0");
    ck_assert_str_eq(resattn_status_name(RESATTN_ERR_TENSOR), "tensor");
}
END_TEST

Suite *parity_suite(void) {
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("fixtures");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, fixture_parity, 0, 22);
    suite_add_tcase(s, tc);
    tc = tcase_create("pattern1");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, mask_from_branch_and_multiplies, 0, 4);
    tcase_add_loop_test(tc, zeroed_branch_gives_relu_skip, 0, 10);
    tcase_add_loop_test(tc, zeroed_network_end_to_end, 0, 5);
    tcase_add_loop_test(tc, mask_shapes, 0, 5);
    tcase_add_test(tc, forward_rejects_bad_batch);
    suite_add_tcase(s, tc);
    return s;
}
