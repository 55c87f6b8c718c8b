/*
 * Attention masks over HTTP, against PyTorch: `resattn serve` runs a fixture model
 * (tests/fixtures/<case>.safetensors) as a child process; a v2 request with the fixture
 * input asks for the outputs "attention/<block>" of every block and the summary; every
 * returned tensor equals the PyTorch forward-hook mask (<case>.masks.safetensors) within
 * 1e-5 with the same shape, also as binary_data. Also: summaries (the output tensor
 * attention_summary, never response "parameters") and base64 pictures (decoded with
 * libpng), the /predict-independent v2 errors, and no attention when nothing was asked.
 */
#include "data/npy.h"
#include "model/safetensors.h"
#include "util_http.h"
#include "util_st.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CBAM and CA (the two kinds with 2-D masks), with both stems and block kinds. */
static const char *const cases[] = {"basic_cifar_cbam", "basic_cifar_ca",
                                    "bottleneck_imagenet_cbam", "bottleneck_imagenet_ca"};
#define NCASES (int)(sizeof cases / sizeof cases[0])

typedef struct fixture {
    resattn_npy x;
    unsigned char *st_buf;
    resattn_st st; /* the PyTorch masks */
    uh_server srv;
} fixture;

static void fixture_open(const char *name, fixture *f) {
    char path[256], err[RESATTN_ERR_LEN];
    size_t len;
    snprintf(path, sizeof path, "tests/fixtures/%s.in.npy", name);
    unsigned char *buf = ut_read_file(path, &len);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    ck_assert_msg(resattn_npy_parse(buf, len, &f->x, err, sizeof err) == RESATTN_OK, "%s", err);
    free(buf);
    snprintf(path, sizeof path, "tests/fixtures/%s.masks.safetensors", name);
    f->st_buf = ut_read_file(path, &len);
    ck_assert_msg(f->st_buf != NULL, "cannot read %s", path);
    ck_assert_msg(resattn_st_parse(f->st_buf, len, &f->st, err, sizeof err) == RESATTN_OK, "%s",
                  err);
    snprintf(path, sizeof path, "tests/fixtures/%s.safetensors", name);
    const char *args[] = {"--model", path, "--max-batch", "4", NULL};
    ck_assert_msg(uh_server_start(&f->srv, args) == 0, "server did not start (log %s)", f->srv.log);
}

static void fixture_close(fixture *f) {
    ck_assert_int_eq(uh_server_stop(&f->srv, SIGTERM, 30000), 0);
    resattn_st_release(&f->st);
    free(f->st_buf);
    resattn_npy_release(&f->x);
}

/* A v2 JSON request: the fixture input, then `rest` (outputs / parameters) verbatim. */
static char *v2_body(const resattn_npy *x, const char *rest) {
    size_t cap = x->count * 18 + strlen(rest) + 256, n = 0;
    char *b = malloc(cap);
    n += (size_t)snprintf(b, cap,
                          "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[%lld,"
                          "%lld,%lld,%lld],\"data\":[",
                          (long long)x->shape[0], (long long)x->shape[1], (long long)x->shape[2],
                          (long long)x->shape[3]);
    for (size_t i = 0; i < x->count; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s%.9g", i ? "," : "", (double)x->data[i]);
    snprintf(b + n, cap - n, "]}]%s}", rest);
    return b;
}

static void post(fixture *f, const char *name, const char *body, uh_response *r) {
    char path[128];
    snprintf(path, sizeof path, "/v2/models/%s/infer", name);
    const char *hdr[] = {"Content-Type: application/json", NULL};
    ck_assert_int_eq(uh_request(f->srv.port, "POST", path, hdr, body, strlen(body), r), 0);
}

/* "outputs":[{"name":"attention/<block>"}...] for every block of the fixture (from the
 * mask names "<block>/<kind>"), with binary_data as given. */
static char *outputs_for_blocks(const resattn_st *st, int binary) {
    size_t cap = 64 + (size_t)st->num_tensors * 128, n = 0;
    char *b = malloc(cap), last[64] = "";
    n += (size_t)snprintf(b, cap, ",\"outputs\":[{\"name\":\"logits\"}");
    for (int t = 0; t < st->num_tensors; t++) {
        char block[64];
        snprintf(block, sizeof block, "%s", st->tensors[t].name);
        *strchr(block, '/') = 0;
        if (!strcmp(block, last))
            continue;
        snprintf(last, sizeof last, "%s", block);
        n += (size_t)snprintf(b + n, cap - n,
                              ",{\"name\":\"attention/%s\",\"parameters\":{\"binary_data\":%s}}",
                              block, binary ? "true" : "false");
    }
    snprintf(b + n, cap - n, "]");
    return b;
}

/* The attention_summary output of an answer (BYTES [n], JSON data): one parsed summary per
 * image, as a JSON array; the answer carries no response "parameters". */
static json_t *summaries(const char *name, json_t *root, int n) {
    ck_assert_msg(json_object_get(root, "parameters") == NULL, "%s: response parameters", name);
    json_t *outs = json_object_get(root, "outputs");
    json_t *o = json_array_get(outs, json_array_size(outs) - 1);
    ck_assert_str_eq(json_string_value(json_object_get(o, "name")), "attention_summary");
    ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")), "BYTES");
    json_t *data = json_object_get(o, "data"), *all = json_array();
    ck_assert_int_eq(json_array_size(data), n);
    for (int i = 0; i < n; i++) {
        json_t *one = json_loads(json_string_value(json_array_get(data, (size_t)i)), 0, NULL);
        ck_assert_msg(json_is_array(one), "%s: summary %d is not a JSON array", name, i);
        json_array_append_new(all, one);
    }
    return all;
}

/* Compare output tensor o (JSON data, or bytes at *tail for binary) with the PyTorch mask. */
static void check_tensor(const char *name, resattn_st *st, json_t *o, const unsigned char **tail) {
    const char *oname = json_string_value(json_object_get(o, "name"));
    ck_assert_ptr_nonnull(oname);
    ck_assert_msg(!strncmp(oname, "attention/", 10), "%s: unexpected output %s", name, oname);
    resattn_st_tensor *rt = resattn_st_find(st, oname + 10);
    ck_assert_msg(rt != NULL, "%s: output %s is not a PyTorch mask", name, oname);
    ck_assert_str_eq(json_string_value(json_object_get(o, "datatype")), "FP32");
    json_t *shape = json_object_get(o, "shape");
    ck_assert_int_eq((int)json_array_size(shape), rt->ndim);
    for (int d = 0; d < rt->ndim; d++)
        ck_assert_int_eq(json_integer_value(json_array_get(shape, (size_t)d)), rt->shape[d]);
    float *ref = malloc(rt->count * sizeof *ref), *got = malloc(rt->count * sizeof *got);
    resattn_st_read_f32(st, rt, ref);
    json_t *data = json_object_get(o, "data");
    if (data) {
        ck_assert_uint_eq(json_array_size(data), rt->count);
        for (size_t i = 0; i < rt->count; i++)
            got[i] = (float)json_number_value(json_array_get(data, i));
    } else {
        json_t *bds = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        ck_assert_int_eq(json_integer_value(bds), (json_int_t)(rt->count * sizeof(float)));
        memcpy(got, *tail, rt->count * sizeof(float));
        *tail += rt->count * sizeof(float);
    }
    double e = 0;
    for (size_t i = 0; i < rt->count; i++)
        e = fmax(e, fabs((double)got[i] - ref[i]));
    ck_assert_msg(e <= 1e-5, "%s %s: max error %g vs PyTorch", name, oname, e);
    rt->used = 1;
    free(ref);
    free(got);
}

/* Every mask over v2 (JSON, then binary), equal to PyTorch; the summary is there too. */
START_TEST(v2_masks_match_pytorch) {
    const char *name = cases[_i];
    fixture f = {0};
    fixture_open(name, &f);
    for (int binary = 0; binary < 2; binary++) {
        char *outs = outputs_for_blocks(&f.st, binary);
        char rest[8192];
        snprintf(rest, sizeof rest, "%s,\"parameters\":{\"attention\":true}", outs);
        free(outs);
        char *body = v2_body(&f.x, rest);
        uh_response r;
        post(&f, name, body, &r);
        free(body);
        ck_assert_msg(r.status == 200, "%s: status %ld: %.*s", name, r.status, (int)r.len, r.body);
        size_t jlen = binary ? (size_t)r.header_len : r.len;
        ck_assert(!binary || r.header_len > 0);
        json_error_t je;
        json_t *root = json_loadb((const char *)r.body, jlen, 0, &je);
        ck_assert_msg(root != NULL, "%s: answer is not JSON: %s", name, je.text);
        const unsigned char *tail = r.body + jlen;
        json_t *outputs = json_object_get(root, "outputs");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(outputs, 0), "name")),
                         "logits");
        for (int t = 0; t < f.st.num_tensors; t++)
            f.st.tensors[t].used = 0;
        /* logits, the masks, then the summary */
        for (size_t i = 1; i + 1 < json_array_size(outputs); i++)
            check_tensor(name, &f.st, json_array_get(outputs, i), &tail);
        ck_assert_ptr_eq(tail, r.body + r.len);
        for (int t = 0; t < f.st.num_tensors; t++)
            ck_assert_msg(f.st.tensors[t].used, "%s: mask %s not returned", name,
                          f.st.tensors[t].name);
        /* summary: one array per image, one entry per block, stats within the mask range */
        json_t *att = summaries(name, root, (int)f.x.shape[0]);
        json_t *blocks = json_array_get(att, 1);
        ck_assert_int_gt(json_array_size(blocks), 0);
        json_t *b0 = json_array_get(blocks, 0);
        ck_assert_str_eq(json_string_value(json_object_get(b0, "block")), "layer1.0");
        json_t *s = json_object_get(b0, strstr(name, "_ca") ? "coord_h" : "spatial");
        ck_assert_ptr_nonnull(s);
        double mn = json_real_value(json_object_get(s, "min")),
               mean = json_real_value(json_object_get(s, "mean")),
               mx = json_real_value(json_object_get(s, "max"));
        ck_assert(0 <= mn && mn <= mean && mean <= mx && mx <= 1);
        ck_assert_ptr_null(json_object_get(b0, "images"));
        json_decref(att);
        json_decref(root);
        uh_response_release(&r);
    }
    fixture_close(&f);
}
END_TEST

/* Standard base64 to bytes; returns the length or -1. */
static long unbase64(const char *s, unsigned char *out) {
    long n = 0;
    unsigned v = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = strchr(tab, *s);
        if (!p)
            return -1;
        v = v << 6 | (unsigned)(p - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(v >> bits);
        }
    }
    return n;
}

/* attention_images: every block has decodable PNGs of the documented sizes. */
START_TEST(v2_pictures) {
    const char *name = cases[_i];
    fixture f = {0};
    fixture_open(name, &f);
    char *body = v2_body(&f.x, ",\"parameters\":{\"attention_images\":true}");
    uh_response r;
    post(&f, name, body, &r);
    free(body);
    ck_assert_msg(r.status == 200, "%s: status %ld: %.*s", name, r.status, (int)r.len, r.body);
    json_t *root = json_loadb((const char *)r.body, r.len, 0, NULL);
    ck_assert_ptr_nonnull(root);
    /* no outputs named: the default ones (logits, probabilities, top_k_*) and the summary */
    ck_assert_int_eq(json_array_size(json_object_get(root, "outputs")), 6);
    json_t *att = summaries(name, root, (int)f.x.shape[0]);
    int h = (int)f.x.shape[2], w = (int)f.x.shape[3], longer = h > w ? h : w;
    int k = (224 + longer - 1) / longer;
    size_t i;
    json_t *blk;
    json_array_foreach(json_array_get(att, 0), i, blk) {
        json_t *images = json_object_get(blk, "images");
        const char *kinds[2];
        int nk = 0;
        if (strstr(name, "_cbam")) {
            kinds[nk++] = "channel";
            kinds[nk++] = "spatial";
        } else {
            kinds[nk++] = "coord";
        }
        ck_assert_int_eq((int)json_object_size(images), nk);
        for (int q = 0; q < nk; q++) {
            const char *b64 = json_string_value(json_object_get(images, kinds[q]));
            ck_assert_msg(b64 != NULL, "%s block %zu: no %s picture", name, i, kinds[q]);
            unsigned char *png = malloc(strlen(b64));
            long n = unbase64(b64, png);
            ck_assert_int_gt(n, 8);
            png_image img;
            memset(&img, 0, sizeof img);
            img.version = PNG_IMAGE_VERSION;
            ck_assert(png_image_begin_read_from_memory(&img, png, (size_t)n));
            img.format = PNG_FORMAT_RGB;
            unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
            ck_assert(png_image_finish_read(&img, NULL, px, 0, NULL));
            if (strcmp(kinds[q], "channel")) {
                ck_assert_int_eq(img.width, w * k);
                ck_assert_int_eq(img.height, h * k);
            } else {
                ck_assert_int_eq(img.height, 64);
            }
            free(px);
            free(png);
        }
    }
    json_decref(att);
    json_decref(root);
    uh_response_release(&r);
    fixture_close(&f);
}
END_TEST

/* Bad attention requests are 400 naming the problem; no request, no "parameters". */
START_TEST(v2_errors_and_default) {
    fixture f = {0};
    fixture_open("basic_cifar_ca", &f);
    static const struct {
        const char *rest, *msg;
    } bad[] = {
        {",\"outputs\":[{\"name\":\"attention/layer9.0\"}]", "names no block"},
        {",\"outputs\":[{\"name\":\"attention/layer1.7\"}]", "names no block"},
        {",\"outputs\":[{\"name\":\"attention/layer01.0\"}]", "names no block"},
        {",\"outputs\":[{\"name\":\"attention/layer1.0/spatial\"}]", "no 'spatial' mask"},
        {",\"parameters\":{\"attention\":1}", "parameters.attention is not a boolean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *body = v2_body(&f.x, bad[i].rest);
        uh_response r;
        post(&f, "basic_cifar_ca", body, &r);
        free(body);
        ck_assert_int_eq(r.status, 400);
        ck_assert_msg(memmem(r.body, r.len, bad[i].msg, strlen(bad[i].msg)) != NULL,
                      "case %zu: %.*s", i, (int)r.len, r.body);
        uh_response_release(&r);
    }
    char *body = v2_body(&f.x, "");
    uh_response r;
    post(&f, "basic_cifar_ca", body, &r);
    free(body);
    ck_assert_int_eq(r.status, 200);
    ck_assert(memmem(r.body, r.len, "\"parameters\"", 12) == NULL);
    ck_assert(memmem(r.body, r.len, "attention", 9) == NULL);
    uh_response_release(&r);
    fixture_close(&f);

    /* a model without attention refuses the question instead of answering nothing */
    fixture_open("basic_cifar_none", &f);
    body = v2_body(&f.x, ",\"parameters\":{\"attention\":true}");
    post(&f, "basic_cifar_none", body, &r);
    free(body);
    ck_assert_int_eq(r.status, 400);
    ck_assert(memmem(r.body, r.len, "no attention", 12) != NULL);
    uh_response_release(&r);
    fixture_close(&f);
}
END_TEST

Suite *attention_http_suite(void) {
    Suite *s = suite_create("attention_http");
    TCase *tc = tcase_create("v2");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, v2_masks_match_pytorch, 0, NCASES);
    tcase_add_loop_test(tc, v2_pictures, 0, NCASES);
    tcase_add_test(tc, v2_errors_and_default);
    suite_add_tcase(s, tc);
    return s;
}
