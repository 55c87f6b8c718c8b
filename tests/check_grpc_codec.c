/*
 * The gRPC codec (server/protocol/grpc_codec.c) as pure functions, compared with the HTTP v2
 * codec it must agree with: the same tensor in a ModelInferRequest (typed contents or
 * raw_input_contents) and in a v2 body (JSON or the binary extension) gives the same floats,
 * the same outputs and options, and the same HTTP status for the same mistake; answers
 * carry what resattn_v2_encode writes; framing, grpc-timeout and grpc-message encoding follow
 * the gRPC spec; every truncation of a valid message is refused cleanly (ASan/UBSan under
 * `make asan`). The model is a stand-in resattn_model_info [3,4,5] with 7 classes.
 */
#include "protocol/grpc_codec.h"
#include "protocol/protocol.h"
#include "protocol/protocol_common.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { C = 3, H = 4, W = 5, CHW = C * H * W };

/* The codecs only read the shape and class count of the model. */
static resattn_model_info model(void) {
    return (resattn_model_info){.in_channels = C, .in_height = H, .in_width = W, .num_classes = 7};
}

static const resattn_parse_limits limits = {.max_batch = 4, .max_json_depth = 64};

/* ---- building requests ------------------------------------------------------------------ */

typedef struct req {
    Inference__ModelInferRequest m;
    Inference__ModelInferRequest__InferInputTensor in, *inp[1];
    Inference__InferTensorContents contents;
    int64_t shape[4];
    ProtobufCBinaryData raw;
    Inference__ModelInferRequest__InferRequestedOutputTensor out[4], *outp[4];
    Inference__ModelInferRequest__ParametersEntry pe[4], *pep[4];
    Inference__InferParameter pv[4];
} req;

/* One input of `datatype` and shape [n, C, H, W], no contents yet. */
static void req_init(req *r, const char *datatype, int n) {
    Inference__ModelInferRequest m = INFERENCE__MODEL_INFER_REQUEST__INIT;
    Inference__ModelInferRequest__InferInputTensor in =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    memset(r, 0, sizeof *r);
    r->m = m;
    r->in = in;
    r->contents = c;
    r->in.name = (char *)"input";
    r->in.datatype = (char *)datatype;
    r->shape[0] = n, r->shape[1] = C, r->shape[2] = H, r->shape[3] = W;
    r->in.shape = r->shape;
    r->in.n_shape = 4;
    r->inp[0] = &r->in;
    r->m.inputs = r->inp;
    r->m.n_inputs = 1;
}

static void req_raw(req *r, const void *bytes, size_t len) {
    r->raw.data = (uint8_t *)bytes;
    r->raw.len = len;
    r->m.raw_input_contents = &r->raw;
    r->m.n_raw_input_contents = 1;
}

static void req_output(req *r, const char *name) {
    Inference__ModelInferRequest__InferRequestedOutputTensor o =
        INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT;
    size_t i = r->m.n_outputs++;
    r->out[i] = o;
    r->out[i].name = (char *)name;
    r->outp[i] = &r->out[i];
    r->m.outputs = r->outp;
}

static void req_int_param(req *r, const char *key, int64_t v) {
    Inference__ModelInferRequest__ParametersEntry e =
        INFERENCE__MODEL_INFER_REQUEST__PARAMETERS_ENTRY__INIT;
    Inference__InferParameter p = INFERENCE__INFER_PARAMETER__INIT;
    size_t i = r->m.n_parameters++;
    r->pv[i] = p;
    r->pv[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    r->pv[i].int64_param = v;
    r->pe[i] = e;
    r->pe[i].key = (char *)key;
    r->pe[i].value = &r->pv[i];
    r->pep[i] = &r->pe[i];
    r->m.parameters = r->pep;
}

/* Pack, unpack (as the server does) and parse: the status, *raw, err. */
static int grpc_parse(req *r, resattn_infer_request *out, int *raw, char *err, size_t err_len) {
    resattn_grpc_message msg;
    ck_assert_int_eq(resattn_grpc_pack(&r->m.base, &msg), 0);
    const unsigned char *body;
    size_t len;
    ck_assert_int_eq(resattn_grpc_unframe(msg.data, msg.len, 1 << 30, &body, &len, err, err_len),
                     0);
    Inference__ModelInferRequest *m = resattn_grpc_infer_unpack(body, len, err, err_len);
    ck_assert_ptr_nonnull(m);
    resattn_model_info info = model();
    int st = resattn_grpc_infer_parse(m, &info, &limits, 0, out, raw, err, err_len);
    if (out->input_in_body) { /* the input lives in m: keep a copy for the comparison */
        float *copy = malloc(sizeof(float) * (size_t)out->n * CHW);
        memcpy(copy, out->input, sizeof(float) * (size_t)out->n * CHW);
        out->input = copy;
        out->input_in_body = 0;
    }
    resattn_grpc_infer_free(m, body, len);
    resattn_grpc_message_release(&msg);
    return st;
}

/* The same tensor as a v2 binary-extension body. */
static int v2_binary_parse(const char *datatype, int n, const void *bytes, size_t len,
                           const char *extra, resattn_infer_request *out, char *err,
                           size_t err_len) {
    char head[512];
    int hl =
        snprintf(head, sizeof head,
                 "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"%s\",\"shape\":[%d,%d,%d,%d],"
                 "\"parameters\":{\"binary_data_size\":%zu}}]%s}",
                 datatype, n, C, H, W, len, extra ? extra : "");
    unsigned char *body = malloc((size_t)hl + len);
    memcpy(body, head, (size_t)hl);
    memcpy(body + hl, bytes, len);
    resattn_model_info info = model();
    int st = resattn_v2_parse("application/json", body, (size_t)hl + len, hl, &info, &limits, out,
                              err, err_len);
    free(body);
    return st;
}

static void expect_same(const resattn_infer_request *a, const resattn_infer_request *b) {
    ck_assert_int_eq(a->n, b->n);
    ck_assert_uint_eq(a->outputs, b->outputs);
    ck_assert_int_eq(a->top_k, b->top_k);
    ck_assert_int_eq(a->classification[0], b->classification[0]);
    ck_assert_int_eq(a->classification[1], b->classification[1]);
    ck_assert_int_eq(a->outputs_named, b->outputs_named);
    for (int i = 0; i < a->n * CHW; i++)
        ck_assert_msg(a->input[i] == b->input[i] || (isnan(a->input[i]) && isnan(b->input[i])),
                      "element %d: %g vs %g", i, a->input[i], b->input[i]);
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(unframe_rules) {
    unsigned char ok[] = {0, 0, 0, 0, 2, 0x08, 1}, *p;
    const unsigned char *msg;
    size_t len;
    char err[256];
    ck_assert_int_eq(resattn_grpc_unframe(ok, sizeof ok, 100, &msg, &len, err, sizeof err), 0);
    ck_assert_uint_eq(len, 2);
    ck_assert_ptr_eq(msg, ok + 5);
    ck_assert_int_eq(resattn_grpc_unframe(ok, 4, 100, &msg, &len, err, sizeof err),
                     RESATTN_GRPC_INVALID_ARGUMENT);
    ck_assert_int_eq(resattn_grpc_unframe(ok, 6, 100, &msg, &len, err, sizeof err),
                     RESATTN_GRPC_INVALID_ARGUMENT);
    ck_assert(strstr(err, "declares 2 bytes but 1 follow"));
    ck_assert_int_eq(resattn_grpc_unframe(ok, sizeof ok, 1, &msg, &len, err, sizeof err),
                     RESATTN_GRPC_RESOURCE_EXHAUSTED);
    p = malloc(sizeof ok);
    memcpy(p, ok, sizeof ok);
    p[0] = 1; /* compressed, and no grpc-encoding is accepted: INTERNAL as the spec says */
    ck_assert_int_eq(resattn_grpc_unframe(p, sizeof ok, 100, &msg, &len, err, sizeof err),
                     RESATTN_GRPC_INTERNAL);
    p[0] = 2;
    ck_assert_int_eq(resattn_grpc_unframe(p, sizeof ok, 100, &msg, &len, err, sizeof err),
                     RESATTN_GRPC_INVALID_ARGUMENT);
    free(p);
}
END_TEST

START_TEST(headers_and_codes) {
    char out[64];
    resattn_grpc_percent_encode("a b%c\n\xc3\xa8", out, sizeof out);
    ck_assert_str_eq(out, "a b%25c%0A%C3%A8");
    resattn_grpc_percent_encode("abcdef", out, 4); /* truncated, still terminated */
    ck_assert_str_eq(out, "abc");
    ck_assert(fabs(resattn_grpc_timeout_seconds("100m") - 0.1) < 1e-12);
    ck_assert(fabs(resattn_grpc_timeout_seconds("2S") - 2) < 1e-12);
    ck_assert(fabs(resattn_grpc_timeout_seconds("1H") - 3600) < 1e-9);
    ck_assert(fabs(resattn_grpc_timeout_seconds("5u") - 5e-6) < 1e-15);
    ck_assert(resattn_grpc_timeout_seconds("123456789S") < 0); /* 9 digits */
    ck_assert(resattn_grpc_timeout_seconds("10") < 0);
    ck_assert(resattn_grpc_timeout_seconds("10x") < 0);
    ck_assert(resattn_grpc_timeout_seconds("S") < 0);
    ck_assert(resattn_grpc_timeout_seconds("1mm") < 0);
    const int http[] = {400, 401, 404, 413, 415, 422, 500, 501, 503, 504};
    const int grpc[] = {3, 16, 5, 8, 3, 3, 13, 12, 14, 4};
    for (size_t i = 0; i < sizeof http / sizeof http[0]; i++)
        ck_assert_int_eq(resattn_grpc_code_from_http(http[i]), grpc[i]);
    ck_assert_str_eq(resattn_grpc_code_name(14), "UNAVAILABLE");
}
END_TEST

/* Every datatype: raw_input_contents equals the v2 binary extension's bytes. */
START_TEST(raw_matches_v2_binary) {
    static const char *types[] = {"FP32",  "FP64",  "FP16",   "BF16",   "INT8",   "INT16", "INT32",
                                  "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const resattn_dtype *dt = resattn_dtype_find(types[t]);
        int n = 2;
        size_t len = (size_t)n * CHW * (size_t)dt->size;
        unsigned char *bytes = malloc(len);
        for (size_t i = 0; i < len; i++) /* small values valid in every type (BOOL: 0/1) */
            bytes[i] = dt->kind == RESATTN_ELEM_BOOL ? (unsigned char)(i & 1)
                       : (i % (size_t)dt->size) == (size_t)dt->size - 1 && dt->size > 1
                           ? 0x3c
                           : (unsigned char)(i * 7);
        req r;
        req_init(&r, types[t], n);
        req_raw(&r, bytes, len);
        resattn_infer_request a, b;
        int raw = 0;
        char ea[256] = "", eb[256] = "";
        int sa = grpc_parse(&r, &a, &raw, ea, sizeof ea);
        int sb = v2_binary_parse(types[t], n, bytes, len, NULL, &b, eb, sizeof eb);
        ck_assert_msg(sa == sb, "%s: gRPC %d (%s), v2 %d (%s)", types[t], sa, ea, sb, eb);
        ck_assert(raw);
        if (!sa)
            expect_same(&a, &b);
        resattn_infer_request_release(&a);
        resattn_infer_request_release(&b);
        free(bytes);
    }
}
END_TEST

/* Typed contents equal the JSON data of v2; options are read by the same function. */
START_TEST(typed_matches_v2_json) {
    float x[2 * CHW];
    for (int i = 0; i < 2 * CHW; i++)
        x[i] = (float)(i * 0.37 - 5.5);
    req r;
    req_init(&r, "FP32", 2);
    r.contents.fp32_contents = x;
    r.contents.n_fp32_contents = 2 * CHW;
    r.in.contents = &r.contents;
    req_output(&r, "probabilities");
    req_output(&r, "top_k_labels");
    req_int_param(&r, "top_k", 3);
    resattn_infer_request a, b;
    int raw = 1;
    char err[256];
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 0);
    ck_assert(!raw);
    char *json = malloc(16384);
    size_t o = (size_t)snprintf(json, 16384,
                                "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":"
                                "[2,%d,%d,%d],\"data\":[",
                                C, H, W);
    for (int i = 0; i < 2 * CHW; i++)
        o += (size_t)snprintf(json + o, 16384 - o, "%s%.9g", i ? "," : "", x[i]);
    snprintf(json + o, 16384 - o,
             "]}],\"outputs\":[{\"name\":\"probabilities\"},{\"name\":\"top_k_labels\"}],"
             "\"parameters\":{\"top_k\":3}}");
    resattn_model_info info = model();
    ck_assert_int_eq(resattn_v2_parse("application/json", (unsigned char *)json, strlen(json), -1,
                                      &info, &limits, &b, err, sizeof err),
                     0);
    expect_same(&a, &b);
    ck_assert_uint_eq(a.outputs, RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K_LABELS);
    ck_assert_int_eq(a.top_k, 3);
    resattn_infer_request_release(&a);
    resattn_infer_request_release(&b);
    free(json);
    /* integer contents, checked against the datatype's range */
    int32_t iv[CHW];
    for (int i = 0; i < CHW; i++)
        iv[i] = i - 30;
    req_init(&r, "INT8", 1);
    r.contents.int_contents = iv;
    r.contents.n_int_contents = CHW;
    r.in.contents = &r.contents;
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 0);
    for (int i = 0; i < CHW; i++)
        ck_assert(a.input[i] == (float)(i - 30));
    resattn_infer_request_release(&a);
    iv[7] = 200;
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert_msg(strstr(err, "int_contents[7] is 200, outside the range of INT8"), "%s", err);
}
END_TEST

/* The same mistakes give the same status as on HTTP v2, with the field named. */
START_TEST(errors_match_v2) {
    float x[5 * CHW] = {0};
    struct {
        int n;
        const char *datatype;
        int bytes_delta;
        int status;
        const char *msg;
    } cases[] = {
        {5, "FP32", 0, 413, "inputs[0].shape"}, /* over max_batch (4) */
        {1, "FP32", -4, 400, "raw_input_contents[0] has"},
        {1, "FP9", 0, 400, "inputs[0].datatype 'FP9'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        req r;
        req_init(&r, cases[i].datatype, cases[i].n);
        req_raw(&r, x, (size_t)(cases[i].n * CHW * 4 + cases[i].bytes_delta));
        resattn_infer_request a, b;
        int raw;
        char ea[256], eb[256];
        ck_assert_int_eq(grpc_parse(&r, &a, &raw, ea, sizeof ea), cases[i].status);
        ck_assert_msg(strstr(ea, cases[i].msg), "%s", ea);
        if (cases[i].bytes_delta == 0)
            ck_assert_int_eq(v2_binary_parse(cases[i].datatype, cases[i].n, x,
                                             (size_t)cases[i].n * CHW * 4, NULL, &b, eb, sizeof eb),
                             cases[i].status);
        resattn_infer_request_release(&a);
    }
    /* the model's image shape: 422 on both */
    req r;
    req_init(&r, "FP32", 1);
    r.shape[2] = H + 1;
    req_raw(&r, x, (size_t)C * (H + 1) * W * 4);
    resattn_infer_request a;
    int raw;
    char err[256];
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 422);
    /* outputs and parameters: v2's messages */
    req_init(&r, "FP32", 1);
    req_raw(&r, x, CHW * 4);
    req_output(&r, "colours");
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert_msg(strstr(err, "outputs[0].name 'colours' is not an output"), "%s", err);
    req_init(&r, "FP32", 1);
    req_raw(&r, x, CHW * 4);
    req_int_param(&r, "top_k", 0);
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert_msg(strstr(err, "parameters.top_k must be a positive integer"), "%s", err);
    /* both forms at once; no input; the image input's name with a numeric type */
    req_init(&r, "FP32", 1);
    req_raw(&r, x, CHW * 4);
    r.contents.fp32_contents = x;
    r.contents.n_fp32_contents = CHW;
    r.in.contents = &r.contents;
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert(strstr(err, "both contents and raw_input_contents"));
    req_init(&r, "FP32", 1);
    r.m.n_inputs = 0;
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert(strstr(err, "inputs has 0 tensors"));
    req_init(&r, "FP32", 1);
    r.contents.int_contents = (int32_t *)x;
    r.contents.n_int_contents = CHW;
    r.in.contents = &r.contents;
    ck_assert_int_eq(grpc_parse(&r, &a, &raw, err, sizeof err), 400);
    ck_assert_msg(strstr(err, "contents.int_contents does not hold datatype FP32"), "%s", err);
}
END_TEST

/* The raw tensor stays in the message bytes (protobuf-c would copy it): used there when it is
 * aligned (the server places a message's end on 64 bytes, and raw_input_contents comes last),
 * converted into a copy when it is not; the same floats either way. */
START_TEST(raw_fp32_in_place) {
    float x[CHW];
    for (int i = 0; i < CHW; i++)
        x[i] = (float)i - 0.5f;
    req r;
    req_init(&r, "FP32", 1);
    req_raw(&r, x, sizeof x);
    r.m.model_name = (char *)"m";
    resattn_grpc_message msg;
    ck_assert_int_eq(resattn_grpc_pack(&r.m.base, &msg), 0);
    size_t len = msg.len - 5;
    unsigned char *mem = aligned_alloc(64, (len + 192 + 63) / 64 * 64);
    for (int shift = 0; shift < 2; shift++) {
        unsigned char *body = mem + 128 - len % 64 + (size_t)shift; /* end aligned, then not */
        memcpy(body, msg.data + 5, len);
        char err[256];
        Inference__ModelInferRequest *m = resattn_grpc_infer_unpack(body, len, err, sizeof err);
        ck_assert_ptr_nonnull(m);
        ck_assert_ptr_eq(m->raw_input_contents[0].data, body + len - sizeof x);
        ck_assert_str_eq(m->model_name, "m");
        resattn_parse_limits l = limits;
        l.input_in_body_ok = 1;
        resattn_model_info info = model();
        resattn_infer_request a;
        int raw;
        ck_assert_int_eq(resattn_grpc_infer_parse(m, &info, &l, 0, &a, &raw, err, sizeof err), 0);
        ck_assert_int_eq(a.input_in_body, !shift);
        if (!shift)
            ck_assert_ptr_eq(a.input, (float *)(void *)m->raw_input_contents[0].data);
        ck_assert(!memcmp(a.input, x, sizeof x));
        resattn_infer_request_release(&a);
        resattn_grpc_infer_free(m, body, len);
    }
    free(mem);
    resattn_grpc_message_release(&msg);
}
END_TEST

/* The answer holds what resattn_v2_encode writes, raw or typed. */
START_TEST(encode_matches_v2) {
    float logits[2 * 7];
    for (int i = 0; i < 14; i++)
        logits[i] = (float)sin(i * 1.3) * 3;
    resattn_model_info info = model();
    resattn_infer_request q;
    memset(&q, 0, sizeof q);
    q.n = 2;
    q.outputs = RESATTN_OUT_DEFAULT;
    q.top_k = 3;
    q.classification[1] = 2; /* probabilities as "value:index" strings */
    q.id = (char *)"r1";
    q.model_version = "4";
    resattn_response_body v2;
    ck_assert_int_eq(resattn_v2_encode(&q, "m", &info, logits, 2, &v2), 0);
    json_t *want = json_loadb((char *)v2.data, v2.len, 0, NULL);
    ck_assert_ptr_nonnull(want);
    for (int raw = 0; raw < 2; raw++) {
        resattn_grpc_message g;
        ck_assert_int_eq(resattn_grpc_infer_encode(&q, "m", &info, logits, 2, raw, &g), 0);
        Inference__ModelInferResponse *r =
            inference__model_infer_response__unpack(NULL, g.len - 5, g.data + 5);
        ck_assert_ptr_nonnull(r);
        ck_assert_str_eq(r->model_name, "m");
        ck_assert_str_eq(r->model_version, "4");
        ck_assert_str_eq(r->id, "r1");
        json_t *outs = json_object_get(want, "outputs");
        ck_assert_uint_eq(r->n_outputs, json_array_size(outs));
        ck_assert_uint_eq(r->n_raw_output_contents, raw ? r->n_outputs : 0);
        for (size_t i = 0; i < r->n_outputs; i++) {
            json_t *o = json_array_get(outs, i), *data = json_object_get(o, "data");
            Inference__ModelInferResponse__InferOutputTensor *t = r->outputs[i];
            ck_assert_str_eq(t->name, json_string_value(json_object_get(o, "name")));
            ck_assert_str_eq(t->datatype, json_string_value(json_object_get(o, "datatype")));
            ck_assert_uint_eq(t->n_shape, json_array_size(json_object_get(o, "shape")));
            for (size_t j = 0; j < json_array_size(data); j++) {
                json_t *v = json_array_get(data, j);
                if (!strcmp(t->datatype, "BYTES")) {
                    const char *s = json_string_value(v);
                    if (raw) { /* 4-byte length, bytes: walk to element j */
                        const uint8_t *p = r->raw_output_contents[i].data;
                        for (size_t k = 0; k < j; k++)
                            p += 4 + (p[0] | p[1] << 8);
                        ck_assert_uint_eq((size_t)(p[0] | p[1] << 8), strlen(s));
                        ck_assert(!memcmp(p + 4, s, strlen(s)));
                    } else {
                        ck_assert_uint_eq(t->contents->bytes_contents[j].len, strlen(s));
                        ck_assert(!memcmp(t->contents->bytes_contents[j].data, s, strlen(s)));
                    }
                } else if (!strcmp(t->datatype, "FP32")) {
                    float f;
                    if (raw)
                        memcpy(&f, r->raw_output_contents[i].data + 4 * j, 4);
                    else
                        f = t->contents->fp32_contents[j];
                    ck_assert_msg(f == (float)json_number_value(v), "%s[%zu]", t->name, j);
                } else {
                    int64_t k;
                    if (raw)
                        memcpy(&k, r->raw_output_contents[i].data + 8 * j, 8);
                    else
                        k = t->contents->int64_contents[j];
                    ck_assert_int_eq(k, json_integer_value(v));
                }
            }
        }
        inference__model_infer_response__free_unpacked(r, NULL);
        resattn_grpc_message_release(&g);
    }
    json_decref(want);
    resattn_response_body_release(&v2);
}
END_TEST

START_TEST(metadata_matches_v2) {
    resattn_model_info info = model();
    const char *versions[] = {"3", "1"};
    resattn_grpc_message g;
    ck_assert_int_eq(resattn_grpc_model_metadata("m", versions, 2, &info, &g), 0);
    Inference__ModelMetadataResponse *r =
        inference__model_metadata_response__unpack(NULL, g.len - 5, g.data + 5);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(r->name, "m");
    ck_assert_str_eq(r->platform, "resattn_safetensors");
    ck_assert_uint_eq(r->n_versions, 2);
    ck_assert_str_eq(r->versions[0], "3");
    resattn_response_body v2;
    ck_assert_int_eq(resattn_v2_model_metadata_at("m", versions, 2, &info, &v2), 0);
    json_t *want = json_loadb((char *)v2.data, v2.len, 0, NULL);
    json_t *inputs = json_object_get(want, "inputs");
    ck_assert_uint_eq(r->n_inputs, json_array_size(inputs));
    for (size_t i = 0; i < r->n_inputs; i++) {
        json_t *t = json_array_get(inputs, i);
        ck_assert_str_eq(r->inputs[i]->name, json_string_value(json_object_get(t, "name")));
        ck_assert_str_eq(r->inputs[i]->datatype, json_string_value(json_object_get(t, "datatype")));
    }
    json_decref(want);
    resattn_response_body_release(&v2);
    ck_assert_str_eq(r->inputs[0]->name, "input");
    ck_assert_int_eq(r->inputs[0]->shape[0], -1);
    ck_assert_int_eq(r->inputs[0]->shape[3], W);
    ck_assert_uint_eq(r->n_outputs, 5);
    ck_assert_str_eq(r->outputs[1]->name, "probabilities");
    ck_assert_int_eq(r->outputs[1]->shape[1], 7);
    inference__model_metadata_response__free_unpacked(r, NULL);
    resattn_grpc_message_release(&g);
    ck_assert_int_eq(resattn_grpc_server_metadata("9.9", &g), 0);
    Inference__ServerMetadataResponse *s =
        inference__server_metadata_response__unpack(NULL, g.len - 5, g.data + 5);
    ck_assert_str_eq(s->name, "resattn");
    ck_assert_str_eq(s->version, "9.9");
    ck_assert_uint_ge(s->n_extensions, 1);
    inference__server_metadata_response__free_unpacked(s, NULL);
    resattn_grpc_message_release(&g);
}
END_TEST

/* Every prefix and every single-byte change of a valid message: refused or parsed, never a
 * crash or an out-of-bounds read (ASan). */
START_TEST(truncations_and_mutations) {
    float x[CHW] = {0};
    req r;
    req_init(&r, "FP32", 1);
    req_raw(&r, x, sizeof x);
    req_output(&r, "logits");
    req_int_param(&r, "top_k", 2);
    r.m.model_name = (char *)"m";
    resattn_grpc_message g;
    ck_assert_int_eq(resattn_grpc_pack(&r.m.base, &g), 0);
    const unsigned char *full = g.data + 5;
    size_t len = g.len - 5;
    resattn_model_info info = model();
    int accepted = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        unsigned char *b = malloc(cut ? cut : 1);
        memcpy(b, full, cut);
        char err[256];
        Inference__ModelInferRequest *m = resattn_grpc_infer_unpack(b, cut, err, sizeof err);
        if (m) {
            resattn_infer_request a;
            int raw;
            if (!resattn_grpc_infer_parse(m, &info, &limits, 0, &a, &raw, err, sizeof err))
                accepted += cut == len;
            resattn_infer_request_release(&a);
            resattn_grpc_infer_free(m, b, cut);
        }
        free(b);
    }
    ck_assert_int_eq(accepted, 1); /* the whole message */
    unsigned char *b = malloc(len);
    for (size_t i = 0; i < len; i++)
        for (int v = 0; v < 256; v += 51) {
            memcpy(b, full, len);
            b[i] = (unsigned char)(b[i] ^ (v | 1));
            char err[256];
            Inference__ModelInferRequest *m = resattn_grpc_infer_unpack(b, len, err, sizeof err);
            if (!m)
                continue;
            resattn_infer_request a;
            int raw;
            resattn_grpc_infer_parse(m, &info, &limits, 0, &a, &raw, err, sizeof err);
            resattn_infer_request_release(&a);
            resattn_grpc_infer_free(m, b, len);
        }
    free(b);
    resattn_grpc_message_release(&g);
}
END_TEST

Suite *grpc_codec_suite(void) {
    Suite *s = suite_create("grpc_codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, unframe_rules);
    tcase_add_test(tc, headers_and_codes);
    tcase_add_test(tc, raw_matches_v2_binary);
    tcase_add_test(tc, typed_matches_v2_json);
    tcase_add_test(tc, errors_match_v2);
    tcase_add_test(tc, raw_fp32_in_place);
    tcase_add_test(tc, encode_matches_v2);
    tcase_add_test(tc, metadata_matches_v2);
    tcase_add_test(tc, truncations_and_mutations);
    suite_add_tcase(s, tc);
    return s;
}
