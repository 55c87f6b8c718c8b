/*
 * Image request forms and top-k answers (see image_api.h). Parsing collects the encoded
 * images of a body as spans (pointing into the body, or into base64-decoded copies kept
 * in `blobs`), then decodes and preprocesses each one into the [n, C, H, W] input. The
 * top-k answer sorts each image's softmax probabilities.
 */
#include "protocol/image_api.h"
#include "protocol/attention_api.h"

#include "data/base64.h"
#include "data/image.h"
#include "protocol/multipart.h"
#include "data/preprocess.h"
#include "protocol/protocol_common.h"
#include "protocol/v2_outputs.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_IMAGES_HARD 1024 /* parts considered, whatever the batch limit */

typedef struct span {
    const unsigned char *p;
    size_t n;
} span;

/* The images of one request. */
typedef struct images {
    span item[MAX_IMAGES_HARD];
    unsigned char *blob[MAX_IMAGES_HARD]; /* decoded base64 owned here, or NULL */
    int n, max;
} images;

static int has_prefix(const char *s, const char *p) {
    return s && !strncasecmp(s, p, strlen(p));
}

static int add_image(images *im, const unsigned char *p, size_t n, unsigned char *blob, char *err,
                     size_t err_len) {
    if (im->n == im->max) {
        free(blob);
        return resattn_proto_fail(err, err_len, 413,
                                  "more than %d images in one request (the batch limit)", im->max);
    }
    im->item[im->n] = (span){p, n};
    im->blob[im->n++] = blob;
    return 0;
}

/* A base64 string (optionally a data: URL) becomes an owned image. */
static int add_base64(images *im, const char *s, size_t n, const char *what, char *err,
                      size_t err_len) {
    if (n >= 5 && !strncmp(s, "data:", 5)) {
        const char *comma = memchr(s, ',', n);
        if (!comma)
            return resattn_proto_fail(err, err_len, 400, "%s: data URL without ','", what);
        n -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    unsigned char *buf = malloc(resattn_base64_decoded_max(n));
    if (!buf)
        return resattn_proto_fail(err, err_len, 500, "out of memory decoding %s", what);
    size_t len;
    char e[160];
    if (resattn_base64_decode(s, n, buf, &len, e, sizeof e)) {
        free(buf);
        return resattn_proto_fail(err, err_len, 400, "%s: %s", what, e);
    }
    return add_image(im, buf, len, buf, err, err_len);
}

static int read_top_k(json_t *v, const char *what, int *top_k, char *err, size_t err_len) {
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000)
        return resattn_proto_fail(err, err_len, 400, "%s must be a positive integer", what);
    if (*top_k < 0) /* the URL query wins */
        *top_k = (int)json_integer_value(v);
    return 0;
}

static int parse_multipart(const char *ct, const unsigned char *body, size_t len, images *im,
                           int *top_k, char *err, size_t err_len) {
    char boundary[RESATTN_MULTIPART_BOUNDARY_MAX + 1], e[200];
    if (resattn_multipart_boundary(ct, boundary, e, sizeof e))
        return resattn_proto_fail(err, err_len, 400, "%s", e);
    /* one more part than images, for top_k; ~50 KB, so not on the stack */
    resattn_multipart_part *pp = malloc(sizeof *pp * (MAX_IMAGES_HARD + 1));
    if (!pp)
        return resattn_proto_fail(err, err_len, 500, "out of memory parsing multipart");
    int np = 0, st = 0;
    if (resattn_multipart_parse(body, len, boundary, pp, MAX_IMAGES_HARD + 1, &np, e, sizeof e))
        st = resattn_proto_fail(err, err_len, 400, "%s", e);
    for (int i = 0; !st && i < np; i++) {
        resattn_multipart_part *p = &pp[i];
        if (p->name && p->name_len == 5 && !memcmp(p->name, "top_k", 5)) {
            char num[16] = "";
            char *end;
            memcpy(num, p->data, p->len < 15 ? p->len : 15);
            long k = strtol(num, &end, 10);
            if (end == num || *end || k < 1 || p->len > 15)
                st = resattn_proto_fail(err, err_len, 400,
                                        "multipart field top_k must be a positive integer");
            else if (*top_k < 0)
                *top_k = (int)k;
            continue;
        }
        if (p->len == 0)
            st = resattn_proto_fail(err, err_len, 422, "multipart part %d ('%.*s') is empty", i,
                                    (int)(p->name_len < 64 ? p->name_len : 64),
                                    p->name ? p->name : "");
        else
            st = add_image(im, p->data, p->len, NULL, err, err_len);
    }
    free(pp);
    return st;
}

/* /predict JSON: {"image": b64} or {"images": [b64...]}, "top_k"?. */
static int parse_predict_json(json_t *root, images *im, int *top_k, char *err, size_t err_len) {
    json_t *one = json_object_get(root, "image"), *many = json_object_get(root, "images");
    int st = read_top_k(json_object_get(root, "top_k"), "top_k", top_k, err, err_len);
    if (st)
        return st;
    if (!!one == !!many)
        return resattn_proto_fail(
            err, err_len, 400,
            "JSON body needs exactly one of \"image\" (a base64 string) or \"images\" "
            "(an array of them)");
    if (one) {
        if (!json_is_string(one))
            return resattn_proto_fail(err, err_len, 400, "\"image\" must be a base64 string");
        return add_base64(im, json_string_value(one), json_string_length(one), "image", err,
                          err_len);
    }
    if (!json_is_array(many) || !json_array_size(many))
        return resattn_proto_fail(err, err_len, 400,
                                  "\"images\" must be a non-empty array of base64 strings");
    size_t i;
    json_t *v;
    json_array_foreach(many, i, v) {
        char what[32];
        snprintf(what, sizeof what, "images[%zu]", i);
        if (!json_is_string(v))
            return resattn_proto_fail(err, err_len, 400, "%s must be a base64 string", what);
        if ((st = add_base64(im, json_string_value(v), json_string_length(v), what, err, err_len)))
            return st;
    }
    return 0;
}

/* Strings of a (nested) v2 BYTES data array. */
static int add_v2_strings(json_t *d, images *im, int depth, char *err, size_t err_len) {
    if (json_is_string(d))
        return add_base64(im, json_string_value(d), json_string_length(d), "inputs[0].data", err,
                          err_len);
    if (!json_is_array(d) || depth > 8)
        return resattn_proto_fail(
            err, err_len, 400,
            "inputs[0].data of a BYTES input must hold base64 strings (nested at most 8)");
    size_t i;
    json_t *v;
    json_array_foreach(d, i, v) {
        int st = add_v2_strings(v, im, depth + 1, err, err_len);
        if (st)
            return st;
    }
    return 0;
}

/* The elements of a binary BYTES tensor (the binary tensor extension): each a 4-byte
 * little-endian length, then that many bytes, here a whole PNG or JPEG file. */
static int add_v2_binary(const unsigned char *p, size_t n, images *im, char *err, size_t err_len) {
    size_t off = 0;
    for (int i = 0; off < n; i++) {
        if (n - off < 4)
            return resattn_proto_fail(
                err, err_len, 400,
                "inputs[0] binary data: element %d is cut short (%zu bytes, a length "
                "takes 4)",
                i, n - off);
        uint32_t len = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
                       (uint32_t)p[off + 3] << 24;
        off += 4;
        if (len > n - off)
            return resattn_proto_fail(
                err, err_len, 400,
                "inputs[0] binary data: element %d has length %u but only %zu bytes "
                "follow",
                i, len, n - off);
        int st = add_image(im, p + off, len, NULL, err, err_len);
        if (st)
            return st;
        off += len;
    }
    return 0;
}

/* inputs[0]'s images: base64 strings in "data", or (binary_data_size) the binary part
 * bin [bin_len] after a JSON header of header_len >= 0 bytes. */
static int v2_images(json_t *in0, const unsigned char *bin, size_t bin_len, long long header_len,
                     images *im, char *err, size_t err_len) {
    json_t *data = json_object_get(in0, "data");
    json_t *bds = json_object_get(json_object_get(in0, "parameters"), "binary_data_size");
    if (!bds) {
        if (bin_len)
            return resattn_proto_fail(
                err, err_len, 400,
                "%zu bytes follow the JSON header but inputs[0] has no binary_data_size", bin_len);
        if (!data)
            return resattn_proto_fail(err, err_len, 400, "inputs[0].data is missing");
        return add_v2_strings(data, im, 0, err, err_len);
    }
    if (data)
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0] has both data and parameters.binary_data_size");
    if (header_len < 0)
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0].parameters.binary_data_size needs the "
                                  "Inference-Header-Content-Length header");
    if (!json_is_integer(bds) || json_integer_value(bds) < 0 ||
        (unsigned long long)json_integer_value(bds) != bin_len)
        return resattn_proto_fail(
            err, err_len, 400,
            "inputs[0].parameters.binary_data_size must be the %zu bytes that follow the "
            "JSON header",
            bin_len);
    return add_v2_binary(bin, bin_len, im, err, err_len);
}

/* v2 JSON with the BYTES input "image"; its "outputs" and "parameters" are read as for a
 * tensor (v2_outputs.h), before any image is decoded. */
static int parse_v2_json(json_t *root, const unsigned char *bin, size_t bin_len,
                         long long header_len, const resattn_model_info *model, images *im,
                         resattn_infer_request *out, char *err, size_t err_len) {
    json_t *inputs = json_object_get(root, "inputs"), *in0 = json_array_get(inputs, 0);
    if (!json_is_array(inputs) || json_array_size(inputs) != 1 || !json_is_object(in0))
        return resattn_proto_fail(err, err_len, 400, "\"inputs\" must be an array of one input");
    const char *dt = json_string_value(json_object_get(in0, "datatype"));
    if (!dt || strcmp(dt, "BYTES"))
        return resattn_proto_fail(err, err_len, 400, "inputs[0].datatype must be BYTES for images");
    const char *name = json_string_value(json_object_get(in0, "name"));
    if (!name)
        return resattn_proto_fail(err, err_len, 400, "inputs[0].name is missing or not a string");
    if (strcmp(name, RESATTN_V2_IMAGE_INPUT))
        return resattn_proto_fail(
            err, err_len, 400,
            "inputs[0].name '%.64s' is not this model's input for BYTES: base64-encoded "
            "images go in input '" RESATTN_V2_IMAGE_INPUT
            "' (a numeric tensor in '" RESATTN_V2_INPUT "')",
            name);
    json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id))
        return resattn_proto_fail(err, err_len, 400, "id is not a string");
    if (id && !(out->id = strdup(json_string_value(id))))
        return resattn_proto_fail(err, err_len, 500, "out of memory");
    if (!(out->input_name = strdup(name)))
        return resattn_proto_fail(err, err_len, 500, "out of memory");
    int st = resattn_v2_read_options(root, model, out, err, err_len);
    if (st)
        return st;
    return v2_images(in0, bin, bin_len, header_len, im, err, err_len);
}

/* A JSON body: /predict's, or v2's (a JSON header of header_len bytes when >= 0, with the
 * binary tensor extension's bytes after it). */
static int parse_json(resattn_protocol proto, const unsigned char *body, size_t len,
                      long long header_len, const resattn_model_info *model, images *im, int *top_k,
                      resattn_infer_request *out, char *err, size_t err_len) {
    size_t jlen = len;
    if (header_len >= 0) {
        if (header_len == 0 || (unsigned long long)header_len > len)
            return resattn_proto_fail(
                err, err_len, 400,
                "Inference-Header-Content-Length %lld is outside the body (%zu bytes)", header_len,
                len);
        jlen = (size_t)header_len;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)body, jlen, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return resattn_proto_fail(err, err_len, 400, "invalid JSON at line %d column %d: %s",
                                  je.line, je.column, je.text);
    }
    int st = proto == RESATTN_PROTO_V2 ? parse_v2_json(root, body + jlen, len - jlen, header_len,
                                                       model, im, out, err, err_len)
                                       : parse_predict_json(root, im, top_k, err, err_len);
    json_decref(root);
    return st;
}

/* v2 JSON with a BYTES input (jansson decides later). When inputs[0].data is found byte for
 * byte and starts with a number, it is a numeric tensor, and the megabytes of a big one are
 * not searched; otherwise a cheap test: "BYTES" anywhere. */
static int v2_json_has_bytes(const unsigned char *body, size_t len) {
    const char *js = (const char *)body, *end = js + len;
    const char *in = resattn_json_member(js, end, "inputs", NULL, 64);
    if (in && *in == '[') {
        const char *first = resattn_json_ws(in + 1, end);
        const char *d =
            first < end && *first == '{' ? resattn_json_member(first, end, "data", NULL, 62) : NULL;
        while (d && d < end && (*d == '[' || *d == ' ' || *d == '\n' || *d == '\r' || *d == '\t'))
            d++;
        if (d && d < end && (*d == '-' || (*d >= '0' && *d <= '9')))
            return 0;
    }
    return memmem(body, len, "\"BYTES\"", 7) != NULL;
}

int resattn_image_api_is_image(const char *ct, const unsigned char *body, size_t len) {
    if (has_prefix(ct, "multipart/form-data") || has_prefix(ct, "image/"))
        return 1;
    if (resattn_image_sniff(body, len) != RESATTN_IMAGE_FORMAT_UNKNOWN)
        return 1;
    /* application/octet-stream: the binary extension's JSON header comes first */
    int json = !ct || has_prefix(ct, "application/json");
    int octet = has_prefix(ct, "application/octet-stream") && len && body[0] == '{';
    return (json || octet) && len && v2_json_has_bytes(body, len);
}

/* Collect the request's images by content type. */
static int collect(resattn_protocol proto, const char *ct, const unsigned char *body, size_t len,
                   long long header_len, const resattn_model_info *model, images *im, int *top_k,
                   resattn_infer_request *out, char *err, size_t err_len) {
    if (has_prefix(ct, "multipart/form-data"))
        return parse_multipart(ct, body, len, im, top_k, err, err_len);
    if (resattn_image_sniff(body, len) != RESATTN_IMAGE_FORMAT_UNKNOWN || has_prefix(ct, "image/"))
        return add_image(im, body, len, NULL, err, err_len);
    if (has_prefix(ct, "application/json") || (!ct && len && body[0] == '{') ||
        (proto == RESATTN_PROTO_V2 && header_len >= 0))
        return parse_json(proto, body, len, proto == RESATTN_PROTO_V2 ? header_len : -1, model, im,
                          top_k, out, err, err_len);
    if (has_prefix(ct, "application/octet-stream"))
        return resattn_proto_fail(err, err_len, 415,
                                  "the body is not a PNG or JPEG image (%zu bytes)", len);
    return resattn_proto_fail(
        err, err_len, 415,
        "Content-Type '%.64s' is not supported for images: send multipart/form-data, "
        "image/png, image/jpeg or application/json with base64",
        ct ? ct : "(none)");
}

/* Decode and preprocess every image into out->input [n, C, H, W]. */
static int preprocess_all(const images *im, long long max_pixels, const resattn_model_info *m,
                          resattn_infer_request *out, char *err, size_t err_len) {
    resattn_preprocess pp;
    char e[RESATTN_ERR_LEN];
    if (resattn_preprocess_from_model(m, &pp, e, sizeof e))
        return resattn_proto_fail(err, err_len, 422, "this model does not take images: %s", e);
    size_t img = (size_t)m->in_channels * m->in_height * m->in_width;
    out->input = malloc(sizeof(float) * img * (size_t)im->n);
    if (!out->input)
        return resattn_proto_fail(err, err_len, 500, "out of memory for %d images", im->n);
    for (int i = 0; i < im->n; i++) {
        resattn_image_status s = resattn_preprocess_bytes(
            &pp, im->item[i].p, im->item[i].n, max_pixels, out->input + i * img, e, sizeof e);
        if (s)
            return im->n == 1
                       ? resattn_proto_fail(err, err_len, resattn_image_http_status(s), "%s", e)
                       : resattn_proto_fail(err, err_len, resattn_image_http_status(s),
                                            "image %d: %s", i, e);
    }
    out->n = im->n;
    out->c = m->in_channels;
    out->h = m->in_height;
    out->w = m->in_width;
    return 0;
}

int resattn_image_api_parse(resattn_protocol proto, const char *ct, const unsigned char *body,
                            size_t len, long long header_len, int top_k, long long max_pixels,
                            const resattn_model_info *model, const resattn_parse_limits *limits,
                            resattn_infer_request *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    out->protocol = proto;
    /* v2 JSON bodies may name their outputs; the other forms get the default ones */
    out->outputs = proto == RESATTN_PROTO_V2 ? RESATTN_OUT_DEFAULT : RESATTN_OUT_TOP_K;
    images *im = calloc(1, sizeof *im);
    if (!im)
        return resattn_proto_fail(err, err_len, 500, "out of memory");
    im->max = limits->max_batch > 0 && limits->max_batch < MAX_IMAGES_HARD ? limits->max_batch
                                                                           : MAX_IMAGES_HARD;
    int st = collect(proto, ct, body, len, header_len, model, im, &top_k, out, err, err_len);
    if (!st && im->n == 0)
        st = resattn_proto_fail(err, err_len, 400, "no image in the request");
    if (!st)
        st = preprocess_all(im, max_pixels, model, out, err, err_len);
    for (int i = 0; i < im->n; i++)
        free(im->blob[i]);
    free(im);
    if (st) {
        resattn_infer_request_release(out);
        out->protocol = proto;
        return st;
    }
    /* the URL query, else the body (/predict's "top_k" or a multipart field; v2's
     * parameters.top_k is already in out->top_k), else the default */
    out->top_k = resattn_top_k_clamp(top_k >= 0 ? top_k : out->top_k, model);
    return 0;
}

int resattn_image_api_owns(const resattn_infer_request *req) {
    return req->protocol == RESATTN_PROTO_PREDICT;
}

/* Indices of row p [k] sorted by decreasing probability (ties: lower index first). */
static const char *label_of(const resattn_model_info *m, int c, char *buf, size_t len) {
    if (m->labels && m->labels[c])
        return m->labels[c];
    snprintf(buf, len, "%d", c);
    return buf;
}

static json_t *predictions(const resattn_model_info *m, const float *p, const int *idx, int top) {
    json_t *a = json_array();
    for (int i = 0; i < top; i++) {
        char buf[16];
        json_array_append_new(a, json_pack("{s:s, s:i, s:f}", "label",
                                           label_of(m, idx[i], buf, sizeof buf), "index", idx[i],
                                           "probability", (double)p[idx[i]]));
    }
    return a;
}

int resattn_image_api_encode(const resattn_infer_request *req, const char *model_name,
                             const resattn_model_info *model, const float *logits, int n,
                             resattn_response_body *out) {
    memset(out, 0, sizeof *out);
    int k = model->num_classes, top = req->top_k > 0 && req->top_k < k ? req->top_k : k;
    float *probs = malloc(sizeof(float) * (size_t)n * k);
    int *idx = malloc(sizeof(int) * (size_t)n * top);
    json_t *root = NULL;
    if (!probs || !idx)
        goto done;
    resattn_softmax_rows(logits, n, k, probs);
    for (int i = 0; i < n; i++)
        resattn_top_indices(probs + (size_t)i * k, k, top, idx + (size_t)i * top);
    if (n == 1) {
        root = json_pack("{s:s, s:o}", "model", model_name ? model_name : "", "predictions",
                         predictions(model, probs, idx, top));
    } else {
        json_t *batch = json_array();
        for (int i = 0; i < n; i++)
            json_array_append_new(
                batch, predictions(model, probs + (size_t)i * k, idx + (size_t)i * top, top));
        root = json_pack("{s:s, s:o}", "model", model_name ? model_name : "", "batch", batch);
    }
    if (root && (req->attention & RESATTN_ATTN_SUMMARY)) {
        json_t *att = resattn_attention_predict_json(req); /* attention_api.h */
        if (!att || json_object_set_new(root, "attention", att)) {
            json_decref(root);
            root = NULL;
        }
    }
done:
    free(probs);
    free(idx);
    return resattn_json_response(root, JSON_COMPACT | JSON_REAL_PRECISION(9), out);
}
