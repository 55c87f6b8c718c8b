/*
 * Captured attention masks, copied out of a context, and their per-block summaries.
 *
 * A context's masks (resattn_ctx_mask) live only until its next forward pass and hold the
 * whole batch. A server worker runs one batch for several requests, so it copies each
 * request's slice of images into a resattn_mask_set that travels with the request. The
 * summary of one mask of one image is: mean, min, max, the fraction of values below 0.1
 * (the attention turns those channels/positions nearly off) and above 0.9 (nearly
 * saturated) — enough to see a dead (all ≈ 0.5) or saturated mask at a glance.
 */
#ifndef RESATTN_MASK_SUMMARY_H
#define RESATTN_MASK_SUMMARY_H

#include <resattn/resattn.h>
#include <jansson.h>
#include <stddef.h>

/* Owned copies of every mask of n images. masks[i].data is [n, c, h, w] (unused extents 1),
 * malloc'ed and owned by the set; masks are ordered as the context gave them. */
typedef struct resattn_mask_set {
    int n;               /* images */
    int count;           /* masks */
    resattn_mask *masks; /* [count] */
    char **block_names;  /* [count], the block name of each mask, owned */
} resattn_mask_set;

/* Copy images [first, first + n) of the context's last forward pass. With capture off (or
 * a model without attention) the set is valid and empty (count 0). */
resattn_status resattn_mask_set_copy(const resattn_model *model, const resattn_ctx *ctx, int first,
                                     int n, resattn_mask_set **out, char *err, size_t err_len);
void resattn_mask_set_free(resattn_mask_set *set);

/* Values per image of mask m: c * h * w. */
size_t resattn_mask_size(const resattn_mask *m);
/* Data of image `image` (0-based within whatever batch m->data holds). */
const float *resattn_mask_image(const resattn_mask *m, int image);

/* "channel", "spatial", "coord_h", "coord_w". */
const char *resattn_mask_kind_name(resattn_mask_kind kind);

typedef struct resattn_mask_stats {
    size_t count; /* values summarised */
    double mean;
    float min, max;
    double frac_low;  /* fraction of values < 0.1 */
    double frac_high; /* fraction of values > 0.9 */
} resattn_mask_stats;

/* Summary of v[0 .. count). count 0 gives all zeros. */
void resattn_mask_stats_compute(const float *v, size_t count, resattn_mask_stats *out);

/*
 * The per-block summary of one image as JSON, grouped by block in network order:
 *   [{"block": "layer1.0",
 *     "channel": {"shape": [C], "mean": m, "min": a, "max": b,
 *                 "frac_lt_0_1": p, "frac_gt_0_9": q},
 *     "spatial": {...shape [H, W]...}, "coord_h": {...[C, H]...}, "coord_w": {...[C, W]...}}]
 * Only the kinds the block has appear. Returns a new reference, or NULL on allocation
 * failure or an image out of range.
 */
json_t *resattn_mask_summary_json(const resattn_mask_set *set, int image);

#endif
