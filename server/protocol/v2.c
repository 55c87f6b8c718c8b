/*
 * Open Inference Protocol (KServe v2) request codec: the infer request body (JSON, JSON with
 * the binary tensor extension, or a .npy file) into a resattn_infer_request; what it asks of
 * the answer ("outputs", "parameters") and the answer itself are server/protocol/v2_outputs.c.
 * The input tensor's `data` array is cut out of the body and converted
 * by the scanner of json_scan.h; jansson parses the small envelope that is left (a body
 * whose `data` cannot be located byte-for-byte, e.g. a key spelled with escapes, is parsed
 * by jansson whole and its `data` re-serialised for the same scanner: slower, same rules).
 * Statuses: 400 malformed or self-contradicting request, 413 batch over the limit,
 * 415 unsupported Content-Type, 422 well-formed but not the model's input shape.
 */
#include "protocol/attention_api.h"
#include "data/npy.h"
#include "protocol/protocol_common.h"
#include "protocol/v2_outputs.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_DEPTH 64

static int fail(char *err, size_t err_len, int status, const char *fmt, const char *arg) {
    snprintf(err, err_len, fmt, arg);
    return status;
}

static int has_prefix(const char *s, const char *p) {
    return !strncasecmp(s, p, strlen(p));
}

/* .npy body: shape [N,C,H,W] or [C,H,W]. */
static int parse_npy(const unsigned char *body, size_t len, const resattn_model_info *model,
                     const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                     size_t err_len) {
    resattn_npy a;
    char msg[RESATTN_PROTO_ERR_LEN];
    if (resattn_npy_parse(body, len, &a, msg, sizeof msg)) {
        snprintf(err, err_len, "application/x-npy body: %s", msg);
        return 400;
    }
    int n, st = resattn_check_image_shape(a.shape, a.ndim, model, limits, &n, "npy array shape",
                                          err, err_len);
    if (!st)
        st = resattn_check_finite(a.data, a.count, limits->allow_nonfinite, "npy array", err,
                                  err_len);
    if (st) {
        resattn_npy_release(&a);
        return st;
    }
    out->n = n;
    out->input = a.data;
    a.data = NULL;
    resattn_npy_release(&a);
    out->input_name = strdup(RESATTN_V2_INPUT);
    out->outputs = RESATTN_OUT_DEFAULT;
    out->top_k = resattn_top_k_clamp(0, model);
    return out->input_name ? 0 : 500;
}

/*
 * inputs[0].data found byte-for-byte and, when it reads as float numbers, already converted
 * (one pass over the big array; the datatype is only known after the envelope is parsed,
 * so integer/BOOL datatypes or a failing scan are redone with the right rule from [ds, de)).
 */
typedef struct prescan {
    const char *ds, *de; /* the data array's bytes, or ds NULL */
    float *buf;          /* converted values when ok, malloc'ed */
    resattn_scan_shape shape;
    int ok;
} prescan;

static void locate_data(const char *js, const char *end, const resattn_model_info *model,
                        const resattn_parse_limits *limits, int depth, prescan *ps) {
    memset(ps, 0, sizeof *ps);
    const char *inputs = resattn_json_member(js, end, "inputs", NULL, depth);
    if (!inputs || *inputs != '[')
        return;
    const char *first = resattn_json_ws(inputs + 1, end);
    if (first >= end || *first != '{')
        return;
    const char *d = resattn_json_member(first, end, "data", NULL, depth - 2);
    if (!d || *d != '[')
        return;
    size_t chw = (size_t)model->in_channels * model->in_height * model->in_width;
    size_t cap = (size_t)(limits->max_batch > 0 ? limits->max_batch : 1) * chw,
           bound = (size_t)(end - d) / 2 + 1;
    cap = cap < bound ? cap : bound;
    resattn_elem_rule rule = {RESATTN_ELEM_FLOAT, 0, 0, "FP32", limits->allow_nonfinite, 400};
    char err[RESATTN_PROTO_ERR_LEN];
    ps->buf = malloc(cap * sizeof(float));
    if (ps->buf && !resattn_json_scan_tensor_prefix(d, end, &rule, ps->buf, cap, &ps->shape,
                                                    &ps->de, "data", err, sizeof err)) {
        ps->ok = 1;
        ps->ds = d;
        return;
    }
    free(ps->buf);
    ps->buf = NULL;
    ps->de = resattn_json_skip(d, end, depth - 3);
    ps->ds = ps->de ? d : NULL;
}

/* jansson on js with [ds, de) replaced by an empty array (when ds). */
static json_t *load_envelope(const char *js, size_t jlen, const char *ds, const char *de, char *err,
                             size_t err_len) {
    json_error_t je;
    json_t *root;
    if (ds) {
        size_t pre = (size_t)(ds - js), post = jlen - (size_t)(de - js);
        char *copy = malloc(pre + post + 2);
        if (!copy) {
            snprintf(err, err_len, "out of memory parsing the request");
            return NULL;
        }
        memcpy(copy, js, pre);
        memcpy(copy + pre, "[]", 2);
        memcpy(copy + pre + 2, de, post);
        root = json_loadb(copy, pre + post + 2, JSON_REJECT_DUPLICATES, &je);
        free(copy);
    } else {
        root = json_loadb(js, jlen, JSON_REJECT_DUPLICATES, &je);
    }
    if (!root)
        snprintf(err, err_len, "invalid JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
    return root;
}

/* Read the shape array: dims, ndim, positive and overflow-free product into *count. */
static int read_shape(json_t *shape, int64_t *dims, int *ndim, size_t *count, char *err,
                      size_t err_len) {
    if (!json_is_array(shape))
        return fail(err, err_len, 400, "inputs[0].shape is %s, expected an array of integers",
                    shape ? "not an array" : "missing");
    size_t nd = json_array_size(shape);
    if (nd < 1 || nd > RESATTN_SCAN_MAX_DIMS) {
        snprintf(err, err_len, "inputs[0].shape has %zu dimensions, expected 3 or 4", nd);
        return 400;
    }
    uint64_t prod = 1;
    int over = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d)) {
            snprintf(err, err_len, "inputs[0].shape[%zu] is not an integer", i);
            return 400;
        }
        dims[i] = json_integer_value(d);
        if (dims[i] <= 0) {
            snprintf(err, err_len, "inputs[0].shape[%zu] is %lld, must be positive", i,
                     (long long)dims[i]);
            return 400;
        }
        over |= __builtin_mul_overflow(prod, (uint64_t)dims[i], &prod);
    }
    *ndim = (int)nd;
    if (over || prod > SIZE_MAX / 8) {
        char s[160];
        resattn_format_shape(dims, *ndim, s, sizeof s);
        return fail(err, err_len, 400, "inputs[0].shape %s: element count overflows", s);
    }
    *count = (size_t)prod;
    return 0;
}

/* inputs[0] binary_data_size bytes from bin[0..bin_len) into out->input. */
static int read_binary(const resattn_dtype *dt, json_t *bds, size_t count, const char *shape_s,
                       const unsigned char *bin, size_t bin_len, int allow_nonfinite, float *dst,
                       char *err, size_t err_len) {
    if (!json_is_integer(bds) || json_integer_value(bds) < 0)
        return fail(err, err_len, 400, "%s is not a byte count",
                    "inputs[0].parameters.binary_data_size");
    unsigned long long size = (unsigned long long)json_integer_value(bds);
    unsigned long long need = (unsigned long long)count * (unsigned long long)dt->size;
    if (size != need) {
        snprintf(err, err_len,
                 "inputs[0].parameters.binary_data_size is %llu bytes but shape %s of %s needs "
                 "%llu",
                 size, shape_s, dt->name, need);
        return 400;
    }
    if (size > bin_len) {
        snprintf(err, err_len,
                 "inputs[0] binary data is truncated: binary_data_size %llu but only %zu bytes "
                 "follow the JSON header",
                 size, bin_len);
        return 400;
    }
    if (size < bin_len) {
        snprintf(err, err_len,
                 "%zu unexpected bytes after the binary data of inputs[0] (binary_data_size "
                 "%llu)",
                 bin_len - (size_t)size, size);
        return 400;
    }
    return resattn_dtype_decode(dt, bin, count, allow_nonfinite, dst, "inputs[0] binary data", err,
                                err_len);
}

static int check_data_shape(const resattn_scan_shape *got, const int64_t *dims, int ndim,
                            size_t count, const char *shape_s, char *err, size_t err_len);

/* inputs[0].data as JSON: from the cut-out span, or re-serialised from jansson. */
static int read_json_data(const resattn_dtype *dt, json_t *data, prescan *ps, const int64_t *dims,
                          int ndim, size_t count, const char *shape_s, int allow_nonfinite,
                          float **dstp, char *err, size_t err_len) {
    const char *ds = ps->ds, *de = ps->de;
    if (!ds && !data)
        return fail(err, err_len, 400, "%s is missing (and no binary_data_size given)",
                    "inputs[0].data");
    if (!dt->json_ok)
        return fail(err, err_len, 400,
                    "inputs[0].datatype %s is accepted only as binary data (binary_data_size)",
                    dt->name);
    resattn_scan_shape got;
    int st = 0;
    if (ps->ok && dt->kind == RESATTN_ELEM_FLOAT) { /* already converted */
        got = ps->shape;
        *dstp = ps->buf;
        ps->buf = NULL;
        return check_data_shape(&got, dims, ndim, count, shape_s, err, err_len);
    }
    if (!(*dstp = malloc(count * sizeof(float))))
        return fail(err, err_len, 500, "out of memory for %s", "inputs[0]");
    char *text = NULL;
    if (!ds) {
        if (!json_is_array(data))
            return fail(err, err_len, 400, "%s must be an array of numbers", "inputs[0].data");
        text = json_dumps(data, JSON_COMPACT);
        if (!text)
            return fail(err, err_len, 500, "out of memory reading %s", "inputs[0].data");
        ds = text;
        de = text + strlen(text);
    }
    resattn_elem_rule rule = {dt->kind, dt->lo, dt->hi, dt->name, allow_nonfinite, 400};
    st =
        resattn_json_scan_tensor(ds, de, &rule, *dstp, count, &got, "inputs[0].data", err, err_len);
    free(text);
    if (st)
        return st;
    return check_data_shape(&got, dims, ndim, count, shape_s, err, err_len);
}

/* The scanned data agrees with the declared shape: same count; if nested, the same dims. */
static int check_data_shape(const resattn_scan_shape *got, const int64_t *dims, int ndim,
                            size_t count, const char *shape_s, char *err, size_t err_len) {
    if (got->count != count) {
        snprintf(err, err_len, "inputs[0].data has %zu elements but shape %s needs %zu", got->count,
                 shape_s, count);
        return 400;
    }
    int same = got->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = got->dims[i] == dims[i];
    if (got->ndim > 1 && !same) {
        char g[160];
        resattn_format_shape(got->dims, got->ndim, g, sizeof g);
        snprintf(err, err_len, "inputs[0].data is nested as %s but shape is %s", g, shape_s);
        return 400;
    }
    return 0;
}

/* A numeric tensor goes in the model's input "input" (its metadata); a misspelt name is
 * refused rather than used, so that a client talking to the wrong model learns it. */
static int check_input_name(const char *name, char *err, size_t err_len) {
    if (!strcmp(name, RESATTN_V2_INPUT))
        return 0;
    if (!strcmp(name, RESATTN_V2_IMAGE_INPUT))
        return fail(err, err_len, 400,
                    "inputs[0].name '%s' takes BYTES (base64-encoded images); a numeric tensor "
                    "goes in input '" RESATTN_V2_INPUT "'",
                    name);
    snprintf(err, err_len,
             "inputs[0].name '%.64s' is not an input of this model (inputs: '" RESATTN_V2_INPUT
             "', a numeric [N,C,H,W] tensor; '" RESATTN_V2_IMAGE_INPUT "', BYTES images)",
             name);
    return 400;
}

static int parse_json(const unsigned char *body, size_t len, long long header_len,
                      const resattn_model_info *model, const resattn_parse_limits *limits,
                      resattn_infer_request *out, char *err, size_t err_len) {
    int depth = limits->max_json_depth > 0 ? limits->max_json_depth : DEFAULT_DEPTH;
    if (len == 0)
        return fail(err, err_len, 400, "%s", "empty body: expected a JSON inference request");
    size_t jlen = len;
    if (header_len >= 0) {
        if (header_len == 0 || (unsigned long long)header_len > len) {
            snprintf(err, err_len,
                     "Inference-Header-Content-Length %lld is outside the body (%zu bytes)",
                     header_len, len);
            return 400;
        }
        jlen = (size_t)header_len;
    }
    const char *js = (const char *)body;
    prescan ps;
    locate_data(js, js + jlen, model, limits, depth, &ps);
    const char *ds = ps.ds, *de = ps.de;
    json_t *root = load_envelope(js, jlen, ds, de, err, err_len);
    if (!root) {
        free(ps.buf);
        return 400;
    }
    int st = 400;
    json_t *inputs = json_object_get(root, "inputs"), *id = json_object_get(root, "id");
    json_t *in = json_array_get(inputs, 0);
    json_t *name = json_object_get(in, "name"), *dtype = json_object_get(in, "datatype");
    json_t *iparams = json_object_get(in, "parameters");
    json_t *bds = json_object_get(iparams, "binary_data_size");
    if (!json_is_object(root)) {
        fail(err, err_len, 400, "%s", "the request body must be a JSON object");
    } else if (id && !json_is_string(id)) {
        fail(err, err_len, 400, "%s is not a string", "id");
    } else if (!json_is_array(inputs)) {
        fail(err, err_len, 400, "%s is missing or not an array", "inputs");
    } else if (json_array_size(inputs) != 1) {
        snprintf(err, err_len, "inputs has %zu tensors, expected exactly one",
                 json_array_size(inputs));
    } else if (!json_is_object(in)) {
        fail(err, err_len, 400, "%s is not an object", "inputs[0]");
    } else if (!json_is_string(name)) {
        fail(err, err_len, 400, "%s is missing or not a string", "inputs[0].name");
    } else if (!json_is_string(dtype)) {
        fail(err, err_len, 400, "%s is missing or not a string", "inputs[0].datatype");
    } else if (iparams && !json_is_object(iparams)) {
        fail(err, err_len, 400, "%s is not an object", "inputs[0].parameters");
    } else {
        st = 0;
    }
    const resattn_dtype *dt = st ? NULL : resattn_dtype_find(json_string_value(dtype));
    if (!st && !dt) {
        if (!strcmp(json_string_value(dtype), "BYTES"))
            snprintf(err, err_len,
                     "inputs[0].datatype BYTES holds base64-encoded images (input "
                     "'" RESATTN_V2_IMAGE_INPUT "'): its data must be strings");
        else
            snprintf(err, err_len, "inputs[0].datatype '%.32s' is not one of %s",
                     json_string_value(dtype), resattn_dtype_names());
        st = 400;
    }
    if (!st)
        st = check_input_name(json_string_value(name), err, err_len);
    int64_t dims[RESATTN_SCAN_MAX_DIMS];
    int ndim = 0;
    size_t count = 0;
    char shape_s[160] = "";
    if (!st)
        st = read_shape(json_object_get(in, "shape"), dims, &ndim, &count, err, err_len);
    if (!st) {
        resattn_format_shape(dims, ndim, shape_s, sizeof shape_s);
        st = resattn_check_image_shape(dims, ndim, model, limits, &out->n, "inputs[0].shape", err,
                                       err_len);
    }
    if (!st && (bds ? (ds || json_object_get(in, "data")) : 0))
        st = fail(err, err_len, 400, "%s",
                  "inputs[0] has both data and parameters.binary_data_size");
    if (!st && bds && header_len < 0)
        st = fail(err, err_len, 400, "%s",
                  "inputs[0].parameters.binary_data_size needs the "
                  "Inference-Header-Content-Length header");
    if (!st && !bds && jlen < len) {
        snprintf(err, err_len, "%zu bytes follow the JSON header but no input has binary_data_size",
                 len - jlen);
        st = 400;
    }
    if (!st)
        st = resattn_v2_read_options(root, model, out, err, err_len);
    /* FP32 binary data, aligned in a body the caller keeps: the tensor itself, no copy */
    const unsigned char *bin = body + jlen;
    if (!st && bds && limits->input_in_body_ok && !strcmp(dt->name, "FP32") &&
        (uintptr_t)bin % _Alignof(float) == 0) {
        out->input = (float *)(uintptr_t)bin;
        out->input_in_body = 1;
    }
    if (!st && bds && !out->input && !(out->input = malloc(count * sizeof(float))))
        st = fail(err, err_len, 500, "out of memory for %s", "inputs[0]");
    if (!st)
        st = bds ? read_binary(dt, bds, count, shape_s, bin, len - jlen, limits->allow_nonfinite,
                               out->input, err, err_len)
                 : read_json_data(dt, json_object_get(in, "data"), &ps, dims, ndim, count, shape_s,
                                  limits->allow_nonfinite, &out->input, err, err_len);
    free(ps.buf);
    if (!st) {
        out->input_name = strdup(json_string_value(name));
        out->id = id ? strdup(json_string_value(id)) : NULL;
        if (!out->input_name || (id && !out->id))
            st = fail(err, err_len, 500, "out of memory for %s", "inputs[0].name");
    }
    json_decref(root);
    return st;
}

int resattn_v2_parse(const char *content_type, const unsigned char *body, size_t len,
                     long long header_len, const resattn_model_info *model,
                     const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                     size_t err_len) {
    static const resattn_parse_limits defaults = {.max_batch = 1, .max_json_depth = DEFAULT_DEPTH};
    memset(out, 0, sizeof *out);
    out->protocol = RESATTN_PROTO_V2;
    out->c = model->in_channels;
    out->h = model->in_height;
    out->w = model->in_width;
    if (!limits)
        limits = &defaults;
    const char *ct = content_type ? content_type : "application/json";
    int st;
    if (has_prefix(ct, "application/x-npy")) {
        st = parse_npy(body, len, model, limits, out, err, err_len);
    } else if (has_prefix(ct, "application/json") || has_prefix(ct, "application/octet-stream")) {
        if (has_prefix(ct, "application/octet-stream") && header_len < 0)
            st = fail(err, err_len, 400, "%s",
                      "Content-Type application/octet-stream needs the "
                      "Inference-Header-Content-Length header");
        else
            st = parse_json(body, len, header_len, model, limits, out, err, err_len);
    } else {
        st = fail(err, err_len, 415,
                  "Content-Type '%.64s' is not supported: use application/json (optionally with "
                  "Inference-Header-Content-Length) or application/x-npy",
                  ct);
    }
    if (st) {
        resattn_infer_request_release(out);
        out->protocol = RESATTN_PROTO_V2;
    }
    return st;
}
