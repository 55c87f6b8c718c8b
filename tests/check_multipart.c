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
#include <signal.h>
#include <stdarg.h>
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
    int st = resattn_image_api_parse(proto, ct, copy, len, -1, 0, &m, &limits, r, err, 256);
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
    body = fmt("{\"id\":\"r1\",\"inputs\":[{\"name\":\"img\",\"shape\":[1],\"datatype\":\"BYTES\","
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
    ck_assert(v2.outputs & RESATTN_OUT_LOGITS);
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
         "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"data\":[1]}]}", 0, 400, "base64"},
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
    r.outputs = RESATTN_OUT_TOPK;
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
    r.protocol = RESATTN_PROTO_V2;
    r.outputs = RESATTN_OUT_TOPK | RESATTN_OUT_LOGITS;
    ck_assert(resattn_image_api_owns(&r));
    ck_assert_int_eq(resattn_image_api_encode(&r, "fm", &m, logits, 2, &b), 0);
    o = json_loadb((char *)b.data, b.len, 0, &je);
    json_t *outs = json_object_get(o, "outputs");
    ck_assert_int_eq(json_array_size(outs), 4);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(outs, 0), "name")), "logits");
    json_t *tl = json_array_get(outs, 1);
    ck_assert_str_eq(json_string_value(json_object_get(tl, "name")), "top_k_labels");
    ck_assert_str_eq(json_string_value(json_array_get(json_object_get(tl, "data"), 3)),
                     "T-shirt/top");
    json_decref(o);
    resattn_response_body_release(&b);
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
        body = fmt("{\"inputs\":[{\"name\":\"i\",\"shape\":[1],\"datatype\":\"BYTES\","
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
    suite_add_tcase(s, a);
    TCase *h = tcase_create("http");
    tcase_set_timeout(h, 120);
    tcase_add_test(h, http_examples_every_form);
    suite_add_tcase(s, h);
    return s;
}
