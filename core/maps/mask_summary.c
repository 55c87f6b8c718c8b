/*
 * Copies of captured attention masks (one request's images out of a batch) and their
 * summaries (mean, min, max, fraction < 0.1, fraction > 0.9) as numbers and as JSON.
 * See mask_summary.h for why the copies exist.
 */
#include "maps/mask_summary.h"
#include "model/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t resattn_mask_size(const resattn_mask *m) {
    return (size_t)m->c * (size_t)m->h * (size_t)m->w;
}

const float *resattn_mask_image(const resattn_mask *m, int image) {
    return m->data + (size_t)image * resattn_mask_size(m);
}

const char *resattn_mask_kind_name(resattn_mask_kind kind) {
    switch (kind) {
    case RESATTN_MASK_CHANNEL:
        return "channel";
    case RESATTN_MASK_SPATIAL:
        return "spatial";
    case RESATTN_MASK_COORD_H:
        return "coord_h";
    case RESATTN_MASK_COORD_W:
        return "coord_w";
    }
    return "unknown";
}

void resattn_mask_set_free(resattn_mask_set *set) {
    if (!set)
        return;
    for (int i = 0; i < set->count; i++) {
        free((void *)set->masks[i].data);
        if (set->block_names)
            free(set->block_names[i]);
    }
    free(set->masks);
    free(set->block_names);
    free(set);
}

resattn_status resattn_mask_set_copy(const resattn_model *model, const resattn_ctx *ctx, int first,
                                     int n, resattn_mask_set **out, char *err, size_t err_len) {
    *out = NULL;
    if (!model || !ctx || first < 0 || n < 1)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "mask copy: bad arguments (first %d, n %d)", first, n);
    resattn_mask_set *set = calloc(1, sizeof *set);
    if (!set)
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "mask copy: out of memory");
    set->n = n;
    int count = resattn_ctx_mask_count(ctx);
    if (count > 0) {
        set->masks = calloc((size_t)count, sizeof *set->masks);
        set->block_names = calloc((size_t)count, sizeof *set->block_names);
        if (!set->masks || !set->block_names)
            goto nomem;
    }
    for (int i = 0; i < count; i++) {
        const resattn_mask *m = resattn_ctx_mask(ctx, i);
        if (!m)
            break;
        size_t per = resattn_mask_size(m);
        float *data = malloc(per * (size_t)n * sizeof *data);
        const char *name = resattn_model_block_name(model, m->block);
        char *name_copy = strdup(name ? name : "?");
        if (!data || !name_copy) {
            free(data);
            free(name_copy);
            goto nomem;
        }
        /* The context holds [batch, ...]; this request owns images [first, first + n). */
        memcpy(data, resattn_mask_image(m, first), per * (size_t)n * sizeof *data);
        set->masks[i] = *m;
        set->masks[i].data = data;
        set->block_names[i] = name_copy;
        set->count = i + 1;
    }
    *out = set;
    return RESATTN_OK;
nomem:
    resattn_mask_set_free(set);
    return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "mask copy: out of memory");
}

void resattn_mask_stats_compute(const float *v, size_t count, resattn_mask_stats *out) {
    memset(out, 0, sizeof *out);
    out->count = count;
    if (count == 0)
        return;
    double sum = 0;
    size_t low = 0, high = 0;
    float lo = v[0], hi = v[0];
    for (size_t i = 0; i < count; i++) {
        float x = v[i];
        sum += x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        low += x < 0.1f;
        high += x > 0.9f;
    }
    out->mean = sum / (double)count;
    out->min = lo;
    out->max = hi;
    out->frac_low = (double)low / (double)count;
    out->frac_high = (double)high / (double)count;
}

/* {"shape": [...], "mean": .., "min": .., "max": .., "frac_lt_0_1": .., "frac_gt_0_9": ..} */
static json_t *mask_json(const resattn_mask *m, int image) {
    resattn_mask_stats st;
    resattn_mask_stats_compute(resattn_mask_image(m, image), resattn_mask_size(m), &st);
    json_t *shape = NULL;
    switch (m->kind) {
    case RESATTN_MASK_CHANNEL:
        shape = json_pack("[i]", m->c);
        break;
    case RESATTN_MASK_SPATIAL:
        shape = json_pack("[ii]", m->h, m->w);
        break;
    case RESATTN_MASK_COORD_H:
        shape = json_pack("[ii]", m->c, m->h);
        break;
    case RESATTN_MASK_COORD_W:
        shape = json_pack("[ii]", m->c, m->w);
        break;
    }
    if (!shape)
        return NULL;
    return json_pack("{s:o,s:f,s:f,s:f,s:f,s:f}", "shape", shape, "mean", st.mean, "min",
                     (double)st.min, "max", (double)st.max, "frac_lt_0_1", st.frac_low,
                     "frac_gt_0_9", st.frac_high);
}

json_t *resattn_mask_summary_json(const resattn_mask_set *set, int image) {
    if (!set || image < 0 || image >= set->n)
        return NULL;
    json_t *arr = json_array();
    json_t *cur = NULL; /* the entry of the block being filled */
    int cur_block = -1;
    if (!arr)
        return NULL;
    for (int i = 0; i < set->count; i++) {
        const resattn_mask *m = &set->masks[i];
        if (!cur || m->block != cur_block) {
            cur = json_pack("{s:s}", "block", set->block_names[i]);
            if (!cur || json_array_append_new(arr, cur))
                goto fail;
            cur_block = m->block;
        }
        json_t *entry = mask_json(m, image);
        if (!entry || json_object_set_new(cur, resattn_mask_kind_name(m->kind), entry))
            goto fail;
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}
