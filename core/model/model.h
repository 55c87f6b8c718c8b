/*
 * Internal layout of a loaded model and of an execution context. A model holds the
 * BatchNorm-folded weights of every layer, each layer's spatial plan, and the per-image
 * workspace sizes; it is immutable after loading. A context owns the workspace for up to
 * max_batch images and the attention masks of the last forward pass.
 */
#ifndef RESATTN_MODEL_H
#define RESATTN_MODEL_H

#include "model/config.h"
#include "kernels/ops.h"
#include <resattn/resattn.h>

/* One attention module's folded parameters; C = block output channels. */
typedef struct resattn_attn {
    resattn_attention_kind kind;
    int c; /* channels of f */
    int r; /* SE/CBAM reduction width, CA mid width m */
    int k; /* ECA kernel (1-D), CBAM spatial kernel (k x k) */
    const float *w1,
        *b1; /* SE fc1 [r, C] + [r]; CBAM fc1 [r, C] (b1 NULL); CA conv1+bn1 [m, C] + [m] */
    const float *w2, *b2; /* SE fc2 [C, r] + [C]; CBAM fc2 [C, r] (b2 NULL) */
    const float *wh, *bh; /* CA conv_h [C, m] + [C] (zeros when the file has no bias) */
    const float *ww, *bw; /* CA conv_w [C, m] + [C] */
    const float *wk;      /* ECA [k]; CBAM spatial conv+bn folded [2, k, k] */
    float bk;             /* CBAM spatial folded bias */
} resattn_attn;

/* Masks per image an attention kind produces (0, 1 or 2). */
int resattn_attn_mask_count(resattn_attention_kind kind);
/* Kind and per-image extents (c, h, w) of mask j of a block with f [C, H, W]. */
void resattn_attn_mask_shape(const resattn_attn *a, int j, int h, int w, resattn_mask_kind *kind,
                             int *mc, int *mh, int *mw);
/* Floats of scratch per image the attention needs for f [C, H, W]. */
size_t resattn_attn_scratch(const resattn_attn *a, int h, int w);
/*
 * Compute the masks of f [n, C, H, W] (from f only): m0/m1 are [n, ...] per the mask shapes
 * (channel [n, C]; CBAM m1 spatial [n, H, W]; CA m0 [n, C, H], m1 [n, C, W]).
 */
void resattn_attn_masks(const resattn_attn *a, const float *f, int n, int h, int w, float *m0,
                        float *m1, float *scratch);

typedef struct resattn_block {
    char name[32]; /* "layer{S}.{B}" */
    int cin, cmid, cout, stride;
    int h, w, ho, wo;                 /* input and output spatial extents */
    resattn_conv conv1, conv2, conv3; /* conv3 only for bottleneck */
    int has_down;
    resattn_conv down; /* 1x1 conv with the block's stride + BN */
    resattn_attn att;
    size_t mask_off[2]; /* per-image float offsets of this block's masks in the mask area */
} resattn_block;

/* Buffers a block works in, each sized for the batch by the context. */
typedef struct resattn_block_ws {
    float *t1, *t2, *t3; /* branch intermediates [n, <= act_max] */
    float *s;            /* downsampled skip [n, cout, ho, wo] */
    float *scratch;      /* conv scratch (one image) */
    float *att;          /* attention scratch [n, att_max] */
    float *m0, *m1;      /* this block's masks */
} resattn_block_ws;

/* x [n, cin, h, w] -> y [n, cout, ho, wo]: y = relu(s + A(F(x)) ⊙ F(x)). */
void resattn_block_forward(const resattn_block *b, const float *x, int n, float *y,
                           const resattn_block_ws *ws);

struct resattn_model {
    resattn_model_info info;
    resattn_config cfg;
    resattn_conv stem;     /* conv1 + bn1 folded */
    int stem_h, stem_w;    /* after conv1 */
    int pool_h, pool_w;    /* after the max pool (imagenet) or = stem (cifar) */
    resattn_block *blocks; /* [num_blocks] */
    int feat_c, feat_h, feat_w;
    const float *fc_w, *fc_b; /* [num_classes, feat_c], [num_classes] */
    float *arena;             /* every folded weight */
    float *wino_arena;        /* Winograd-transformed weights of the layers that have a plan */
    float *pack_arena;      /* the convolutions' weights packed for core/kernels/gemm.c, or NULL */
    resattn_bf16_path bf16; /* a BF16 model: the path of its products; NONE: an FP32 model */
    const uint16_t *fc_wb;  /* BF16 model: fc_w in BF16 [num_classes, feat_c], else NULL */
    uint16_t *bf16_arena;   /* BF16 model: every BF16 weight (convolutions packed, fc) */
    size_t act_max;         /* floats: largest activation of one image */
    size_t scratch_max;     /* floats: largest conv scratch of one image */
    size_t att_max;         /* floats: largest attention scratch of one image */
    size_t mask_floats;     /* floats: all masks of one image */
};

struct resattn_ctx {
    const resattn_model *model;
    int max_batch;
    float *mem; /* one allocation holding everything below */
    size_t mem_floats;
    float *x, *y, *t1, *t2, *t3, *s; /* [max_batch, act_max] each */
    float *scratch;                  /* [scratch_max] */
    float *att;                      /* [max_batch, att_max] */
    float *scratch2, *att2;          /* second half of a split batch (max_batch >= 2), or NULL */
    float *masks;                    /* [max_batch, mask_floats] */
    float *pooled;                   /* [max_batch, feat_c] */
    int capture, mask_count;
    resattn_mask *mask_list; /* [2 * num_blocks] */
};

#endif
