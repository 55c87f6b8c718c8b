/*
 * Attention masks over HTTP (see attention_api.h): validating what a request asks for
 * against the model, and writing the masks, their summaries and their pictures into the
 * v2 and /predict answers. The masks themselves were copied for the request by the worker
 * (req->masks, a resattn_mask_set with the request's n images).
 */
#include "protocol/attention_api.h"
#include "maps/heatmap.h"
#include "maps/mask_summary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "attention/"

int resattn_attention_is_output(const char *name) {
    return !strncmp(name, PREFIX, strlen(PREFIX));
}

/* Whether the model's attention produces masks of kind `kind` ("channel", ...). */
static int model_has_kind(const resattn_model_info *model, const char *kind) {
    switch (model->attention) {
    case RESATTN_ATTENTION_SE:
    case RESATTN_ATTENTION_ECA:
        return !strcmp(kind, "channel");
    case RESATTN_ATTENTION_CBAM:
        return !strcmp(kind, "channel") || !strcmp(kind, "spatial");
    case RESATTN_ATTENTION_CA:
        return !strcmp(kind, "coord_h") || !strcmp(kind, "coord_w");
    case RESATTN_ATTENTION_NONE:
        break;
    }
    return 0;
}

int resattn_attention_add_output(resattn_infer_request *req, const resattn_model_info *model,
                                 const char *name, int binary, char *err, size_t err_len) {
    /* Block names follow the contract: layer<S>.<B>, S from 1, B from 0. */
    const char *rest = name + strlen(PREFIX);
    int stage = 0, block = 0, used = 0;
    if (model->attention == RESATTN_ATTENTION_NONE) {
        snprintf(err, err_len, "output '%.64s': this model has no attention", name);
        return 400;
    }
    char canon[32] = "";
    if (sscanf(rest, "layer%d.%d%n", &stage, &block, &used) == 2)
        snprintf(canon, sizeof canon, "layer%d.%d", stage, block);
    /* canon rejects what sscanf forgives: signs, spaces, leading zeros */
    if (!canon[0] || strncmp(rest, canon, strlen(canon)) || (size_t)used != strlen(canon) ||
        (rest[used] && rest[used] != '/') || stage < 1 || stage > model->num_stages || block < 0 ||
        block >= model->layers[stage - 1]) {
        snprintf(err, err_len,
                 "output '%.64s' names no block of this model (attention/layer<S>.<B>, S in "
                 "1..%d)",
                 name, model->num_stages);
        return 400;
    }
    if (rest[used] == '/' && !model_has_kind(model, rest + used + 1)) {
        snprintf(err, err_len,
                 "output '%.64s': this model's blocks have no '%.16s' mask (kinds: channel, "
                 "spatial for CBAM, coord_h, coord_w for CA)",
                 name, rest + used + 1);
        return 400;
    }
    resattn_attn_output *o =
        realloc(req->attn_outputs, sizeof *o * (size_t)(req->num_attn_outputs + 1));
    if (!o) {
        snprintf(err, err_len, "out of memory for output '%.64s'", name);
        return 500;
    }
    req->attn_outputs = o;
    o += req->num_attn_outputs;
    if (!(o->name = strdup(name))) {
        snprintf(err, err_len, "out of memory for output '%.64s'", name);
        return 500;
    }
    o->binary = binary;
    req->num_attn_outputs++;
    req->attention |= RESATTN_ATTN_TENSORS;
    return 0;
}

/* A boolean member `key` of params into flag. */
static int read_flag(json_t *params, const char *key, unsigned flag, unsigned *flags, char *err,
                     size_t err_len) {
    json_t *v = json_object_get(params, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v)) {
        snprintf(err, err_len, "parameters.%s is not a boolean", key);
        return 400;
    }
    if (json_is_true(v))
        *flags |= flag;
    return 0;
}

int resattn_attention_v2_params(json_t *params, resattn_infer_request *req,
                                const resattn_model_info *model, char *err, size_t err_len) {
    if (!json_is_object(params))
        return 0;
    unsigned flags = 0;
    int st = read_flag(params, "attention", RESATTN_ATTN_SUMMARY, &flags, err, err_len);
    if (!st)
        st = read_flag(params, "attention_images", RESATTN_ATTN_SUMMARY | RESATTN_ATTN_IMAGES,
                       &flags, err, err_len);
    if (!st && flags && model->attention == RESATTN_ATTENTION_NONE) {
        snprintf(err, err_len, "parameters.attention: this model has no attention");
        st = 400;
    }
    if (!st)
        req->attention |= flags;
    return st;
}

int resattn_attention_query(const char *value) {
    if (!value || !*value || !strcmp(value, "0") || !strcmp(value, "false"))
        return 0;
    if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "summary"))
        return RESATTN_ATTN_SUMMARY;
    if (!strcmp(value, "images"))
        return RESATTN_ATTN_SUMMARY | RESATTN_ATTN_IMAGES;
    return -1;
}

int resattn_attention_apply_query(resattn_infer_request *req, const resattn_model_info *model,
                                  const char *value, char *err, size_t err_len) {
    if (!value)
        return 0;
    int flags = resattn_attention_query(value);
    if (flags < 0) {
        snprintf(err, err_len,
                 "query parameter attention '%.32s' is not one of 1, true, summary, images, 0, "
                 "false",
                 value);
        return 400;
    }
    if (flags && model->attention == RESATTN_ATTENTION_NONE) {
        snprintf(err, err_len, "query parameter attention: this model has no attention");
        return 400;
    }
    req->attention |= (unsigned)flags;
    return 0;
}

void resattn_attention_request_release(resattn_infer_request *req) {
    for (int i = 0; i < req->num_attn_outputs; i++)
        free(req->attn_outputs[i].name);
    free(req->attn_outputs);
    resattn_mask_set_free(req->masks);
    req->attn_outputs = NULL;
    req->num_attn_outputs = 0;
    req->masks = NULL;
}

/* Whether mask i of set is selected by output name `want` ("attention/<block>[/<kind>]"). */
static int selects(const resattn_mask_set *set, int i, const char *want) {
    const char *rest = want + strlen(PREFIX), *block = set->block_names[i];
    size_t bl = strlen(block);
    if (strncmp(rest, block, bl))
        return 0;
    if (!rest[bl])
        return 1;
    return rest[bl] == '/' && !strcmp(rest + bl + 1, resattn_mask_kind_name(set->masks[i].kind));
}

/* One tensor {"name":"attention/<block>/<kind>","datatype":"FP32","shape":[n,...],...}. */
static void encode_mask(const resattn_mask_set *set, int i, int binary, resattn_buf *b,
                        resattn_buf *tail) {
    const resattn_mask *m = &set->masks[i];
    char head[320];
    int d1 = m->kind == RESATTN_MASK_SPATIAL ? m->h : m->c;
    int d2 = m->kind == RESATTN_MASK_SPATIAL   ? m->w
             : m->kind == RESATTN_MASK_COORD_H ? m->h
             : m->kind == RESATTN_MASK_COORD_W ? m->w
                                               : 0;
    char shape[64];
    if (d2)
        snprintf(shape, sizeof shape, "[%d,%d,%d]", set->n, d1, d2);
    else
        snprintf(shape, sizeof shape, "[%d,%d]", set->n, d1);
    resattn_buf_str(b, "{\"name\":");
    snprintf(head, sizeof head, PREFIX "%s/%s", set->block_names[i],
             resattn_mask_kind_name(m->kind));
    resattn_buf_json_string(b, head);
    snprintf(head, sizeof head, ",\"datatype\":\"FP32\",\"shape\":%s,", shape);
    resattn_buf_str(b, head);
    size_t count = resattn_mask_size(m) * (size_t)set->n;
    if (binary) {
        snprintf(head, sizeof head, "\"parameters\":{\"binary_data_size\":%zu}}",
                 count * sizeof(float));
        resattn_buf_str(b, head);
        resattn_buf_put(tail, m->data, count * sizeof(float));
    } else {
        resattn_buf_str(b, "\"data\":");
        resattn_buf_floats(b, m->data, count);
        resattn_buf_str(b, "}");
    }
}

int resattn_attention_v2_encode_outputs(const resattn_infer_request *req, resattn_buf *b,
                                        resattn_buf *tail, int need_comma) {
    if (!req->num_attn_outputs)
        return 0;
    const resattn_mask_set *set = req->masks;
    if (!set)
        return 500;
    /* Each mask once, in network order, even when two requested names select it. */
    for (int i = 0; i < set->count; i++) {
        int binary = -1;
        for (int o = 0; o < req->num_attn_outputs; o++)
            if (selects(set, i, req->attn_outputs[o].name))
                binary = binary > 0 ? 1 : req->attn_outputs[o].binary;
        if (binary < 0)
            continue;
        if (need_comma)
            resattn_buf_str(b, ",");
        need_comma = 1;
        encode_mask(set, i, binary, b, tail);
    }
    return b->failed || tail->failed ? 500 : 0;
}

json_t *resattn_attention_image_json(const resattn_infer_request *req, int i) {
    if (!req->masks)
        return NULL;
    size_t per = (size_t)req->c * (size_t)req->h * (size_t)req->w;
    const float *chw =
        (req->attention & RESATTN_ATTN_IMAGES) && req->input ? req->input + (size_t)i * per : NULL;
    char err[RESATTN_ERR_LEN];
    return resattn_attention_json(req->masks, i, chw, req->c, req->h, req->w, err, sizeof err);
}

/* One summary per image of the request, as a JSON array; NULL when out of memory. */
static json_t *attention_all_images_json(const resattn_infer_request *req) {
    json_t *all = json_array();
    for (int i = 0; all && i < req->n; i++) {
        json_t *one = resattn_attention_image_json(req, i);
        if (!one || json_array_append_new(all, one)) {
            json_decref(all);
            all = NULL;
        }
    }
    return all;
}

json_t *resattn_attention_predict_json(const resattn_infer_request *req) {
    if (req->n == 1)
        return resattn_attention_image_json(req, 0);
    return attention_all_images_json(req);
}
