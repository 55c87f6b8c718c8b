/*
 * The outputs of the v2 answer (see v2_outputs.h): the model and server metadata (the
 * model's with its precision and kernel path as "parameters"), reading what a request asks
 * for, and writing the answer. Tensors are written straight into a growable buffer (the JSON
 * part) and a second one (the binary part, appended after the JSON when an output is
 * binary); the per-image attention summaries are the only part built with jansson.
 */
#include "protocol/v2_outputs.h"

#include "data/preprocess.h"
#include "protocol/attention_api.h"
#include "protocol/protocol_common.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUMMARY_NAME "attention_summary"
#define ALL_OUTPUTS (RESATTN_OUT_DEFAULT | RESATTN_OUT_ATTENTION_SUMMARY)
#define NAMES_MSG                                                                                  \
    "logits, probabilities, top_k_labels, top_k_indices, top_k_probabilities, "                    \
    "attention/<block>[/<kind>], " SUMMARY_NAME

/* The outputs the model metadata lists, in answer order. */
static const struct {
    const char *name;
    unsigned bit;
    const char *datatype;
    int per_class; /* shape [-1, K]; else [-1, -1] (K = top_k) */
} listed[] = {
    {"logits", RESATTN_OUT_LOGITS, "FP32", 1},
    {"probabilities", RESATTN_OUT_PROBABILITIES, "FP32", 1},
    {"top_k_labels", RESATTN_OUT_TOP_K_LABELS, "BYTES", 0},
    {"top_k_indices", RESATTN_OUT_TOP_K_INDICES, "INT64", 0},
    {"top_k_probabilities", RESATTN_OUT_TOP_K_PROBABILITIES, "FP32", 0},
};
#define NUM_LISTED (sizeof listed / sizeof listed[0])

int resattn_top_k_clamp(int k, const resattn_model_info *model) {
    if (k <= 0)
        k = RESATTN_DEFAULT_TOP_K;
    return k < model->num_classes ? k : model->num_classes;
}

/* ---- metadata ------------------------------------------------------------------------- */

int resattn_v2_model_metadata(const char *name, const resattn_model_info *model,
                              resattn_response_body *out) {
    static const char *const one[] = {"1"};
    return resattn_v2_model_metadata_at(name, one, 1, model, out);
}

int resattn_v2_model_metadata_at(const char *name, const char *const *versions, int num_versions,
                                 const resattn_model_info *model, resattn_response_body *out) {
    json_t *inputs =
        json_pack("[{s:s, s:s, s:[i,i,i,i]}]", "name", RESATTN_V2_INPUT, "datatype", "FP32",
                  "shape", -1, model->in_channels, model->in_height, model->in_width);
    resattn_preprocess pp;
    char err[RESATTN_ERR_LEN];
    /* encoded images, when the model's config says how to turn them into its input */
    if (inputs && resattn_preprocess_from_model(model, &pp, err, sizeof err) == RESATTN_OK)
        json_array_append_new(inputs, json_pack("{s:s, s:s, s:[i]}", "name", RESATTN_V2_IMAGE_INPUT,
                                                "datatype", "BYTES", "shape", -1));
    json_t *outputs = json_array();
    for (size_t i = 0; outputs && i < NUM_LISTED; i++)
        json_array_append_new(outputs, json_pack("{s:s, s:s, s:[i,i]}", "name", listed[i].name,
                                                 "datatype", listed[i].datatype, "shape", -1,
                                                 listed[i].per_class ? model->num_classes : -1));
    json_t *labels = json_array();
    for (int i = 0; labels && i < num_versions; i++)
        json_array_append_new(labels, json_string(versions[i]));
    /* "parameters": how the model computes (precision, kernel path), as Triton's model
     * configurations carry theirs; an info without a kernel path is an FP32 one */
    json_t *params =
        json_pack("{s:s, s:s, s:s}", "precision", resattn_precision_name(model->precision),
                  "precision_requested", resattn_precision_name(model->precision_requested),
                  "kernel_path", model->kernel_path ? model->kernel_path : "fp32");
    /* platform: the spec's <project>_<format> */
    return resattn_json_response(json_pack("{s:s, s:o, s:s, s:o, s:o, s:o}", "name",
                                           name ? name : "", "versions", labels, "platform",
                                           "resattn_safetensors", "inputs", inputs, "outputs",
                                           outputs, "parameters", params),
                                 JSON_COMPACT, out);
}

int resattn_v2_server_metadata(const char *version, resattn_response_body *out) {
    return resattn_json_response(json_pack("{s:s, s:s, s:[s,s,s,s]}", "name", "resattn", "version",
                                           version ? version : "", "extensions",
                                           "binary_tensor_data", "classification",
                                           "model_repository", "statistics"),
                                 JSON_COMPACT, out);
}

/* ---- what a request asks for ---------------------------------------------------------- */

/* The request-level "parameters": binary_data_output into *bdo, top_k, attention. */
static int read_params(json_t *params, const resattn_model_info *model, resattn_infer_request *out,
                       int *bdo, char *err, size_t err_len) {
    if (params && !json_is_object(params))
        return resattn_proto_fail(err, err_len, 400, "parameters is not an object");
    json_t *b = json_object_get(params, "binary_data_output");
    if (b && !json_is_boolean(b))
        return resattn_proto_fail(err, err_len, 400,
                                  "parameters.binary_data_output is not a boolean");
    *bdo = json_is_true(b);
    json_t *k = json_object_get(params, "top_k");
    if (k && (!json_is_integer(k) || json_integer_value(k) < 1 || json_integer_value(k) > 1000000))
        return resattn_proto_fail(err, err_len, 400, "parameters.top_k must be a positive integer");
    out->top_k = resattn_top_k_clamp(k ? (int)json_integer_value(k) : 0, model);
    return resattn_attention_v2_params(params, out, model, err, err_len);
}

/* outputs[i].parameters: binary_data (default: binary_data_output) and classification. */
static int read_output_params(json_t *o, size_t i, int bdo, int *binary, int *classes, char *err,
                              size_t err_len) {
    json_t *op = json_object_get(o, "parameters");
    json_t *bd = json_object_get(op, "binary_data"), *c = json_object_get(op, "classification");
    if (op && !json_is_object(op))
        return resattn_proto_fail(err, err_len, 400, "outputs[%zu].parameters is not an object", i);
    if (bd && !json_is_boolean(bd))
        return resattn_proto_fail(err, err_len, 400,
                                  "outputs[%zu].parameters.binary_data is not a boolean", i);
    if (c && (!json_is_integer(c) || json_integer_value(c) < 0))
        return resattn_proto_fail(
            err, err_len, 400,
            "outputs[%zu].parameters.classification must be a non-negative integer (the "
            "number of classes to return)",
            i);
    *binary = bd ? json_is_true(bd) : bdo;
    /* 0 asks for the tensor itself, as in Triton */
    *classes = c ? (int)(json_integer_value(c) < INT_MAX ? json_integer_value(c) : INT_MAX) : 0;
    return 0;
}

/* Output i called nm: set its bit, binary flag and classification in out. */
static int add_output(const char *nm, size_t i, int binary, int classes,
                      const resattn_model_info *model, resattn_infer_request *out, char *err,
                      size_t err_len) {
    unsigned bit = 0;
    for (size_t j = 0; j < NUM_LISTED && !bit; j++)
        bit = strcmp(nm, listed[j].name) ? 0 : listed[j].bit;
    int summary = !strcmp(nm, SUMMARY_NAME), attention = resattn_attention_is_output(nm);
    if (!bit && !summary && !attention)
        return resattn_proto_fail(
            err, err_len, 400,
            "outputs[%zu].name '%.64s' is not an output of this model (" NAMES_MSG ")", i, nm);
    if (classes && bit != RESATTN_OUT_LOGITS && bit != RESATTN_OUT_PROBABILITIES)
        return resattn_proto_fail(
            err, err_len, 400,
            "outputs[%zu].parameters.classification: only logits and probabilities can "
            "be classified, not '%.64s'",
            i, nm);
    if (attention)
        return resattn_attention_add_output(out, model, nm, binary, err, err_len);
    if (summary) {
        if (model->attention == RESATTN_ATTENTION_NONE)
            return resattn_proto_fail(err, err_len, 400, "output '%s': this model has no attention",
                                      SUMMARY_NAME);
        out->attention |= RESATTN_ATTN_SUMMARY;
        bit = RESATTN_OUT_ATTENTION_SUMMARY;
    }
    out->outputs |= bit;
    out->binary |= binary ? bit : 0;
    if (classes)
        out->classification[bit == RESATTN_OUT_PROBABILITIES] =
            classes < model->num_classes ? classes : model->num_classes;
    return 0;
}

int resattn_v2_read_options(json_t *root, const resattn_model_info *model,
                            resattn_infer_request *out, char *err, size_t err_len) {
    int bdo = 0;
    int st = read_params(json_object_get(root, "parameters"), model, out, &bdo, err, err_len);
    if (st)
        return st;
    json_t *outs = json_object_get(root, "outputs");
    if (outs && !json_is_array(outs))
        return resattn_proto_fail(err, err_len, 400, "outputs is not an array");
    if (!json_array_size(outs)) { /* absent or []: every output the metadata lists */
        out->outputs = RESATTN_OUT_DEFAULT;
        out->binary = bdo ? ALL_OUTPUTS : 0;
        return 0;
    }
    out->outputs = out->binary = 0; /* exactly the outputs named */
    size_t i;
    json_t *o;
    json_array_foreach(outs, i, o) {
        const char *nm = json_string_value(json_object_get(o, "name"));
        if (!json_is_object(o) || !nm)
            return resattn_proto_fail(err, err_len, 400,
                                      "outputs[%zu] must be an object with a string \"name\"", i);
        /* every earlier name was valid (else we stopped there): a short loop */
        for (size_t j = 0; j < i; j++)
            if (!strcmp(nm, json_string_value(json_object_get(json_array_get(outs, j), "name"))))
                return resattn_proto_fail(err, err_len, 400,
                                          "outputs[%zu].name '%.64s' is listed twice", i, nm);
        int binary = 0, classes = 0;
        st = read_output_params(o, i, bdo, &binary, &classes, err, err_len);
        if (!st)
            st = add_output(nm, i, binary, classes, model, out, err, err_len);
        if (st)
            return st;
    }
    out->outputs_named = 1;
    /* a summary asked for by parameters.attention follows binary_data_output */
    if (bdo && !(out->outputs & RESATTN_OUT_ATTENTION_SUMMARY))
        out->binary |= RESATTN_OUT_ATTENTION_SUMMARY;
    return 0;
}

/* ---- the answer ----------------------------------------------------------------------- */

typedef struct enc {
    resattn_buf json, tail; /* the JSON part; the binary part after it */
} enc;

/* '{"name":...,"datatype":...,"shape":[n(,k)],' of one output (k < 0: shape [n]). */
static void out_head(enc *e, const char *name, const char *datatype, int n, int k) {
    char s[96];
    if (e->json.len && e->json.data[e->json.len - 1] != '[')
        resattn_buf_str(&e->json, ",");
    resattn_buf_str(&e->json, "{\"name\":");
    resattn_buf_json_string(&e->json, name);
    if (k < 0)
        snprintf(s, sizeof s, ",\"datatype\":\"%s\",\"shape\":[%d],", datatype, n);
    else
        snprintf(s, sizeof s, ",\"datatype\":\"%s\",\"shape\":[%d,%d],", datatype, n, k);
    resattn_buf_str(&e->json, s);
}

/* The end of a binary output, whose `bytes` were appended to the tail. */
static void out_binary_end(enc *e, size_t bytes) {
    char s[64];
    snprintf(s, sizeof s, "\"parameters\":{\"binary_data_size\":%zu}}", bytes);
    resattn_buf_str(&e->json, s);
}

static void put_f32(enc *e, const char *name, const float *x, int n, int k, int binary) {
    size_t count = (size_t)n * (size_t)k;
    out_head(e, name, "FP32", n, k);
    if (binary) {
        resattn_buf_put(&e->tail, x, count * sizeof(float)); /* little-endian float32 */
        out_binary_end(e, count * sizeof(float));
        return;
    }
    resattn_buf_str(&e->json, "\"data\":");
    resattn_buf_floats(&e->json, x, count);
    resattn_buf_str(&e->json, "}");
}

static void put_i64(enc *e, const char *name, const int *v, int n, int k, int binary) {
    size_t count = (size_t)n * (size_t)k;
    out_head(e, name, "INT64", n, k);
    if (binary) {
        for (size_t i = 0; i < count; i++) {
            int64_t x = v[i]; /* little-endian int64 */
            resattn_buf_put(&e->tail, &x, sizeof x);
        }
        out_binary_end(e, count * sizeof(int64_t));
        return;
    }
    resattn_buf_str(&e->json, "\"data\":[");
    for (size_t i = 0; i < count; i++) {
        char s[24];
        snprintf(s, sizeof s, "%s%d", i ? "," : "", v[i]);
        resattn_buf_str(&e->json, s);
    }
    resattn_buf_str(&e->json, "]}");
}

/* BYTES [n, k] (k < 0: [n]) of the strings s[0 .. count). */
static void put_bytes(enc *e, const char *name, char *const *s, size_t count, int n, int k,
                      int binary) {
    out_head(e, name, "BYTES", n, k);
    if (binary) {
        size_t start = e->tail.len;
        for (size_t i = 0; i < count; i++) {
            uint32_t len = (uint32_t)strlen(s[i]); /* 4-byte little-endian length, then bytes */
            resattn_buf_put(&e->tail, &len, sizeof len);
            resattn_buf_put(&e->tail, s[i], len);
        }
        out_binary_end(e, e->tail.len - start);
        return;
    }
    resattn_buf_str(&e->json, "\"data\":[");
    for (size_t i = 0; i < count; i++) {
        if (i)
            resattn_buf_str(&e->json, ",");
        resattn_buf_json_string(&e->json, s[i]);
    }
    resattn_buf_str(&e->json, "]}");
}

/* A new string, printf-style; NULL when out of memory. */
static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static void strings_free(char **s, size_t count) {
    for (size_t i = 0; s && i < count; i++)
        free(s[i]);
    free(s);
}

/* idx[n, top]: per row of v[n, k], the indices of the top values, best first. */
static int top_indices(const float *v, int n, int k, int top, int *idx) {
    for (int r = 0; r < n; r++)
        resattn_top_indices(v + (size_t)r * k, k, top, idx + (size_t)r * top);
    return 0;
}

/* The label of class c, or its index as text. */
static char *label_text(const resattn_model_info *m, int c) {
    return m->labels && m->labels[c] ? strdup(m->labels[c]) : str_printf("%d", c);
}

/* Triton's classification: "value:index[:label]" of the top `classes` of each row of
 * x [n, k], as BYTES [n, classes]. The value is printed as C++'s std::to_string does
 * ("%f"), so the strings equal Triton's. */
static int put_classes(enc *e, const char *name, const float *x, int n, const resattn_model_info *m,
                       int classes, int binary) {
    size_t count = (size_t)n * (size_t)classes;
    int *idx = malloc(sizeof *idx * count);
    char **s = calloc(count, sizeof *s);
    int st = !idx || !s || top_indices(x, n, m->num_classes, classes, idx);
    for (size_t j = 0; !st && j < count; j++) {
        int c = idx[j];
        float v = x[j / (size_t)classes * (size_t)m->num_classes + (size_t)c];
        s[j] = m->labels && m->labels[c] ? str_printf("%f:%d:%s", (double)v, c, m->labels[c])
                                         : str_printf("%f:%d", (double)v, c);
        st = !s[j];
    }
    if (!st)
        put_bytes(e, name, s, count, n, classes, binary);
    strings_free(s, count);
    free(idx);
    return st ? 500 : 0;
}

/* logits or probabilities [n, K]: the tensor, or its classification. */
static int put_scores(enc *e, const resattn_infer_request *req, unsigned bit, const char *name,
                      const float *x, int n, const resattn_model_info *m) {
    int classes = req->classification[bit == RESATTN_OUT_PROBABILITIES];
    int binary = !!(req->binary & bit);
    if (classes > 0)
        return put_classes(e, name, x, n, m, classes < m->num_classes ? classes : m->num_classes,
                           binary);
    put_f32(e, name, x, n, m->num_classes, binary);
    return 0;
}

/* The three top_k_* outputs asked for, from probs [n, K]. */
static int put_top_k(enc *e, const resattn_infer_request *req, const float *probs, int n,
                     const resattn_model_info *m) {
    int top = resattn_top_k_clamp(req->top_k, m), k = m->num_classes;
    size_t count = (size_t)n * (size_t)top;
    int *idx = malloc(sizeof *idx * count);
    float *p = malloc(sizeof *p * count);
    char **labels = calloc(count, sizeof *labels);
    int st = !idx || !p || !labels || top_indices(probs, n, k, top, idx);
    for (size_t j = 0; !st && j < count; j++) {
        p[j] = probs[j / (size_t)top * (size_t)k + (size_t)idx[j]];
        st = !(labels[j] = label_text(m, idx[j]));
    }
    if (!st && (req->outputs & RESATTN_OUT_TOP_K_LABELS))
        put_bytes(e, "top_k_labels", labels, count, n, top,
                  !!(req->binary & RESATTN_OUT_TOP_K_LABELS));
    if (!st && (req->outputs & RESATTN_OUT_TOP_K_INDICES))
        put_i64(e, "top_k_indices", idx, n, top, !!(req->binary & RESATTN_OUT_TOP_K_INDICES));
    if (!st && (req->outputs & RESATTN_OUT_TOP_K_PROBABILITIES))
        put_f32(e, "top_k_probabilities", p, n, top,
                !!(req->binary & RESATTN_OUT_TOP_K_PROBABILITIES));
    strings_free(labels, count);
    free(p);
    free(idx);
    return st ? 500 : 0;
}

/* attention_summary: BYTES [n], image i's per-block summary as JSON text. */
static int put_summary(enc *e, const resattn_infer_request *req, int n) {
    char **s = calloc((size_t)n, sizeof *s);
    int st = !s;
    for (int i = 0; !st && i < n; i++) {
        json_t *one = resattn_attention_image_json(req, i);
        s[i] = one ? json_dumps(one, JSON_COMPACT) : NULL;
        json_decref(one);
        st = !s[i];
    }
    if (!st)
        put_bytes(e, SUMMARY_NAME, s, (size_t)n, n, -1,
                  !!(req->binary & RESATTN_OUT_ATTENTION_SUMMARY));
    strings_free(s, (size_t)n);
    return st ? 500 : 0;
}

int resattn_v2_encode(const resattn_infer_request *req, const char *model_name,
                      const resattn_model_info *model, const float *logits, int n,
                      resattn_response_body *out) {
    memset(out, 0, sizeof *out);
    unsigned want = req->outputs;
    int k = model->num_classes, st = 0;
    float *probs = NULL;
    if (want & (RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K)) {
        probs = malloc(sizeof *probs * (size_t)n * (size_t)k);
        if (!probs)
            return 500;
        resattn_softmax_rows(logits, n, k, probs);
    }
    enc e = {0};
    resattn_buf_str(&e.json, "{\"model_name\":");
    resattn_buf_json_string(&e.json, model_name ? model_name : "");
    resattn_buf_str(&e.json, ",\"model_version\":");
    resattn_buf_json_string(&e.json, req->model_version ? req->model_version : "1");
    if (req->id) {
        resattn_buf_str(&e.json, ",\"id\":");
        resattn_buf_json_string(&e.json, req->id);
    }
    resattn_buf_str(&e.json, ",\"outputs\":[");
    if (want & RESATTN_OUT_LOGITS)
        st = put_scores(&e, req, RESATTN_OUT_LOGITS, "logits", logits, n, model);
    if (!st && (want & RESATTN_OUT_PROBABILITIES))
        st = put_scores(&e, req, RESATTN_OUT_PROBABILITIES, "probabilities", probs, n, model);
    if (!st && (want & RESATTN_OUT_TOP_K))
        st = put_top_k(&e, req, probs, n, model);
    if (!st)
        st = resattn_attention_v2_encode_outputs(req, &e.json, &e.tail,
                                                 e.json.len && e.json.data[e.json.len - 1] != '[');
    if (!st && (req->attention & RESATTN_ATTN_SUMMARY))
        st = put_summary(&e, req, n);
    resattn_buf_str(&e.json, "]}");
    size_t header = e.json.len;
    if (e.tail.len)
        resattn_buf_put(&e.json, e.tail.data, e.tail.len);
    free(e.tail.data);
    free(probs);
    if (st || e.json.failed || e.tail.failed) {
        free(e.json.data);
        return 500;
    }
    out->data = (unsigned char *)e.json.data;
    out->len = e.json.len;
    out->json_header_len = e.tail.len ? header : 0;
    out->content_type = e.tail.len ? "application/octet-stream" : "application/json";
    return 0;
}
