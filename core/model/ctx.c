/*
 * Execution contexts and the network forward pass. resattn_ctx_new sizes every buffer once
 * from the model's plan and max_batch; resattn_forward only reads the model and writes the
 * context, so one context per thread needs no lock. Also: attention-mask capture, the
 * OpenBLAS thread controls, status and precision names and the version.
 */
#include "model/model.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"

#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

resattn_status resattn_ctx_new(const resattn_model *m, int max_batch, resattn_ctx **out, char *err,
                               size_t err_len) {
    char dummy[RESATTN_ERR_LEN];
    if (!err || !err_len)
        err = dummy, err_len = sizeof dummy;
    if (out)
        *out = NULL;
    if (!m || !out || max_batch < 1 || max_batch > 1 << 16) {
        snprintf(err, err_len, "resattn_ctx_new: need a model and 1 <= max_batch <= 65536 (got %d)",
                 max_batch);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    size_t B = (size_t)max_batch, per = 6 * m->act_max + m->mask_floats + m->feat_c;
    if (per > SIZE_MAX / sizeof(float) / 2 / B ||
        m->scratch_max + m->att_max > SIZE_MAX / sizeof(float) / 4) {
        snprintf(err, err_len, "workspace for batch %d of this model overflows memory sizes",
                 max_batch);
        return RESATTN_ERR_NOMEM;
    }
    resattn_ctx *c = calloc(1, sizeof *c);
    size_t act = B * m->act_max;
    size_t total = 6 * act + m->scratch_max + m->att_max + B * m->mask_floats + B * m->feat_c;
    if (B >= 2) /* a second conv and attention scratch: the batch may be split over 2 threads */
        total += m->scratch_max + m->att_max;
    /* 16 floats of slack per buffer keeps every buffer 64-byte aligned */
    total += 13 * 16;
    if (c) {
        c->mem = aligned_alloc(64, ((total * sizeof(float) + 63) / 64) * 64);
        c->mask_list = calloc(2 * (size_t)m->info.num_blocks + 1, sizeof *c->mask_list);
    }
    if (!c || !c->mem || !c->mask_list) {
        resattn_ctx_free(c);
        snprintf(err, err_len, "out of memory for a workspace of %zu MB",
                 total * sizeof(float) >> 20);
        return RESATTN_ERR_NOMEM;
    }
    c->model = m;
    c->max_batch = max_batch;
    c->mem_floats = total;
    float *p = c->mem;
#define CARVE(field, n) (c->field = p, p += (((n) + 15) & ~(size_t)15))
    CARVE(x, act);
    CARVE(y, act);
    CARVE(t1, act);
    CARVE(t2, act);
    CARVE(t3, act);
    CARVE(s, act);
    CARVE(scratch, m->scratch_max);
    CARVE(att, m->att_max);
    CARVE(masks, B * m->mask_floats);
    CARVE(pooled, B * m->feat_c);
    if (B >= 2) {
        CARVE(scratch2, m->scratch_max);
        CARVE(att2, m->att_max);
    }
#undef CARVE
    *out = c;
    return RESATTN_OK;
}

void resattn_ctx_free(resattn_ctx *c) {
    if (!c)
        return;
    free(c->mem);
    free(c->mask_list);
    free(c);
}

size_t resattn_ctx_workspace_bytes(const resattn_ctx *c) {
    return c ? c->mem_floats * sizeof(float) : 0;
}

/* Block i's mask j for this batch: [n, per-image] contiguous, laid out for max_batch. */
static float *mask_ptr(const resattn_ctx *c, const resattn_block *b, int j) {
    return c->masks + (size_t)c->max_batch * b->mask_off[j];
}

static void record_masks(resattn_ctx *c, int n) {
    const resattn_model *m = c->model;
    c->mask_count = 0;
    if (!c->capture)
        return;
    (void)n;
    for (int i = 0; i < m->info.num_blocks; i++) {
        const resattn_block *b = &m->blocks[i];
        for (int j = 0; j < resattn_attn_mask_count(b->att.kind); j++) {
            resattn_mask *mk = &c->mask_list[c->mask_count++];
            mk->block = i;
            resattn_attn_mask_shape(&b->att, j, b->ho, b->wo, &mk->kind, &mk->c, &mk->h, &mk->w);
            mk->data = mask_ptr(c, b, j);
        }
    }
}

/* Floats per image of block b's mask j. */
static size_t mask_image_floats(const resattn_block *b, int j) {
    resattn_mask_kind kind;
    int mc, mh, mw;
    resattn_attn_mask_shape(&b->att, j, b->ho, b->wo, &kind, &mc, &mh, &mw);
    return (size_t)mc * mh * mw;
}

/*
 * Images [i0, i0 + n) of a batch, through the whole network. Each part works in its own
 * slice of the activation buffers (offset i0 * act_max, disjoint from the other part's)
 * and writes its images' masks, pooled features and logits where the whole batch would.
 */
typedef struct part {
    resattn_ctx *c;
    const float *input;
    float *logits;
    int i0, n;
    float *scratch, *att; /* this part's conv and attention scratch */
} part;

static void forward_part(const part *p) {
    resattn_ctx *c = p->c;
    const resattn_model *m = c->model;
    const resattn_config *cfg = &m->cfg;
    int n = p->n;
    size_t off = (size_t)p->i0 * m->act_max;
    const float *input =
        p->input + (size_t)p->i0 * cfg->in_channels * cfg->in_height * cfg->in_width;
    float *cur = c->x + off, *nxt = c->y + off;
    if (cfg->stem == RESATTN_STEM_IMAGENET) {
        resattn_conv_forward(&m->stem, input, n, cfg->in_height, cfg->in_width, c->t1 + off, 1,
                             p->scratch);
        resattn_maxpool3s2(c->t1 + off, n * m->stem.cout, m->stem_h, m->stem_w, cur);
    } else {
        resattn_conv_forward(&m->stem, input, n, cfg->in_height, cfg->in_width, cur, 1, p->scratch);
    }
    resattn_block_ws ws = {.t1 = c->t1 + off,
                           .t2 = c->t2 + off,
                           .t3 = c->t3 + off,
                           .s = c->s + off,
                           .scratch = p->scratch,
                           .att = p->att};
    for (int i = 0; i < m->info.num_blocks; i++) {
        const resattn_block *b = &m->blocks[i];
        int nm = resattn_attn_mask_count(b->att.kind);
        ws.m0 = nm > 0 ? mask_ptr(c, b, 0) + (size_t)p->i0 * mask_image_floats(b, 0) : NULL;
        ws.m1 = nm > 1 ? mask_ptr(c, b, 1) + (size_t)p->i0 * mask_image_floats(b, 1) : NULL;
        resattn_block_forward(b, cur, n, nxt, &ws);
        float *t = cur;
        cur = nxt, nxt = t;
    }
    float *pooled = c->pooled + (size_t)p->i0 * m->feat_c;
    resattn_gap(cur, n * m->feat_c, m->feat_h * m->feat_w, pooled);
    float *logits = p->logits + (size_t)p->i0 * cfg->num_classes;
    if (m->fc_wb) { /* BF16 model: the features enter the product rounded */
        resattn_bf16_round_inplace(pooled, (size_t)n * m->feat_c);
        resattn_linear_bf16(pooled, n, m->feat_c, m->fc_wb, m->fc_b, cfg->num_classes, logits);
    } else {
        resattn_linear(pooled, n, m->feat_c, m->fc_w, m->fc_b, cfg->num_classes, logits);
    }
}

/* The two halves of a split batch as a core/kernels/parallel.c task; when the helper thread is
 * taken (another context holds it) the one part runs both halves in turn. The layers of a
 * half run whole: the helper is already busy with the other half. */
static void split_part(void *arg, int which, int nparts) {
    const part *halves = arg;
    resattn_parallel_in_split(1);
    for (int h = which; h < 2; h += nparts)
        forward_part(&halves[h]);
    resattn_parallel_in_split(0);
}

resattn_status resattn_forward(resattn_ctx *c, const float *input, int n, float *logits, char *err,
                               size_t err_len) {
    if (!c || !input || !logits || n < 1 || n > c->max_batch) {
        if (err && err_len)
            snprintf(err, err_len, "resattn_forward: batch %d outside 1..%d or NULL argument", n,
                     c ? c->max_batch : 0);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    if (n >= 2 && resattn_parallel_wanted() && c->scratch2) {
        /*
         * Two threads, two half batches, one thread each: the whole network runs in
         * parallel (im2col, transforms, pooling, attention, epilogues), not only inside the
         * GEMMs. On the sgemm path OpenBLAS drops to one thread meanwhile (its setting is
         * process-wide: restored afterwards).
         */
        part halves[2] = {{c, input, logits, 0, (n + 1) / 2, c->scratch, c->att},
                          {c, input, logits, (n + 1) / 2, n / 2, c->scratch2, c->att2}};
        int blas = openblas_get_num_threads();
        if (!resattn_gemm_available())
            openblas_set_num_threads(1);
        resattn_parallel2(split_part, halves, 1);
        if (!resattn_gemm_available())
            openblas_set_num_threads(blas);
    } else {
        part whole = {c, input, logits, 0, n, c->scratch, c->att};
        forward_part(&whole);
    }
    record_masks(c, n);
    return RESATTN_OK;
}

void resattn_ctx_capture_masks(resattn_ctx *c, int on) {
    if (c) {
        c->capture = on != 0;
        if (!on)
            c->mask_count = 0;
    }
}

int resattn_ctx_mask_count(const resattn_ctx *c) {
    return c ? c->mask_count : 0;
}

const resattn_mask *resattn_ctx_mask(const resattn_ctx *c, int i) {
    if (!c || i < 0 || i >= c->mask_count)
        return NULL;
    return &c->mask_list[i];
}

/* The budget covers both engines: OpenBLAS's threads (the sgemm path) and the two-way
 * split of core/kernels/parallel.c (the packed path, which never calls OpenBLAS in a forward). */
void resattn_set_blas_threads(int n) {
    openblas_set_num_threads(n < 1 ? 1 : n);
    resattn_parallel_set_threads(n);
}

int resattn_get_blas_threads(void) {
    return resattn_parallel_threads();
}

const char *resattn_blas_corename(void) {
    return openblas_get_corename();
}

int resattn_blas_parallel(void) {
    return openblas_get_parallel();
}

const char *resattn_precision_name(resattn_precision p) {
    return p == RESATTN_PRECISION_BF16 ? "bf16" : "fp32";
}

int resattn_precision_parse(const char *s, resattn_precision *out) {
    if (s && !strcasecmp(s, "fp32"))
        *out = RESATTN_PRECISION_FP32;
    else if (s && !strcasecmp(s, "bf16"))
        *out = RESATTN_PRECISION_BF16;
    else
        return -1;
    return 0;
}

const char *resattn_status_name(resattn_status s) {
    static const char *const names[] = {
        "ok", "io", "format", "config", "tensor", "invalid_argument", "nomem"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

const char *resattn_version(void) {
    return RESATTN_VERSION;
}

const char *resattn_gemm_path(void) {
    return resattn_gemm_available() ? "avx512_packed" : "openblas";
}
