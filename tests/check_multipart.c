/*
 * multipart/form-data parsing (server/protocol/multipart.c) and the image request forms and top-k
 * answers (server/protocol/image_api.c), as pure functions; then the image endpoints end to end
 * through a real `resattn serve` with the built-in model: every input form classifies the
 * committed examples (models/examples/<i>_<label>.png) to the label in their name, and
 * broken images get 413/415/422 with a JSON error.
 */
#include "protocol/image_api.h"
#include "protocol/multipart.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- multipart ------------------------------------------------------------------------ */

static int parse(const char *body, size_t len, resattn_multipart_part *parts, int max, int *n,
                 char *err) {
    /* an exact-size copy so ASan catches any read past the end */
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, body, len);
    int rc = resattn_multipart_parse(copy, len, "XyZ", parts, max, n, err, 256);
    /* the parts point into copy: move them onto body before freeing */
    for (int i = 0; !rc && i < *n; i++) {
        ptrdiff_t d = (const char *)copy - body;
        parts[i].data = parts[i].data - d;
        if (parts[i].name)
            parts[i].name -= d;
        if (parts[i].filename)
            parts[i].filename -= d;
        if (parts[i].content_type)
            parts[i].content_type -= d;
    }
    free(copy);
    return rc;
}

static int span_is(const char *p, size_t n, const char *want) {
    return p && n == strlen(want) && !memcmp(p, want, n);
}

START_TEST(multipart_two_parts) {
    const char body[] = "preamble\r\n--XyZ\r\n"
                        "Content-Disposition: form-data; name=\"image\"; filename=\"a b.png\"\r\n"
                        "content-type: image/png\r\n\r\n"
                        "\x89PNG\r\n--X\r\n"
                        "--XyZ  \r\n"
                        "Content-Disposition: form-data; name=top_k\r\n\r\n"
                        "3\r\n"
                        "--XyZ--\r\nepilogue";
    resattn_multipart_part p[4];
    int n = 0;
    char err[256] = "";
    ck_assert_msg(parse(body, sizeof body - 1, p, 4, &n, err) == 0, "%s", err);
    ck_assert_int_eq(n, 2);
    ck_assert(span_is(p[0].name, p[0].name_len, "image"));
    ck_assert(span_is(p[0].filename, p[0].filename_len, "a b.png"));
    ck_assert(span_is(p[0].content_type, p[0].content_type_len, "image/png"));
    ck_assert(span_is((const char *)p[0].data, p[0].len, "\x89PNG\r\n--X"));
    ck_assert(span_is(p[1].name, p[1].name_len, "top_k"));
    ck_assert_ptr_null(p[1].filename);
    ck_assert(span_is((const char *)p[1].data, p[1].len, "3"));
}
END_TEST

START_TEST(multipart_empty_and_headerless_parts) {
    const char body[] = "--XyZ\r\n\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n"
                        "\r\n\r\n--XyZ--";
    resattn_multipart_part p[4];
    int n = 0;
    char err[256] = "";
    ck_assert_msg(parse(body, sizeof body - 1, p, 4, &n, err) == 0, "%s", err);
    ck_assert_int_eq(n, 2);
    ck_assert_uint_eq(p[0].len, 0);
    ck_assert_ptr_null(p[0].name);
    ck_assert_uint_eq(p[1].len, 0);
}
END_TEST

START_TEST(multipart_errors) {
    struct {
        const char *body, *word;
    } bad[] = {
        {"", "not found"},
        {"no boundary here", "not found"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\ndata", "not closed"},
        {"--XyZ\r\nContent-Disposition: form-data\r\n", "unterminated"},
        {"--XyZgarbage\r\n\r\nx\r\n--XyZ--", "CRLF"},
        {"--XyZ\r\nno colon line\r\n\r\nx\r\n--XyZ--", "':'"},
        {"--XyZ\r\nContent-Disposition: attachment\r\n\r\nx\r\n--XyZ--", "form-data"},
        {"--XyZ\r\n\r\na\r\n--XyZ\r\n\r\nb\r\n--XyZ\r\n\r\nc\r\n--XyZ--", "more than 2"},
        {"--XyZ", "CRLF"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resattn_multipart_part p[2];
        int n = 0;
        char err[256] = "";
        ck_assert_msg(parse(bad[i].body, strlen(bad[i].body), p, 2, &n, err) != 0, "case %zu ok",
                      i);
        ck_assert_msg(strstr(err, bad[i].word), "case %zu: '%s' lacks '%s'", i, err, bad[i].word);
    }
}
END_TEST

START_TEST(multipart_boundary_param) {
    char b[RESATTN_MULTIPART_BOUNDARY_MAX + 1], err[256];
    ck_assert_int_eq(resattn_multipart_boundary("multipart/form-data; boundary=abc", b, err, 256),
                     0);
    ck_assert_str_eq(b, "abc");
    ck_assert_int_eq(resattn_multipart_boundary("Multipart/Form-Data;charset=utf-8; "
                                                "BOUNDARY=\"a b;c\"",
                                                b, err, 256),
                     0);
    ck_assert_str_eq(b, "a b;c");
    const char *bad[] = {"multipart/form-data",
                         "multipart/form-data; boundary=", "multipart/form-data; boundary=\"open",
                         "application/json; boundary=x",
                         "multipart/form-data; boundary="
                         "12345678901234567890123456789012345678901234567890123456789012345678901"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(resattn_multipart_boundary(bad[i], b, err, 256) != 0, "'%s' accepted",
                      bad[i]);
}
END_TEST

/* Every prefix and many byte flips of a valid body: no crash, no out-of-bounds read. */
START_TEST(multipart_truncation_and_mutation) {
    const char body[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n"
        "Content-Type: image/png\r\n\r\nDATA\r\n--XyZ\r\n"
        "Content-Disposition: form-data; name=top_k\r\n\r\n3\r\n--XyZ--\r\n";
    size_t len = sizeof body - 1;
    resattn_multipart_part p[4];
    int n;
    char err[256];
    for (size_t cut = 0; cut < len; cut++)
        if (parse(body, cut, p, 4, &n, err) == 0)
            ck_assert(cut >= len - 4); /* only the trailing "\r\n" and "--" may be missing */
    unsigned seed = 7;
    char *m = malloc(len);
    for (int t = 0; t < 2000; t++) {
        memcpy(m, body, len);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            m[(seed >> 8) % len] = (char)(seed >> 24);
        }
        if (parse(m, len, p, 4, &n, err) == 0)
            for (int i = 0; i < n; i++)
                ck_assert((const char *)p[i].data >= m &&
                          (const char *)p[i].data + p[i].len <= m + len);
    }
    free(m);
}
END_TEST

/* ---- image_api as pure functions ------------------------------------------------------ */

static const char *const labels[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static resattn_model_info fashion(void) {
    resattn_model_info m;
    memset(&m, 0, sizeof m);
    m.in_channels = 1;
    m.in_height = m.in_width = 28;
    m.num_classes = 10;
    m.labels = labels;
    m.preprocess_json = "{\"color\":\"gray\",\"resize\":\"direct\",\"scale\":255,"
                        "\"invert\":\"auto\",\"mean\":[0.286],\"std\":[0.353]}";
    return m;
}

static const resattn_parse_limits limits = {.max_batch = 4, .max_json_depth = 64};

static unsigned char *example(size_t *len) {
    unsigned char *b = ut_read_file("models/examples/0_ankle-boot.png", len);
    ck_assert_msg(b != NULL, "models/examples/0_ankle-boot.png missing (run from the repo root)");
    return b;
}

static char *b64(const unsigned char *d, size_t n) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *s = malloc(n / 3 * 4 + 5), *o = s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = d[i] << 16 | (i + 1 < n ? d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? t[v & 63] : '=';
    }
    *o = 0;
    return s;
}

static char *fmt(const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    ck_assert_int_ge(vasprintf(&s, f, ap), 0);
    va_end(ap);
    return s;
}

static int api(resattn_protocol proto, const char *ct, const void *body, size_t len,
               resattn_infer_request *r, char *err) {
    resattn_model_info m = fashion();
    unsigned char *copy = malloc(len ? len : 1);
    memcpy(copy, body, len);
    int st = resattn_image_api_parse(proto, ct, copy, len, -1, -1, 0, &m, &limits, r, err, 256);
    free(copy);
    return st;
}

/* The raw, base64 JSON and multipart forms of one image give the same input tensor. */
START_TEST(api_forms_agree) {
    size_t len;
    unsigned char *png = example(&len);
    char err[256] = "";
    resattn_infer_request raw, js, mp, v2;
    ck_assert_msg(api(RESATTN_PROTO_PREDICT, "image/png", png, len, &raw, err) == 0, "%s", err);
    ck_assert_int_eq(raw.n, 1);
    ck_assert_int_eq(raw.top_k, 5);
    ck_assert(raw.c == 1 && raw.h == 28 && raw.w == 28);
    char *s = b64(png, len);
    char *body = fmt("{\"image\": \"data:image/png;base64,%s\", \"top_k\": 3}", s);
    ck_assert_msg(api(RESATTN_PROTO_PREDICT, "application/json", body, strlen(body), &js, err) == 0,
                  "%s", err);
    ck_assert_int_eq(js.top_k, 3);
    free(body);
    char *head =
        fmt("--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n");
    size_t hl = strlen(head);
    const char tail[] = "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n2\r\n"
                        "--XyZ--\r\n";
    unsigned char *m = malloc(hl + len + sizeof tail);
    memcpy(m, head, hl);
    memcpy(m + hl, png, len);
    memcpy(m + hl + len, tail, sizeof tail - 1);
    ck_assert_msg(api(RESATTN_PROTO_PREDICT, "multipart/form-data; boundary=XyZ", m,
                      hl + len + sizeof tail - 1, &mp, err) == 0,
                  "%s", err);
    ck_assert_int_eq(mp.top_k, 2);
    free(head);
    free(m);
    body =
        fmt("{\"id\":\"r1\",\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
            "\"data\":[\"%s\"]}],\"parameters\":{\"top_k\":20}}",
            s);
    ck_assert(resattn_image_api_is_image("application/json", (unsigned char *)body, strlen(body)));
    /* a numeric tensor is not searched for "BYTES" (here in its id); unlocatable data is */
    const char *num = "{\"id\":\"BYTES\",\"inputs\":[{\"name\":\"x\",\"data\":[ [-1.5,2]],"
                      "\"datatype\":\"FP32\"}]}";
    ck_assert(
        !resattn_image_api_is_image("application/json", (const unsigned char *)num, strlen(num)));
    const char *esc = "{\"inputs\":[{\"d\\u0061ta\":[\"x\"],\"datatype\":\"BYTES\"}]}";
    ck_assert(resattn_image_api_is_image(NULL, (const unsigned char *)esc, strlen(esc)));
    ck_assert_msg(api(RESATTN_PROTO_V2, "application/json", body, strlen(body), &v2, err) == 0,
                  "%s", err);
    ck_assert_int_eq(v2.top_k, 10); /* at most the class count */
    ck_assert_str_eq(v2.id, "r1");
    ck_assert_uint_eq(v2.outputs, RESATTN_OUT_DEFAULT); /* no "outputs": all the listed ones */
    ck_assert(!v2.outputs_named);
    free(body);
    free(s);
    size_t count = 28 * 28;
    ck_assert_int_eq(memcmp(raw.input, js.input, count * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(raw.input, mp.input, count * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(raw.input, v2.input, count * sizeof(float)), 0);
    /* normalised: a black border pixel is (0 - 0.286) / 0.353 (no inversion) */
    ck_assert_float_eq_tol(raw.input[0], -0.286f / 0.353f, 1e-5);
    resattn_infer_request_release(&raw);
    resattn_infer_request_release(&js);
    resattn_infer_request_release(&mp);
    resattn_infer_request_release(&v2);
    free(png);
}
END_TEST

START_TEST(api_errors) {
    size_t len;
    unsigned char *png = example(&len);
    char *s = b64(png, len);
    char *five = fmt("{\"images\":[\"%s\",\"%s\",\"%s\",\"%s\",\"%s\"]}", s, s, s, s, s);
    struct {
        resattn_protocol proto;
        const char *ct, *body;
        size_t len; /* 0: strlen(body) */
        int status;
        const char *word;
    } bad[] = {
        {RESATTN_PROTO_PREDICT, "text/plain", "hello", 0, 415, "text/plain"},
        {RESATTN_PROTO_PREDICT, "application/octet-stream", "GIF89a", 0, 415, "not a PNG"},
        {RESATTN_PROTO_PREDICT, "image/png", "GIF89a", 0, 415, "not PNG or JPEG"},
        {RESATTN_PROTO_PREDICT, "image/png", (const char *)png, len / 2, 422, "truncated"},
        {RESATTN_PROTO_PREDICT, "image/png", "", 0, 422, "empty"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"image\": 5}", 0, 400, "base64"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"image\": \"@@\"}", 0, 400, "base64"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"images\": []}", 0, 400, "non-empty"},
        {RESATTN_PROTO_PREDICT, "application/json", "{}", 0, 400, "exactly one"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"image\":", 0, 400, "invalid JSON"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"image\":\"\",\"top_k\":0}", 0, 400,
         "top_k"},
        {RESATTN_PROTO_PREDICT, "application/json", "{\"image\":\"\"}", 0, 422, "empty"},
        {RESATTN_PROTO_PREDICT, "application/json", five, strlen(five), 413, "batch limit"},
        {RESATTN_PROTO_PREDICT, "multipart/form-data", "x", 0, 400, "boundary"},
        {RESATTN_PROTO_PREDICT, "multipart/form-data; boundary=XyZ", "--XyZ--", 0, 400, "no image"},
        {RESATTN_PROTO_PREDICT, "multipart/form-data; boundary=XyZ",
         "--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n\r\n--XyZ--", 0, 422,
         "empty"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"data\":[1]}]}", 0, 400, "BYTES"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[1]}]}", 0, 400,
         "base64"},
        /* v2 images: the input's name, and "outputs" / "parameters" as for a tensor */
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"data\":[\"\"]}]}", 0, 400,
         "'x' is not this model's input"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"outputs\":[{\"name\":\"feat\"}]}",
         0, 400, "outputs[0].name 'feat'"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"outputs\":[{\"name\":\"attention/layer1.0\"}]}",
         0, 400, "this model has no attention"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"parameters\":{\"attention\":true}}",
         0, 400, "this model has no attention"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"outputs\":[{\"name\":\"top_k_labels\",\"parameters\":{\"classification\":2}}]}",
         0, 400, "only logits and probabilities"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"parameters\":{\"binary_data_output\":1}}",
         0, 400, "binary_data_output"},
        {RESATTN_PROTO_V2, "application/json",
         "{\"inputs\":[{\"name\":\"image\",\"datatype\":\"BYTES\",\"data\":[\"\"]}],"
         "\"parameters\":{\"top_k\":0}}",
         0, 400, "parameters.top_k"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resattn_infer_request r;
        char err[256] = "";
        size_t n = bad[i].len ? bad[i].len : strlen(bad[i].body); /* 0: a string */
        int st = api(bad[i].proto, bad[i].ct, bad[i].body, n, &r, err);
        ck_assert_msg(st == bad[i].status, "case %zu: status %d, want %d (%s)", i, st,
                      bad[i].status, err);
        ck_assert_msg(strstr(err, bad[i].word), "case %zu: '%s' lacks '%s'", i, err, bad[i].word);
        ck_assert_ptr_null(r.input);
    }
    free(five);
    free(s);
    free(png);
}
END_TEST

/* Answers: sorted probabilities summing to <= 1, labels, batch form, v2 top-k outputs. */
START_TEST(api_encode) {
    resattn_model_info m = fashion();
    float logits[20] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
    resattn_infer_request r;
    memset(&r, 0, sizeof r);
    r.protocol = RESATTN_PROTO_PREDICT;
    r.outputs = RESATTN_OUT_TOP_K;
    r.top_k = 3;
    ck_assert(resattn_image_api_owns(&r));
    resattn_response_body b;
    ck_assert_int_eq(resattn_image_api_encode(&r, "fm", &m, logits, 1, &b), 0);
    json_error_t je;
    json_t *o = json_loadb((char *)b.data, b.len, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(o, "model")), "fm");
    json_t *p = json_object_get(o, "predictions");
    ck_assert_int_eq(json_array_size(p), 3);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(p, 0), "label")),
                     "Ankle boot");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(p, 1), "index")), 8);
    double p0 = json_real_value(json_object_get(json_array_get(p, 0), "probability"));
    double p1 = json_real_value(json_object_get(json_array_get(p, 1), "probability"));
    double sum = 0;
    for (int c = 0; c < 10; c++)
        sum += exp(logits[c] - 9);
    ck_assert_double_eq_tol(p0, 1 / sum, 1e-6);
    ck_assert(p0 > p1);
    json_decref(o);
    resattn_response_body_release(&b);
    ck_assert_int_eq(resattn_image_api_encode(&r, "fm", &m, logits, 2, &b), 0);
    o = json_loadb((char *)b.data, b.len, 0, &je);
    json_t *batch = json_object_get(o, "batch");
    ck_assert_int_eq(json_array_size(batch), 2);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_array_get(batch, 1), 0), "label")),
        "T-shirt/top");
    json_decref(o);
    resattn_response_body_release(&b);
    /* a v2 image request is answered as a tensor one: every listed output by default */
    r.protocol = RESATTN_PROTO_V2;
    r.outputs = RESATTN_OUT_DEFAULT;
    ck_assert(!resattn_image_api_owns(&r));
    ck_assert_int_eq(resattn_v2_encode(&r, "fm", &m, logits, 2, &b), 0);
    o = json_loadb((char *)b.data, b.len, 0, &je);
    json_t *outs = json_object_get(o, "outputs");
    ck_assert_int_eq(json_array_size(outs), 5);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(outs, 0), "name")), "logits");
    json_t *tl = json_array_get(outs, 2);
    ck_assert_str_eq(json_string_value(json_object_get(tl, "name")), "top_k_labels");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(tl, "data"), 3)),
                     "T-shirt/top");
    json_decref(o);
    resattn_response_body_release(&b);
}
END_TEST

/* A v2 image request reads "outputs" and "parameters" as a tensor request does. */
START_TEST(api_v2_outputs_and_parameters) {
    size_t len;
    unsigned char *png = example(&len);
    char *s = b64(png, len), err[256] = "";
    char *body = fmt("{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                     "\"data\":[\"%s\"]}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":"
                     "{\"classification\":2,\"binary_data\":true}},{\"name\":\"top_k_indices\"}],"
                     "\"parameters\":{\"top_k\":4,\"binary_data_output\":true}}",
                     s);
    resattn_infer_request r;
    ck_assert_msg(api(RESATTN_PROTO_V2, "application/json", body, strlen(body), &r, err) == 0, "%s",
                  err);
    ck_assert_uint_eq(r.outputs, RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K_INDICES);
    ck_assert_uint_eq(r.binary & (RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K_INDICES),
                      RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K_INDICES);
    ck_assert(r.outputs_named);
    ck_assert_int_eq(r.classification[1], 2);
    ck_assert_int_eq(r.classification[0], 0);
    ck_assert_int_eq(r.top_k, 4);
    resattn_model_info m = fashion();
    float logits[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    resattn_response_body b;
    ck_assert_int_eq(resattn_v2_encode(&r, "fm", &m, logits, 1, &b), 0);
    ck_assert_uint_gt(b.json_header_len, 0);
    json_t *o = json_loadb((char *)b.data, b.json_header_len, 0, NULL);
    json_t *outs = json_object_get(o, "outputs");
    ck_assert_int_eq(json_array_size(outs), 2);
    json_t *p = json_array_get(outs, 0), *ix = json_array_get(outs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(p, "datatype")), "BYTES");
    ck_assert_str_eq(json_string_value(json_object_get(ix, "datatype")), "INT64");
    ck_assert_int_eq(json_integer_value(json_array_get(json_object_get(ix, "shape"), 1)), 4);
    /* the binary part: "<p9>:9:Ankle boot", "<p8>:8:Bag" length-prefixed, then 4 int64 */
    double sum = 0;
    for (int c = 0; c < 10; c++)
        sum += exp(logits[c] - 9);
    char want[2][64];
    snprintf(want[0], 64, "%f:9:Ankle boot", (double)(float)(1 / sum));
    snprintf(want[1], 64, "%f:8:Bag", (double)(float)(exp(-1) / sum));
    const unsigned char *t = b.data + b.json_header_len;
    size_t off = 0;
    for (int j = 0; j < 2; j++) {
        uint32_t n = (uint32_t)t[off] | (uint32_t)t[off + 1] << 8 | (uint32_t)t[off + 2] << 16 |
                     (uint32_t)t[off + 3] << 24;
        ck_assert_uint_eq(n, strlen(want[j]));
        ck_assert_int_eq(memcmp(t + off + 4, want[j], n), 0);
        off += 4 + n;
    }
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(p, "parameters"), "binary_data_size")),
        (json_int_t)off);
    int64_t idx[4];
    ck_assert_uint_eq(b.len - b.json_header_len - off, sizeof idx);
    memcpy(idx, t + off, sizeof idx);
    ck_assert(idx[0] == 9 && idx[1] == 8 && idx[2] == 7 && idx[3] == 6);
    json_decref(o);
    resattn_response_body_release(&b);
    resattn_infer_request_release(&r);
    free(body);
    free(s);
    free(png);
}
END_TEST

/* v2 images with the binary tensor extension: the raw files, each after a 4-byte
 * little-endian length, following a JSON header (as tritonclient sends BYTES). */
static unsigned char *binary_images(const unsigned char *png, size_t len, int n,
                                    const char *hdr_rest, long long declared, size_t *total,
                                    size_t *hl) {
    size_t bin = (size_t)n * (4 + len);
    char *head = fmt("{\"inputs\":[{\"name\":\"image\",\"shape\":[%d],\"datatype\":\"BYTES\","
                     "\"parameters\":{\"binary_data_size\":%lld}}]%s}",
                     n, declared < 0 ? (long long)bin : declared, hdr_rest);
    *hl = strlen(head);
    *total = *hl + bin;
    unsigned char *b = malloc(*total), *p = b + *hl;
    memcpy(b, head, *hl);
    for (int i = 0; i < n; i++) {
        uint32_t l = (uint32_t)len;
        memcpy(p, &l, 4);
        memcpy(p + 4, png, len);
        p += 4 + len;
    }
    free(head);
    return b;
}

START_TEST(api_v2_binary_images) {
    size_t len, total, hl;
    unsigned char *png = example(&len);
    resattn_model_info m = fashion();
    resattn_infer_request r, ref;
    char err[256] = "";
    unsigned char *b = binary_images(png, len, 2, "", -1, &total, &hl);
    for (int t = 0; t < 2; t++) {
        const char *ct = t ? "application/octet-stream" : "application/json";
        ck_assert(resattn_image_api_is_image(ct, b, total));
        ck_assert_msg(resattn_image_api_parse(RESATTN_PROTO_V2, ct, b, total, (long long)hl, -1, 0,
                                              &m, &limits, &r, err, sizeof err) == 0,
                      "%s", err);
        ck_assert_int_eq(r.n, 2);
        ck_assert_uint_eq(r.outputs, RESATTN_OUT_DEFAULT);
        ck_assert_msg(api(RESATTN_PROTO_PREDICT, "image/png", png, len, &ref, err) == 0, "%s", err);
        ck_assert_int_eq(memcmp(r.input + 28 * 28, ref.input, 28 * 28 * sizeof(float)), 0);
        resattn_infer_request_release(&ref);
        resattn_infer_request_release(&r);
    }
    free(b);
    struct {
        int n;
        const char *rest;
        long long declared;
        size_t cut;   /* bytes dropped from the end */
        long long hl; /* -2: the header's own length */
        const char *word;
    } bad[] = {
        {1, "", 7, 0, -2, "binary_data_size must be the"},
        {2, "", -1, 3, -2, "element 1 has length"},
        {1, "", -1, 0, -1, "invalid JSON"}, /* without the header, the body is all JSON */
        {1, "", -1, 0, 1 << 20, "outside the body"},
        {1, ",\"outputs\":[{\"name\":\"feat\"}]", -1, 0, -2, "'feat'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b = binary_images(png, len, bad[i].n, bad[i].rest, bad[i].declared, &total, &hl);
        if (bad[i].cut) { /* the declared size follows, the last element is cut short */
            free(b);
            b = binary_images(png, len, bad[i].n, bad[i].rest,
                              (long long)(bad[i].n * (4 + len) - bad[i].cut), &total, &hl);
            total -= bad[i].cut;
        }
        int st = resattn_image_api_parse(RESATTN_PROTO_V2, "application/json", b, total,
                                         bad[i].hl == -2 ? (long long)hl : bad[i].hl, -1, 0, &m,
                                         &limits, &r, err, sizeof err);
        ck_assert_msg(st == 400 && strstr(err, bad[i].word), "case %zu: %d %s", i, st, err);
        ck_assert_ptr_null(r.input);
        free(b);
    }
    /* an element whose length runs past the end */
    b = binary_images(png, len, 1, "", -1, &total, &hl);
    uint32_t big = (uint32_t)len + 1;
    memcpy(b + hl, &big, 4);
    ck_assert_int_eq(resattn_image_api_parse(RESATTN_PROTO_V2, "application/json", b, total,
                                             (long long)hl, -1, 0, &m, &limits, &r, err,
                                             sizeof err),
                     400);
    ck_assert_msg(strstr(err, "element 0 has length"), "%s", err);
    free(b);
    free(png);
}
END_TEST

/* ---- end to end ----------------------------------------------------------------------- */

/* The label in an example's file name, "0_ankle-boot.png" -> "ankle boot". */
static void want_label(const char *file, char *out, size_t n) {
    const char *u = strchr(file, '_') + 1;
    size_t i = 0;
    for (; u[i] && u[i] != '.' && i + 1 < n; i++)
        out[i] = u[i] == '-' ? ' ' : u[i];
    out[i] = 0;
}

/* A model label in the same spelling: "T-shirt/top" -> "t shirt top". */
static void norm(const char *s, char *out, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        out[i] = isalnum((unsigned char)s[i]) ? (char)tolower((unsigned char)s[i]) : ' ';
    out[i] = 0;
}

static const char *top_label(const uh_response *r, int batch_item) {
    json_error_t je;
    static char buf[64];
    json_t *o = json_loadb((char *)r->body, r->len, 0, &je);
    json_t *p = batch_item < 0 ? json_object_get(o, "predictions")
                               : json_array_get(json_object_get(o, "batch"), (size_t)batch_item);
    const char *l = json_string_value(json_object_get(json_array_get(p, 0), "label"));
    norm(l ? l : "(none)", buf, sizeof buf);
    json_decref(o);
    return buf;
}

START_TEST(http_examples_every_form) {
    uh_server s;
    const char *args[] = {NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start");
    const char *files[] = {"0_ankle-boot.png", "2_trouser.png", "1_pullover.png", "8_sandal.png"};
    int right = 0, total = 0;
    for (int f = 0; f < 4; f++) {
        char path[128], want[64];
        snprintf(path, sizeof path, "models/examples/%s", files[f]);
        want_label(files[f], want, sizeof want);
        size_t len;
        unsigned char *png = ut_read_file(path, &len);
        ck_assert_ptr_nonnull(png);
        uh_response r;
        const char *h_png[] = {"Content-Type: image/png", NULL};
        ck_assert_int_eq(uh_request(s.port, "POST", "/predict?top_k=2", h_png, png, len, &r), 0);
        ck_assert_msg(r.status == 200, "%s: %ld %.*s", files[f], r.status, (int)r.len, r.body);
        right += !strcmp(top_label(&r, -1), want), total++;
        uh_response_release(&r);
        char *s64 = b64(png, len);
        char *body = fmt("{\"images\": [\"%s\", \"%s\"]}", s64, s64);
        const char *h_json[] = {"Content-Type: application/json", NULL};
        ck_assert_int_eq(
            uh_request(s.port, "POST", "/predict/default", h_json, body, strlen(body), &r), 0);
        ck_assert_int_eq(r.status, 200);
        right += !strcmp(top_label(&r, 1), want), total++;
        uh_response_release(&r);
        free(body);
        body = fmt("{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                   "\"data\":[\"%s\"]}]}",
                   s64);
        ck_assert_int_eq(
            uh_request(s.port, "POST", "/v2/models/default/infer", h_json, body, strlen(body), &r),
            0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(strstr((char *)r.body, "\"top_k_labels\""));
        uh_response_release(&r);
        free(body);
        free(s64);
        char *head = fmt("--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
                         "filename=\"%s\"\r\nContent-Type: image/png\r\n\r\n",
                         files[f]);
        size_t hl = strlen(head), ml = hl + len + 11;
        unsigned char *m = malloc(ml);
        memcpy(m, head, hl);
        memcpy(m + hl, png, len);
        memcpy(m + hl + len, "\r\n--XyZ--\r\n", 11);
        const char *h_mp[] = {"Content-Type: multipart/form-data; boundary=XyZ", NULL};
        ck_assert_int_eq(uh_request(s.port, "POST", "/predict", h_mp, m, ml, &r), 0);
        ck_assert_int_eq(r.status, 200);
        right += !strcmp(top_label(&r, -1), want), total++;
        uh_response_release(&r);
        free(head);
        free(m);
        free(png);
    }
    /* the examples are test-set images the model gets right */
    ck_assert_int_eq(right, total);
    struct {
        const char *file;
        long status;
    } bad[] = {{"bomb.png", 413},
               {"truncated.png", 422},
               {"not_an_image.gif", 415},
               {"corrupt.jpg", 422},
               {"zero.png", 422}};
    for (int i = 0; i < 5; i++) {
        char path[128];
        snprintf(path, sizeof path, "tests/fixtures/images/%s", bad[i].file);
        size_t len;
        unsigned char *b = ut_read_file(path, &len);
        uh_response r;
        const char *h[] = {"Content-Type: image/png", NULL};
        ck_assert_int_eq(uh_request(s.port, "POST", "/predict", h, b, len, &r), 0);
        ck_assert_msg(r.status == bad[i].status, "%s: %ld", bad[i].file, r.status);
        ck_assert_ptr_nonnull(strstr((char *)r.body, "\"error\""));
        uh_response_release(&r);
        free(b);
    }
    uh_response r;
    ck_assert_int_eq(uh_request(s.port, "POST", "/predict/nosuch", NULL, "x", 1, &r), 0);
    ck_assert_int_eq(r.status, 404);
    uh_response_release(&r);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 10000), 0);
}
END_TEST

/* ---- Open Inference Protocol conformance, end to end ----------------------------------- */

/* A parsed v2 answer: the JSON part and the binary tail after it. */
typedef struct v2_answer {
    json_t *root;
    const unsigned char *tail, *end; /* binary outputs, in output order */
} v2_answer;

static void answer_open(const uh_response *r, v2_answer *a) {
    size_t jlen = r->header_len >= 0 ? (size_t)r->header_len : r->len;
    json_error_t je;
    a->root = json_loadb((const char *)r->body, jlen, 0, &je);
    ck_assert_msg(a->root != NULL, "answer is not JSON (%s): %.*s", je.text, (int)r->len, r->body);
    a->tail = r->body + jlen;
    a->end = r->body + r->len;
}

/* Output `name` of an answer, or NULL. */
static json_t *answer_output(const v2_answer *a, const char *name) {
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(a->root, "outputs"), i, o) {
        if (!strcmp(json_string_value(json_object_get(o, "name")) ?: "", name))
            return o;
    }
    return NULL;
}

/* The strings of BYTES output `name` (JSON data or, when binary, its elements of a 4-byte
 * little-endian length and the bytes; binary outputs before it in the answer are skipped). */
#define STR_MAX 4096

static int answer_strings(const v2_answer *a, const char *name, char out[][STR_MAX], int max) {
    json_t *o = answer_output(a, name);
    ck_assert_msg(o != NULL, "no output %s", name);
    ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")), "BYTES");
    json_t *data = json_object_get(o, "data");
    int n = 0;
    if (data) {
        size_t i;
        json_t *v;
        json_array_foreach(data, i, v) {
            ck_assert(json_is_string(v) && n < max);
            snprintf(out[n++], STR_MAX, "%s", json_string_value(v));
        }
        return n;
    }
    const unsigned char *p = a->tail;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(a->root, "outputs"), i, t) {
        json_int_t size = json_integer_value(
            json_object_get(json_object_get(t, "parameters"), "binary_data_size"));
        if (t == o) {
            const unsigned char *e = p + size;
            ck_assert(e <= a->end);
            while (p < e) {
                ck_assert(p + 4 <= e && n < max);
                uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                               (uint32_t)p[3] << 24;
                p += 4;
                ck_assert(p + len <= e && len < STR_MAX);
                memcpy(out[n], p, len);
                out[n++][len] = 0;
                p += len;
            }
            return n;
        }
        p += size;
    }
    return -1;
}

/* The names of an "outputs" array (answer or metadata), comma-separated, into s. */
static void output_names(json_t *outputs, char *s, size_t len) {
    size_t i, o = 0;
    json_t *t;
    s[0] = 0;
    json_array_foreach(outputs, i, t) {
        o += (size_t)snprintf(s + o, len - o, "%s%s", i ? "," : "",
                              json_string_value(json_object_get(t, "name")) ?: "?");
    }
}

static json_t *get_json(int port, const char *path) {
    uh_response r;
    ck_assert_int_eq(uh_request(port, "GET", path, NULL, NULL, 0, &r), 0);
    ck_assert_int_eq(r.status, 200);
    json_t *o = json_loadb((char *)r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(o);
    uh_response_release(&r);
    return o;
}

static void post_v2(int port, const char *body, uh_response *r) {
    const char *h[] = {"Content-Type: application/json", NULL};
    ck_assert_int_eq(uh_request(port, "POST", "/v2/models/default/infer", h, body, strlen(body), r),
                     0);
}

/* A 400 naming `word`. */
static void expect_400(int port, const char *body, const char *word) {
    uh_response r;
    post_v2(port, body, &r);
    ck_assert_msg(r.status == 400, "status %ld for %.300s: %.*s", r.status, body, (int)r.len,
                  r.body);
    ck_assert_msg(memmem(r.body, r.len, word, strlen(word)) != NULL, "'%.*s' lacks '%s'",
                  (int)r.len, r.body, word);
    uh_response_release(&r);
}

/* A tensor request [1,1,28,28] of `v` (name `name`), then `rest` verbatim. */
static char *tensor_body(const char *name, float v, const char *rest) {
    char *data = malloc(28 * 28 * 12 + 1), *p = data;
    for (int i = 0; i < 28 * 28; i++)
        p += sprintf(p, "%s%g", i ? "," : "", (double)(v * (float)(i % 7)));
    char *b = fmt("{\"inputs\":[{\"name\":\"%s\",\"shape\":[1,1,28,28],\"datatype\":\"FP32\","
                  "\"data\":[%s]}]%s}",
                  name, data, rest);
    free(data);
    return b;
}

/* Every response "parameters" value is a string, number or boolean (the spec's $parameter). */
static void check_scalar_parameters(json_t *root) {
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(root, "parameters"), k, v) {
        ck_assert_msg(json_is_string(v) || json_is_number(v) || json_is_boolean(v),
                      "response parameters.%s is not a string, number or boolean", k);
    }
}

START_TEST(http_v2_conformance) {
    uh_server s;
    const char *args[] = {NULL};
    ck_assert_msg(uh_server_start(&s, args) == 0, "server did not start");
    int port = s.port;
    /* server metadata lists the classification extension; model metadata's platform is
     * <project>_<format> */
    json_t *sm = get_json(port, "/v2");
    char ext[256];
    size_t i;
    json_t *t;
    ext[0] = 0;
    json_array_foreach(json_object_get(sm, "extensions"), i, t) {
        strcat(ext, json_string_value(t));
        strcat(ext, ",");
    }
    ck_assert_msg(strstr(ext, "binary_tensor_data,") && strstr(ext, "classification,"),
                  "extensions: %s", ext);
    json_decref(sm);
    json_t *meta = get_json(port, "/v2/models/default");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "platform")), "resattn_safetensors");
    char meta_outs[512], meta_ins[128], got[512];
    output_names(json_object_get(meta, "outputs"), meta_outs, sizeof meta_outs);
    output_names(json_object_get(meta, "inputs"), meta_ins, sizeof meta_ins);
    ck_assert_str_eq(meta_ins, "input,image");
    ck_assert_msg(strstr(meta_outs, "logits,probabilities") == meta_outs, "%s", meta_outs);

    /* no "outputs": every output the metadata lists, with its datatype and shape */
    uh_response r;
    v2_answer a;
    char *body = tensor_body("input", 0.25f, "");
    post_v2(port, body, &r);
    free(body);
    ck_assert_msg(r.status == 200, "%ld %.*s", r.status, (int)r.len, r.body);
    answer_open(&r, &a);
    output_names(json_object_get(a.root, "outputs"), got, sizeof got);
    ck_assert_str_eq(got, meta_outs);
    json_array_foreach(json_object_get(meta, "outputs"), i, t) {
        json_t *o = json_array_get(json_object_get(a.root, "outputs"), i);
        ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")),
                         json_string_value(json_object_get(t, "datatype")));
        json_t *ms = json_object_get(t, "shape"), *os = json_object_get(o, "shape");
        ck_assert_int_eq(json_array_size(ms), json_array_size(os));
        for (size_t d = 0; d < json_array_size(ms); d++) {
            json_int_t want = json_integer_value(json_array_get(ms, d));
            ck_assert(want == -1 || want == json_integer_value(json_array_get(os, d)));
        }
    }
    /* the logits, exactly, for the classification checks below */
    float logits[10];
    json_t *ld = json_object_get(answer_output(&a, "logits"), "data");
    ck_assert_int_eq(json_array_size(ld), 10);
    for (int c = 0; c < 10; c++)
        logits[c] = (float)json_number_value(json_array_get(ld, (size_t)c));
    static char top_labels[5][STR_MAX];
    ck_assert_int_eq(answer_strings(&a, "top_k_labels", top_labels, 5), 5);
    json_decref(a.root);
    uh_response_release(&r);

    /* binary_data_output: every output binary, the tail exactly their sizes */
    body = tensor_body("input", 0.25f, ",\"parameters\":{\"binary_data_output\":true}");
    post_v2(port, body, &r);
    free(body);
    ck_assert_msg(r.status == 200 && r.header_len > 0, "%ld", r.status);
    answer_open(&r, &a);
    output_names(json_object_get(a.root, "outputs"), got, sizeof got);
    ck_assert_str_eq(got, meta_outs);
    size_t total = 0;
    json_array_foreach(json_object_get(a.root, "outputs"), i, t) {
        ck_assert_ptr_null(json_object_get(t, "data"));
        json_t *bds = json_object_get(json_object_get(t, "parameters"), "binary_data_size");
        ck_assert(json_is_integer(bds));
        total += (size_t)json_integer_value(bds);
    }
    ck_assert_uint_eq(total, (size_t)(a.end - a.tail));
    float blog[10];
    memcpy(blog, a.tail, sizeof blog);
    ck_assert_int_eq(memcmp(blog, logits, sizeof blog), 0);
    json_decref(a.root);
    uh_response_release(&r);

    /* an input name that is not the model's */
    body = tensor_body("x", 0.25f, "");
    expect_400(port, body, "'x'");
    free(body);

    /* classification: top-K "value:index:label" strings, JSON and binary */
    int order[10];
    for (int k = 0; k < 10; k++) { /* indices by decreasing logit, ties: lower index */
        int best = -1;
        for (int c = 0; c < 10; c++) {
            int used = 0;
            for (int j = 0; j < k; j++)
                used |= order[j] == c;
            if (!used && (best < 0 || logits[c] > logits[best]))
                best = c;
        }
        order[k] = best;
    }
    for (int binary = 0; binary < 2; binary++) {
        char *rest = fmt(",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":3,"
                         "\"binary_data\":%s}}]",
                         binary ? "true" : "false");
        body = tensor_body("input", 0.25f, rest);
        free(rest);
        post_v2(port, body, &r);
        free(body);
        ck_assert_msg(r.status == 200, "%ld %.*s", r.status, (int)r.len, r.body);
        answer_open(&r, &a);
        json_t *o = answer_output(&a, "logits");
        ck_assert_int_eq(json_array_size(json_object_get(a.root, "outputs")), 1);
        json_t *shape = json_object_get(o, "shape");
        ck_assert_int_eq(json_integer_value(json_array_get(shape, 0)), 1);
        ck_assert_int_eq(json_integer_value(json_array_get(shape, 1)), 3);
        static char cls[3][STR_MAX];
        ck_assert_int_eq(answer_strings(&a, "logits", cls, 3), 3);
        for (int k = 0; k < 3; k++) {
            char want[256];
            snprintf(want, sizeof want, "%f:%d:%s", (double)logits[order[k]], order[k],
                     top_labels[k]);
            ck_assert_str_eq(cls[k], want);
        }
        json_decref(a.root);
        uh_response_release(&r);
    }
    body = tensor_body("input", 0.25f,
                       ",\"outputs\":[{\"name\":\"logits\",\"parameters\":"
                       "{\"classification\":\"3\"}}]");
    expect_400(port, body, "classification");
    free(body);

    /* the attention summary is an output tensor; response parameters stay scalar */
    body = tensor_body("input", 0.25f, ",\"parameters\":{\"attention\":true}");
    post_v2(port, body, &r);
    free(body);
    ck_assert_msg(r.status == 200, "%ld %.*s", r.status, (int)r.len, r.body);
    answer_open(&r, &a);
    check_scalar_parameters(a.root);
    json_t *so = answer_output(&a, "attention_summary");
    ck_assert_msg(so != NULL, "no attention_summary output: %.*s", (int)r.len, r.body);
    ck_assert_str_eq(json_string_value(json_object_get(so, "datatype")), "BYTES");
    json_t *sd = json_array_get(json_object_get(so, "data"), 0);
    json_t *blocks = json_loads(json_string_value(sd), 0, NULL);
    ck_assert_int_eq(json_array_size(blocks), 4);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(blocks, 0), "block")),
                     "layer1.0");
    json_decref(blocks);
    json_decref(a.root);
    uh_response_release(&r);

    /* an image input honours outputs, attention and their errors as a tensor does */
    size_t plen;
    unsigned char *png = example(&plen);
    char *s64 = b64(png, plen);
    free(png);
#define IMG(name, rest)                                                                            \
    fmt("{\"inputs\":[{\"name\":\"%s\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"%s\"]}]"   \
        "%s}",                                                                                     \
        name, s64, rest)
    body = IMG("image", ",\"outputs\":[{\"name\":\"probabilities\",\"parameters\":"
                        "{\"classification\":1}}]");
    post_v2(port, body, &r);
    free(body);
    ck_assert_msg(r.status == 200, "%ld %.*s", r.status, (int)r.len, r.body);
    answer_open(&r, &a);
    output_names(json_object_get(a.root, "outputs"), got, sizeof got);
    ck_assert_str_eq(got, "probabilities");
    static char top[1][STR_MAX];
    ck_assert_int_eq(answer_strings(&a, "probabilities", top, 1), 1);
    ck_assert_msg(strstr(top[0], ":9:Ankle boot") && top[0][0] == '0' && top[0][1] == '.', "%s",
                  top[0]);
    json_decref(a.root);
    uh_response_release(&r);
    body = IMG("image", "");
    post_v2(port, body, &r);
    free(body);
    ck_assert_int_eq(r.status, 200);
    answer_open(&r, &a);
    output_names(json_object_get(a.root, "outputs"), got, sizeof got);
    ck_assert_str_eq(got, meta_outs);
    json_decref(a.root);
    uh_response_release(&r);
    body = IMG("image", ",\"outputs\":[{\"name\":\"attention/layer1.0\"}],"
                        "\"parameters\":{\"attention\":true,\"binary_data_output\":true}");
    post_v2(port, body, &r);
    free(body);
    ck_assert_msg(r.status == 200 && r.header_len > 0, "%ld %.*s", r.status, (int)r.len, r.body);
    answer_open(&r, &a);
    check_scalar_parameters(a.root);
    output_names(json_object_get(a.root, "outputs"), got, sizeof got);
    ck_assert_str_eq(got, "attention/layer1.0/channel,attention_summary");
    static char sum1[1][STR_MAX];
    ck_assert_int_eq(answer_strings(&a, "attention_summary", sum1, 1), 1);
    blocks = json_loads(sum1[0], 0, NULL);
    ck_assert_int_eq(json_array_size(blocks), 4);
    json_decref(blocks);
    json_decref(a.root);
    uh_response_release(&r);
    /* images with the binary tensor extension, as tritonclient sends BYTES, answered in
     * binary too */
    size_t btotal, hl;
    png = example(&plen);
    unsigned char *bb =
        binary_images(png, plen, 1,
                      ",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":1}}],"
                      "\"parameters\":{\"binary_data_output\":true}",
                      -1, &btotal, &hl);
    free(png);
    char hlh[64];
    snprintf(hlh, sizeof hlh, "Inference-Header-Content-Length: %zu", hl);
    const char *bh[] = {"Content-Type: application/octet-stream", hlh, NULL};
    ck_assert_int_eq(uh_request(port, "POST", "/v2/models/default/infer", bh, bb, btotal, &r), 0);
    free(bb);
    ck_assert_msg(r.status == 200 && r.header_len > 0, "%ld %.*s", r.status, (int)r.len, r.body);
    answer_open(&r, &a);
    ck_assert_int_eq(answer_strings(&a, "logits", top, 1), 1);
    ck_assert_msg(strstr(top[0], ":9:Ankle boot"), "%s", top[0]);
    json_decref(a.root);
    uh_response_release(&r);
    struct {
        const char *name, *rest, *word;
    } bad[] = {
        {"image", ",\"outputs\":[{\"name\":\"feat\"}]", "'feat'"},
        {"image", ",\"outputs\":[{\"name\":\"attention/layer9.0\"}]", "names no block"},
        {"image", ",\"parameters\":{\"attention\":1}", "parameters.attention"},
        {"image", ",\"parameters\":{\"binary_data_output\":\"yes\"}", "binary_data_output"},
        {"image", ",\"outputs\":[{\"name\":\"logits\",\"parameters\":{\"classification\":-2}}]",
         "classification"},
        {"img", "", "'img'"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        body = IMG(bad[k].name, bad[k].rest);
        expect_400(port, body, bad[k].word);
        free(body);
    }
#undef IMG
    free(s64);
    json_decref(meta);
    ck_assert_int_eq(uh_server_stop(&s, SIGTERM, 10000), 0);
}
END_TEST

Suite *multipart_suite(void) {
    Suite *s = suite_create("multipart");
    TCase *t = tcase_create("multipart");
    tcase_add_test(t, multipart_two_parts);
    tcase_add_test(t, multipart_empty_and_headerless_parts);
    tcase_add_test(t, multipart_errors);
    tcase_add_test(t, multipart_boundary_param);
    tcase_add_test(t, multipart_truncation_and_mutation);
    suite_add_tcase(s, t);
    TCase *a = tcase_create("image_api");
    tcase_set_timeout(a, 30);
    tcase_add_test(a, api_forms_agree);
    tcase_add_test(a, api_errors);
    tcase_add_test(a, api_encode);
    tcase_add_test(a, api_v2_outputs_and_parameters);
    tcase_add_test(a, api_v2_binary_images);
    suite_add_tcase(s, a);
    TCase *h = tcase_create("http");
    tcase_set_timeout(h, 120);
    tcase_add_test(h, http_examples_every_form);
    tcase_add_test(h, http_v2_conformance);
    suite_add_tcase(s, h);
    return s;
}
