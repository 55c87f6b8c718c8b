/*
 * Attention masks over HTTP: what a request may ask for and how the answer carries it.
 *
 * Asking (parsed into resattn_infer_request.attention / .attn_outputs):
 *   v2        "outputs": [{"name": "attention/<block>"}]            every mask of the block
 *             "outputs": [{"name": "attention/<block>/<kind>"}]     one mask (channel, spatial,
 *                                                                   coord_h, coord_w)
 *             "outputs": [{"name": "attention_summary"}], or
 *             "parameters": {"attention": true}                     per-block summary
 *             "parameters": {"attention_images": true}              summary + base64 PNGs
 *   both      ?attention=1 (or true, summary) | ?attention=images
 * Answering:
 *   v2        output tensors "attention/<block>/<kind>", FP32, shape [n, C] | [n, H, W] |
 *             [n, C, H] | [n, C, W] (binary_data honoured); the summary as the output
 *             "attention_summary", BYTES [n], each element an image summary as JSON text
 *             (server/protocol/v2_outputs.c)
 *   /predict  "attention": <image summary> in each image's answer
 * where an image summary is core/maps/mask_summary.h's per-block array, plus "images" with
 * base64 PNGs ("channel" bars, "spatial" / "coord" heatmaps over the input) when asked.
 * The worker captures masks only for batches holding such a request (pool.c), copying
 * each request's images into req->masks.
 */
#ifndef RESATTN_ATTENTION_API_H
#define RESATTN_ATTENTION_API_H

#include "protocol/protocol.h"
#include "protocol/protocol_common.h"
#include <jansson.h>

/* One v2 output of attention masks a request asked for. */
typedef struct resattn_attn_output {
    char *name; /* "attention/<block>" or "attention/<block>/<kind>", owned */
    int binary; /* answer as binary_data */
} resattn_attn_output;

/* Whether an output name is in the attention namespace ("attention/..."). */
int resattn_attention_is_output(const char *name);

/* Check an "attention/..." output name against the model (block exists, kind is one the
 * model's attention has) and add it to req. Returns 0, or 400 with err filled. */
int resattn_attention_add_output(resattn_infer_request *req, const resattn_model_info *model,
                                 const char *name, int binary, char *err, size_t err_len);

/* Read "attention" / "attention_images" (booleans) of a v2 "parameters" object (may be
 * NULL). Returns 0, or 400 with err filled. */
int resattn_attention_v2_params(json_t *params, resattn_infer_request *req,
                                const resattn_model_info *model, char *err, size_t err_len);

/* Value of the ?attention= query parameter: RESATTN_ATTN_* flags, or -1 when invalid.
 * "1", "true", "summary" → summary; "images" → summary + images; "0", "false", "" → 0. */
int resattn_attention_query(const char *value);

/* Apply the ?attention= query value (NULL when absent) to a parsed request: 0, or 400
 * with err filled (unknown value, or a model without attention). */
int resattn_attention_apply_query(resattn_infer_request *req, const resattn_model_info *model,
                                  const char *value, char *err, size_t err_len);

/* Free what the attention part of a request owns (called by resattn_infer_request_release). */
void resattn_attention_request_release(resattn_infer_request *req);

/* v2: append the requested mask tensors to an "outputs" array being written into b (binary
 * ones to tail); `need_comma` when outputs were written before. Returns 0 or 500. */
int resattn_attention_v2_encode_outputs(const resattn_infer_request *req, resattn_buf *b,
                                        resattn_buf *tail, int need_comma);

/* The summary (with pictures if asked) of image i of req, or NULL on failure. */
json_t *resattn_attention_image_json(const resattn_infer_request *req, int i);

/* The "attention" member of a /predict answer: the image summary for one image, an array
 * of them (one per image, like "batch") for several. NULL on failure. */
json_t *resattn_attention_predict_json(const resattn_infer_request *req);

#endif
