/*
 * Image decoding, preprocessing and base64 (core/data/image.c, core/data/preprocess.c,
 * core/data/base64.c) against fixtures written by tools/make_image_fixtures.py with Debian's PIL
 * and torchvision: every PNG layout (gray, gray+alpha, RGB, RGBA, palette, 1-bit, 16-bit) and JPEG
 * (gray, colour, progressive, CMYK) decodes to PIL's pixels; every preprocessing case in
 * tests/fixtures/images/cases.json is within 2/255 of torchvision before normalisation;
 * broken, unsupported, zero-sized and bomb files are refused with the right status before
 * any pixel memory is allocated; base64 accepts both alphabets and rejects malformed text.
 */
#include "data/base64.h"
#include "data/image.h"
#include "data/npy.h"
#include "data/preprocess.h"
#include "util_st.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIR "tests/fixtures/images/"

static unsigned char *load(const char *name, size_t *len) {
    char path[256];
    snprintf(path, sizeof path, DIR "%s", name);
    unsigned char *b = ut_read_file(path, len);
    ck_assert_msg(b != NULL, "cannot read %s (run from the repository root)", path);
    return b;
}

static resattn_npy load_npy(const char *name) {
    size_t len;
    unsigned char *b = load(name, &len);
    resattn_npy a;
    char err[256];
    ck_assert_msg(resattn_npy_parse(b, len, &a, err, sizeof err) == RESATTN_OK, "%s: %s", name,
                  err);
    free(b);
    return a;
}

/* Decode fixture `name` and compare with PIL's pixels <name>.u8.npy: no value may differ by
 * more than tol (0: exactly). */
static void check_decode_tol(const char *name, int tol) {
    size_t len;
    unsigned char *b = load(name, &len);
    resattn_image img;
    char err[256] = "";
    resattn_image_status s = resattn_image_decode(b, len, 0, &img, err, sizeof err);
    free(b);
    ck_assert_msg(s == RESATTN_IMAGE_OK, "%s: %s", name, err);
    char ref_name[256];
    snprintf(ref_name, sizeof ref_name, "%s.u8.npy", name);
    resattn_npy ref = load_npy(ref_name);
    ck_assert_int_eq(ref.ndim, 3);
    ck_assert_int_eq(img.height, ref.shape[0]);
    ck_assert_int_eq(img.width, ref.shape[1]);
    ck_assert_int_eq(img.channels, ref.shape[2]);
    int bad = 0;
    for (size_t i = 0; i < ref.count; i++)
        bad += abs(img.pixels[i] - (int)ref.data[i]) > tol;
    ck_assert_msg(bad == 0, "%s: %d of %zu values differ from PIL by more than %d", name, bad,
                  ref.count, tol);
    resattn_npy_release(&ref);
    resattn_image_release(&img);
}

static void check_decode(const char *name) {
    check_decode_tol(name, 0);
}

START_TEST(decode_png_layouts) {
    const char *names[] = {"gray.png",    "gray_alpha.png",   "rgb.png",   "rgba.png",
                           "palette.png", "palette_trns.png", "gray1.png", "gray16.png",
                           "rgb16.png",   "cat.png",          "tiny.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        check_decode(names[i]);
}
END_TEST

START_TEST(decode_jpeg) {
    check_decode("gray.jpg");
    check_decode("color.jpg");
    check_decode("progressive.jpg");
}
END_TEST

/* CMYK JPEGs (with and without Adobe's APP14 marker) become PIL's convert("RGB"): within 1
 * (JPEG decoders may round their IDCT differently; the same libjpeg-turbo gives 0). */
START_TEST(decode_jpeg_cmyk) {
    check_decode_tol("cmyk.jpg", 1);
    check_decode_tol("cmyk_noadobe.jpg", 1);
}
END_TEST

/* The status and a message containing `want` for a broken fixture. */
static void check_refused(const char *name, resattn_image_status want, const char *word) {
    size_t len;
    unsigned char *b = load(name, &len);
    resattn_image img = {1, 1, 1, (uint8_t *)b}; /* must be emptied on failure */
    char err[256] = "";
    resattn_image_status s = resattn_image_decode(b, len, 0, &img, err, sizeof err);
    ck_assert_msg(s == want, "%s: status %d, want %d (%s)", name, s, want, err);
    ck_assert_msg(strstr(err, word) != NULL, "%s: message '%s' lacks '%s'", name, err, word);
    ck_assert_ptr_null(img.pixels);
    ck_assert_int_eq(img.width, 0);
    free(b);
}

START_TEST(broken_files) {
    check_refused("truncated.png", RESATTN_IMAGE_CORRUPT, "truncated");
    check_refused("truncated.jpg", RESATTN_IMAGE_CORRUPT, "truncated");
    check_refused("corrupt.png", RESATTN_IMAGE_CORRUPT, "PNG");
    check_refused("corrupt.jpg", RESATTN_IMAGE_CORRUPT, "JPEG");
    check_refused("not_an_image.gif", RESATTN_IMAGE_UNSUPPORTED, "not PNG or JPEG");
    check_refused("empty.png", RESATTN_IMAGE_CORRUPT, "empty");
    check_refused("zero.png", RESATTN_IMAGE_CORRUPT, "zero");
    check_refused("zero.jpg", RESATTN_IMAGE_CORRUPT, "JPEG");
    ck_assert_int_eq(resattn_image_http_status(RESATTN_IMAGE_UNSUPPORTED), 415);
    ck_assert_int_eq(resattn_image_http_status(RESATTN_IMAGE_CORRUPT), 422);
    ck_assert_int_eq(resattn_image_http_status(RESATTN_IMAGE_TOO_LARGE), 413);
}
END_TEST

/* Headers claiming 10^10 and 4.2 * 10^9 pixels: refused as too large, not as out of memory,
 * so the limit was checked before allocating. */
START_TEST(bombs_refused_before_allocation) {
    check_refused("bomb.png", RESATTN_IMAGE_TOO_LARGE, "100000x100000");
    check_refused("bomb.jpg", RESATTN_IMAGE_TOO_LARGE, "65000x65000");
    /* the limit itself: a 64x64 image against 4095 and 4096 pixels */
    size_t len;
    unsigned char *b = load("rgb.png", &len);
    resattn_image img;
    char err[256];
    ck_assert_int_eq(resattn_image_decode(b, len, 4095, &img, err, sizeof err),
                     RESATTN_IMAGE_TOO_LARGE);
    ck_assert_int_eq(resattn_image_decode(b, len, 4096, &img, err, sizeof err), RESATTN_IMAGE_OK);
    resattn_image_release(&img);
    free(b);
}
END_TEST

/* Every prefix of a PNG and a JPEG is refused cleanly (no crash, no leak under ASan). */
START_TEST(every_truncation_refused) {
    const char *names[] = {"rgb.png", "color.jpg", "progressive.jpg"};
    for (int f = 0; f < 3; f++) {
        size_t len;
        unsigned char *b = load(names[f], &len);
        for (size_t n = 0; n < len; n += n < 64 ? 1 : 37) {
            unsigned char *copy = malloc(n + 1); /* exact size, so ASan sees overreads */
            memcpy(copy, b, n);
            resattn_image img;
            char err[256];
            resattn_image_status s = resattn_image_decode(copy, n, 0, &img, err, sizeof err);
            ck_assert_msg(s != RESATTN_IMAGE_OK, "%s cut at %zu decoded", names[f], n);
            free(copy);
        }
        free(b);
    }
}
END_TEST

/* Flipping bytes anywhere never crashes; the result is a clean status. */
START_TEST(mutations_never_crash) {
    const char *names[] = {"palette.png", "gray.jpg"};
    for (int f = 0; f < 2; f++) {
        size_t len;
        unsigned char *b = load(names[f], &len);
        unsigned seed = 12345;
        for (int t = 0; t < 300; t++) {
            unsigned char *copy = malloc(len);
            memcpy(copy, b, len);
            for (int k = 0; k < 4; k++) {
                seed = seed * 1103515245u + 12345u;
                copy[(seed >> 8) % len] ^= (unsigned char)(1u << (seed >> 28) % 8);
            }
            resattn_image img;
            char err[256];
            if (resattn_image_decode(copy, len, 0, &img, err, sizeof err) == RESATTN_IMAGE_OK)
                ck_assert(img.width > 0 && img.height > 0 && img.pixels);
            resattn_image_release(&img);
            free(copy);
        }
        free(b);
    }
}
END_TEST

/* Every case of cases.json: decode, preprocess with mean 0 / std 1, compare with torchvision. */
START_TEST(preprocess_matches_torchvision) {
    json_error_t je;
    json_t *cases = json_load_file(DIR "cases.json", 0, &je);
    ck_assert_msg(json_is_array(cases), "cases.json: %s", je.text);
    ck_assert_int_ge(json_array_size(cases), 10);
    double worst = 0;
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *in = json_object_get(c, "input"),
               *pp = json_deep_copy(json_object_get(c, "preprocess"));
        int C = (int)json_integer_value(json_array_get(in, 0));
        int H = (int)json_integer_value(json_array_get(in, 1));
        int W = (int)json_integer_value(json_array_get(in, 2));
        /* the reference is before normalisation: compare with mean 0, std 1 */
        json_object_set_new(pp, "mean", json_real(0));
        json_object_set_new(pp, "std", json_real(1));
        char *ppj = json_dumps(pp, JSON_COMPACT);
        json_decref(pp);
        resattn_preprocess p;
        char err[256];
        ck_assert_msg(resattn_preprocess_parse(ppj, C, H, W, &p, err, sizeof err) == RESATTN_OK,
                      "%s: %s", name, err);
        free(ppj);
        size_t len;
        unsigned char *b = load(json_string_value(json_object_get(c, "image")), &len);
        float *x = malloc(sizeof(float) * (size_t)C * H * W);
        ck_assert_int_eq(resattn_preprocess_bytes(&p, b, len, 0, x, err, sizeof err),
                         RESATTN_IMAGE_OK);
        free(b);
        char ref_name[64];
        snprintf(ref_name, sizeof ref_name, "%s.npy", name);
        resattn_npy ref = load_npy(ref_name);
        ck_assert_int_eq(ref.count, (size_t)C * H * W);
        double d = 0;
        for (size_t j = 0; j < ref.count; j++)
            d = fmax(d, fabs(ref.data[j] - x[j]));
        ck_assert_msg(d <= 2.0 / 255, "%s: max |diff| %g > 2/255", name, d);
        worst = fmax(worst, d);
        resattn_npy_release(&ref);
        free(x);
    }
    json_decref(cases);
    printf("preprocess vs torchvision: max |diff| %.3g over %zu cases\n", worst, i);
}
END_TEST

/* Normalisation and inversion on a synthetic image: (1 - v/255 - mean) / std. */
START_TEST(preprocess_normalises) {
    uint8_t px[4 * 4];
    for (int i = 0; i < 16; i++)
        px[i] = (uint8_t)(255 - i); /* light everywhere: "auto" inverts */
    resattn_image img = {4, 4, 1, px};
    resattn_preprocess p;
    char err[256];
    ck_assert_int_eq(resattn_preprocess_parse("{\"color\":\"gray\",\"invert\":\"auto\","
                                              "\"mean\":[0.25],\"std\":[0.5]}",
                                              1, 4, 4, &p, err, sizeof err),
                     RESATTN_OK);
    float x[16];
    ck_assert_int_eq(resattn_preprocess_run(&p, &img, x), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_float_eq_tol(x[i], ((1.0f - (255 - i) / 255.0f) - 0.25f) / 0.5f, 1e-6);
    /* gray replicated into 3 channels for an rgb model; no inversion */
    ck_assert_int_eq(resattn_preprocess_parse("{\"color\":\"rgb\"}", 3, 4, 4, &p, err, sizeof err),
                     RESATTN_OK);
    float y[48];
    ck_assert_int_eq(resattn_preprocess_run(&p, &img, y), 0);
    for (int i = 0; i < 16; i++)
        for (int c = 0; c < 3; c++)
            ck_assert_float_eq_tol(y[c * 16 + i], (255 - i) / 255.0f, 1e-6);
}
END_TEST

START_TEST(preprocess_config_errors) {
    resattn_preprocess p;
    char err[256];
    struct {
        const char *json;
        int c;
        const char *word;
    } bad[] = {
        {"{\"color\":\"cmyk\"}", 1, "color"},
        {"{\"color\":\"rgb\"}", 1, "channel"},
        {"{\"resize\":\"crop\"}", 1, "resize"},
        {"{\"resize_size\":0}", 1, "resize_size"},
        {"{\"scale\":0}", 1, "scale"},
        {"{\"invert\":\"sometimes\"}", 1, "invert"},
        {"{\"mean\":[0.1,0.2]}", 3, "mean"},
        {"{\"std\":[0]}", 1, "std"},
        {"[1]", 1, "object"},
        {"{\"stdev\":[1]}", 1, "unknown key \"stdev\""},
        {"{\"color\":\"gray\",\"interpolation\":\"bicubic\"}", 1, "\"interpolation\""},
        {"{\"resize_size\":256}", 3, "\"resize\": \"shorter\""},
        {NULL, 2, "channels"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ck_assert_int_eq(resattn_preprocess_parse(bad[i].json, bad[i].c, 8, 8, &p, err, sizeof err),
                         RESATTN_ERR_CONFIG);
        ck_assert_msg(strstr(err, bad[i].word), "'%s' -> '%s'", bad[i].json, err);
    }
    ck_assert_int_eq(resattn_preprocess_parse(NULL, 3, 8, 8, &p, err, sizeof err), RESATTN_OK);
    ck_assert(p.scale == 255.0f && p.std[2] == 1.0f && p.invert == RESATTN_INVERT_NO);
}
END_TEST

/* Resize: identity at the same size; a constant image stays constant at any size. */
START_TEST(resize_properties) {
    uint8_t px[5 * 7 * 3];
    for (int i = 0; i < 105; i++)
        px[i] = (uint8_t)(i * 37);
    resattn_image img = {7, 5, 3, px}, out;
    ck_assert_int_eq(resattn_image_resize_bilinear(&img, 7, 5, &out), 0);
    ck_assert_int_eq(memcmp(out.pixels, px, sizeof px), 0);
    resattn_image_release(&out);
    memset(px, 77, sizeof px);
    int sizes[][2] = {{1, 1}, {3, 2}, {30, 17}, {7, 1}, {1, 5}};
    for (int s = 0; s < 5; s++) {
        ck_assert_int_eq(resattn_image_resize_bilinear(&img, sizes[s][0], sizes[s][1], &out), 0);
        for (int i = 0; i < sizes[s][0] * sizes[s][1] * 3; i++)
            ck_assert_int_eq(out.pixels[i], 77);
        resattn_image_release(&out);
    }
}
END_TEST

static int b64(const char *s, char *out, size_t *n) {
    char err[128];
    return resattn_base64_decode(s, strlen(s), (unsigned char *)out, n, err, sizeof err);
}

START_TEST(base64_valid) {
    char out[64];
    size_t n;
    struct {
        const char *in, *want;
    } ok[] = {{"", ""},
              {"QQ==", "A"},
              {"QUI=", "AB"},
              {"QUJD", "ABC"},
              {"QQ", "A"},
              {"QUI", "AB"},
              {"QU\r\nJD", "ABC"},
              {" QUJDRA== ", "ABCD"},
              {"-_-_", "\xfb\xff\xbf"},
              {"+/+/", "\xfb\xff\xbf"}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(b64(ok[i].in, out, &n) == 0, "'%s' refused", ok[i].in);
        ck_assert_uint_eq(n, strlen(ok[i].want));
        ck_assert_int_eq(memcmp(out, ok[i].want, n), 0);
        ck_assert_uint_le(n, resattn_base64_decoded_max(strlen(ok[i].in)));
    }
}
END_TEST

START_TEST(base64_invalid) {
    const char *bad[] = {"Q",    "QUJDR", "QQ=",   "Q===", "QUJD=",   "QQ==QQ==",
                         "QR==", "QUJ*",  "QUI=A", "====", "QUJD\x80"};
    char out[64], err[128];
    size_t n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ck_assert_msg(resattn_base64_decode(bad[i], strlen(bad[i]), (unsigned char *)out, &n, err,
                                            sizeof err) != 0,
                      "'%s' accepted", bad[i]);
        ck_assert_msg(strstr(err, "base64"), "'%s': %s", bad[i], err);
    }
}
END_TEST

Suite *image_suite(void) {
    Suite *s = suite_create("image");
    TCase *t = tcase_create("image");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, decode_png_layouts);
    tcase_add_test(t, decode_jpeg);
    tcase_add_test(t, decode_jpeg_cmyk);
    tcase_add_test(t, broken_files);
    tcase_add_test(t, bombs_refused_before_allocation);
    tcase_add_test(t, every_truncation_refused);
    tcase_add_test(t, mutations_never_crash);
    tcase_add_test(t, preprocess_matches_torchvision);
    tcase_add_test(t, preprocess_normalises);
    tcase_add_test(t, preprocess_config_errors);
    tcase_add_test(t, resize_properties);
    tcase_add_test(t, base64_valid);
    tcase_add_test(t, base64_invalid);
    suite_add_tcase(s, t);
    return s;
}
