/*
 * Tests of core/maps/heatmap.c and core/maps/mask_summary.c: colormap, bilinear resize (against the
 * PyTorch align_corners=False formula), coordinate outer product, heatmap blending, bar
 * strips, PNG encoding (decoded back with libpng), base64, mask statistics and the JSON
 * summary. Masks here are made by hand; masks from real models are tested with the
 * fixtures in check_attention.c.
 */
#include "maps/heatmap.h"
#include "data/base64.h"
#include "maps/mask_summary.h"

#include <check.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Decode a PNG held in memory to RGB8; returns the pixels (caller frees) or NULL. */
static unsigned char *decode_png(const unsigned char *png, size_t len, int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, png, len))
        return NULL;
    img.format = PNG_FORMAT_RGB;
    unsigned char *px = malloc(PNG_IMAGE_SIZE(img));
    if (!px || !png_image_finish_read(&img, NULL, px, 0, NULL)) {
        free(px);
        png_image_free(&img);
        return NULL;
    }
    *w = (int)img.width;
    *h = (int)img.height;
    return px;
}

START_TEST(colormap_ends_and_clamps) {
    unsigned char a[3], b[3], c[3];
    resattn_colormap(0.0f, a);
    ck_assert_int_eq(a[0], 68);
    ck_assert_int_eq(a[1], 1);
    ck_assert_int_eq(a[2], 84);
    resattn_colormap(1.0f, b);
    ck_assert_int_eq(b[0], 253);
    ck_assert_int_eq(b[1], 231);
    ck_assert_int_eq(b[2], 37);
    resattn_colormap(-3.0f, c);
    ck_assert_mem_eq(a, c, 3);
    resattn_colormap(7.0f, c);
    ck_assert_mem_eq(b, c, 3);
    resattn_colormap(NAN, c);
    ck_assert_mem_eq(a, c, 3);
    /* Green rises monotonically along viridis: a cheap check that the table is in order. */
    unsigned char prev[3];
    resattn_colormap(0.0f, prev);
    for (int i = 1; i <= 100; i++) {
        resattn_colormap((float)i / 100.0f, c);
        ck_assert_int_ge(c[1], prev[1]);
        memcpy(prev, c, 3);
    }
}
END_TEST

/* PyTorch F.interpolate(mode="bilinear", align_corners=False), written out in doubles. */
static double ref_bilinear(const float *in, int ih, int iw, int oh, int ow, int y, int x) {
    double sy = fmax(0.0, (y + 0.5) * ih / oh - 0.5), sx = fmax(0.0, (x + 0.5) * iw / ow - 0.5);
    int y0 = (int)sy, x0 = (int)sx;
    y0 = y0 > ih - 1 ? ih - 1 : y0, x0 = x0 > iw - 1 ? iw - 1 : x0;
    int y1 = y0 + (y0 < ih - 1), x1 = x0 + (x0 < iw - 1);
    double ly = sy - y0, lx = sx - x0;
    return (1 - ly) * ((1 - lx) * in[y0 * iw + x0] + lx * in[y0 * iw + x1]) +
           ly * ((1 - lx) * in[y1 * iw + x0] + lx * in[y1 * iw + x1]);
}

START_TEST(resize_matches_reference) {
    /* Odd sizes both ways: 5x7 -> 23x11 (up in h, down-ish in w) and 1x1 -> 4x3. */
    float in[35];
    for (int i = 0; i < 35; i++)
        in[i] = (float)((i * 37) % 11) / 10.0f;
    float out[23 * 11];
    resattn_resize_bilinear(in, 5, 7, out, 23, 11);
    for (int y = 0; y < 23; y++)
        for (int x = 0; x < 11; x++)
            ck_assert_double_eq_tol(out[y * 11 + x], ref_bilinear(in, 5, 7, 23, 11, y, x), 1e-5);
    float one = 0.25f, o[12];
    resattn_resize_bilinear(&one, 1, 1, o, 4, 3);
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(o[i], 0.25f);
    /* Same size is the identity. */
    resattn_resize_bilinear(in, 5, 7, out, 5, 7);
    for (int i = 0; i < 35; i++)
        ck_assert_float_eq_tol(out[i], in[i], 1e-6f);
}
END_TEST

START_TEST(coord_outer_product) {
    /* c = 2, h = 3, w = 2: a_h rows averaged over channels, times a_w averaged. */
    const float ah[6] = {0.2f, 0.4f, 0.6f, 0.4f, 0.6f, 1.0f}; /* mean [0.3, 0.5, 0.8] */
    const float aw[4] = {1.0f, 0.0f, 0.5f, 0.5f};             /* mean [0.75, 0.25] */
    float out[6];
    resattn_coord_to_spatial(ah, aw, 2, 3, 2, out);
    const float want[6] = {0.225f, 0.075f, 0.375f, 0.125f, 0.6f, 0.2f};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq_tol(out[i], want[i], 1e-6f);
}
END_TEST

START_TEST(heatmap_blends_over_base) {
    /* A 2x2 mask over a 3x3 gray base rendered at 6x6. */
    const float mask[4] = {0.0f, 1.0f, 0.5f, 0.5f};
    unsigned char gray[9];
    for (int i = 0; i < 9; i++)
        gray[i] = (unsigned char)(i * 30);
    resattn_picture base = {.w = 3, .h = 3, .channels = 1, .px = gray};
    unsigned char rgb[6 * 6 * 3], pure[6 * 6 * 3];
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_heatmap_render(mask, 2, 2, &base, 6, 6, 1.0f, pure, err, sizeof err),
                     RESATTN_OK);
    /* alpha 1: pure colormap; the top-left corner is exactly mask value 0, top-right 1. */
    unsigned char c0[3], c1[3];
    resattn_colormap(0.0f, c0);
    resattn_colormap(1.0f, c1);
    ck_assert_mem_eq(pure, c0, 3);
    ck_assert_mem_eq(pure + 5 * 3, c1, 3);
    /* alpha 0: the base picture alone, gray in every channel; corner pixels equal it. */
    ck_assert_int_eq(resattn_heatmap_render(mask, 2, 2, &base, 6, 6, 0.0f, rgb, err, sizeof err),
                     RESATTN_OK);
    ck_assert_int_eq(rgb[0], gray[0]);
    ck_assert_int_eq(rgb[(6 * 6 - 1) * 3 + 1], gray[8]);
    for (int i = 0; i < 36; i++)
        ck_assert(rgb[i * 3] == rgb[i * 3 + 1] && rgb[i * 3 + 1] == rgb[i * 3 + 2]);
    /* alpha 0.5: halfway between the two, within rounding. */
    ck_assert_int_eq(resattn_heatmap_render(mask, 2, 2, &base, 6, 6, 0.5f, rgb, err, sizeof err),
                     RESATTN_OK);
    for (int k = 0; k < 3; k++)
        ck_assert_int_le(abs((int)rgb[k] - (c0[k] + gray[0]) / 2), 1);
    /* Bad arguments are errors naming the problem. */
    ck_assert_int_eq(resattn_heatmap_render(mask, 2, 2, &base, 0, 6, 0.5f, rgb, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "output size"));
    ck_assert_int_eq(resattn_heatmap_render(mask, 2, 2, &base, 6, 6, 2.0f, rgb, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "alpha"));
}
END_TEST

START_TEST(picture_from_tensor_scales) {
    /* RGB tensor [3, 1, 2] spanning -1..3 maps to 0..255; 1-channel stays gray. */
    const float t[6] = {-1.0f, 3.0f, 1.0f, 1.0f, 0.0f, 2.0f};
    resattn_picture *p = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_picture_from_tensor(t, 3, 1, 2, &p, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(p->channels, 3);
    const unsigned char want[6] = {0, 128, 64, 255, 128, 191};
    ck_assert_mem_eq(p->px, want, 6);
    resattn_picture_free(p);
    ck_assert_int_eq(resattn_picture_from_tensor(t, 1, 2, 3, &p, err, sizeof err), RESATTN_OK);
    ck_assert_int_eq(p->channels, 1);
    ck_assert_int_eq(p->px[0], 0);
    ck_assert_int_eq(p->px[1], 255);
    resattn_picture_free(p);
    resattn_picture_free(NULL);
    ck_assert_int_eq(resattn_picture_from_tensor(t, 0, 2, 3, &p, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(bars_heights_follow_values) {
    const float mask[3] = {0.0f, 0.5f, 1.0f};
    int w = resattn_bars_width(3), h = 40;
    ck_assert_int_eq(w, 3 * 8);
    ck_assert_int_eq(resattn_bars_width(64), 64 * 8);
    ck_assert_int_eq(resattn_bars_width(256), 256 * 2);
    ck_assert_int_eq(resattn_bars_width(2048), 2048);
    unsigned char *rgb = malloc((size_t)w * h * 3);
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_bars_render(mask, 3, h, rgb, err, sizeof err), RESATTN_OK);
    /* Count coloured (non-gray) rows in the first column of each bar. */
    for (int b = 0; b < 3; b++) {
        int filled = 0;
        for (int y = 0; y < h; y++) {
            const unsigned char *p = rgb + ((size_t)y * w + (size_t)b * 8) * 3;
            filled += !(p[0] == p[1] && p[1] == p[2]);
        }
        ck_assert_int_eq(filled, (int)(mask[b] * h + 0.5f));
    }
    ck_assert_int_eq(resattn_bars_render(mask, 0, h, rgb, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    free(rgb);
}
END_TEST

START_TEST(png_round_trip) {
    int w = 37, h = 23;
    unsigned char *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++)
        rgb[i] = (unsigned char)((i * 7919) >> 3);
    unsigned char *png = NULL;
    size_t len = 0;
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_png_encode(rgb, w, h, &png, &len, err, sizeof err), RESATTN_OK);
    ck_assert_int_gt(len, 8);
    ck_assert_mem_eq(png, "\x89PNG\r\n\x1a\n", 8);
    int dw = 0, dh = 0;
    unsigned char *back = decode_png(png, len, &dw, &dh);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(dw, w);
    ck_assert_int_eq(dh, h);
    ck_assert_mem_eq(back, rgb, (size_t)w * h * 3);
    free(back);
    free(png);
    ck_assert_int_eq(resattn_png_encode(rgb, 0, h, &png, &len, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(resattn_png_write_file("/nonexistent-dir/x.png", rgb, w, h, err, sizeof err),
                     RESATTN_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/x.png"));
    free(rgb);
}
END_TEST

START_TEST(base64_vectors) {
    /* RFC 4648 section 10. */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *b = resattn_base64_encode((const unsigned char *)in[i], strlen(in[i]));
        ck_assert_str_eq(b, out[i]);
        free(b);
    }
}
END_TEST

START_TEST(display_size) {
    int oh, ow;
    resattn_heatmap_display_size(28, 28, 224, &oh, &ow);
    ck_assert_int_eq(oh, 224);
    ck_assert_int_eq(ow, 224);
    resattn_heatmap_display_size(30, 20, 224, &oh, &ow);
    ck_assert_int_eq(oh, 240);
    ck_assert_int_eq(ow, 160);
    resattn_heatmap_display_size(300, 224, 224, &oh, &ow);
    ck_assert_int_eq(oh, 300);
    ck_assert_int_eq(ow, 224);
}
END_TEST

START_TEST(stats_of_values) {
    const float v[8] = {0.05f, 0.5f, 0.95f, 0.0f, 1.0f, 0.1f, 0.9f, 0.5f};
    resattn_mask_stats st;
    resattn_mask_stats_compute(v, 8, &st);
    ck_assert_uint_eq(st.count, 8);
    ck_assert_double_eq_tol(st.mean, 4.0 / 8, 1e-7);
    ck_assert_float_eq(st.min, 0.0f);
    ck_assert_float_eq(st.max, 1.0f);
    ck_assert_double_eq(st.frac_low, 2.0 / 8);  /* 0.05, 0.0 (0.1 itself is not below) */
    ck_assert_double_eq(st.frac_high, 2.0 / 8); /* 0.95, 1.0 */
    resattn_mask_stats_compute(v, 0, &st);
    ck_assert_uint_eq(st.count, 0);
    ck_assert_double_eq(st.mean, 0);
}
END_TEST

/* A hand-made set of 2 images: block 0 (CBAM: channel [3] + spatial [2, 2]) and block 1
 * (CA: coord_h [2, 2] + coord_w [2, 3]). */
static resattn_mask_set *make_set(void) {
    static const resattn_mask shapes[4] = {
        {.block = 0, .kind = RESATTN_MASK_CHANNEL, .c = 3, .h = 1, .w = 1},
        {.block = 0, .kind = RESATTN_MASK_SPATIAL, .c = 1, .h = 2, .w = 2},
        {.block = 1, .kind = RESATTN_MASK_COORD_H, .c = 2, .h = 2, .w = 1},
        {.block = 1, .kind = RESATTN_MASK_COORD_W, .c = 2, .h = 1, .w = 3},
    };
    resattn_mask_set *s = calloc(1, sizeof *s);
    s->n = 2;
    s->count = 4;
    s->masks = calloc(4, sizeof *s->masks);
    s->block_names = calloc(4, sizeof *s->block_names);
    for (int i = 0; i < 4; i++) {
        s->masks[i] = shapes[i];
        size_t per = resattn_mask_size(&shapes[i]);
        float *d = malloc(2 * per * sizeof *d);
        for (size_t k = 0; k < 2 * per; k++)
            d[k] = (float)((k * 3 + (size_t)i) % 11) / 10.0f; /* 0 .. 1 */
        s->masks[i].data = d;
        s->block_names[i] = strdup(i < 2 ? "layer1.0" : "layer2.0");
    }
    return s;
}

START_TEST(summary_json_groups_by_block) {
    resattn_mask_set *s = make_set();
    json_t *j = resattn_mask_summary_json(s, 1);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_array_size(j), 2);
    json_t *b0 = json_array_get(j, 0), *b1 = json_array_get(j, 1);
    ck_assert_str_eq(json_string_value(json_object_get(b0, "block")), "layer1.0");
    ck_assert_str_eq(json_string_value(json_object_get(b1, "block")), "layer2.0");
    ck_assert_ptr_nonnull(json_object_get(b0, "channel"));
    ck_assert_ptr_nonnull(json_object_get(b0, "spatial"));
    ck_assert_ptr_null(json_object_get(b0, "coord_h"));
    ck_assert_ptr_nonnull(json_object_get(b1, "coord_h"));
    ck_assert_ptr_nonnull(json_object_get(b1, "coord_w"));
    /* The numbers are those of image 1's slice. */
    resattn_mask_stats st;
    resattn_mask_stats_compute(resattn_mask_image(&s->masks[3], 1), 6, &st);
    json_t *cw = json_object_get(b1, "coord_w");
    ck_assert_double_eq_tol(json_real_value(json_object_get(cw, "mean")), st.mean, 1e-12);
    ck_assert_double_eq_tol(json_real_value(json_object_get(cw, "min")), st.min, 1e-12);
    ck_assert_double_eq_tol(json_real_value(json_object_get(cw, "frac_gt_0_9")), st.frac_high,
                            1e-12);
    json_t *shape = json_object_get(cw, "shape");
    ck_assert_int_eq(json_array_size(shape), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(shape, 0)), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(shape, 1)), 3);
    json_decref(j);
    ck_assert_ptr_null(resattn_mask_summary_json(s, 2));
    resattn_mask_set_free(s);
    resattn_mask_set_free(NULL);
}
END_TEST

START_TEST(pictures_per_block_and_kind) {
    resattn_mask_set *s = make_set();
    const float t[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    resattn_picture *base = NULL;
    char err[RESATTN_ERR_LEN];
    ck_assert_int_eq(resattn_picture_from_tensor(t, 1, 3, 4, &base, err, sizeof err), RESATTN_OK);
    resattn_attn_pictures *p = NULL;
    ck_assert_int_eq(resattn_attn_pictures_render(s, 0, base, 8, 6, 32, &p, err, sizeof err),
                     RESATTN_OK);
    /* channel bars + spatial heatmap for block 0, one coord heatmap for block 1. */
    ck_assert_int_eq(p->count, 3);
    const char *kinds[3] = {"channel", "spatial", "coord"};
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(p->items[i].kind, kinds[i]);
        int w = 0, h = 0;
        unsigned char *px = decode_png(p->items[i].png, p->items[i].png_len, &w, &h);
        ck_assert_ptr_nonnull(px);
        ck_assert_int_eq(w, p->items[i].width);
        ck_assert_int_eq(h, p->items[i].height);
        ck_assert_int_eq(w, i == 0 ? resattn_bars_width(3) : 8);
        ck_assert_int_eq(h, i == 0 ? 32 : 6);
        free(px);
    }
    ck_assert_str_eq(p->items[2].block_name, "layer2.0");
    resattn_attn_pictures_free(p);
    ck_assert_int_eq(resattn_attn_pictures_render(s, 5, base, 8, 6, 32, &p, err, sizeof err),
                     RESATTN_ERR_INVALID_ARGUMENT);
    resattn_picture_free(base);
    resattn_mask_set_free(s);
}
END_TEST

START_TEST(attention_json_and_files) {
    resattn_mask_set *s = make_set();
    float t[2 * 5 * 7]; /* an input of [2, 5, 7]: gray base picture, averaged channels */
    for (int i = 0; i < 70; i++)
        t[i] = (float)i;
    char err[RESATTN_ERR_LEN];
    json_t *j = resattn_attention_json(s, 0, t, 2, 5, 7, err, sizeof err);
    ck_assert_ptr_nonnull(j);
    json_t *im0 = json_object_get(json_array_get(j, 0), "images");
    json_t *im1 = json_object_get(json_array_get(j, 1), "images");
    ck_assert_ptr_nonnull(json_object_get(im0, "channel"));
    ck_assert_ptr_nonnull(json_object_get(im0, "spatial"));
    ck_assert_ptr_nonnull(json_object_get(im1, "coord"));
    ck_assert_int_eq(json_object_size(im1), 1);
    /* "iVBORw0KGgo" is base64 of the PNG signature. */
    ck_assert_int_eq(strncmp(json_string_value(json_object_get(im1, "coord")), "iVBORw0KGgo", 11),
                     0);
    json_decref(j);
    j = resattn_attention_json(s, 1, NULL, 0, 0, 0, err, sizeof err);
    ck_assert_ptr_null(json_object_get(json_array_get(j, 0), "images"));
    json_decref(j);

    /* Files: 7x5 input scaled by 32 to 224x160; bars 64 high. */
    char dir[] = "/tmp/check_heatmap_XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    resattn_attn_pictures *p = NULL;
    ck_assert_int_eq(resattn_attn_pictures_for_input(s, 1, t, 2, 5, 7, &p, err, sizeof err),
                     RESATTN_OK);
    int written = 0;
    ck_assert_int_eq(resattn_attn_pictures_write_dir(p, dir, "x_", &written, err, sizeof err),
                     RESATTN_OK);
    ck_assert_int_eq(written, 3);
    const char *names[3] = {"x_layer1.0_channel.png", "x_layer1.0_spatial.png",
                            "x_layer2.0_coord.png"};
    const int sizes[3][2] = {{24, 64}, {224, 160}, {224, 160}};
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        png_image img;
        memset(&img, 0, sizeof img);
        img.version = PNG_IMAGE_VERSION;
        ck_assert_msg(png_image_begin_read_from_file(&img, path), "cannot read %s", path);
        ck_assert_int_eq(img.width, sizes[i][0]);
        ck_assert_int_eq(img.height, sizes[i][1]);
        png_image_free(&img);
        unlink(path);
    }
    rmdir(dir);
    ck_assert_int_eq(
        resattn_attn_pictures_write_dir(p, "/nonexistent-dir", NULL, &written, err, sizeof err),
        RESATTN_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/layer1.0_channel.png"));
    resattn_attn_pictures_free(p);
    resattn_mask_set_free(s);
}
END_TEST

Suite *heatmap_suite(void) {
    Suite *s = suite_create("heatmap");
    TCase *tc = tcase_create("pictures");
    tcase_add_test(tc, colormap_ends_and_clamps);
    tcase_add_test(tc, resize_matches_reference);
    tcase_add_test(tc, coord_outer_product);
    tcase_add_test(tc, heatmap_blends_over_base);
    tcase_add_test(tc, picture_from_tensor_scales);
    tcase_add_test(tc, bars_heights_follow_values);
    tcase_add_test(tc, png_round_trip);
    tcase_add_test(tc, base64_vectors);
    tcase_add_test(tc, display_size);
    suite_add_tcase(s, tc);
    TCase *ts = tcase_create("summary");
    tcase_add_test(ts, stats_of_values);
    tcase_add_test(ts, summary_json_groups_by_block);
    tcase_add_test(ts, pictures_per_block_and_kind);
    tcase_add_test(ts, attention_json_and_files);
    suite_add_tcase(s, ts);
    return s;
}
