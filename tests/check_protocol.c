/*
 * The protocol codecs (server/protocol/v2.c, server/protocol/tfs.c, server/protocol/json_scan.c) as
 * pure functions: every request form and datatype gives the right floats, every bad request gives
 * the precise HTTP status and a message naming the offending field, encoders round-trip through
 * jansson, and truncated or mutated bodies never crash or read out of bounds (run under ASan/UBSan
 * by `make asan`). The model is a stand-in resattn_model_info with an odd image shape [3,4,5] and 7
 * classes: the codecs only read its shape.
 */
#include "maps/mask_summary.h"
#include "protocol/attention_api.h"
#include "protocol/json_scan.h"
#include "data/npy.h"
#include "protocol/protocol.h"
#include "protocol/protocol_common.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define C 3
#define H 4
#define W 5
#define CHW (C * H * W)

static resattn_model_info model(void) {
    resattn_model_info m;
    memset(&m, 0, sizeof m);
    m.in_channels = C;
    m.in_height = H;
    m.in_width = W;
    m.num_classes = 7;
    return m;
}

static const resattn_parse_limits limits = {.max_batch = 4, .max_json_depth = 64};

/* A growing string for building bodies. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Value i of the reference image: varied signs, magnitudes and exponents. */
static double ref_value(int i) {
    static const double v[] = {0.5, -1.25, 3e-3, 123.456, -0.0, 1e-7, 42, -7.75, 0.1, 2.5e2};
    return v[i % 10] * (1 + i / 10);
}

/* data list of n reference values, nested by dims (nd == 0: flat), with printf format. */
static void sb_data(sbuf *b, const int *dims, int nd, int n, const char *fmt) {
    if (nd == 0) {
        sb_printf(b, "[");
        for (int i = 0; i < n; i++) {
            sb_printf(b, i ? "," : "");
            sb_printf(b, fmt, ref_value(i));
        }
        sb_printf(b, "]");
        return;
    }
    int idx[8] = {0}, total = 1;
    for (int d = 0; d < nd; d++)
        total *= dims[d];
    for (int d = 0; d < nd; d++)
        sb_printf(b, "[");
    for (int i = 0; i < total; i++) {
        sb_printf(b, fmt, ref_value(i));
        int d = nd - 1;
        while (d >= 0 && ++idx[d] == dims[d]) {
            idx[d] = 0;
            sb_printf(b, "]");
            d--;
        }
        if (d >= 0) {
            sb_printf(b, ",");
            for (int k = d + 1; k < nd; k++)
                sb_printf(b, "[");
        }
    }
}

static int v2(const char *body, size_t len, long long hlen, resattn_infer_request *r, char *err) {
    resattn_model_info m = model();
    return resattn_v2_parse("application/json", (const unsigned char *)body, len, hlen, &m, &limits,
                            r, err, RESATTN_PROTO_ERR_LEN);
}

static void expect_v2_fail(const char *body, long long hlen, int want, const char *needle) {
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    int st = v2(body, strlen(body), hlen, &r, err);
    ck_assert_msg(st == want, "status %d (want %d) for %.200s: %s", st, want, body, err);
    ck_assert_msg(strstr(err, needle), "'%s' does not name '%s'", err, needle);
    ck_assert_ptr_null(r.input);
}

static void check_ref(const float *x, int n, const char *fmt) {
    for (int i = 0; i < n; i++) {
        char t[64];
        snprintf(t, sizeof t, fmt, ref_value(i));
        float want = strtof(t, NULL);
        ck_assert_msg(x[i] == want || (isnan(x[i]) && isnan(want)), "element %d: %.9g != %.9g", i,
                      x[i], want);
    }
}

START_TEST(v2_json_fp32_flat_and_nested) {
    const int d4[4] = {1, C, H, W}, d3[3] = {C, H, W}, d4b[4] = {2, C, H, W};
    struct {
        const char *shape;
        const int *dims;
        int nd, n;
    } cases[] = {
        {"[1,3,4,5]", NULL, 0, 1}, {"[1,3,4,5]", d4, 4, 1},  {"[3,4,5]", d3, 3, 1},
        {"[3,4,5]", NULL, 0, 1},   {"[2,3,4,5]", d4b, 4, 2}, {"[2,3,4,5]", NULL, 0, 2},
    };
    const char *fmts[] = {"%.9g", "%.17g", "%.3e", "%.20f"};
    for (size_t f = 0; f < 4; f++)
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            sbuf b = {0};
            sb_printf(&b,
                      "{\"id\":\"r\\\"1\",\"inputs\":[{\"name\":\"input\",\"shape\":%s,"
                      "\"datatype\":\"FP32\",\"data\":",
                      cases[c].shape);
            sb_data(&b, cases[c].dims, cases[c].nd, cases[c].n * CHW, fmts[f]);
            sb_printf(&b, "}]}");
            resattn_infer_request r;
            char err[RESATTN_PROTO_ERR_LEN] = "";
            int st = v2(b.s, b.len, -1, &r, err);
            ck_assert_msg(st == 0, "%s: %s", b.s, err);
            ck_assert_int_eq(r.n, cases[c].n);
            ck_assert_int_eq(r.c * r.h * r.w, CHW);
            ck_assert_str_eq(r.id, "r\"1");
            ck_assert_str_eq(r.input_name, "input");
            ck_assert_uint_eq(r.outputs, RESATTN_OUT_DEFAULT); /* no "outputs": all listed */
            ck_assert(!r.outputs_named);
            ck_assert_uint_eq(r.binary, 0);
            ck_assert_int_eq(r.top_k, 5);
            check_ref(r.input, r.n * CHW, fmts[f]);
            resattn_infer_request_release(&r);
            free(b.s);
        }
}
END_TEST

/* Every integer datatype and BOOL as JSON; FP64 too. */
START_TEST(v2_json_datatypes) {
    const char *types[] = {"FP64",  "INT8",   "INT16",  "INT32", "INT64",
                           "UINT8", "UINT16", "UINT32", "UINT64"};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int is_int = types[t][0] != 'F', is_u = types[t][0] == 'U';
        sbuf b = {0};
        sb_printf(
            &b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"%s\",\"data\":[",
            types[t]);
        for (int i = 0; i < CHW; i++)
            sb_printf(&b, is_int ? "%s%d" : "%s%d.25", i ? "," : "", is_u ? i * 4 : i * 2 - 50);
        sb_printf(&b, "]}]}");
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(v2(b.s, b.len, -1, &r, err) == 0, "%s: %s", types[t], err);
        for (int i = 0; i < CHW; i++) {
            char txt[32];
            snprintf(txt, sizeof txt, is_int ? "%d" : "%d.25", is_u ? i * 4 : i * 2 - 50);
            float want = strtof(txt, NULL);
            ck_assert_msg(r.input[i] == want, "%s[%d] %g != %g", types[t], i, r.input[i], want);
        }
        resattn_infer_request_release(&r);
        free(b.s);
    }
    sbuf b = {0};
    sb_printf(
        &b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"BOOL\",\"data\":[");
    for (int i = 0; i < CHW; i++)
        sb_printf(&b, "%s%s", i ? "," : "", i % 3 ? "true" : "false");
    sb_printf(&b, "]}]}");
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_msg(v2(b.s, b.len, -1, &r, err) == 0, "BOOL: %s", err);
    for (int i = 0; i < CHW; i++)
        ck_assert(r.input[i] == (i % 3 ? 1.0f : 0.0f));
    resattn_infer_request_release(&r);
    free(b.s);
}
END_TEST

/* Binary extension: JSON header + raw little-endian bytes, for each binary datatype. */
static int v2_binary(const char *dtype, const void *bytes, size_t nbytes, size_t declared,
                     const char *outputs, resattn_infer_request *r, char *err) {
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,4,5],\"datatype\":\"%s\","
                      "\"parameters\":{\"binary_data_size\":%zu}}]%s}",
                      dtype, declared, outputs);
    unsigned char *body = malloc((size_t)hl + nbytes);
    memcpy(body, head, (size_t)hl);
    memcpy(body + hl, bytes, nbytes);
    resattn_model_info m = model();
    int st = resattn_v2_parse("application/octet-stream", body, (size_t)hl + nbytes, hl, &m,
                              &limits, r, err, RESATTN_PROTO_ERR_LEN);
    free(body);
    return st;
}

START_TEST(v2_binary_datatypes) {
    float f32[CHW];
    double f64[CHW];
    uint16_t f16[CHW], bf16[CHW];
    int8_t i8[CHW];
    uint8_t u8[CHW], b8[CHW];
    int64_t i64[CHW];
    uint32_t u32[CHW];
    for (int i = 0; i < CHW; i++) {
        f32[i] = (float)ref_value(i);
        f64[i] = ref_value(i);
        f16[i] = (uint16_t)(0x3c00 + i); /* 1 + i/1024 */
        uint32_t bits;
        memcpy(&bits, &f32[i], 4);
        bf16[i] = (uint16_t)(bits >> 16);
        i8[i] = (int8_t)(i * 4 - 120);
        u8[i] = (uint8_t)(i * 4);
        b8[i] = (uint8_t)(i & 1);
        i64[i] = -1000000 + i;
        u32[i] = 4000000000u + (uint32_t)i;
    }
    struct {
        const char *dt;
        const void *p;
        size_t size;
    } cases[] = {{"FP32", f32, 4},  {"FP64", f64, 8},  {"FP16", f16, 2},
                 {"BF16", bf16, 2}, {"INT8", i8, 1},   {"UINT8", u8, 1},
                 {"BOOL", b8, 1},   {"INT64", i64, 8}, {"UINT32", u32, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        int st = v2_binary(cases[c].dt, cases[c].p, CHW * cases[c].size, CHW * cases[c].size, "",
                           &r, err);
        ck_assert_msg(st == 0, "%s: %s", cases[c].dt, err);
        for (int i = 0; i < CHW; i++) {
            float want = 0;
            switch (c) {
            case 0:
                want = f32[i];
                break;
            case 1:
                want = (float)f64[i];
                break;
            case 2:
                want = 1.0f + (float)i / 1024.0f;
                break;
            case 3: {
                uint32_t bits = (uint32_t)bf16[i] << 16;
                memcpy(&want, &bits, 4);
            } break;
            case 4:
                want = i8[i];
                break;
            case 5:
                want = u8[i];
                break;
            case 6:
                want = b8[i];
                break;
            case 7:
                want = (float)i64[i];
                break;
            default:
                want = (float)u32[i];
                break;
            }
            ck_assert_msg(r.input[i] == want, "%s[%d]: %.9g != %.9g", cases[c].dt, i, r.input[i],
                          want);
        }
        resattn_infer_request_release(&r);
    }
}
END_TEST

/* With input_in_body_ok, an aligned FP32 tensor is used where it lies in the body (no copy),
 * still checked for non-finite values; a misaligned one, or another datatype, is copied. */
START_TEST(v2_binary_in_place) {
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,4,5],\"datatype\":\"FP32\","
                      "\"parameters\":{\"binary_data_size\":%d}}]}",
                      CHW * 4);
    float x[CHW];
    for (int i = 0; i < CHW; i++)
        x[i] = (float)ref_value(i);
    resattn_parse_limits lim = limits;
    lim.input_in_body_ok = 1;
    resattn_model_info m = model();
    unsigned char *mem = aligned_alloc(64, 64 * 8);
    for (int shift = 0; shift < 4; shift++) { /* where the tensor starts, mod 4 */
        size_t pad = (size_t)((64 - hl % 64) % 64 + shift);
        unsigned char *body = mem + pad, *bin = body + hl;
        memcpy(body, head, (size_t)hl);
        memcpy(bin, x, sizeof x);
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_int_eq(resattn_v2_parse("application/octet-stream", body, (size_t)hl + sizeof x,
                                          hl, &m, &lim, &r, err, sizeof err),
                         0);
        ck_assert_int_eq(r.input_in_body, shift == 0);
        ck_assert_int_eq((const unsigned char *)r.input == bin, shift == 0);
        ck_assert(!memcmp(r.input, x, sizeof x));
        resattn_infer_request_release(&r); /* frees only a copy */
        /* the check for non-finite values still runs on the tensor in place */
        float inf = INFINITY;
        memcpy(bin + 7 * 4, &inf, 4);
        ck_assert_int_eq(resattn_v2_parse("application/octet-stream", body, (size_t)hl + sizeof x,
                                          hl, &m, &lim, &r, err, sizeof err),
                         400);
        ck_assert_msg(strstr(err, "element 7 is infinite"), "%s", err);
        resattn_infer_request_release(&r);
    }
    free(mem);
    /* without input_in_body_ok the codec never keeps a pointer into the body */
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(v2_binary("FP32", x, sizeof x, sizeof x, "", &r, err), 0);
    ck_assert_int_eq(r.input_in_body, 0);
    resattn_infer_request_release(&r);
}
END_TEST

/* The non-finite check scans whole blocks first: the first bad element is still the one
 * named, wherever it lies relative to the blocks. */
START_TEST(check_finite_names_first) {
    enum { N = 1000 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = (float)ref_value(i);
    char err[RESATTN_PROTO_ERR_LEN];
    ck_assert_int_eq(resattn_check_finite(x, N, 0, "t", err, sizeof err), 0);
    static const int at[] = {0, 1, 255, 256, 257, 511, 700, 767, 768, 999};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        x[at[k]] = k % 2 ? INFINITY : NAN;
        if (at[k] + 300 < N)
            x[at[k] + 300] = NAN; /* a later one is not named */
        char want[64];
        snprintf(want, sizeof want, "element %d is %s", at[k], k % 2 ? "infinite" : "NaN");
        ck_assert_int_eq(resattn_check_finite(x, N, 0, "t", err, sizeof err), 400);
        ck_assert_msg(strstr(err, want), "%s (want %s)", err, want);
        ck_assert_int_eq(resattn_check_finite(x, N, 1, "t", err, sizeof err), 0);
        x[at[k]] = (float)ref_value(at[k]);
        if (at[k] + 300 < N)
            x[at[k] + 300] = (float)ref_value(at[k] + 300);
    }
    free(x);
}
END_TEST

START_TEST(v2_binary_errors) {
    float f32[CHW] = {0};
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    /* truncated: fewer bytes than binary_data_size */
    ck_assert_int_eq(v2_binary("FP32", f32, CHW * 4 - 1, CHW * 4, "", &r, err), 400);
    ck_assert_msg(strstr(err, "inputs[0]") && strstr(err, "truncated"), "%s", err);
    /* extra bytes after the tensor */
    float more[CHW + 1] = {0};
    ck_assert_int_eq(v2_binary("FP32", more, CHW * 4 + 4, CHW * 4, "", &r, err), 400);
    ck_assert_msg(strstr(err, "unexpected bytes") && strstr(err, "inputs[0]"), "%s", err);
    /* binary_data_size disagreeing with shape x datatype */
    ck_assert_int_eq(v2_binary("FP32", f32, CHW * 2, CHW * 2, "", &r, err), 400);
    ck_assert_msg(strstr(err, "binary_data_size") && strstr(err, "240"), "%s", err);
    /* NaN / Inf in binary floats */
    float bad[CHW] = {0};
    bad[17] = NAN;
    ck_assert_int_eq(v2_binary("FP32", bad, CHW * 4, CHW * 4, "", &r, err), 400);
    ck_assert_msg(strstr(err, "element 17") && strstr(err, "NaN"), "%s", err);
    bad[17] = INFINITY;
    ck_assert_int_eq(v2_binary("FP32", bad, CHW * 4, CHW * 4, "", &r, err), 400);
    ck_assert_msg(strstr(err, "element 17") && strstr(err, "infinite"), "%s", err);
    /* BOOL bytes other than 0/1 */
    uint8_t b[CHW] = {0};
    b[3] = 2;
    ck_assert_int_eq(v2_binary("BOOL", b, CHW, CHW, "", &r, err), 400);
    ck_assert_msg(strstr(err, "BOOL element 3"), "%s", err);
    /* header length beyond the body */
    const char *j = "{\"inputs\":[]}";
    expect_v2_fail(j, 1000, 400, "Inference-Header-Content-Length");
    /* binary_data_size without the header */
    expect_v2_fail("{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
                   "\"parameters\":{\"binary_data_size\":240}}]}",
                   -1, 400, "Inference-Header-Content-Length");
    /* both data and binary_data_size */
    expect_v2_fail("{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
                   "\"data\":[1],\"parameters\":{\"binary_data_size\":240}}]}",
                   -1, 400, "both data and parameters.binary_data_size");
    /* negative size */
    expect_v2_fail("{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
                   "\"parameters\":{\"binary_data_size\":-4}}]}",
                   -1, 400, "binary_data_size");
}
END_TEST

START_TEST(v2_outputs_requested) {
    const char *tail[] = {
        ",\"outputs\":[{\"name\":\"probabilities\"}]",
        ",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"binary_data\":true}},"
        "{\"name\":\"probabilities\"}]",
        ",\"parameters\":{\"binary_data_output\":true}",
        ",\"outputs\":[]",
    };
    unsigned want_out[] = {RESATTN_OUT_PROBABILITIES,
                           RESATTN_OUT_LOGITS | RESATTN_OUT_PROBABILITIES, RESATTN_OUT_DEFAULT,
                           RESATTN_OUT_DEFAULT};
    /* binary_data_output without "outputs": every output binary */
    unsigned want_bin[] = {0, RESATTN_OUT_LOGITS,
                           RESATTN_OUT_DEFAULT | RESATTN_OUT_ATTENTION_SUMMARY, 0};
    float f32[CHW] = {0};
    for (int i = 0; i < 4; i++) {
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(v2_binary("FP32", f32, CHW * 4, CHW * 4, tail[i], &r, err) == 0, "%s", err);
        ck_assert_uint_eq(r.outputs, want_out[i]);
        ck_assert_uint_eq(r.binary, want_bin[i]);
        resattn_infer_request_release(&r);
    }
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(
        v2_binary("FP32", f32, CHW * 4, CHW * 4, ",\"outputs\":[{\"name\":\"feat\"}]", &r, err),
        400);
    ck_assert_msg(strstr(err, "outputs[0].name 'feat'"), "%s", err);
    ck_assert_int_eq(v2_binary("FP32", f32, CHW * 4, CHW * 4,
                               ",\"outputs\":[{\"name\":\"logits\",\"parameters\":"
                               "{\"binary_data\":1}}]",
                               &r, err),
                     400);
    ck_assert_msg(strstr(err, "outputs[0].parameters.binary_data"), "%s", err);
}
END_TEST

/* "attention/..." outputs and attention parameters reach server/protocol/attention_api.c. */
START_TEST(v2_attention_outputs) {
    resattn_model_info m = model();
    m.attention = RESATTN_ATTENTION_SE;
    m.num_stages = 2;
    m.layers[0] = m.layers[1] = 1;
    const char *head = "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
                       "\"data\":";
    const char *tails[] = {
        "}],\"parameters\":{\"attention\":true},\"outputs\":[{\"name\":"
        "\"attention/layer2.0/channel\",\"parameters\":{\"binary_data\":true}}]}",
        "}],\"outputs\":[{\"name\":\"attention/layer3.0\"}]}",
        "}],\"parameters\":{\"attention\":1}}"};
    for (int k = 0; k < 3; k++) {
        sbuf b = {0};
        sb_printf(&b, "%s", head);
        sb_data(&b, NULL, 0, CHW, "%.9g");
        sb_printf(&b, "%s", tails[k]);
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        int st = resattn_v2_parse("application/json", (unsigned char *)b.s, b.len, -1, &m, &limits,
                                  &r, err, sizeof err);
        if (k == 0) {
            ck_assert_msg(st == 0, "%s", err);
            ck_assert_int_eq(r.num_attn_outputs, 1);
            ck_assert_int_eq(r.attn_outputs[0].binary, 1);
            ck_assert_uint_eq(r.attention, RESATTN_ATTN_TENSORS | RESATTN_ATTN_SUMMARY);
            ck_assert_uint_eq(r.outputs, 0); /* only the mask was asked for */
        } else {
            ck_assert_int_eq(st, 400);
            ck_assert_msg(strstr(err, k == 1 ? "attention/layer3.0" : "parameters.attention"), "%s",
                          err);
        }
        resattn_infer_request_release(&r);
        free(b.s);
    }
}
END_TEST

/* A body whose `data` key is spelled with an escape goes through jansson whole: same result. */
START_TEST(v2_escaped_key_fallback) {
    sbuf a = {0}, b = {0};
    for (int k = 0; k < 2; k++) {
        sbuf *s = k ? &b : &a;
        sb_printf(
            s, "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\",\"%s\":",
            k ? "d\\u0061ta" : "data");
        sb_data(s, NULL, 0, CHW, "%.9g");
        sb_printf(s, "}]}");
    }
    resattn_infer_request r1, r2;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_msg(v2(a.s, a.len, -1, &r1, err) == 0, "%s", err);
    ck_assert_msg(v2(b.s, b.len, -1, &r2, err) == 0, "%s", err);
    for (int i = 0; i < CHW; i++) /* == : jansson reads "-0" as the integer 0 */
        ck_assert(r1.input[i] == r2.input[i]);
    resattn_infer_request_release(&r1);
    resattn_infer_request_release(&r2);
    free(a.s);
    free(b.s);
}
END_TEST

START_TEST(v2_npy_body) {
    float x[2 * CHW];
    for (int i = 0; i < 2 * CHW; i++)
        x[i] = (float)ref_value(i);
    int64_t shape[4] = {2, C, H, W};
    unsigned char *buf;
    size_t len;
    ck_assert_int_eq(resattn_npy_encode(x, 4, shape, &buf, &len), RESATTN_OK);
    resattn_model_info m = model();
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_msg(
        resattn_v2_parse("application/x-npy", buf, len, -1, &m, &limits, &r, err, sizeof err) == 0,
        "%s", err);
    ck_assert_int_eq(r.n, 2);
    ck_assert_mem_eq(r.input, x, sizeof x);
    resattn_infer_request_release(&r);
    /* [C,H,W] alone is one image */
    free(buf);
    ck_assert_int_eq(resattn_npy_encode(x, 3, shape + 1, &buf, &len), RESATTN_OK);
    ck_assert_int_eq(
        resattn_v2_parse("application/x-npy", buf, len, -1, &m, &limits, &r, err, sizeof err), 0);
    ck_assert_int_eq(r.n, 1);
    resattn_infer_request_release(&r);
    free(buf);
    /* wrong image shape */
    int64_t bad[3] = {C, W, H};
    ck_assert_int_eq(resattn_npy_encode(x, 3, bad, &buf, &len), RESATTN_OK);
    ck_assert_int_eq(
        resattn_v2_parse("application/x-npy", buf, len, -1, &m, &limits, &r, err, sizeof err), 422);
    ck_assert_msg(strstr(err, "npy array shape [3,5,4]"), "%s", err);
    /* truncated file */
    ck_assert_int_eq(
        resattn_v2_parse("application/x-npy", buf, len - 1, -1, &m, &limits, &r, err, sizeof err),
        400);
    ck_assert_msg(strstr(err, "application/x-npy"), "%s", err);
    free(buf);
    /* NaN refused */
    x[5] = NAN;
    ck_assert_int_eq(resattn_npy_encode(x, 4, shape, &buf, &len), RESATTN_OK);
    ck_assert_int_eq(
        resattn_v2_parse("application/x-npy", buf, len, -1, &m, &limits, &r, err, sizeof err), 400);
    ck_assert_msg(strstr(err, "element 5") && strstr(err, "NaN"), "%s", err);
    free(buf);
    /* unknown content type */
    ck_assert_int_eq(resattn_v2_parse("text/plain", (const unsigned char *)"x", 1, -1, &m, &limits,
                                      &r, err, sizeof err),
                     415);
    ck_assert_msg(strstr(err, "text/plain"), "%s", err);
}
END_TEST

/* Bad v2 requests: status and the field named. */
START_TEST(v2_errors) {
#define IN(rest) "{\"inputs\":[{\"name\":\"input\"," rest "}]}"
    struct {
        const char *body;
        int status;
        const char *needle;
    } cases[] = {
        {"", 400, "empty body"},
        {"{\"inputs\":[", 400, "invalid JSON"},
        {"[1,2]", 400, "JSON object"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"BYTES\",\"data\":[1]"), 400,
         "BYTES holds base64-encoded images"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP31\",\"data\":[1]"), 400, "is not one of"},
        {"{\"inputs\":{}}", 400, "inputs"},
        {"{\"inputs\":[]}", 400, "inputs has 0 tensors"},
        {"{\"id\":5,\"inputs\":[]}", 400, "id"},
        {"{\"inputs\":[{\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[]}]}", 400,
         "inputs[0].name"},
        {IN("\"shape\":[3,4,5],\"data\":[1]"), 400, "inputs[0].datatype"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP8\",\"data\":[1]"), 400,
         "inputs[0].datatype 'FP8'"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP16\",\"data\":[1]"), 400, "only as binary"},
        {IN("\"datatype\":\"FP32\",\"data\":[1]"), 400, "inputs[0].shape is missing"},
        {IN("\"shape\":[3,\"4\",5],\"datatype\":\"FP32\",\"data\":[1]"), 400,
         "inputs[0].shape[1] is not an integer"},
        {IN("\"shape\":[3,0,5],\"datatype\":\"FP32\",\"data\":[1]"), 400,
         "inputs[0].shape[1] is 0"},
        {IN("\"shape\":[3,-4,5],\"datatype\":\"FP32\",\"data\":[1]"), 400,
         "inputs[0].shape[1] is -4"},
        {IN("\"shape\":[4294967296,4294967296,4294967296,3],\"datatype\":\"FP32\",\"data\":[1]"),
         400, "overflows"},
        {IN("\"shape\":[100000000,3,4,5],\"datatype\":\"FP32\",\"data\":[1]"), 413, "max batch"},
        {IN("\"shape\":[5,3,4,5],\"datatype\":\"FP32\",\"data\":[1]"), 413, "max batch 4"},
        {IN("\"shape\":[1,3,5,4],\"datatype\":\"FP32\",\"data\":[1]"), 422,
         "inputs[0].shape [1,3,5,4] does not match the model's input [N,3,4,5]"},
        {IN("\"shape\":[60],\"datatype\":\"FP32\",\"data\":[1]"), 422, "inputs[0].shape [60]"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,2,3]"), 400,
         "inputs[0].data has 3 elements but shape [3,4,5] needs 60"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\""), 400, "inputs[0].data is missing"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":\"abc\""), 400,
         "inputs[0].data must be an array"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,\"2\"]"), 400,
         "inputs[0].data: element 1 is a string"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,null]"), 400,
         "inputs[0].data: element 1 is null"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,NaN]"), 400,
         "inputs[0].data: element 1 is NaN"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,-Infinity]"), 400,
         "element 1 is -Infinity"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,1e39]"), 400,
         "element 1 (1e39) is out of float32 range"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,01]"), 400,
         "inputs[0].data: expected ',' or ']' after element 1"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,.5]"), 400,
         "element 1 is not valid JSON"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,2,]"), 400, "element 2"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[[1,2],[3]]"), 400,
         "inputs[0].data: ragged"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[[1,2],3]"), 400,
         "inputs[0].data: ragged"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1,[2]]"), 400,
         "inputs[0].data: ragged"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"UINT8\",\"data\":[1,256]"), 400,
         "element 1 (256) is not a UINT8 value"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"INT8\",\"data\":[1.5]"), 400,
         "element 0 (1.5) is not a INT8 value"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"BOOL\",\"data\":[1]"), 400,
         "element 0 is not true or false"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1],\"data\":[2]"), 400, "duplicate"},
        {"{\"inputs\":[{\"name\":\"\xff\xfe\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
         "\"data\":[1]}]}",
         400, "unable to decode byte 0xff"},
        {"{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1]},"
         "{\"name\":\"y\"}]}",
         400, "inputs has 2 tensors, expected exactly one"},
        {IN("\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1]}]} trailing"), 400,
         "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_v2_fail(cases[i].body, -1, cases[i].status, cases[i].needle);
    /* bytes after the JSON header without any binary input */
    const char *j =
        "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":[1]}]}";
    sbuf b = {0};
    sb_printf(&b, "%sXYZ", j);
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN];
    ck_assert_int_eq(v2(b.s, b.len, (long long)strlen(j), &r, err), 400);
    ck_assert_msg(strstr(err, "3 bytes follow the JSON header"), "%s", err);
    free(b.s);
#undef IN
}
END_TEST

/* Nesting far deeper than any shape: a clear 400, never a stack overflow. */
START_TEST(v2_deep_nesting) {
    int depths[] = {17, 100, 5000, 100000};
    for (size_t k = 0; k < sizeof depths / sizeof depths[0]; k++) {
        sbuf b = {0};
        sb_printf(&b, "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\","
                      "\"data\":");
        for (int i = 0; i < depths[k]; i++)
            sb_printf(&b, "[");
        sb_printf(&b, "1");
        for (int i = 0; i < depths[k]; i++)
            sb_printf(&b, "]");
        sb_printf(&b, "}]}");
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_int_eq(v2(b.s, b.len, -1, &r, err), 400);
        ck_assert_msg(strstr(err, "deeper than 16") || strstr(err, "depth"), "%d: %s", depths[k],
                      err);
        free(b.s);
    }
}
END_TEST

START_TEST(nonfinite_allowed) {
    resattn_parse_limits lim = limits;
    lim.allow_nonfinite = 1;
    sbuf b = {0};
    sb_printf(&b,
              "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,4,5],\"datatype\":\"FP32\",\"data\":["
              "NaN,Infinity,-Infinity,1e39");
    for (int i = 4; i < CHW; i++)
        sb_printf(&b, ",0");
    sb_printf(&b, "]}]}");
    resattn_model_info m = model();
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_msg(
        resattn_v2_parse(NULL, (unsigned char *)b.s, b.len, -1, &m, &lim, &r, err, sizeof err) == 0,
        "%s", err);
    ck_assert(isnan(r.input[0]) && r.input[1] == INFINITY && r.input[2] == -INFINITY &&
              r.input[3] == INFINITY);
    resattn_infer_request_release(&r);
    free(b.s);
}
END_TEST

/* The number parser against strtod: random floats printed every way parse back exactly. */
START_TEST(numbers_roundtrip) {
    srand(7);
    const char *fmts[] = {"%.9g", "%.17g", "%.6e", "%.30f", "%.0f", "%.25e"};
    for (int i = 0; i < 20000; i++) {
        uint32_t bits = (uint32_t)rand() << 16 ^ (uint32_t)rand();
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f))
            continue;
        char t[512];
        snprintf(t, sizeof t, fmts[i % 6], (double)f);
        double d;
        const char *end;
        ck_assert_msg(resattn_json_number(t, t + strlen(t), &d, &end) == 0, "%s", t);
        ck_assert_ptr_eq(end, t + strlen(t));
        ck_assert_msg(d == strtod(t, NULL), "%s: %.17g != %.17g", t, d, strtod(t, NULL));
        if (i % 6 < 2)
            ck_assert_msg((float)d == f, "%s does not round-trip", t);
        float g;
        ck_assert(resattn_json_number_f32(t, t + strlen(t), &g, &end) == 0);
        ck_assert_msg(g == strtof(t, NULL), "%s: f32 %.9g != strtof %.9g", t, g, strtof(t, NULL));
    }
    const char *bad[] = {"", "-", "01x", ".5", "1.", "1e", "1e+", "+1", "--1", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double d;
        const char *end = NULL;
        int st = resattn_json_number(bad[i], bad[i] + strlen(bad[i]), &d, &end);
        ck_assert_msg(st != 0 || end != bad[i] + strlen(bad[i]), "'%s' accepted", bad[i]);
    }
}
END_TEST

/* Float parsing is correctly rounded even for decimals at or next to a point halfway between
 * two floats (where converting through double would round twice). */
START_TEST(numbers_f32_midpoints) {
    srand(3);
    for (int i = 0; i < 20000; i++) {
        uint32_t bits = ((uint32_t)rand() << 16 ^ (uint32_t)rand()) & 0x7effffff;
        float a, b;
        memcpy(&a, &bits, 4);
        bits++;
        memcpy(&b, &bits, 4);
        if (!isfinite(b) || a == 0)
            continue;
        double mid = ((double)a + (double)b) / 2;
        char t[64];
        const char *fmt[] = {"%.17g", "%.16g", "%.15g", "%.19g", "%.9g", "%.12e"};
        double x = i % 3 == 0 ? mid : i % 3 == 1 ? nextafter(mid, 0) : nextafter(mid, INFINITY);
        snprintf(t, sizeof t, fmt[i % 6], x);
        float g;
        const char *end;
        ck_assert(resattn_json_number_f32(t, t + strlen(t), &g, &end) == 0);
        ck_assert_msg(g == strtof(t, NULL), "%s: %.9g != strtof %.9g", t, g, strtof(t, NULL));
    }
}
END_TEST

/* One test number for the tensor scan against strtof: random float32 values printed every
 * way, short decimals, exponents, subnormals, zeros, the float range's edges, long digit
 * strings and points halfway between two floats. */
static void strtof_case(sbuf *b, int i) {
    static const char *edge[] = {"0",
                                 "-0",
                                 "0.0",
                                 "-0.0",
                                 "0e5",
                                 "-0E-7",
                                 "1",
                                 "-1",
                                 "0.1",
                                 "0.5",
                                 "1e10",
                                 "1E-5",
                                 "2.5e+30",
                                 "-7.25e-3",
                                 "1e38",
                                 "1e-38",
                                 "1e-45",
                                 "1.4e-45",
                                 "1.401298464324817e-45",
                                 "7e-46",
                                 "7.006492321624086e-46",
                                 "7.1e-46",
                                 "1e-46",
                                 "1.17549435e-38",
                                 "1.1754942e-38",
                                 "1.17549421069e-38",
                                 "3.4028235e38",
                                 "3.40282347e+38",
                                 "3.4028235677973366e38",
                                 "3.4028235677973362e38",
                                 "3.4028236e38",
                                 "-3.4028235e38",
                                 "1e39",
                                 "123456789012345678901234567890",
                                 "0.000000000000000000000000000001",
                                 "1.0000000000000000000000000000000000000000000000000001",
                                 "0.10000000149011611938476562500000000000000000000001",
                                 "0.100000001490116119384765625",
                                 "0.1000000014901161193847656249999999",
                                 "16777216.5",
                                 "16777217",
                                 "16777217.000000000000000000001",
                                 "33554434.999999999",
                                 "9007199254740993",
                                 "18446744073709551615",
                                 "18446744073709551616",
                                 "1e-22",
                                 "1e22",
                                 "1e23",
                                 "1e-23",
                                 "4.7019774e-38",
                                 "8.5e-39",
                                 "1.5e-44",
                                 "0.0000000000000000000000000000000000000000000014012984643248171"};
    int n_edge = (int)(sizeof edge / sizeof edge[0]);
    if (i < n_edge) {
        sb_printf(b, "%s", edge[i]);
        return;
    }
    uint32_t bits = (uint32_t)rand() << 16 ^ (uint32_t)rand();
    float f;
    memcpy(&f, &bits, 4);
    if (!isfinite(f))
        f = (float)i;
    switch (i % 9) {
    case 0:
        sb_printf(b, "%.9g", (double)f);
        break;
    case 1:
        sb_printf(b, "%.17g", (double)f);
        break;
    case 2: /* a normalised-image-like value, as numpy's tolist() prints it */
        sb_printf(b, "%.17g", (double)(float)((rand() / (double)RAND_MAX) * 4.2 - 2.1));
        break;
    case 3: /* a short decimal */
        sb_printf(b, "%s%d.%0*d", rand() & 1 ? "-" : "", rand() % 1000, 1 + rand() % 6,
                  rand() % 1000000);
        break;
    case 4:
        sb_printf(b, "%de%d", rand() % 100000 - 50000, rand() % 90 - 45);
        break;
    case 5: { /* next to or at a point halfway between two floats */
        uint32_t nb = (bits & 0x7effffff) + 1;
        float a, c;
        bits &= 0x7effffff;
        memcpy(&a, &bits, 4);
        memcpy(&c, &nb, 4);
        double mid = ((double)a + (double)c) / 2;
        double x = i % 3 == 0 ? mid : i % 3 == 1 ? nextafter(mid, 0) : nextafter(mid, INFINITY);
        sb_printf(b, i % 2 ? "%.17g" : "%.25g", x);
        break;
    }
    case 6: /* a subnormal */
        sb_printf(b, "%.*g", 3 + rand() % 15, (double)(rand() % 8388608) * 1.401298464324817e-45);
        break;
    case 7: { /* a long digit string */
        int len = 20 + rand() % 80, dot = rand() % len;
        if (rand() & 1)
            sb_printf(b, "-");
        sb_printf(b, "%d", 1 + rand() % 9);
        for (int k = 1; k < len; k++)
            sb_printf(b, k == dot ? ".%d" : "%d", rand() % 10);
        if (rand() & 1)
            sb_printf(b, "e%d", rand() % 80 - 60);
        break;
    }
    default:
        sb_printf(b, "%.*e", rand() % 12, (double)f);
        break;
    }
}

/* resattn_format_f32 writes the same bytes as printf's "%.9g": 2^20 float bit patterns spread
 * over every exponent, and the edges of its fast path (decades, rounding up into the next
 * decade, the switches to exponent form, ties). */
START_TEST(format_f32_equals_printf) {
    char want[64], got[64];
    uint32_t seed = 12345;
    for (int i = 0; i < (1 << 20) + 4000; i++) {
        uint32_t bits;
        float f;
        if (i < (1 << 20)) {
            seed = seed * 1664525u + 1013904223u; /* LCG: every exponent, every sign */
            bits = seed;
        } else { /* near powers of ten: the float below, at and above 10^j */
            int j = (i - (1 << 20)) / 100 - 20, d = (i - (1 << 20)) % 100 - 50;
            f = (float)pow(10.0, j);
            memcpy(&bits, &f, 4);
            bits += (uint32_t)d;
        }
        memcpy(&f, &bits, 4);
        if (!isfinite(f))
            continue;
        snprintf(want, sizeof want, "%.9g", (double)f);
        int n = resattn_format_f32(f, got);
        ck_assert_msg(!strcmp(want, got) && n == (int)strlen(want), "%08x: printf %s, ours %s",
                      bits, want, got);
    }
    static const float edges[] = {
        0.0f,    -0.0f,           1e-9f,  1e12f,    0.0001f, 0.00001f,   999999999.f, 999999999.5f,
        1e9f,    123456789.f,     0.5f,   1.5f,     2.5f,    16777216.f, 16777217.f,  1e-10f,
        3.4e38f, 1.17549435e-38f, 1e-45f, -7.25e-5f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        snprintf(want, sizeof want, "%.9g", (double)edges[i]);
        resattn_format_f32(edges[i], got);
        ck_assert_msg(!strcmp(want, got), "%a: printf %s, ours %s", (double)edges[i], want, got);
    }
}
END_TEST

/* Scan the array in b (n numbers, the i-th at b->s + at[i]) and check every element, and
 * resattn_json_number_f32 of it, against strtof bit for bit. */
static void scan_vs_strtof(const sbuf *b, const size_t *at, int n) {
    float *out = malloc((size_t)n * sizeof *out);
    resattn_elem_rule rule = {RESATTN_ELEM_FLOAT, 0, 0, "FP32", 1, 400};
    resattn_scan_shape sh;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_msg(resattn_json_scan_tensor(b->s, b->s + b->len, &rule, out, (size_t)n, &sh, "data",
                                           err, sizeof err) == 0,
                  "%s", err);
    ck_assert_uint_eq(sh.count, (size_t)n);
    for (int i = 0; i < n; i++) {
        const char *t = b->s + at[i];
        char *e;
        float want = strtof(t, &e), g;
        const char *end;
        ck_assert_msg(!memcmp(&out[i], &want, 4), "scan of %.*s: %a != strtof %a", (int)(e - t), t,
                      (double)out[i], (double)want);
        ck_assert_msg(resattn_json_number_f32(t, e, &g, &end) == 0 && end == e, "%.*s",
                      (int)(e - t), t);
        ck_assert_msg(!memcmp(&g, &want, 4), "number_f32 of %.*s: %a != strtof %a", (int)(e - t), t,
                      (double)g, (double)want);
    }
    free(out);
}

/* The tensor scan (its fast path in the middle of a big array, the general path near the
 * end) and resattn_json_number_f32 give exactly strtof's float, bit for bit. */
START_TEST(numbers_scan_equal_strtof) {
    srand(11);
    enum { N = 30000 };
    sbuf b = {0};
    size_t *at = malloc(N * sizeof *at);
    sb_printf(&b, "[");
    for (int i = 0; i < N; i++) {
        sb_printf(&b, i ? (i % 3 ? "," : ", ") : "");
        at[i] = b.len;
        strtof_case(&b, i);
    }
    sb_printf(&b, "]");
    scan_vs_strtof(&b, at, N);
    free(at);
    free(b.s);
}
END_TEST

/* Scan text (copied into a buffer of exactly its size, so ASan sees over-reads) on the
 * portable path and on the detected one (AVX-512 when the CPU has it): the status, message,
 * shape, end and every float must agree bit for bit. Returns the status. */
static int scan_both(const char *text, size_t len, size_t cap, int prefix, resattn_elem_kind kind,
                     int nonfinite) {
    char *buf = malloc(len ? len : 1);
    memcpy(buf, text, len);
    float *out[2] = {malloc((cap + 1) * sizeof(float)), malloc((cap + 1) * sizeof(float))};
    char err[2][RESATTN_PROTO_ERR_LEN] = {"", ""};
    resattn_scan_shape sh[2];
    const char *endp[2] = {NULL, NULL};
    int st[2];
    resattn_elem_rule rule = {kind,      0,  255, kind == RESATTN_ELEM_FLOAT ? "FP32" : "UINT8",
                              nonfinite, 413};
    for (int k = 0; k < 2; k++) {
        resattn_json_scan_force_portable(k == 0);
        st[k] = resattn_json_scan_tensor_prefix(buf, buf + len, &rule, out[k], cap, &sh[k],
                                                prefix ? &endp[k] : NULL, "data", err[k],
                                                sizeof err[k]);
    }
    resattn_json_scan_force_portable(0);
    ck_assert_msg(st[0] == st[1], "status %d != %d (%s | %s) for %.80s", st[0], st[1], err[0],
                  err[1], text);
    ck_assert_msg(!strcmp(err[0], err[1]), "'%s' != '%s'", err[0], err[1]);
    if (st[0] == 0) {
        ck_assert_int_eq(sh[0].ndim, sh[1].ndim);
        ck_assert_uint_eq(sh[0].count, sh[1].count);
        ck_assert(!memcmp(sh[0].dims, sh[1].dims, sizeof sh[0].dims));
        ck_assert_ptr_eq(endp[0], endp[1]);
        for (size_t i = 0; i < sh[0].count; i++)
            ck_assert_msg(!memcmp(&out[0][i], &out[1][i], 4), "element %zu: %a != %a", i,
                          (double)out[0][i], (double)out[1][i]);
    }
    free(out[0]);
    free(out[1]);
    free(buf);
    return st[0];
}

/* Separators as clients write them: JSON whitespace around exactly one comma. */
static const char *const seps[] = {",", ", ", ",\n", " ,", "\t,\r\n  ", ",\n    "};

/* One number in print style `style` (0..9). */
static void styled_number(sbuf *b, int style, int i) {
    float f = (float)((rand() / (double)RAND_MAX) * 4.2 - 2.1);
    switch (style) {
    case 0:
        sb_printf(b, "%.9g", (double)f);
        break;
    case 1:
        sb_printf(b, "%.17g", (double)f);
        break;
    case 2:
        sb_printf(b, "%g", (double)f * pow(10, rand() % 20 - 10));
        break;
    case 3:
        sb_printf(b, "%s", rand() & 1 ? "-0" : rand() & 1 ? "0" : rand() & 1 ? "-0.0" : "0.000");
        break;
    case 4:
        sb_printf(b, "%d", rand() % 2000001 - 1000000);
        break;
    case 5: /* exponents in every spelling */
        sb_printf(b, "%d%s%s%d", rand() % 20 - 10, rand() & 1 ? "e" : "E",
                  rand() % 3 == 0 ? "+"
                  : rand() % 2    ? "-"
                                  : "",
                  rand() % 12);
        break;
    case 6: /* long digit strings, leading zeros of fractions */
        sb_printf(b, "%s0.%0*d%d%d", rand() & 1 ? "-" : "", rand() % 12, 0, rand(), rand());
        break;
    default:
        strtof_case(b, i);
        break;
    }
}

/* Big arrays in every print style and separator, mixed: both paths, and strtof. */
START_TEST(simd_scan_styles) {
    srand(21);
    enum { N = 120000 };
    for (int style = 0; style < 9; style++) {
        sbuf b = {0};
        sb_printf(&b, style % 2 ? "[" : "  [\n");
        for (int i = 0; i < N; i++) {
            if (i)
                sb_printf(&b, "%s", seps[style < 8 ? rand() % 2 : rand() % 6]);
            styled_number(&b, style < 8 ? style : rand() % 8, i);
        }
        sb_printf(&b, "]");
        ck_assert_msg(scan_both(b.s, b.len, N, 0, RESATTN_ELEM_FLOAT, 1) == 0, "style %d", style);
        free(b.s);
    }
}
END_TEST

/* Each number against strtof on the detected path (AVX-512 here when available), with
 * numbers moved across every position of a 64-byte block by a growing run of spaces. */
START_TEST(simd_scan_equal_strtof) {
    srand(5);
    enum { N = 40000 };
    sbuf b = {0};
    size_t *at = malloc(N * sizeof *at);
    sb_printf(&b, "[");
    for (int i = 0; i < N; i++) {
        if (i)
            sb_printf(&b, "%s%*s", seps[i % 6], i % 97 == 0 ? i / 97 % 64 : 0, "");
        at[i] = b.len;
        if (i % 5 == 0)
            strtof_case(&b, 1000 + i); /* past the edge cases: random ones */
        else
            styled_number(&b, i % 7 == 3 ? 1 : i % 3, i);
    }
    sb_printf(&b, "]");
    scan_vs_strtof(&b, at, N);
    ck_assert_int_eq(scan_both(b.s, b.len, N, 0, RESATTN_ELEM_FLOAT, 1), 0);
    free(at);
    free(b.s);
}
END_TEST

/* The array's end at every position near the end of the buffer, cut-off arrays, arrays
 * followed by more bytes (prefix scan), caps, nesting: both paths agree, within bounds. */
START_TEST(simd_scan_ends) {
    srand(9);
    sbuf base = {0};
    sb_printf(&base, "[");
    for (int i = 0; i < 400; i++) {
        sb_printf(&base, i ? "%s" : "", seps[rand() % 6]);
        styled_number(&base, rand() % 3, i);
    }
    for (int pad = 0; pad < 70; pad++) {
        sbuf b = {0};
        sb_printf(&b, "%s%*s]%*s", base.s, pad % 7, "", pad / 7, "");
        ck_assert_int_eq(scan_both(b.s, b.len, 400, 0, RESATTN_ELEM_FLOAT, 0), 0);
        ck_assert_int_eq(scan_both(b.s, b.len, 400, 1, RESATTN_ELEM_FLOAT, 0), 0);
        sb_printf(&b, ",{\"x\":1}");
        ck_assert_int_eq(scan_both(b.s, b.len, 400, 1, RESATTN_ELEM_FLOAT, 0), 0);
        ck_assert_int_eq(scan_both(b.s, b.len, 400, 0, RESATTN_ELEM_FLOAT, 0), 400);
        free(b.s);
    }
    for (size_t cut = base.len > 300 ? base.len - 300 : 0; cut <= base.len; cut++)
        ck_assert_int_eq(scan_both(base.s, cut, 400, 0, RESATTN_ELEM_FLOAT, 0), 400);
    sb_printf(&base, "]");
    for (size_t cap = 1; cap <= 401; cap += cap < 80 ? 1 : 37)
        ck_assert_int_eq(scan_both(base.s, base.len, cap, 0, RESATTN_ELEM_FLOAT, 0),
                         cap < 400 ? 413 : 0);
    ck_assert_int_eq(scan_both(base.s, base.len, 400, 0, RESATTN_ELEM_INT, 0), 400);
    /* nested rows of every length up to 40, and a ragged one */
    for (int row = 1; row <= 40; row++) {
        sbuf b = {0};
        sb_printf(&b, "[");
        for (int r = 0; r < 30; r++) {
            sb_printf(&b, r ? ",\n [" : "[");
            for (int i = 0; i < row + (r == 29 && row % 3 == 0); i++) {
                sb_printf(&b, i ? "%s" : "", seps[rand() % 6]);
                styled_number(&b, rand() % 2, i);
            }
            sb_printf(&b, "]");
        }
        sb_printf(&b, "]");
        ck_assert_int_eq(scan_both(b.s, b.len, 30 * 41, 0, RESATTN_ELEM_FLOAT, 0),
                         row % 3 == 0 ? 400 : 0);
        free(b.s);
    }
    free(base.s);
}
END_TEST

/* Malformed elements and separators at many positions of a long array: both paths give the
 * same status and message (the element index included). */
START_TEST(simd_scan_malformed) {
    static const char *const bad[] = {
        ",,",
        ",]",
        "1.",
        "-",
        "01",
        "-01",
        ".5",
        "-.5",
        "1e",
        "1e+",
        "+1",
        "--1",
        "1-2",
        "1.2.3",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "\"1\"",
        "null",
        "true",
        "[1]",
        "{}",
        "1 2",
        "1,,2",
        "00",
        "1.e5",
        "\x01",
        "\xff",
        "1,\v2",
        "9e99",
        "1"
        "00000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000"};
    srand(13);
    sbuf base = {0};
    size_t *at = malloc(700 * sizeof *at);
    sb_printf(&base, "[");
    for (int i = 0; i < 700; i++) {
        sb_printf(&base, i ? "%s" : "", seps[rand() % 6]);
        at[i] = base.len;
        styled_number(&base, rand() % 2, i);
    }
    sb_printf(&base, "]");
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        for (int pos = 1; pos < 700; pos += 1 + rand() % 23) {
            sbuf b = {0};
            sb_printf(&b, "%.*s%s,%s", (int)at[pos], base.s, bad[k], base.s + at[pos]);
            int st = scan_both(b.s, b.len, 1000, 0, RESATTN_ELEM_FLOAT, 0);
            ck_assert_msg(st == 400, "'%s' at %d: %d", bad[k], pos, st);
            free(b.s);
        }
    free(at);
    free(base.s);
}
END_TEST

/* Encoders: parse our own output with jansson and compare. */
START_TEST(v2_encode_roundtrip) {
    float logits[2 * 7];
    for (int i = 0; i < 14; i++)
        logits[i] = (float)ref_value(i * 7 + 3) / 3.0f;
    resattn_infer_request req;
    memset(&req, 0, sizeof req);
    req.id = "id \"q\"\n\xc3\xa9";
    req.outputs = RESATTN_OUT_LOGITS | RESATTN_OUT_PROBABILITIES;
    resattn_response_body b;
    resattn_model_info m = model();
    ck_assert_int_eq(resattn_v2_encode(&req, "se-\"net\"", &m, logits, 2, &b), 0);
    ck_assert_uint_eq(b.json_header_len, 0);
    ck_assert_str_eq(b.content_type, "application/json");
    json_error_t je;
    json_t *root = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(root != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(root, "model_name")), "se-\"net\"");
    ck_assert_str_eq(json_string_value(json_object_get(root, "id")), req.id);
    json_t *outs = json_object_get(root, "outputs");
    ck_assert_uint_eq(json_array_size(outs), 2);
    json_t *lo = json_array_get(outs, 0), *pr = json_array_get(outs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(lo, "name")), "logits");
    ck_assert_str_eq(json_string_value(json_object_get(lo, "datatype")), "FP32");
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(lo, "shape"), 0)), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(lo, "shape"), 1)), 7);
    for (int i = 0; i < 14; i++)
        ck_assert((float)json_number_value(json_array_get(json_object_get(lo, "data"), i)) ==
                  logits[i]);
    for (int row = 0; row < 2; row++) {
        double s = 0;
        for (int j = 0; j < 7; j++)
            s += json_number_value(json_array_get(json_object_get(pr, "data"), row * 7 + j));
        ck_assert_msg(fabs(s - 1) < 1e-6, "row %d sums to %.9g", row, s);
    }
    json_decref(root);
    resattn_response_body_release(&b);

    /* binary logits, JSON probabilities */
    req.binary = RESATTN_OUT_LOGITS;
    ck_assert_int_eq(resattn_v2_encode(&req, "m", &m, logits, 2, &b), 0);
    ck_assert_uint_gt(b.json_header_len, 0);
    ck_assert_uint_eq(b.len, b.json_header_len + sizeof logits);
    root = json_loadb((const char *)b.data, b.json_header_len, 0, &je);
    ck_assert_msg(root != NULL, "%s", je.text);
    lo = json_array_get(json_object_get(root, "outputs"), 0);
    ck_assert_ptr_null(json_object_get(lo, "data"));
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(lo, "parameters"), "binary_data_size")),
        sizeof logits);
    ck_assert_mem_eq(b.data + b.json_header_len, logits, sizeof logits);
    json_decref(root);
    resattn_response_body_release(&b);

    /* npy response */
    ck_assert_int_eq(resattn_npy_response(logits, 2, 7, &b), 0);
    resattn_npy a;
    char err[RESATTN_PROTO_ERR_LEN];
    ck_assert_int_eq(resattn_npy_parse(b.data, b.len, &a, err, sizeof err), RESATTN_OK);
    ck_assert(a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 7);
    ck_assert_mem_eq(a.data, logits, sizeof logits);
    resattn_npy_release(&a);
    resattn_response_body_release(&b);
    resattn_response_body_release(NULL);
    resattn_infer_request_release(NULL);
}
END_TEST

/* ---- Open Inference Protocol conformance (v2_outputs.c) ------------------------------- */

static const char *const labels7[7] = {"cat", "dog", "emu", "fox", "gnu", "hen", "yak"};

/* A parsed answer body: root and where its binary part starts. */
static json_t *answer_json(const resattn_response_body *b) {
    size_t jlen = b->json_header_len ? b->json_header_len : b->len;
    json_error_t je;
    json_t *root = json_loadb((const char *)b->data, jlen, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(root != NULL, "answer is not JSON: %s", je.text);
    return root;
}

/* A v2 JSON request on model m: a [1,3,4,5] tensor named `name`, then `rest` verbatim. */
static int v2_req(const resattn_model_info *m, const char *name, const char *rest,
                  resattn_infer_request *r, char *err) {
    sbuf b = {0};
    sb_printf(
        &b,
        "{\"inputs\":[{\"name\":\"%s\",\"shape\":[1,3,4,5],\"datatype\":\"FP32\",\"data\":", name);
    sb_data(&b, NULL, 0, CHW, "%.9g");
    sb_printf(&b, "}]%s}", rest);
    int st = resattn_v2_parse("application/json", (unsigned char *)b.s, b.len, -1, m, &limits, r,
                              err, RESATTN_PROTO_ERR_LEN);
    free(b.s);
    return st;
}

/* Model metadata: platform <project>_<format>, the inputs, the outputs that a request
 * without "outputs" gets, and the precision parameters; server metadata lists the
 * classification extension. */
START_TEST(v2_metadata) {
    resattn_model_info m = model();
    resattn_response_body b;
    ck_assert_int_eq(resattn_v2_model_metadata("se", &m, &b), 0);
    json_t *root = answer_json(&b);
    ck_assert_str_eq(json_string_value(json_object_get(root, "platform")), "resattn_safetensors");
    json_t *in = json_object_get(root, "inputs"), *out = json_object_get(root, "outputs");
    ck_assert_int_eq(json_array_size(in), 2);
    json_t *t0 = json_array_get(in, 0), *t1 = json_array_get(in, 1);
    ck_assert_str_eq(json_string_value(json_object_get(t0, "name")), "input");
    ck_assert_str_eq(json_string_value(json_object_get(t0, "datatype")), "FP32");
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(t0, "shape"), 0)), -1);
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(t0, "shape"), 3)), W);
    ck_assert_str_eq(json_string_value(json_object_get(t1, "name")), "image");
    ck_assert_str_eq(json_string_value(json_object_get(t1, "datatype")), "BYTES");
    const char *names[] = {"logits", "probabilities", "top_k_labels", "top_k_indices",
                           "top_k_probabilities"};
    const char *types[] = {"FP32", "FP32", "BYTES", "INT64", "FP32"};
    const int cols[] = {7, 7, -1, -1, -1};
    ck_assert_int_eq(json_array_size(out), 5);
    for (int i = 0; i < 5; i++) {
        json_t *o = json_array_get(out, (size_t)i);
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")), names[i]);
        ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")), types[i]);
        ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(o, "shape"), 1)),
                         cols[i]);
    }
    /* how the model computes; an info that names no kernel path is an FP32 one */
    json_t *params = json_object_get(root, "parameters");
    ck_assert_str_eq(json_string_value(json_object_get(params, "precision")), "fp32");
    ck_assert_str_eq(json_string_value(json_object_get(params, "kernel_path")), "fp32");
    json_decref(root);
    resattn_response_body_release(&b);
    m.precision = m.precision_requested = RESATTN_PRECISION_BF16;
    m.kernel_path = "amx";
    ck_assert_int_eq(resattn_v2_model_metadata("se", &m, &b), 0);
    root = answer_json(&b);
    params = json_object_get(root, "parameters");
    ck_assert_str_eq(json_string_value(json_object_get(params, "precision")), "bf16");
    ck_assert_str_eq(json_string_value(json_object_get(params, "precision_requested")), "bf16");
    ck_assert_str_eq(json_string_value(json_object_get(params, "kernel_path")), "amx");
    json_decref(root);
    resattn_response_body_release(&b);
    ck_assert_int_eq(resattn_v2_server_metadata("1.2.3", &b), 0);
    root = answer_json(&b);
    json_t *ext = json_object_get(root, "extensions");
    int found = 0;
    for (size_t i = 0; i < json_array_size(ext); i++)
        found |= !strcmp(json_string_value(json_array_get(ext, i)), "classification");
    ck_assert_msg(found, "no classification in extensions");
    json_decref(root);
    resattn_response_body_release(&b);
}
END_TEST

/* No "outputs": the answer holds every output the metadata lists, in its order, datatypes
 * and shapes; with binary_data_output every one of them is binary. */
START_TEST(v2_default_outputs_are_the_metadata) {
    resattn_model_info m = model();
    resattn_response_body mb;
    ck_assert_int_eq(resattn_v2_model_metadata("se", &m, &mb), 0);
    json_t *mroot = answer_json(&mb), *meta = json_object_get(mroot, "outputs");
    float logits[2 * 7];
    for (int i = 0; i < 14; i++)
        logits[i] = (float)ref_value(i);
    for (int binary = 0; binary < 2; binary++) {
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(v2_req(&m, "input",
                             binary ? ",\"parameters\":{\"binary_data_output\":true}" : "", &r,
                             err) == 0,
                      "%s", err);
        resattn_response_body b;
        ck_assert_int_eq(resattn_v2_encode(&r, "se", &m, logits, 2, &b), 0);
        json_t *root = answer_json(&b), *outs = json_object_get(root, "outputs");
        ck_assert_ptr_null(json_object_get(root, "parameters"));
        ck_assert_int_eq(json_array_size(outs), json_array_size(meta));
        size_t tail = 0;
        for (size_t i = 0; i < json_array_size(meta); i++) {
            json_t *o = json_array_get(outs, i), *t = json_array_get(meta, i);
            ck_assert_str_eq(json_string_value(json_object_get(o, "name")),
                             json_string_value(json_object_get(t, "name")));
            ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")),
                             json_string_value(json_object_get(t, "datatype")));
            json_t *os = json_object_get(o, "shape"), *ms = json_object_get(t, "shape");
            ck_assert_int_eq(json_array_size(os), json_array_size(ms));
            ck_assert_int_eq(json_integer_value(json_array_get(os, 0)), 2);
            json_int_t want = json_integer_value(json_array_get(ms, 1));
            ck_assert_int_eq(json_integer_value(json_array_get(os, 1)), want < 0 ? 5 : want);
            json_t *bds = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
            ck_assert_int_eq(json_object_get(o, "data") == NULL, binary);
            ck_assert_int_eq(bds != NULL, binary);
            tail += (size_t)json_integer_value(bds);
        }
        ck_assert_uint_eq(binary ? b.len - b.json_header_len : 0, tail);
        if (binary) /* the logits come first, as raw float32 */
            ck_assert_mem_eq(b.data + b.json_header_len, logits, sizeof logits);
        json_decref(root);
        resattn_response_body_release(&b);
        resattn_infer_request_release(&r);
    }
    json_decref(mroot);
    resattn_response_body_release(&mb);
}
END_TEST

/* The input's name must be the model's ("input" for tensors). */
START_TEST(v2_input_name) {
    resattn_model_info m = model();
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(v2_req(&m, "x", "", &r, err), 400);
    ck_assert_msg(strstr(err, "inputs[0].name 'x' is not an input of this model"), "%s", err);
    ck_assert_ptr_null(r.input);
    ck_assert_int_eq(v2_req(&m, "image", "", &r, err), 400);
    ck_assert_msg(strstr(err, "'image' takes BYTES"), "%s", err);
    ck_assert_int_eq(v2_req(&m, "input", "", &r, err), 0);
    ck_assert_str_eq(r.input_name, "input");
    resattn_infer_request_release(&r);
}
END_TEST

/* One channel mask of block layer1.0 for n images, values in [0, 1]. */
static struct resattn_mask_set *one_mask_set(int n) {
    resattn_mask_set *s = calloc(1, sizeof *s);
    s->n = n;
    s->count = 1;
    s->masks = calloc(1, sizeof *s->masks);
    s->block_names = calloc(1, sizeof *s->block_names);
    s->block_names[0] = strdup("layer1.0");
    float *d = malloc(sizeof *d * 4 * (size_t)n);
    for (int i = 0; i < 4 * n; i++)
        d[i] = (float)(i % 5) / 4;
    s->masks[0] =
        (resattn_mask){.block = 0, .kind = RESATTN_MASK_CHANNEL, .c = 4, .h = 1, .w = 1, .data = d};
    return s;
}

/* The per-block summary is an output tensor "attention_summary" (BYTES [n] of JSON text),
 * asked for by parameters.attention or by name; response "parameters" never carry it. */
START_TEST(v2_attention_summary_output) {
    resattn_model_info m = model();
    m.attention = RESATTN_ATTENTION_SE;
    m.num_stages = 1;
    m.layers[0] = 1;
    const char *rests[] = {",\"parameters\":{\"attention\":true}",
                           ",\"outputs\":[{\"name\":\"logits\"},{\"name\":\"attention_summary\"}]",
                           ",\"parameters\":{\"attention\":true,\"binary_data_output\":true}"};
    float logits[7] = {0};
    for (int k = 0; k < 3; k++) {
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(v2_req(&m, "input", rests[k], &r, err) == 0, "%s", err);
        ck_assert(r.attention & RESATTN_ATTN_SUMMARY);
        r.masks = one_mask_set(1);
        resattn_response_body b;
        ck_assert_int_eq(resattn_v2_encode(&r, "se", &m, logits, 1, &b), 0);
        json_t *root = answer_json(&b), *outs = json_object_get(root, "outputs");
        ck_assert_ptr_null(json_object_get(root, "parameters"));
        json_t *o = json_array_get(outs, json_array_size(outs) - 1);
        ck_assert_str_eq(json_string_value(json_object_get(o, "name")), "attention_summary");
        ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")), "BYTES");
        ck_assert_int_eq(json_array_size(json_object_get(o, "shape")), 1);
        ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(o, "shape"), 0)), 1);
        char text[4096];
        if (k < 2) {
            snprintf(text, sizeof text, "%s",
                     json_string_value(json_array_get(json_object_get(o, "data"), 0)));
        } else { /* binary: the last tensor of the tail, a 4-byte length then the text */
            json_int_t size = json_integer_value(
                json_object_get(json_object_get(o, "parameters"), "binary_data_size"));
            const unsigned char *p = b.data + b.len - size;
            uint32_t len;
            memcpy(&len, p, 4);
            ck_assert_uint_eq(len + 4, (size_t)size);
            ck_assert_uint_lt(len, sizeof text);
            memcpy(text, p + 4, len);
            text[len] = 0;
        }
        json_t *blocks = json_loads(text, 0, NULL);
        ck_assert_msg(json_is_array(blocks), "summary is not a JSON array: %s", text);
        json_t *b0 = json_array_get(blocks, 0);
        ck_assert_str_eq(json_string_value(json_object_get(b0, "block")), "layer1.0");
        ck_assert_double_eq_tol(
            json_number_value(json_object_get(json_object_get(b0, "channel"), "max")), 0.75, 1e-9);
        json_decref(blocks);
        json_decref(root);
        resattn_response_body_release(&b);
        resattn_infer_request_release(&r);
    }
    /* a model without attention refuses the output */
    resattn_model_info none = model();
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(
        v2_req(&none, "input", ",\"outputs\":[{\"name\":\"attention_summary\"}]", &r, err), 400);
    ck_assert_msg(strstr(err, "no attention"), "%s", err);
}
END_TEST

/* Triton's classification extension: BYTES [n, K] of "value:index[:label]" (value as %f),
 * best first, ties by index; JSON and binary (4-byte little-endian length per element). */
START_TEST(v2_classification) {
    resattn_model_info m = model();
    m.labels = labels7;
    /* row 0: 6 > 3 = 2 (tie: index 2 first) > ...; row 1 decreasing */
    float logits[14] = {0.5f, -1, 3, 3, 0.25f, -2, 6, 6, 5, 4, 3, 2, 1, 0};
    const char *want_logits[2][3] = {{"6.000000:6:yak", "3.000000:2:emu", "3.000000:3:fox"},
                                     {"6.000000:0:cat", "5.000000:1:dog", "4.000000:2:emu"}};
    for (int binary = 0; binary < 2; binary++) {
        char rest[256];
        snprintf(rest, sizeof rest,
                 ",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":3,"
                 "\"binary_data\":%s}},{\"name\":\"probabilities\",\"parameters\":"
                 "{\"classification\":99}}]",
                 binary ? "true" : "false");
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(v2_req(&m, "input", rest, &r, err) == 0, "%s", err);
        ck_assert_int_eq(r.classification[0], 3);
        ck_assert_int_eq(r.classification[1], 7); /* at most the class count */
        resattn_response_body b;
        ck_assert_int_eq(resattn_v2_encode(&r, "se", &m, logits, 2, &b), 0);
        json_t *root = answer_json(&b), *outs = json_object_get(root, "outputs");
        ck_assert_int_eq(json_array_size(outs), 2);
        json_t *lo = json_array_get(outs, 0), *pr = json_array_get(outs, 1);
        ck_assert_str_eq(json_string_value(json_object_get(lo, "datatype")), "BYTES");
        ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(lo, "shape"), 1)), 3);
        ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(pr, "shape"), 1)), 7);
        const unsigned char *p = b.data + b.json_header_len;
        for (int i = 0; i < 6; i++) {
            const char *want = want_logits[i / 3][i % 3];
            if (binary) {
                uint32_t len;
                memcpy(&len, p, 4);
                ck_assert_uint_eq(len, strlen(want));
                ck_assert_int_eq(memcmp(p + 4, want, len), 0);
                p += 4 + len;
            } else {
                ck_assert_str_eq(
                    json_string_value(json_array_get(json_object_get(lo, "data"), (size_t)i)),
                    want);
            }
        }
        if (binary) {
            ck_assert_ptr_eq(p, b.data + b.len);
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(lo, "parameters"),
                                                                "binary_data_size")),
                             p - (b.data + b.json_header_len));
        }
        /* probabilities: the softmax values printed with %f, sorted the same way */
        float probs[14];
        resattn_softmax_rows(logits, 2, 7, probs);
        char want[64];
        snprintf(want, sizeof want, "%f:6:yak", (double)probs[6]);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(pr, "data"), 0)), want);
        snprintf(want, sizeof want, "%f:5", (double)probs[5]);
        ck_assert_ptr_nonnull(
            strstr(json_string_value(json_array_get(json_object_get(pr, "data"), 6)), want));
        json_decref(root);
        resattn_response_body_release(&b);
        resattn_infer_request_release(&r);
    }
    /* without labels: "value:index"; classification 0 is the tensor itself */
    resattn_model_info nolab = model();
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(v2_req(&nolab, "input",
                            ",\"outputs\":[{\"name\":\"logits\",\"parameters\":"
                            "{\"classification\":1}},{\"name\":\"probabilities\",\"parameters\":"
                            "{\"classification\":0}}]",
                            &r, err),
                     0);
    resattn_response_body b;
    ck_assert_int_eq(resattn_v2_encode(&r, "se", &nolab, logits, 1, &b), 0);
    json_t *root = answer_json(&b), *outs = json_object_get(root, "outputs");
    ck_assert_str_eq(
        json_string_value(json_array_get(json_object_get(json_array_get(outs, 0), "data"), 0)),
        "6.000000:6");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(outs, 1), "datatype")),
                     "FP32");
    json_decref(root);
    resattn_response_body_release(&b);
    resattn_infer_request_release(&r);
    /* bad requests name the field */
    struct {
        const char *rest, *needle;
    } bad[] = {
        {",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":\"3\"}}]",
         "outputs[0].parameters.classification must be a non-negative integer"},
        {",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":-1}}]",
         "outputs[0].parameters.classification"},
        {",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":2.5}}]",
         "outputs[0].parameters.classification"},
        {",\"outputs\":[{\"name\":\"top_k_indices\",\"parameters\":{\"classification\":2}}]",
         "only logits and probabilities can be classified, not 'top_k_indices'"},
        {",\"outputs\":[{\"name\":\"logits\"},{\"name\":\"logits\",\"parameters\":"
         "{\"classification\":2}}]",
         "outputs[1].name 'logits' is listed twice"},
        {",\"outputs\":[{\"name\":\"logits\",\"parameters\":[1]}]",
         "outputs[0].parameters is not an object"},
        {",\"parameters\":{\"top_k\":\"3\"}", "parameters.top_k"},
        {",\"parameters\":[]", "parameters is not an object"},
        {",\"outputs\":{}", "outputs is not an array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(v2_req(&m, "input", bad[i].rest, &r, err), 400);
        ck_assert_msg(strstr(err, bad[i].needle), "case %zu: '%s' lacks '%s'", i, err,
                      bad[i].needle);
    }
}
END_TEST

/* The request a v2 encoder answer would make: response data parses back through the v2
 * parser (a [N, 7] tensor is not an image, so only the scanner is compared here). */
START_TEST(scanner_matches_jansson) {
    sbuf b = {0};
    sb_data(&b, NULL, 0, 500, "%.9g");
    json_t *j = json_loadb(b.s, b.len, 0, NULL);
    ck_assert_ptr_nonnull(j);
    float out[500];
    resattn_scan_shape s;
    resattn_elem_rule rule = {RESATTN_ELEM_FLOAT, 0, 0, "FP32", 0, 0};
    char err[RESATTN_PROTO_ERR_LEN];
    ck_assert_int_eq(
        resattn_json_scan_tensor(b.s, b.s + b.len, &rule, out, 500, &s, "x", err, sizeof err), 0);
    ck_assert_int_eq(s.ndim, 1);
    for (int i = 0; i < 500; i++)
        ck_assert(out[i] == (float)json_number_value(json_array_get(j, i)));
    json_decref(j);
    free(b.s);
}
END_TEST

static int tfs(const char *body, resattn_infer_request *r, char *err) {
    resattn_model_info m = model();
    return resattn_tfs_parse((const unsigned char *)body, strlen(body), &m, &limits, r, err,
                             RESATTN_PROTO_ERR_LEN);
}

START_TEST(tfs_forms) {
    const int chw[3] = {C, H, W}, hwc[3] = {H, W, C}, nchw[4] = {2, C, H, W},
              nhwc[4] = {2, H, W, C};
    float want[2 * CHW], want_hwc[2 * CHW];
    for (int i = 0; i < 2 * CHW; i++)
        want[i] = strtof("0", NULL), want[i] = (float)ref_value(i);
    /* ref_value laid out as [H,W,C] gives [C,H,W] by transposing */
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    want_hwc[n * CHW + (c * H + y) * W + x] =
                        (float)ref_value(n * CHW + (y * W + x) * C + c);
    struct {
        const char *pre;
        const int *dims;
        int nd;
        int twice; /* two instances */
        int hwc, columnar;
    } cases[] = {
        {"{\"instances\":[", chw, 3, 1, 0, 0},
        {"{\"signature_name\":\"serving_default\",\"instances\":[", NULL, 0, 1, 0, 0},
        {"{\"instances\":[{\"input\":", chw, 3, 1, 0, 0},
        {"{\"instances\":[", hwc, 3, 1, 1, 0},
        {"{\"inputs\":", nchw, 4, 0, 0, 1},
        {"{\"inputs\":{\"input\":", nhwc, 4, 0, 1, 1},
        {"{\"inputs\":", chw, 3, 0, 0, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sbuf b = {0};
        sb_printf(&b, "%s", cases[k].pre);
        int obj = strstr(cases[k].pre, "{\"input\"") != NULL;
        int count = cases[k].columnar ? (cases[k].nd == 4 ? 2 * CHW : CHW) : CHW;
        if (cases[k].twice) {
            /* two instances with consecutive reference values */
            sbuf one = {0}, two = {0};
            sb_data(&one, cases[k].dims, cases[k].nd, CHW, "%.9g");
            sb_data(&two, cases[k].dims, cases[k].nd, 2 * CHW, "%.9g");
            /* second instance = values CHW..2CHW: build from a flat list of 2*CHW, split */
            free(two.s);
            sbuf second = {0};
            /* emit second instance by hand (flat or nested by dims) */
            int idx[3] = {0};
            if (cases[k].nd == 0) {
                sb_printf(&second, "[");
                for (int i = 0; i < CHW; i++)
                    sb_printf(&second, "%s%.9g", i ? "," : "", ref_value(CHW + i));
                sb_printf(&second, "]");
            } else {
                sb_printf(&second, "[[[");
                for (int i = 0; i < CHW; i++) {
                    sb_printf(&second, "%.9g", ref_value(CHW + i));
                    int d = 2;
                    while (d >= 0 && ++idx[d] == cases[k].dims[d]) {
                        idx[d] = 0;
                        sb_printf(&second, "]");
                        d--;
                    }
                    if (d >= 0) {
                        sb_printf(&second, ",");
                        for (int q = d + 1; q < 3; q++)
                            sb_printf(&second, "[");
                    }
                }
            }
            sb_printf(&b, obj ? "%s},{\"input\":%s}]}" : "%s, %s]}", one.s, second.s);
            free(one.s);
            free(second.s);
        } else {
            sb_data(&b, cases[k].dims, cases[k].nd, count, "%.9g");
            sb_printf(&b, obj ? "}}" : "}");
        }
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_msg(tfs(b.s, &r, err) == 0, "case %zu %s: %s", k, b.s, err);
        int n = cases[k].twice ? 2 : count / CHW;
        ck_assert_int_eq(r.n, n);
        ck_assert_int_eq(r.tfs_columnar, cases[k].columnar);
        ck_assert_int_eq(r.protocol, RESATTN_PROTO_TFS);
        const float *w = cases[k].hwc ? want_hwc : want;
        for (int i = 0; i < n * CHW; i++)
            ck_assert_msg(r.input[i] == w[i], "case %zu element %d: %.9g != %.9g", k, i, r.input[i],
                          w[i]);
        resattn_infer_request_release(&r);
        free(b.s);
    }
}
END_TEST

START_TEST(tfs_errors_and_encode) {
    struct {
        const char *body;
        int status;
        const char *needle;
    } cases[] = {
        {"", 400, "empty body"},
        {"{\"instances\":", 400, "invalid JSON"},
        {"{}", 400, "\"instances\""},
        {"{\"instances\":[]}", 400, "instances is empty"},
        {"{\"instances\":5}", 400, "instances must be an array"},
        {"{\"instances\":[5]}", 400, "instances[0] must be an image"},
        {"{\"instances\":[{\"image\":[1]}]}", 400, "instances[0] must be an image"},
        {"{\"instances\":[[1,2,3]]}", 422, "instances[0] has shape [3]"},
        {"{\"instances\":[[1,\"a\"]]}", 400, "instances[0]: element 1 is a string"},
        {"{\"instances\":[[1,NaN]]}", 400, "instances[0]: element 1 is NaN"},
        {"{\"inputs\":[[1,2],[3]]}", 400, "inputs: ragged"},
        {"{\"inputs\":[[[[1]]]]}", 422, "inputs has shape [1,1,1,1]"},
        {"{\"inputs\":{\"x\":[1]}}", 400, "inputs must be a batch array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        int st = tfs(cases[i].body, &r, err);
        ck_assert_msg(st == cases[i].status, "status %d (want %d) for %s: %s", st, cases[i].status,
                      cases[i].body, err);
        ck_assert_msg(strstr(err, cases[i].needle), "'%s' does not name '%s'", err,
                      cases[i].needle);
        ck_assert_ptr_null(r.input);
    }
    /* a valid tensor in an envelope that is wrong (checked after the tensor is read) */
    const char *env[][3] = {
        {"{\"instances\":[", "],\"inputs\":[]}", "not both"},
        {"{\"signature_name\":\"other\",\"instances\":[", "]}", "signature_name"},
        {"{\"instances\":[", "]", "invalid JSON"},
        {"{\"instances\":[", "],\"instances\":[]}", "duplicate"}};
    for (size_t i = 0; i < sizeof env / sizeof env[0]; i++) {
        sbuf both = {0};
        sb_printf(&both, "%s", env[i][0]);
        sb_data(&both, NULL, 0, CHW, "%.9g");
        sb_printf(&both, "%s", env[i][1]);
        resattn_infer_request r;
        char err[RESATTN_PROTO_ERR_LEN] = "";
        ck_assert_int_eq(tfs(both.s, &r, err), 400);
        ck_assert_msg(strstr(err, env[i][2]), "%s: %s", both.s, err);
        ck_assert_ptr_null(r.input);
        free(both.s);
    }
    /* more than max batch (4) instances, and a columnar batch of 5 */
    sbuf b = {0}, c = {0};
    sb_printf(&b, "{\"instances\":[");
    sb_printf(&c, "{\"inputs\":[");
    for (int k = 0; k < 5; k++) {
        sb_printf(&b, k ? "," : "");
        sb_printf(&c, k ? "," : "");
        sb_data(&b, NULL, 0, CHW, "%.9g");
        sb_data(&c, (const int[]){C, H, W}, 3, CHW, "%.9g");
    }
    sb_printf(&b, "]}");
    sb_printf(&c, "]}");
    resattn_infer_request r;
    char err[RESATTN_PROTO_ERR_LEN] = "";
    ck_assert_int_eq(tfs(b.s, &r, err), 413);
    ck_assert_msg(strstr(err, "instances: more than max batch 4"), "%s", err);
    ck_assert_int_eq(tfs(c.s, &r, err), 413);
    ck_assert_msg(strstr(err, "inputs") && strstr(err, "max batch 4"), "%s", err);
    free(b.s);
    free(c.s);

    float logits[14];
    for (int i = 0; i < 14; i++)
        logits[i] = (float)ref_value(i);
    resattn_infer_request req;
    memset(&req, 0, sizeof req);
    for (int col = 0; col < 2; col++) {
        req.tfs_columnar = col;
        resattn_response_body body;
        ck_assert_int_eq(resattn_tfs_encode(&req, logits, 2, 7, &body), 0);
        json_t *root = json_loadb((const char *)body.data, body.len, 0, NULL);
        ck_assert_ptr_nonnull(root);
        json_t *p = json_object_get(root, col ? "outputs" : "predictions");
        ck_assert_uint_eq(json_array_size(p), 2);
        for (int i = 0; i < 14; i++)
            ck_assert((float)json_number_value(json_array_get(json_array_get(p, i / 7), i % 7)) ==
                      logits[i]);
        json_decref(root);
        resattn_response_body_release(&body);
    }
}
END_TEST

/* Every prefix of valid bodies and random byte mutations: a status, never a crash (ASan). */
START_TEST(truncations_and_mutations) {
    sbuf v = {0}, t = {0};
    sb_printf(&v, "{\"id\":\"a\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,4,5],\"datatype\":"
                  "\"FP32\",\"data\":");
    sb_data(&v, (const int[]){1, C, H, W}, 4, CHW, "%.9g");
    sb_printf(&v, "}],\"outputs\":[{\"name\":\"logits\"}]}");
    sb_printf(&t, "{\"instances\":[{\"input\":");
    sb_data(&t, (const int[]){C, H, W}, 3, CHW, "%.9g");
    sb_printf(&t, "}]}");
    resattn_model_info m = model();
    for (int which = 0; which < 2; which++) {
        sbuf *s = which ? &t : &v;
        for (size_t len = 0; len < s->len; len++) {
            unsigned char *copy = malloc(len ? len : 1); /* exact size: ASan sees overreads */
            memcpy(copy, s->s, len);
            resattn_infer_request r;
            char err[RESATTN_PROTO_ERR_LEN] = "";
            int st = which ? resattn_tfs_parse(copy, len, &m, &limits, &r, err, sizeof err)
                           : resattn_v2_parse("application/json", copy, len, -1, &m, &limits, &r,
                                              err, sizeof err);
            ck_assert_msg(st >= 400 && err[0], "prefix %zu accepted (%d)", len, st);
            free(copy);
        }
        srand(11);
        for (int i = 0; i < 3000; i++) {
            unsigned char *copy = malloc(s->len);
            memcpy(copy, s->s, s->len);
            for (int k = 0; k < 1 + i % 4; k++)
                copy[(size_t)rand() % s->len] = (unsigned char)"[]{},:\"\\0-e.x \xff"[rand() % 15];
            resattn_infer_request r;
            char err[RESATTN_PROTO_ERR_LEN] = "";
            int st = which ? resattn_tfs_parse(copy, s->len, &m, &limits, &r, err, sizeof err)
                           : resattn_v2_parse("application/json", copy, s->len, (i % 3) - 1, &m,
                                              &limits, &r, err, sizeof err);
            ck_assert(st == 0 || (st >= 400 && err[0]));
            if (st == 0)
                ck_assert(r.input != NULL && r.n == 1);
            resattn_infer_request_release(&r);
            free(copy);
        }
    }
    free(v.s);
    free(t.s);
}
END_TEST

/* qsort order for the naive reference: larger first, NaN last, ties by index. */
static const float *rank_v;
static int rank_cmp(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    int an = isnan(rank_v[a]), bn = isnan(rank_v[b]);
    if (an != bn)
        return an - bn;
    if (!an && rank_v[a] != rank_v[b])
        return rank_v[a] > rank_v[b] ? -1 : 1;
    return a - b;
}

/* resattn_top_indices against a full sort, on values with many ties and some NaN, for every
 * top from 1 to k (heap edge cases: top 1, top k, top a power of two and not). */
START_TEST(top_indices_equal_sort) {
    srand(7);
    int ks[] = {1, 2, 3, 10, 17, 64, 1000};
    for (size_t t = 0; t < sizeof ks / sizeof *ks; t++) {
        int k = ks[t];
        float *v = malloc(sizeof *v * (size_t)k);
        int *want = malloc(sizeof *want * (size_t)k), *got = malloc(sizeof *got * (size_t)k);
        for (int c = 0; c < k; c++)
            v[c] = rand() % 13 == 0 ? NAN : (float)(rand() % 7) - 3.0f; /* ties, NaN */
        for (int c = 0; c < k; c++)
            want[c] = c;
        rank_v = v;
        qsort(want, (size_t)k, sizeof *want, rank_cmp);
        for (int top = 1; top <= k; top += top < 20 ? 1 : 97) {
            resattn_top_indices(v, k, top, got);
            for (int j = 0; j < top; j++)
                ck_assert_msg(got[j] == want[j], "k=%d top=%d rank %d: got %d, want %d", k, top, j,
                              got[j], want[j]);
        }
        resattn_top_indices(v, k, k, got);
        ck_assert_int_eq(memcmp(got, want, sizeof *got * (size_t)k), 0);
        free(v);
        free(want);
        free(got);
    }
}
END_TEST

Suite *protocol_suite(void) {
    Suite *s = suite_create("protocol");
    TCase *tc = tcase_create("v2");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, v2_json_fp32_flat_and_nested);
    tcase_add_test(tc, v2_json_datatypes);
    tcase_add_test(tc, v2_binary_datatypes);
    tcase_add_test(tc, v2_binary_in_place);
    tcase_add_test(tc, check_finite_names_first);
    tcase_add_test(tc, v2_binary_errors);
    tcase_add_test(tc, v2_outputs_requested);
    tcase_add_test(tc, v2_escaped_key_fallback);
    tcase_add_test(tc, v2_attention_outputs);
    tcase_add_test(tc, v2_npy_body);
    tcase_add_test(tc, v2_errors);
    tcase_add_test(tc, v2_deep_nesting);
    tcase_add_test(tc, nonfinite_allowed);
    tcase_add_test(tc, numbers_roundtrip);
    tcase_add_test(tc, numbers_f32_midpoints);
    tcase_add_test(tc, numbers_scan_equal_strtof);
    tcase_add_test(tc, format_f32_equals_printf);
    tcase_add_test(tc, top_indices_equal_sort);
    tcase_add_test(tc, simd_scan_styles);
    tcase_add_test(tc, simd_scan_equal_strtof);
    tcase_add_test(tc, simd_scan_ends);
    tcase_add_test(tc, simd_scan_malformed);
    tcase_add_test(tc, v2_encode_roundtrip);
    tcase_add_test(tc, v2_metadata);
    tcase_add_test(tc, v2_default_outputs_are_the_metadata);
    tcase_add_test(tc, v2_input_name);
    tcase_add_test(tc, v2_attention_summary_output);
    tcase_add_test(tc, v2_classification);
    tcase_add_test(tc, scanner_matches_jansson);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("tfs");
    tcase_set_timeout(tt, 60);
    tcase_add_test(tt, tfs_forms);
    tcase_add_test(tt, tfs_errors_and_encode);
    tcase_add_test(tt, truncations_and_mutations);
    suite_add_tcase(s, tt);
    return s;
}
