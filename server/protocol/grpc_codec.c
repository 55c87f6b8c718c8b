/*
 * gRPC codec of the Open Inference Protocol (see grpc_codec.h). Requests: protobuf-c
 * unpacks the message (it checks wire types and lengths against the buffer); the tensor is
 * checked and converted here with the datatypes of protocol_common.h; the request's
 * "parameters" and "outputs" become a small JSON object that resattn_v2_read_options reads,
 * so every rule and message of HTTP v2 holds. Answers: resattn_v2_encode writes every output
 * in binary form (a JSON header plus the bytes), which is then re-expressed as a
 * ModelInferResponse: the bytes become raw_output_contents as they are, or typed contents.
 */
#include "protocol/grpc_codec.h"

#include "protocol/image_api.h"
#include "protocol/protocol_common.h"
#include "protocol/v2_outputs.h"
#include "protocol/attention_api.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status, framing, headers ---------------------------------------------------------- */

int resattn_grpc_code_from_http(int status) {
    switch (status) {
    case 200:
        return RESATTN_GRPC_OK;
    case 400:
    case 405:
    case 406:
    case 415:
    case 422:
        return RESATTN_GRPC_INVALID_ARGUMENT;
    case 401:
        return RESATTN_GRPC_UNAUTHENTICATED;
    case 404:
        return RESATTN_GRPC_NOT_FOUND;
    case 413:
        return RESATTN_GRPC_RESOURCE_EXHAUSTED;
    case 499:
        return RESATTN_GRPC_CANCELLED;
    case 501:
        return RESATTN_GRPC_UNIMPLEMENTED;
    case 503:
        return RESATTN_GRPC_UNAVAILABLE;
    case 504:
        return RESATTN_GRPC_DEADLINE_EXCEEDED;
    default:
        return RESATTN_GRPC_INTERNAL;
    }
}

const char *resattn_grpc_code_name(int code) {
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "UNKNOWN";
}

size_t resattn_grpc_percent_encode(const char *msg, char *out, size_t out_len) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && out_len; p++) {
        int plain = *p >= 0x20 && *p <= 0x7e && *p != '%';
        if (o + (plain ? 1 : 3) >= out_len)
            break;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (out_len)
        out[o] = 0;
    return o;
}

double resattn_grpc_timeout_seconds(const char *v) {
    /* TimeoutValue: 1 to 8 ASCII digits, TimeoutUnit: H M S m u n (gRPC over HTTP/2) */
    size_t n = strspn(v, "0123456789");
    if (n < 1 || n > 8 || !v[n] || v[n + 1])
        return -1;
    double x = strtod(v, NULL);
    switch (v[n]) {
    case 'H':
        return x * 3600;
    case 'M':
        return x * 60;
    case 'S':
        return x;
    case 'm':
        return x * 1e-3;
    case 'u':
        return x * 1e-6;
    case 'n':
        return x * 1e-9;
    default:
        return -1;
    }
}

int resattn_grpc_unframe(const unsigned char *body, size_t len, long long max_bytes,
                         const unsigned char **msg, size_t *msg_len, char *err, size_t err_len) {
    if (len < RESATTN_GRPC_PREFIX)
        return resattn_proto_fail(
            err, err_len, RESATTN_GRPC_INVALID_ARGUMENT,
            "request body of %zu bytes has no complete gRPC message prefix (5 bytes)", len);
    if (body[0] > 1)
        return resattn_proto_fail(err, err_len, RESATTN_GRPC_INVALID_ARGUMENT,
                                  "gRPC message prefix: compressed flag is %u, expected 0 or 1",
                                  body[0]);
    if (body[0] == 1) /* no grpc-encoding is accepted, so nothing may be compressed */
        return resattn_proto_fail(
            err, err_len, RESATTN_GRPC_INTERNAL,
            "compressed gRPC message without a grpc-encoding this server accepts "
            "(send uncompressed messages)");
    uint32_t n = (uint32_t)body[1] << 24 | (uint32_t)body[2] << 16 | (uint32_t)body[3] << 8 |
                 (uint32_t)body[4];
    if ((long long)n > max_bytes)
        return resattn_proto_fail(err, err_len, RESATTN_GRPC_RESOURCE_EXHAUSTED,
                                  "message of %u bytes exceeds the limit of %lld bytes", n,
                                  max_bytes);
    if ((size_t)n != len - RESATTN_GRPC_PREFIX)
        return resattn_proto_fail(
            err, err_len, RESATTN_GRPC_INVALID_ARGUMENT,
            "gRPC message prefix declares %u bytes but %zu follow (a unary call carries "
            "exactly one message)",
            n, len - RESATTN_GRPC_PREFIX);
    *msg = body + RESATTN_GRPC_PREFIX;
    *msg_len = n;
    return 0;
}

void resattn_grpc_message_release(resattn_grpc_message *m) {
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

int resattn_grpc_pack(const ProtobufCMessage *msg, resattn_grpc_message *out) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    out->len = 0;
    if (n > UINT32_MAX || !(out->data = malloc(RESATTN_GRPC_PREFIX + n)))
        return 500;
    out->data[0] = 0;
    out->data[1] = (unsigned char)(n >> 24);
    out->data[2] = (unsigned char)(n >> 16);
    out->data[3] = (unsigned char)(n >> 8);
    out->data[4] = (unsigned char)n;
    protobuf_c_message_pack(msg, out->data + RESATTN_GRPC_PREFIX);
    out->len = RESATTN_GRPC_PREFIX + n;
    return 0;
}

/* ---- requests -------------------------------------------------------------------------- */

/* A varint at *p (< end): its value, *p moved past it; -1 when cut short or too long. */
static int read_varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* The top-level fields of a ModelInferRequest: raw_input_contents (field 7) entries as spans
 * of msg into raw (grown as needed), every other field copied into rest [len] (when not
 * NULL). -1 on a wire format this walk does not take (protobuf-c then judges the whole
 * message). */
static int split_raw(const unsigned char *msg, size_t len, unsigned char *rest, size_t *rest_len,
                     ProtobufCBinaryData **raw, size_t *n_raw) {
    const unsigned char *p = msg, *end = msg + len;
    size_t cap = 0;
    *rest_len = *n_raw = 0;
    while (p < end) {
        const unsigned char *start = p;
        uint64_t key, v;
        if (read_varint(&p, end, &key))
            return -1;
        switch (key & 7) {
        case 0:
            if (read_varint(&p, end, &v))
                return -1;
            break;
        case 1:
        case 5:
            if ((size_t)(end - p) < ((key & 7) == 1 ? 8u : 4u))
                return -1;
            p += (key & 7) == 1 ? 8 : 4;
            break;
        case 2:
            if (read_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return -1;
            if (key >> 3 == 7) { /* raw_input_contents: left where it is */
                if (*n_raw == cap) {
                    cap = cap ? cap * 2 : 4;
                    ProtobufCBinaryData *r = realloc(*raw, cap * sizeof *r);
                    if (!r)
                        return -1;
                    *raw = r;
                }
                (*raw)[(*n_raw)++] = (ProtobufCBinaryData){(size_t)v, (uint8_t *)(uintptr_t)p};
                p += v;
                continue;
            }
            p += v;
            break;
        default: /* groups (deprecated) and invalid wire types */
            return -1;
        }
        if (rest) /* NULL: only find the raw entries */
            memcpy(rest + *rest_len, start, (size_t)(p - start));
        *rest_len += (size_t)(p - start);
    }
    return 0;
}

Inference__ModelInferRequest *resattn_grpc_infer_unpack(const unsigned char *msg, size_t len,
                                                        char *err, size_t err_len) {
    /* protobuf-c copies every bytes field; the raw tensors (most of a message) are kept in
     * msg instead, so that an aligned FP32 tensor is used where it arrived, as the HTTP
     * binary extension's is */
    ProtobufCBinaryData *raw = NULL;
    size_t rest_len = 0, n_raw = 0;
    unsigned char *rest = NULL;
    /* first only look for raw entries: a message without any (typed contents) is not copied */
    int split = !split_raw(msg, len, NULL, &rest_len, &raw, &n_raw) && n_raw &&
                (rest = malloc(rest_len ? rest_len : 1)) &&
                !split_raw(msg, len, rest, &rest_len, &raw, &n_raw);
    Inference__ModelInferRequest *m =
        split ? inference__model_infer_request__unpack(NULL, rest_len, rest)
              : inference__model_infer_request__unpack(NULL, len, msg);
    free(rest);
    if (m && split) {
        m->raw_input_contents = raw;
        m->n_raw_input_contents = n_raw;
        raw = NULL;
    }
    free(raw);
    if (!m)
        snprintf(err, err_len,
                 "ModelInferRequest: the %zu-byte message is not valid protobuf (truncated, "
                 "wrong wire type or a length beyond the message)",
                 len);
    return m;
}

void resattn_grpc_infer_free(Inference__ModelInferRequest *m, const unsigned char *msg,
                             size_t len) {
    if (!m)
        return;
    /* entries pointing into msg are not protobuf-c's to free (all or none of them are) */
    if (m->n_raw_input_contents && m->raw_input_contents[0].data >= msg &&
        m->raw_input_contents[0].data <= msg + len) {
        free(m->raw_input_contents);
        m->raw_input_contents = NULL;
        m->n_raw_input_contents = 0;
    }
    inference__model_infer_request__free_unpacked(m, NULL);
}

/* An InferParameter as the JSON value a v2 "parameters" object holds. */
static json_t *param_json(const Inference__InferParameter *p) {
    if (!p)
        return json_null();
    switch (p->parameter_choice_case) {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
        return json_boolean(p->bool_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
        return json_integer(p->int64_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
        return json_string(p->string_param); /* NULL for invalid UTF-8: refused below */
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
        return json_real(p->double_param);
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
        return json_integer(p->uint64_param > INT64_MAX ? INT64_MAX : (json_int_t)p->uint64_param);
    default:
        return json_null();
    }
}

/* Map entries (key, InferParameter) as a JSON object; NULL when a key or string is not
 * UTF-8 or memory runs out (err names `what`). Generic over the map entry types, which share
 * their layout (base, key, value). */
typedef struct param_entry {
    ProtobufCMessage base;
    char *key;
    Inference__InferParameter *value;
} param_entry;

static json_t *params_json(void *const *entries, size_t n, const char *what, char *err,
                           size_t err_len) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++) {
        const param_entry *e = entries[i];
        json_t *v = param_json(e->value);
        if (!v || json_object_set_new(o, e->key, v)) {
            snprintf(err, err_len, "%s[\"%.64s\"] is not valid UTF-8", what, e->key);
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* {"parameters": {...}, "outputs": [{"name", "parameters"}...]} of the request, for
 * resattn_v2_read_options (and the image parser); NULL with err on failure. */
static json_t *options_json(const Inference__ModelInferRequest *m, char *err, size_t err_len) {
    json_t *root = json_object(), *outs = json_array();
    json_t *params =
        params_json((void *const *)m->parameters, m->n_parameters, "parameters", err, err_len);
    int ok = root && outs && params && !json_object_set_new(root, "parameters", params);
    if (!params)
        json_decref(outs), outs = NULL;
    for (size_t i = 0; ok && i < m->n_outputs; i++) {
        const Inference__ModelInferRequest__InferRequestedOutputTensor *o = m->outputs[i];
        char what[48];
        snprintf(what, sizeof what, "outputs[%zu].parameters", i);
        json_t *op = params_json((void *const *)o->parameters, o->n_parameters, what, err, err_len);
        json_t *name = json_string(o->name);
        if (!name && op)
            snprintf(err, err_len, "outputs[%zu].name is not valid UTF-8", i);
        ok = op && name &&
             !json_array_append_new(outs, json_pack("{s:o, s:o}", "name", name, "parameters", op));
        if (!ok) {
            json_decref(op);
            json_decref(name);
        }
    }
    if (ok && m->n_outputs)
        ok = !json_object_set_new(root, "outputs", outs);
    else
        json_decref(outs);
    if (!ok) {
        if (!err[0])
            snprintf(err, err_len, "out of memory reading the request");
        json_decref(root);
        return NULL;
    }
    return root;
}

/* The element count of a shape, checked (positive dims, no overflow). */
static int shape_count(const int64_t *dims, size_t nd, size_t *count, char *err, size_t err_len) {
    if (nd < 1 || nd > RESATTN_SCAN_MAX_DIMS)
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0].shape has %zu dimensions, expected 3 or 4", nd);
    uint64_t prod = 1;
    int over = 0;
    for (size_t i = 0; i < nd; i++) {
        if (dims[i] <= 0)
            return resattn_proto_fail(err, err_len, 400,
                                      "inputs[0].shape[%zu] is %lld, must be positive", i,
                                      (long long)dims[i]);
        over |= __builtin_mul_overflow(prod, (uint64_t)dims[i], &prod);
    }
    if (over || prod > SIZE_MAX / 8)
        return resattn_proto_fail(err, err_len, 400, "inputs[0].shape: element count overflows");
    *count = (size_t)prod;
    return 0;
}

/* Typed contents of datatype dt: the field it must use, its length, the other fields empty. */
static int contents_count(const Inference__InferTensorContents *c, const resattn_dtype *dt,
                          size_t *n, const char **field) {
    const char *name = dt->name;
    size_t counts[] = {c->n_bool_contents, c->n_int_contents,    c->n_int64_contents,
                       c->n_uint_contents, c->n_uint64_contents, c->n_fp32_contents,
                       c->n_fp64_contents, c->n_bytes_contents};
    static const char *const fields[] = {"bool_contents", "int_contents",    "int64_contents",
                                         "uint_contents", "uint64_contents", "fp32_contents",
                                         "fp64_contents", "bytes_contents"};
    int want = !strcmp(name, "BOOL")       ? 0
               : !strcmp(name, "INT64")    ? 2
               : !strcmp(name, "UINT64")   ? 4
               : !strcmp(name, "FP32")     ? 5
               : !strcmp(name, "FP64")     ? 6
               : !strncmp(name, "INT", 3)  ? 1
               : !strncmp(name, "UINT", 4) ? 3
                                           : -1;
    *field = want >= 0 ? fields[want] : NULL;
    for (int i = 0; i < 8; i++)
        if (i != want && counts[i]) {
            *field = fields[i];
            return -1;
        }
    *n = want >= 0 ? counts[want] : 0;
    return want;
}

/* Typed integer, bool or FP64 contents (field index `which` of contents_count) into dst
 * [count] FP32, each checked against the datatype's range. */
static int decode_typed(const Inference__InferTensorContents *c, int which, const resattn_dtype *dt,
                        size_t count, int allow_nonfinite, float *dst, const char *field, char *err,
                        size_t err_len) {
    for (size_t i = 0; i < count; i++) {
        double v = which == 0   ? (double)c->bool_contents[i]
                   : which == 1 ? (double)c->int_contents[i]
                   : which == 2 ? (double)c->int64_contents[i]
                   : which == 3 ? (double)c->uint_contents[i]
                   : which == 4 ? (double)c->uint64_contents[i]
                                : c->fp64_contents[i];
        if (dt->kind == RESATTN_ELEM_INT && (v < dt->lo || v > dt->hi))
            return resattn_proto_fail(err, err_len, 400,
                                      "inputs[0].contents.%s[%zu] is %.0f, outside the range of %s",
                                      field, i, v, dt->name);
        dst[i] = (float)v;
    }
    return dt->kind == RESATTN_ELEM_FLOAT ? resattn_check_finite(dst, count, allow_nonfinite,
                                                                 "inputs[0].contents", err, err_len)
                                          : 0;
}

/* The numeric input: out->n from the shape, out->input from raw bytes or typed contents. */
static int numeric_input(const Inference__ModelInferRequest *m, const resattn_model_info *model,
                         const resattn_parse_limits *limits, resattn_infer_request *out, int raw,
                         char *err, size_t err_len) {
    const Inference__ModelInferRequest__InferInputTensor *in = m->inputs[0];
    const resattn_dtype *dt = resattn_dtype_find(in->datatype);
    if (!dt)
        return resattn_proto_fail(err, err_len, 400, "inputs[0].datatype '%.32s' is not one of %s",
                                  in->datatype, resattn_dtype_names());
    if (strcmp(in->name, RESATTN_V2_INPUT))
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0].name '%.64s' is not an input of this model (inputs: "
                                  "'" RESATTN_V2_INPUT
                                  "', a numeric [N,C,H,W] tensor; '" RESATTN_V2_IMAGE_INPUT
                                  "', BYTES images)",
                                  in->name);
    size_t count = 0;
    int st = shape_count(in->shape, in->n_shape, &count, err, err_len);
    if (!st)
        st = resattn_check_image_shape(in->shape, (int)in->n_shape, model, limits, &out->n,
                                       "inputs[0].shape", err, err_len);
    if (st)
        return st;
    if (raw) {
        const ProtobufCBinaryData *b = &m->raw_input_contents[0];
        unsigned long long need = (unsigned long long)count * (unsigned long long)dt->size;
        if (b->len != need)
            return resattn_proto_fail(
                err, err_len, 400,
                "raw_input_contents[0] has %zu bytes but shape of %zu %s elements needs "
                "%llu",
                b->len, count, dt->name, need);
        int in_place = limits->input_in_body_ok && !strcmp(dt->name, "FP32") &&
                       (uintptr_t)b->data % _Alignof(float) == 0;
        out->input = in_place ? (float *)(uintptr_t)b->data : malloc(count * sizeof(float));
        out->input_in_body = in_place;
        if (!out->input)
            return resattn_proto_fail(err, err_len, 500, "out of memory for inputs[0]");
        return resattn_dtype_decode(dt, b->data, count, limits->allow_nonfinite, out->input,
                                    "raw_input_contents[0]", err, err_len);
    }
    const Inference__InferTensorContents *c = in->contents;
    static const Inference__InferTensorContents empty = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    size_t n = 0;
    const char *field = NULL;
    int which = contents_count(c ? c : &empty, dt, &n, &field);
    if (which < 0 && field)
        return resattn_proto_fail(
            err, err_len, 400, "inputs[0].contents.%s does not hold datatype %s", field, dt->name);
    if (which < 0)
        return resattn_proto_fail(
            err, err_len, 400,
            "inputs[0].datatype %s has no typed contents: send it in raw_input_contents", dt->name);
    if (n != count)
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0].contents.%s has %zu elements but the shape needs %zu",
                                  field, n, count);
    if (which == 5) { /* FP32: the message's array itself when it may stay, checked */
        if (limits->input_in_body_ok) {
            out->input = c->fp32_contents;
            out->input_in_body = 1;
        } else if ((out->input = malloc(count * sizeof(float)))) {
            memcpy(out->input, c->fp32_contents, count * sizeof(float));
        } else {
            return resattn_proto_fail(err, err_len, 500, "out of memory for inputs[0]");
        }
        return resattn_check_finite(out->input, count, limits->allow_nonfinite,
                                    "inputs[0].contents.fp32_contents", err, err_len);
    }
    if (!(out->input = malloc(count * sizeof(float))))
        return resattn_proto_fail(err, err_len, 500, "out of memory for inputs[0]");
    return decode_typed(c, which, dt, count, limits->allow_nonfinite, out->input, field, err,
                        err_len);
}

/* The image input: a v2 binary-extension body (JSON header, then each file as a 4-byte
 * little-endian length and its bytes) for resattn_image_api_parse. */
static int image_input(const Inference__ModelInferRequest *m, json_t *root, int raw,
                       long long max_pixels, const resattn_model_info *model,
                       const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                       size_t err_len) {
    const Inference__ModelInferRequest__InferInputTensor *in = m->inputs[0];
    const Inference__InferTensorContents *c = in->contents;
    size_t bin_len = 0;
    if (raw) {
        bin_len = m->raw_input_contents[0].len;
    } else {
        if (!c || !c->n_bytes_contents)
            return resattn_proto_fail(err, err_len, 400,
                                      "inputs[0] (BYTES) holds no images: put the files in "
                                      "contents.bytes_contents or raw_input_contents");
        for (size_t i = 0; i < c->n_bytes_contents; i++) {
            if (c->bytes_contents[i].len > UINT32_MAX)
                return resattn_proto_fail(err, err_len, 413,
                                          "inputs[0].contents.bytes_contents[%zu] too large", i);
            bin_len += 4 + c->bytes_contents[i].len;
        }
    }
    json_t *shape = json_array();
    for (size_t i = 0; shape && i < in->n_shape; i++)
        json_array_append_new(shape, json_integer(in->shape[i]));
    json_t *name = json_string(in->name), *dtype = json_string(in->datatype);
    if (!name || !dtype) {
        json_decref(shape);
        json_decref(name);
        json_decref(dtype);
        return resattn_proto_fail(err, err_len, 400,
                                  "inputs[0].name or datatype is not valid UTF-8");
    }
    json_object_set_new(root, "inputs",
                        json_pack("[{s:o, s:o, s:o, s:{s:I}}]", "name", name, "datatype", dtype,
                                  "shape", shape, "parameters", "binary_data_size",
                                  (json_int_t)bin_len));
    if (m->id[0])
        json_object_set_new(root, "id", json_string(m->id));
    char *header = json_dumps(root, JSON_COMPACT);
    size_t hlen = header ? strlen(header) : 0;
    unsigned char *body = header ? malloc(hlen + bin_len + 1) : NULL;
    if (!body) {
        free(header);
        return resattn_proto_fail(err, err_len, 500, "out of memory reading the images");
    }
    memcpy(body, header, hlen);
    free(header);
    unsigned char *p = body + hlen;
    if (raw) {
        memcpy(p, m->raw_input_contents[0].data, bin_len);
    } else {
        for (size_t i = 0; i < c->n_bytes_contents; i++) {
            uint32_t l = (uint32_t)c->bytes_contents[i].len;
            unsigned char le[4] = {(unsigned char)l, (unsigned char)(l >> 8),
                                   (unsigned char)(l >> 16), (unsigned char)(l >> 24)};
            memcpy(p, le, 4);
            memcpy(p + 4, c->bytes_contents[i].data, l);
            p += 4 + l;
        }
    }
    int st =
        resattn_image_api_parse(RESATTN_PROTO_V2, "application/json", body, hlen + bin_len,
                                (long long)hlen, -1, max_pixels, model, limits, out, err, err_len);
    free(body);
    return st;
}

int resattn_grpc_infer_parse(const Inference__ModelInferRequest *m, const resattn_model_info *model,
                             const resattn_parse_limits *limits, long long max_pixels,
                             resattn_infer_request *out, int *raw, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    out->protocol = RESATTN_PROTO_V2;
    out->c = model->in_channels;
    out->h = model->in_height;
    out->w = model->in_width;
    err[0] = 0;
    *raw = m->n_raw_input_contents > 0;
    if (m->n_inputs != 1)
        return resattn_proto_fail(err, err_len, 400, "inputs has %zu tensors, expected exactly one",
                                  m->n_inputs);
    if (*raw && m->n_raw_input_contents != m->n_inputs)
        return resattn_proto_fail(err, err_len, 400,
                                  "raw_input_contents has %zu entries but there are %zu inputs",
                                  m->n_raw_input_contents, m->n_inputs);
    if (*raw && m->inputs[0]->contents)
        return resattn_proto_fail(
            err, err_len, 400,
            "inputs[0] has both contents and raw_input_contents: send one of them");
    json_t *root = options_json(m, err, err_len);
    if (!root)
        return 400;
    int st;
    const char *dt = m->inputs[0]->datatype;
    if (!strcmp(dt, "BYTES") || !strcmp(m->inputs[0]->name, RESATTN_V2_IMAGE_INPUT)) {
        st = image_input(m, root, *raw, max_pixels, model, limits, out, err, err_len);
    } else {
        st = resattn_v2_read_options(root, model, out, err, err_len);
        if (!st)
            st = numeric_input(m, model, limits, out, *raw, err, err_len);
        if (!st && !(out->input_name = strdup(RESATTN_V2_INPUT)))
            st = resattn_proto_fail(err, err_len, 500, "out of memory");
        if (!st && m->id[0] && !(out->id = strdup(m->id)))
            st = resattn_proto_fail(err, err_len, 500, "out of memory");
    }
    json_decref(root);
    if (st) {
        resattn_infer_request_release(out);
        out->protocol = RESATTN_PROTO_V2;
    }
    return st;
}

/* ---- answers --------------------------------------------------------------------------- */

/* One output of the v2 answer: its JSON description and its bytes in the binary part. */
typedef struct out_tensor {
    const char *name, *datatype;
    int64_t shape[4];
    size_t ndim;
    const unsigned char *bytes;
    size_t len;
} out_tensor;

/* Read the outputs of a v2 binary answer (JSON header + bytes); -1 when it does not have
 * the form resattn_v2_encode writes. */
static int read_v2_outputs(json_t *root, const unsigned char *bin, size_t bin_len, out_tensor *t,
                           size_t max, size_t *n) {
    json_t *outs = json_object_get(root, "outputs"), *o;
    size_t i, off = 0;
    if (json_array_size(outs) > max)
        return -1;
    json_array_foreach(outs, i, o) {
        json_t *shape = json_object_get(o, "shape"), *d;
        json_t *bds = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        t[i].name = json_string_value(json_object_get(o, "name"));
        t[i].datatype = json_string_value(json_object_get(o, "datatype"));
        t[i].ndim = json_array_size(shape);
        if (!t[i].name || !t[i].datatype || t[i].ndim > 4 || !json_is_integer(bds))
            return -1;
        size_t j;
        json_array_foreach(shape, j, d) t[i].shape[j] = json_integer_value(d);
        t[i].len = (size_t)json_integer_value(bds);
        if (t[i].len > bin_len - off)
            return -1;
        t[i].bytes = bin + off;
        off += t[i].len;
    }
    *n = json_array_size(outs);
    return off == bin_len ? 0 : -1;
}

/* BYTES elements (4-byte little-endian length, bytes) as protobuf bytes; -1 if malformed. */
static int split_bytes(const out_tensor *t, ProtobufCBinaryData **out, size_t *n) {
    size_t count = 0;
    for (size_t off = 0; off + 4 <= t->len; count++) {
        const unsigned char *p = t->bytes + off;
        off += 4 + ((size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24);
    }
    ProtobufCBinaryData *b = calloc(count ? count : 1, sizeof *b);
    if (!b)
        return -1;
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = t->bytes + off;
        size_t l = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
        if (l > t->len - off - 4) {
            free(b);
            return -1;
        }
        b[i].data = (uint8_t *)(uintptr_t)(p + 4);
        b[i].len = l;
        off += 4 + l;
    }
    *out = b;
    *n = count;
    return 0;
}

/* Typed contents of one output (arrays malloc'ed: the binary part is not aligned). */
static int typed_contents(const out_tensor *t, Inference__InferTensorContents *c) {
    if (!strcmp(t->datatype, "BYTES"))
        return split_bytes(t, &c->bytes_contents, &c->n_bytes_contents);
    int fp32 = !strcmp(t->datatype, "FP32");
    if (!fp32 && strcmp(t->datatype, "INT64"))
        return -1;
    void *copy = malloc(t->len ? t->len : 1); /* little-endian, as protobuf-c packs them */
    if (!copy)
        return -1;
    memcpy(copy, t->bytes, t->len);
    if (fp32) {
        c->n_fp32_contents = t->len / sizeof(float);
        c->fp32_contents = copy;
    } else {
        c->n_int64_contents = t->len / sizeof(int64_t);
        c->int64_contents = copy;
    }
    return 0;
}

/* The v2 answer's outputs into a ModelInferResponse, packed into out. */
static int response_from_v2(json_t *root, const unsigned char *bin, size_t bin_len,
                            const resattn_infer_request *req, const char *model_name, int raw,
                            resattn_grpc_message *out) {
    size_t cap = json_array_size(json_object_get(root, "outputs")) + 1;
    out_tensor *t = calloc(cap, sizeof *t);
    Inference__ModelInferResponse__InferOutputTensor *ot = calloc(cap, sizeof *ot);
    Inference__ModelInferResponse__InferOutputTensor **op = calloc(cap, sizeof *op);
    Inference__InferTensorContents *ct = calloc(cap, sizeof *ct);
    ProtobufCBinaryData *rawc = calloc(cap, sizeof *rawc);
    size_t n = 0;
    int st = !t || !ot || !op || !ct || !rawc || read_v2_outputs(root, bin, bin_len, t, cap, &n);
    for (size_t i = 0; !st && i < n; i++) {
        Inference__ModelInferResponse__InferOutputTensor init =
            INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
        ot[i] = init;
        ot[i].name = (char *)t[i].name;
        ot[i].datatype = (char *)t[i].datatype;
        ot[i].n_shape = t[i].ndim;
        ot[i].shape = t[i].shape;
        op[i] = &ot[i];
        if (raw) {
            rawc[i].data = (uint8_t *)(uintptr_t)t[i].bytes;
            rawc[i].len = t[i].len;
            continue;
        }
        Inference__InferTensorContents cinit = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
        ct[i] = cinit;
        ot[i].contents = &ct[i];
        st = typed_contents(&t[i], &ct[i]);
    }
    if (!st) {
        Inference__ModelInferResponse r = INFERENCE__MODEL_INFER_RESPONSE__INIT;
        r.model_name = (char *)(model_name ? model_name : "");
        r.model_version = (char *)(req->model_version ? req->model_version : "1");
        r.id = req->id ? req->id : (char *)"";
        r.n_outputs = n;
        r.outputs = op;
        r.n_raw_output_contents = raw ? n : 0;
        r.raw_output_contents = raw ? rawc : NULL;
        st = resattn_grpc_pack(&r.base, out);
    }
    for (size_t i = 0; ct && i < n; i++) {
        free(ct[i].fp32_contents);
        free(ct[i].int64_contents);
        free(ct[i].bytes_contents);
    }
    free(t);
    free(ot);
    free(op);
    free(ct);
    free(rawc);
    return st ? 500 : 0;
}

int resattn_grpc_infer_encode(const resattn_infer_request *req, const char *model_name,
                              const resattn_model_info *model, const float *logits, int n, int raw,
                              resattn_grpc_message *out) {
    memset(out, 0, sizeof *out);
    /* every output in binary form: its bytes are what raw_output_contents carries */
    resattn_infer_request q = *req;
    q.binary = ~0u;
    resattn_attn_output *ao = NULL;
    if (req->num_attn_outputs) {
        ao = malloc(sizeof *ao * (size_t)req->num_attn_outputs);
        if (!ao)
            return 500;
        for (int i = 0; i < req->num_attn_outputs; i++)
            ao[i] = (resattn_attn_output){req->attn_outputs[i].name, 1};
        q.attn_outputs = ao;
    }
    resattn_response_body b = {0};
    int st = resattn_v2_encode(&q, model_name, model, logits, n, &b);
    free(ao);
    if (st)
        return st;
    size_t hl = b.json_header_len ? b.json_header_len : b.len;
    json_t *root = json_loadb((const char *)b.data, hl, 0, NULL);
    st = root ? response_from_v2(root, b.data + hl, b.len - hl, req, model_name, raw, out) : 500;
    json_decref(root);
    resattn_response_body_release(&b);
    return st;
}

/* ---- metadata -------------------------------------------------------------------------- */

/* TensorMetadata of a v2 metadata "inputs"/"outputs" array (at most 16). */
static size_t tensors_meta(json_t *arr, Inference__ModelMetadataResponse__TensorMetadata *t,
                           Inference__ModelMetadataResponse__TensorMetadata **tp,
                           int64_t (*dims)[4]) {
    size_t i, n = 0;
    json_t *o;
    json_array_foreach(arr, i, o) {
        if (n == 16)
            break;
        Inference__ModelMetadataResponse__TensorMetadata init =
            INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
        t[n] = init;
        t[n].name = (char *)json_string_value(json_object_get(o, "name"));
        t[n].datatype = (char *)json_string_value(json_object_get(o, "datatype"));
        json_t *shape = json_object_get(o, "shape"), *d;
        size_t j;
        json_array_foreach(shape, j, d) if (j < 4) dims[n][j] = json_integer_value(d);
        t[n].n_shape = json_array_size(shape) < 4 ? json_array_size(shape) : 4;
        t[n].shape = dims[n];
        if (!t[n].name || !t[n].datatype)
            continue;
        tp[n] = &t[n];
        n++;
    }
    return n;
}

/* The strings of a JSON array (at most max; not copied: they live as long as arr). */
static size_t strings(json_t *arr, char **out, size_t max) {
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(arr, i, v) if (n < max && json_is_string(v)) out[n++] =
        (char *)json_string_value(v);
    return n;
}

/* The JSON of a v2 metadata answer (rc its encoder's status), b released; NULL on failure. */
static json_t *v2_json(int rc, resattn_response_body *b) {
    json_t *root = rc ? NULL : json_loadb((const char *)b->data, b->len, 0, NULL);
    resattn_response_body_release(b);
    return root;
}

int resattn_grpc_model_metadata(const char *name, const char *const *versions, int num_versions,
                                const resattn_model_info *model, resattn_grpc_message *out) {
    memset(out, 0, sizeof *out);
    resattn_response_body b = {0};
    json_t *root =
        v2_json(resattn_v2_model_metadata_at(name, versions, num_versions, model, &b), &b);
    if (!root)
        return 500;
    Inference__ModelMetadataResponse__TensorMetadata in[16], outs[16], *inp[16], *outp[16];
    int64_t in_dims[16][4], out_dims[16][4];
    char *vers[64];
    Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    r.name = (char *)json_string_value(json_object_get(root, "name"));
    r.platform = (char *)json_string_value(json_object_get(root, "platform"));
    r.n_versions = strings(json_object_get(root, "versions"), vers, 64);
    r.versions = vers;
    r.n_inputs = tensors_meta(json_object_get(root, "inputs"), in, inp, in_dims);
    r.inputs = inp;
    r.n_outputs = tensors_meta(json_object_get(root, "outputs"), outs, outp, out_dims);
    r.outputs = outp;
    int st = r.name && r.platform ? resattn_grpc_pack(&r.base, out) : 500;
    json_decref(root);
    return st;
}

int resattn_grpc_server_metadata(const char *version, resattn_grpc_message *out) {
    memset(out, 0, sizeof *out);
    resattn_response_body b = {0};
    json_t *root = v2_json(resattn_v2_server_metadata(version, &b), &b);
    if (!root)
        return 500;
    char *ext[16];
    Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    r.name = (char *)json_string_value(json_object_get(root, "name"));
    r.version = (char *)json_string_value(json_object_get(root, "version"));
    r.n_extensions = strings(json_object_get(root, "extensions"), ext, 16);
    r.extensions = ext;
    int st = r.name && r.version ? resattn_grpc_pack(&r.base, out) : 500;
    json_decref(root);
    return st;
}
