/*
 * TensorFlow Serving REST :predict codec. Request: {"signature_name"?, "instances": [...]}
 * (row format: each instance is one image, nested [C,H,W] or [H,W,C] or a flat list of
 * C*H*W numbers, or an object {"input": image}) or {"inputs": batch} (columnar: batch is
 * nested [N,C,H,W] / [N,H,W,C] / one image [C,H,W] / [H,W,C], or {"input": batch}).
 * A shape that reads both ways (C == W) is taken as channels-first. Answer:
 * {"predictions": [[K logits], ...]} for instances, {"outputs": [[K logits], ...]} for
 * inputs. Like v2.c, the big array is cut out and scanned by json_scan.c while jansson
 * checks the envelope. Statuses as in v2.c (400, 413, 422).
 */
#include "protocol/protocol_common.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DEPTH 64

typedef struct tfs_ctx {
    const resattn_model_info *model;
    const resattn_parse_limits *limits;
    int depth;
    size_t chw;
    char *err;
    size_t err_len;
} tfs_ctx;

/* The value of {"input": v} at p (its first member must be "input"), or NULL; the caller
 * scans it and then checks that the object closes after it (close_input). */
static const char *input_member(const char *p, const char *end, int depth) {
    const char *k = resattn_json_ws(p + 1, end);
    if (end - k < 7 || memcmp(k, "\"input\"", 7))
        return NULL;
    return resattn_json_member(p, end, "input", NULL, depth);
}

/* Past the '}' that must follow the "input" value at q, or NULL. */
static const char *close_input(const char *q, const char *end) {
    q = resattn_json_ws(q, end);
    return q < end && *q == '}' ? q + 1 : NULL;
}

/* [H,W,C] image at src into [C,H,W] at dst. */
static void hwc_to_chw(const float *src, float *dst, int c, int h, int w) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++)
                dst[((size_t)ch * h + y) * w + x] = src[((size_t)y * w + x) * c + ch];
}

/* Layout of an image shape: 1 channels-first (or flat), 0 channels-last, -1 neither. */
static int image_layout(const int64_t *d, int nd, const resattn_model_info *m, size_t chw) {
    if (nd == 1 && (size_t)d[0] == chw)
        return 1;
    if (nd != 3)
        return -1;
    if (d[0] == m->in_channels && d[1] == m->in_height && d[2] == m->in_width)
        return 1;
    if (d[0] == m->in_height && d[1] == m->in_width && d[2] == m->in_channels)
        return 0;
    return -1;
}

static int bad_shape(tfs_ctx *t, const char *what, const resattn_scan_shape *s, int batch) {
    char g[160];
    const resattn_model_info *m = t->model;
    resattn_format_shape(s->dims, s->ndim, g, sizeof g);
    snprintf(t->err, t->err_len, "%s has shape %s, expected %s[%d,%d,%d] or %s[%d,%d,%d]%s", what,
             g, batch ? "[N," : "", m->in_channels, m->in_height, m->in_width, batch ? "[N," : "",
             m->in_height, m->in_width, m->in_channels,
             batch ? " (one image without N also works)" : " or a flat list of C*H*W numbers");
    if (batch) /* "[N," ... "]" reads oddly; drop the doubled bracket */
        for (char *q = strstr(t->err, "[N,["); q; q = strstr(q, "[N,["))
            memmove(q + 3, q + 4, strlen(q + 4) + 1);
    return 422;
}

/* "instances" at p: each element scanned once, in place; *endp past the closing bracket. */
static int process_instances(tfs_ctx *t, const char *p, const char *end, const char **endp,
                             resattn_infer_request *out, size_t body_len) {
    int max = t->limits->max_batch > 0 ? t->limits->max_batch : 1;
    p = resattn_json_ws(p, end);
    if (p >= end || *p != '[') {
        snprintf(t->err, t->err_len, "instances must be an array of images");
        return 400;
    }
    size_t cap = body_len / (2 * t->chw) + 1;
    cap = cap < (size_t)max ? cap : (size_t)max;
    float *buf = malloc(cap * t->chw * sizeof(float)), *scratch = malloc(t->chw * sizeof(float));
    out->input = buf;
    if (!buf || !scratch) {
        free(scratch);
        snprintf(t->err, t->err_len, "out of memory for instances");
        return 500;
    }
    resattn_elem_rule rule = {RESATTN_ELEM_FLOAT, 0, 0, "float", t->limits->allow_nonfinite, 400};
    int n = 0, st = 0;
    p = resattn_json_ws(p + 1, end);
    if (p < end && *p == ']') {
        snprintf(t->err, t->err_len, "instances is empty");
        st = 400;
    }
    while (!st) {
        char what[48];
        snprintf(what, sizeof what, "instances[%d]", n);
        if (n >= max || (size_t)n >= cap) { /* cap < max only when the body cannot hold more */
            snprintf(t->err, t->err_len, "instances: more than max batch %d images", max);
            st = 413;
            break;
        }
        const char *v = p < end && *p == '{' ? input_member(p, end, t->depth - 1) : p, *ve;
        if (!v || v >= end || *v != '[') {
            snprintf(t->err, t->err_len,
                     "%s must be an image (nested array or flat list) or {\"input\": image}", what);
            st = 400;
            break;
        }
        resattn_scan_shape s;
        st = resattn_json_scan_tensor_prefix(v, end, &rule, scratch, t->chw, &s, &ve, what, t->err,
                                             t->err_len);
        if (st)
            break;
        if (*p == '{' && !(ve = close_input(ve, end))) {
            snprintf(t->err, t->err_len, "%s: the object may hold only \"input\"", what);
            st = 400;
            break;
        }
        int layout = image_layout(s.dims, s.ndim, t->model, t->chw);
        if (layout < 0) {
            st = bad_shape(t, what, &s, 0);
            break;
        }
        float *dst = buf + (size_t)n * t->chw;
        if (layout)
            memcpy(dst, scratch, t->chw * sizeof(float));
        else
            hwc_to_chw(scratch, dst, t->model->in_channels, t->model->in_height,
                       t->model->in_width);
        out->tfs_nchw = layout;
        n++;
        p = resattn_json_ws(ve, end);
        if (p < end && *p == ',') {
            p = resattn_json_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') {
            *endp = p + 1;
            break;
        }
        snprintf(t->err, t->err_len, "instances: expected ',' or ']' after instances[%d]", n - 1);
        st = 400;
    }
    free(scratch);
    out->n = n;
    return st;
}

/* "inputs" at p (a batch array or {"input": batch}); *endp past it. */
static int process_inputs(tfs_ctx *t, const char *p, const char *end, const char **endp,
                          resattn_infer_request *out, size_t body_len) {
    int max = t->limits->max_batch > 0 ? t->limits->max_batch : 1;
    p = resattn_json_ws(p, end);
    const char *v = p < end && *p == '{' ? input_member(p, end, t->depth - 1) : p;
    if (!v || v >= end || *v != '[') {
        snprintf(t->err, t->err_len, "inputs must be a batch array or {\"input\": batch}");
        return 400;
    }
    size_t cap = (size_t)max * t->chw, bound = body_len / 2 + 1;
    cap = cap < bound ? cap : bound;
    float *buf = malloc((cap ? cap : 1) * sizeof(float));
    out->input = buf;
    if (!buf) {
        snprintf(t->err, t->err_len, "out of memory for inputs");
        return 500;
    }
    resattn_elem_rule rule = {RESATTN_ELEM_FLOAT, 0, 0, "float", t->limits->allow_nonfinite, 413};
    resattn_scan_shape s;
    int st = resattn_json_scan_tensor_prefix(v, end, &rule, buf, cap, &s, endp, "inputs", t->err,
                                             t->err_len);
    if (!st && *p == '{' && !(*endp = close_input(*endp, end))) {
        snprintf(t->err, t->err_len, "inputs: the object may hold only \"input\"");
        return 400;
    }
    if (st == 413 && cap == (size_t)max * t->chw)
        snprintf(t->err, t->err_len, "inputs: more than max batch %d images", max);
    else if (st == 413)
        st = 400;
    if (st)
        return st;
    int batch = s.ndim == 4, layout = -1;
    if (s.ndim == 3 || s.ndim == 4)
        layout = image_layout(s.dims + batch, 3, t->model, t->chw);
    if (layout < 0)
        return bad_shape(t, "inputs", &s, 1);
    int n = batch ? (int)s.dims[0] : 1;
    if (n > max) {
        snprintf(t->err, t->err_len, "inputs: batch of %d images is more than max batch %d", n,
                 max);
        return 413;
    }
    if (!layout) {
        float *scratch = malloc(t->chw * sizeof(float));
        if (!scratch) {
            snprintf(t->err, t->err_len, "out of memory for inputs");
            return 500;
        }
        for (int i = 0; i < n; i++) {
            memcpy(scratch, buf + (size_t)i * t->chw, t->chw * sizeof(float));
            hwc_to_chw(scratch, buf + (size_t)i * t->chw, t->model->in_channels,
                       t->model->in_height, t->model->in_width);
        }
        free(scratch);
    }
    out->tfs_nchw = layout;
    out->n = n;
    return 0;
}

/* "instances" or "inputs" at [p, end) per out->tfs_columnar; *endp past it. */
static int process_at(tfs_ctx *t, const char *p, const char *end, const char **endp,
                      resattn_infer_request *out, size_t body_len) {
    return out->tfs_columnar ? process_inputs(t, p, end, endp, out, body_len)
                             : process_instances(t, p, end, endp, out, body_len);
}

/* The same for a whole text (jansson's copy): nothing may follow the value. */
static int process(tfs_ctx *t, const char *p, const char *end, resattn_infer_request *out,
                   size_t body_len) {
    const char *e = NULL;
    int st = process_at(t, p, end, &e, out, body_len);
    if (!st && resattn_json_ws(e, end) != end) {
        snprintf(t->err, t->err_len, "unexpected bytes after the tensor");
        st = 400;
    }
    return st;
}

int resattn_tfs_parse(const unsigned char *body, size_t len, const resattn_model_info *model,
                      const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                      size_t err_len) {
    static const resattn_parse_limits defaults = {.max_batch = 1, .max_json_depth = DEFAULT_DEPTH};
    memset(out, 0, sizeof *out);
    limits = limits ? limits : &defaults;
    tfs_ctx t = {model,
                 limits,
                 limits->max_json_depth > 0 ? limits->max_json_depth : DEFAULT_DEPTH,
                 (size_t)model->in_channels * model->in_height * model->in_width,
                 err,
                 err_len};
    if (len == 0) {
        snprintf(err, err_len, "empty body: expected {\"instances\": [...]} or {\"inputs\": ...}");
        return 400;
    }
    const char *js = (const char *)body, *end = js + len, *ve = NULL;
    const char *key = "instances", *v = resattn_json_member(js, end, key, NULL, t.depth);
    if (!v) {
        key = "inputs";
        v = resattn_json_member(js, end, key, NULL, t.depth);
    }
    int st = 0;
    if (v) { /* convert the tensor in place, then parse the envelope with it replaced by 0 */
        out->tfs_columnar = !strcmp(key, "inputs");
        st = process_at(&t, v, end, &ve, out, len);
    }
    json_error_t je;
    json_t *root = NULL;
    if (st) {
        /* the tensor's error */
    } else if (v) {
        size_t pre = (size_t)(v - js), post = (size_t)(end - ve);
        char *copy = malloc(pre + post + 1);
        if (!copy) {
            snprintf(err, err_len, "out of memory parsing the request");
            st = 500;
        } else {
            memcpy(copy, js, pre);
            copy[pre] = '0';
            memcpy(copy + pre + 1, ve, post);
            root = json_loadb(copy, pre + post + 1, JSON_REJECT_DUPLICATES, &je);
            free(copy);
        }
    } else {
        root = json_loadb(js, len, JSON_REJECT_DUPLICATES, &je);
    }
    if (!st && !root) {
        snprintf(err, err_len, "invalid JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        st = 400;
    }
    if (st) {
        resattn_infer_request_release(out);
        out->protocol = RESATTN_PROTO_TFS;
        return st;
    }
    json_t *sig = json_object_get(root, "signature_name");
    json_t *inst = json_object_get(root, "instances"), *inp = json_object_get(root, "inputs");
    char *text = NULL;
    if (!json_is_object(root)) {
        snprintf(err, err_len, "the request body must be a JSON object");
        st = 400;
    } else if (sig && (!json_is_string(sig) || strcmp(json_string_value(sig), "serving_default"))) {
        snprintf(err, err_len, "signature_name must be \"serving_default\" (the only signature)");
        st = 400;
    } else if (inst && inp) {
        snprintf(err, err_len, "give either \"instances\" or \"inputs\", not both");
        st = 400;
    } else if (!inst && !inp) {
        snprintf(err, err_len, "the request needs \"instances\" (rows) or \"inputs\" (columns)");
        st = 400;
    } else if (!v) { /* the tensor was not found byte-for-byte: take jansson's copy */
        key = inst ? "instances" : "inputs";
        text = json_dumps(inst ? inst : inp, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            snprintf(err, err_len, "out of memory reading %s", key);
            st = 500;
        } else {
            v = text;
            ve = text + strlen(text);
        }
    }
    json_decref(root);
    if (!st && text) {
        out->tfs_columnar = !strcmp(key, "inputs");
        st = process(&t, v, ve, out, len);
    }
    free(text);
    if (st) {
        resattn_infer_request_release(out);
    }
    out->protocol = RESATTN_PROTO_TFS;
    out->c = model->in_channels;
    out->h = model->in_height;
    out->w = model->in_width;
    out->outputs = RESATTN_OUT_LOGITS;
    return st;
}

int resattn_tfs_encode(const resattn_infer_request *req, const float *logits, int n,
                       int num_classes, resattn_response_body *out) {
    memset(out, 0, sizeof *out);
    resattn_buf b = {0};
    resattn_buf_str(&b, req->tfs_columnar ? "{\"outputs\":[" : "{\"predictions\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            resattn_buf_str(&b, ",");
        resattn_buf_floats(&b, logits + (size_t)i * num_classes, (size_t)num_classes);
    }
    resattn_buf_str(&b, "]}");
    if (b.failed) {
        free(b.data);
        return 500;
    }
    out->data = (unsigned char *)b.data;
    out->len = b.len;
    out->content_type = "application/json";
    return 0;
}
