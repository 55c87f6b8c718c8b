/*
 * Attention pictures: viridis heatmaps of spatial and coordinate masks blended over the
 * model input, bar strips of channel masks, and their PNG encoding (libpng's simplified
 * write API, which reports errors in the png_image instead of longjmp'ing). See heatmap.h.
 */
#include "maps/heatmap.h"
#include "model/error.h"
#include "data/base64.h"

#include <png.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest picture side we render: keeps w * h * 3 far from overflowing an int. */
#define MAX_SIDE 8192

/* viridis at 0, 1/8, ..., 1 (matplotlib's table, every 32nd entry); linear in between. */
static const unsigned char viridis[9][3] = {
    {68, 1, 84},    {71, 45, 123}, {59, 82, 139},  {44, 114, 142}, {33, 145, 140},
    {40, 174, 128}, {94, 201, 98}, {173, 220, 48}, {253, 231, 37},
};

void resattn_colormap(float v, unsigned char rgb[3]) {
    if (!(v > 0.0f)) /* also NaN */
        v = 0.0f;
    if (v > 1.0f)
        v = 1.0f;
    float t = v * 8.0f;
    int i = (int)t;
    if (i > 7)
        i = 7;
    float f = t - (float)i;
    for (int k = 0; k < 3; k++)
        rgb[k] = (unsigned char)(viridis[i][k] + f * (viridis[i + 1][k] - viridis[i][k]) + 0.5f);
}

void resattn_picture_free(resattn_picture *p) {
    if (!p)
        return;
    free(p->px);
    free(p);
}

resattn_status resattn_picture_from_tensor(const float *chw, int c, int h, int w,
                                           resattn_picture **out, char *err, size_t err_len) {
    *out = NULL;
    if (!chw || c < 1 || h < 1 || w < 1 || h > MAX_SIDE || w > MAX_SIDE)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "picture: bad input tensor shape [%d, %d, %d]", c, h, w);
    size_t plane = (size_t)h * (size_t)w, total = plane * (size_t)c;
    float lo = chw[0], hi = chw[0];
    for (size_t i = 0; i < total; i++) {
        lo = chw[i] < lo ? chw[i] : lo;
        hi = chw[i] > hi ? chw[i] : hi;
    }
    float scale = hi > lo ? 255.0f / (hi - lo) : 0.0f;
    resattn_picture *p = calloc(1, sizeof *p);
    int ch = c == 3 ? 3 : 1;
    if (p)
        p->px = malloc(plane * (size_t)ch);
    if (!p || !p->px) {
        resattn_picture_free(p);
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "picture: out of memory");
    }
    p->w = w, p->h = h, p->channels = ch;
    for (size_t i = 0; i < plane; i++) {
        if (ch == 3) {
            for (int k = 0; k < 3; k++)
                p->px[i * 3 + (size_t)k] =
                    (unsigned char)((chw[(size_t)k * plane + i] - lo) * scale + 0.5f);
        } else {
            float s = 0;
            for (int k = 0; k < c; k++)
                s += chw[(size_t)k * plane + i];
            p->px[i] = (unsigned char)((s / (float)c - lo) * scale + 0.5f);
        }
    }
    *out = p;
    return RESATTN_OK;
}

/* Source coordinate of output pixel o for a resize in -> out (pixel centres), split into
 * the lower index i0, the upper i1 and the weight of i1. */
static void bilinear_coord(int o, int in, int out, int *i0, int *i1, float *frac) {
    float s = ((float)o + 0.5f) * (float)in / (float)out - 0.5f;
    if (s < 0)
        s = 0;
    int i = (int)s;
    if (i > in - 1)
        i = in - 1;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *frac = s - (float)i;
}

void resattn_resize_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow) {
    for (int y = 0; y < oh; y++) {
        int y0, y1;
        float fy;
        bilinear_coord(y, ih, oh, &y0, &y1, &fy);
        for (int x = 0; x < ow; x++) {
            int x0, x1;
            float fx;
            bilinear_coord(x, iw, ow, &x0, &x1, &fx);
            float top = in[y0 * iw + x0] + fx * (in[y0 * iw + x1] - in[y0 * iw + x0]);
            float bot = in[y1 * iw + x0] + fx * (in[y1 * iw + x1] - in[y1 * iw + x0]);
            out[(size_t)y * (size_t)ow + (size_t)x] = top + fy * (bot - top);
        }
    }
}

void resattn_coord_to_spatial(const float *a_h, const float *a_w, int c, int h, int w, float *out) {
    for (int y = 0; y < h; y++) {
        double sh = 0;
        for (int k = 0; k < c; k++)
            sh += a_h[(size_t)k * (size_t)h + (size_t)y];
        for (int x = 0; x < w; x++) {
            double sw = 0;
            for (int k = 0; k < c; k++)
                sw += a_w[(size_t)k * (size_t)w + (size_t)x];
            out[(size_t)y * (size_t)w + (size_t)x] = (float)((sh / c) * (sw / c));
        }
    }
}

/* Base picture pixel (y, x) of a picture resampled (bilinearly) to [oh, ow], as RGB. */
static void base_rgb(const resattn_picture *b, int y, int x, int oh, int ow, float rgb[3]) {
    int y0, y1, x0, x1;
    float fy, fx;
    bilinear_coord(y, b->h, oh, &y0, &y1, &fy);
    bilinear_coord(x, b->w, ow, &x0, &x1, &fx);
    int ch = b->channels;
    for (int k = 0; k < 3; k++) {
        int kk = ch == 3 ? k : 0;
        const unsigned char *p = b->px;
        float a = p[((size_t)y0 * b->w + x0) * ch + kk], bb = p[((size_t)y0 * b->w + x1) * ch + kk];
        float c = p[((size_t)y1 * b->w + x0) * ch + kk], d = p[((size_t)y1 * b->w + x1) * ch + kk];
        float top = a + fx * (bb - a), bot = c + fx * (d - c);
        rgb[k] = top + fy * (bot - top);
    }
}

resattn_status resattn_heatmap_render(const float *mask, int mh, int mw,
                                      const resattn_picture *base, int ow, int oh, float alpha,
                                      unsigned char *rgb, char *err, size_t err_len) {
    if (!mask || mh < 1 || mw < 1 || mh > MAX_SIDE || mw > MAX_SIDE)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "heatmap: bad mask shape [%d, %d]", mh, mw);
    if (ow < 1 || oh < 1 || ow > MAX_SIDE || oh > MAX_SIDE)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "heatmap: bad output size %dx%d", ow, oh);
    if (base &&
        (!base->px || base->w < 1 || base->h < 1 || (base->channels != 1 && base->channels != 3)))
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "heatmap: bad base picture (%dx%d, %d channels)", base->w, base->h,
                            base->channels);
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "heatmap: alpha %g not in 0..1", (double)alpha);
    float *up = malloc((size_t)ow * (size_t)oh * sizeof *up); /* [oh, ow] */
    if (!up)
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "heatmap: out of memory");
    resattn_resize_bilinear(mask, mh, mw, up, oh, ow);
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            size_t i = (size_t)y * (size_t)ow + (size_t)x;
            unsigned char col[3];
            float under[3] = {0, 0, 0};
            resattn_colormap(up[i], col);
            if (base)
                base_rgb(base, y, x, oh, ow, under);
            float a = base ? alpha : 1.0f;
            for (int k = 0; k < 3; k++)
                rgb[i * 3 + (size_t)k] =
                    (unsigned char)((1.0f - a) * under[k] + a * (float)col[k] + 0.5f);
        }
    }
    free(up);
    return RESATTN_OK;
}

int resattn_bars_width(int c) {
    int bar = c > 0 ? 512 / c : 1;
    bar = bar < 1 ? 1 : bar > 8 ? 8 : bar;
    return c * bar;
}

resattn_status resattn_bars_render(const float *mask, int c, int height, unsigned char *rgb,
                                   char *err, size_t err_len) {
    if (!mask || c < 1 || c > MAX_SIDE || height < 2 || height > MAX_SIDE)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "bars: bad channel count %d or height %d", c, height);
    int w = resattn_bars_width(c), bar = w / c;
    /* Rows counted from the top; a value v fills the bottom round(v * height) rows. */
    int row_low = height - 1 - (int)(0.1f * (float)(height - 1) + 0.5f);
    int row_high = height - 1 - (int)(0.9f * (float)(height - 1) + 0.5f);
    for (int x = 0; x < w; x++) {
        float v = mask[x / bar];
        v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
        int filled = (int)(v * (float)height + 0.5f);
        unsigned char col[3];
        resattn_colormap(v, col);
        /* A one-pixel gap between bars when they are wide enough to keep it. */
        int gap = bar >= 4 && x % bar == bar - 1;
        for (int y = 0; y < height; y++) {
            unsigned char *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            int guide = y == row_low || y == row_high;
            if (!gap && y >= height - filled)
                memcpy(p, col, 3);
            else
                memset(p, guide ? 96 : 32, 3);
        }
    }
    return RESATTN_OK;
}

resattn_status resattn_png_encode(const unsigned char *rgb, int w, int h, unsigned char **png,
                                  size_t *len, char *err, size_t err_len) {
    *png = NULL;
    *len = 0;
    if (!rgb || w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT, "png: bad image %dx%d", w,
                            h);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = PNG_FORMAT_RGB;
    /* PNG_IMAGE_PNG_SIZE_MAX bounds the encoding (stored, uncompressed), so one pass does. */
    size_t cap = PNG_IMAGE_PNG_SIZE_MAX(img);
    unsigned char *buf = malloc(cap);
    if (!buf)
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "png: out of memory (%zu bytes)", cap);
    png_alloc_size_t size = cap;
    if (!png_image_write_to_memory(&img, buf, &size, 0, rgb, 0, NULL)) {
        resattn_status s =
            resattn_fail(err, err_len, RESATTN_ERR_IO, "png: libpng could not encode %dx%d: %s", w,
                         h, img.message);
        png_image_free(&img);
        free(buf);
        return s;
    }
    unsigned char *shrunk = realloc(buf, size);
    *png = shrunk ? shrunk : buf;
    *len = size;
    return RESATTN_OK;
}

resattn_status resattn_png_write_file(const char *path, const unsigned char *rgb, int w, int h,
                                      char *err, size_t err_len) {
    unsigned char *png;
    size_t len;
    resattn_status s = resattn_png_encode(rgb, w, h, &png, &len, err, err_len);
    if (s != RESATTN_OK)
        return s;
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(png, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = 0;
    free(png);
    if (!ok)
        return resattn_fail(err, err_len, RESATTN_ERR_IO, "png: could not write '%s'", path);
    return RESATTN_OK;
}

void resattn_heatmap_display_size(int h, int w, int min_side, int *oh, int *ow) {
    int longer = h > w ? h : w, k = 1;
    if (longer > 0 && min_side > longer)
        k = (min_side + longer - 1) / longer;
    *oh = h * k;
    *ow = w * k;
}

/* ---- Every picture of one image ----------------------------------------------------------- */

void resattn_attn_pictures_free(resattn_attn_pictures *p) {
    if (!p)
        return;
    for (int i = 0; i < p->count; i++)
        free(p->items[i].png);
    free(p->items);
    free(p);
}

/* Render rgb [h, w, 3] to PNG as the next item of out. */
static resattn_status add_picture(resattn_attn_pictures *out, const resattn_mask_set *set,
                                  int mask_index, const char *kind, const unsigned char *rgb, int w,
                                  int h, char *err, size_t err_len) {
    resattn_attn_picture *it = &out->items[out->count];
    resattn_status s = resattn_png_encode(rgb, w, h, &it->png, &it->png_len, err, err_len);
    if (s != RESATTN_OK)
        return s;
    it->block = set->masks[mask_index].block;
    it->block_name = set->block_names[mask_index];
    it->kind = kind;
    it->width = w;
    it->height = h;
    out->count++;
    return RESATTN_OK;
}

/* The coord_w mask of the same block as mask i (a coord_h), or -1. */
static int coord_partner(const resattn_mask_set *set, int i) {
    for (int j = 0; j < set->count; j++)
        if (set->masks[j].block == set->masks[i].block &&
            set->masks[j].kind == RESATTN_MASK_COORD_W)
            return j;
    return -1;
}

/* The picture(s) of mask i of the set, for image `image`. */
static resattn_status render_mask(const resattn_mask_set *set, int i, int image,
                                  const resattn_picture *base, int ow, int oh, int bar_height,
                                  resattn_attn_pictures *out, char *err, size_t err_len) {
    const resattn_mask *m = &set->masks[i];
    const float *v = resattn_mask_image(m, image);
    unsigned char *rgb = NULL;
    float *spatial = NULL;
    resattn_status s = RESATTN_OK;
    if (m->kind == RESATTN_MASK_CHANNEL) {
        int w = resattn_bars_width(m->c);
        rgb = malloc((size_t)w * (size_t)bar_height * 3);
        if (!rgb)
            return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "pictures: out of memory");
        s = resattn_bars_render(v, m->c, bar_height, rgb, err, err_len);
        if (s == RESATTN_OK)
            s = add_picture(out, set, i, "channel", rgb, w, bar_height, err, err_len);
        free(rgb);
        return s;
    }
    if (m->kind == RESATTN_MASK_COORD_W)
        return RESATTN_OK; /* drawn together with its coord_h */
    int j = m->kind == RESATTN_MASK_COORD_H ? coord_partner(set, i) : -1;
    if (m->kind == RESATTN_MASK_COORD_H && j < 0)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "pictures: block %s has coord_h but no coord_w mask",
                            set->block_names[i]);
    int mh = m->h, mw = m->kind == RESATTN_MASK_COORD_H ? set->masks[j].w : m->w;
    rgb = malloc((size_t)ow * (size_t)oh * 3);
    if (m->kind == RESATTN_MASK_COORD_H)
        spatial = malloc((size_t)mh * (size_t)mw * sizeof *spatial);
    if (!rgb || (m->kind == RESATTN_MASK_COORD_H && !spatial)) {
        free(rgb);
        free(spatial);
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "pictures: out of memory");
    }
    if (spatial)
        resattn_coord_to_spatial(v, resattn_mask_image(&set->masks[j], image), m->c, mh, mw,
                                 spatial);
    s = resattn_heatmap_render(spatial ? spatial : v, mh, mw, base, ow, oh, 0.5f, rgb, err,
                               err_len);
    if (s == RESATTN_OK)
        s = add_picture(out, set, i, spatial ? "coord" : "spatial", rgb, ow, oh, err, err_len);
    free(rgb);
    free(spatial);
    return s;
}

resattn_status resattn_attn_pictures_render(const resattn_mask_set *set, int image,
                                            const resattn_picture *base, int ow, int oh,
                                            int bar_height, resattn_attn_pictures **out, char *err,
                                            size_t err_len) {
    *out = NULL;
    if (!set || image < 0 || image >= set->n)
        return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                            "pictures: image %d out of range", image);
    resattn_attn_pictures *p = calloc(1, sizeof *p);
    if (!p || (set->count > 0 && !(p->items = calloc((size_t)set->count, sizeof *p->items)))) {
        free(p);
        return resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "pictures: out of memory");
    }
    for (int i = 0; i < set->count; i++) {
        resattn_status s = render_mask(set, i, image, base, ow, oh, bar_height, p, err, err_len);
        if (s != RESATTN_OK) {
            resattn_attn_pictures_free(p);
            return s;
        }
    }
    *out = p;
    return RESATTN_OK;
}

resattn_status resattn_attn_pictures_write_dir(const resattn_attn_pictures *p, const char *dir,
                                               const char *prefix, int *written, char *err,
                                               size_t err_len) {
    if (written)
        *written = 0;
    for (int i = 0; i < p->count; i++) {
        const resattn_attn_picture *it = &p->items[i];
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s%s_%s.png", dir, prefix ? prefix : "",
                         it->block_name, it->kind);
        if (n < 0 || (size_t)n >= sizeof path)
            return resattn_fail(err, err_len, RESATTN_ERR_INVALID_ARGUMENT,
                                "pictures: path too long in directory '%s'", dir);
        FILE *f = fopen(path, "wb");
        int ok = f && fwrite(it->png, 1, it->png_len, f) == it->png_len;
        if (f && fclose(f) != 0)
            ok = 0;
        if (!ok)
            return resattn_fail(err, err_len, RESATTN_ERR_IO, "pictures: could not write '%s'",
                                path);
        if (written)
            (*written)++;
    }
    return RESATTN_OK;
}

resattn_status resattn_attn_pictures_for_input(const resattn_mask_set *set, int image,
                                               const float *chw, int c, int h, int w,
                                               resattn_attn_pictures **out, char *err,
                                               size_t err_len) {
    *out = NULL;
    resattn_picture *base = NULL;
    resattn_status s = resattn_picture_from_tensor(chw, c, h, w, &base, err, err_len);
    if (s != RESATTN_OK)
        return s;
    int oh, ow;
    resattn_heatmap_display_size(h, w, RESATTN_HEATMAP_MIN_SIDE, &oh, &ow);
    s = resattn_attn_pictures_render(set, image, base, ow, oh, RESATTN_BARS_HEIGHT, out, err,
                                     err_len);
    resattn_picture_free(base);
    return s;
}

/* The entry of `block_name` in the summary array, or NULL. */
static json_t *summary_entry(json_t *summary, const char *block_name) {
    size_t i;
    json_t *e;
    json_array_foreach(summary, i, e) {
        const char *b = json_string_value(json_object_get(e, "block"));
        if (b && !strcmp(b, block_name))
            return e;
    }
    return NULL;
}

json_t *resattn_attention_json(const resattn_mask_set *set, int image, const float *chw, int c,
                               int h, int w, char *err, size_t err_len) {
    json_t *summary = resattn_mask_summary_json(set, image);
    if (!summary) {
        resattn_fail(err, err_len, RESATTN_ERR_NOMEM,
                     "attention summary: out of memory or bad image");
        return NULL;
    }
    if (!chw)
        return summary;
    resattn_attn_pictures *p = NULL;
    if (resattn_attn_pictures_for_input(set, image, chw, c, h, w, &p, err, err_len) != RESATTN_OK) {
        json_decref(summary);
        return NULL;
    }
    for (int i = 0; i < p->count; i++) {
        const resattn_attn_picture *it = &p->items[i];
        json_t *entry = summary_entry(summary, it->block_name);
        json_t *images = entry ? json_object_get(entry, "images") : NULL;
        if (entry && !images) {
            images = json_object();
            if (json_object_set_new(entry, "images", images))
                images = NULL;
        }
        char *b64 = resattn_base64_encode(it->png, it->png_len);
        json_t *str = b64 ? json_string(b64) : NULL;
        free(b64);
        if (!images || !str || json_object_set_new(images, it->kind, str)) {
            if (!images)
                json_decref(str);
            json_decref(summary);
            resattn_attn_pictures_free(p);
            resattn_fail(err, err_len, RESATTN_ERR_NOMEM, "attention pictures: out of memory");
            return NULL;
        }
    }
    resattn_attn_pictures_free(p);
    return summary;
}

resattn_status resattn_attention_write_dir(const resattn_model *model, const resattn_ctx *ctx,
                                           int image, const float *chw, const char *dir,
                                           const char *prefix, int *written, char *err,
                                           size_t err_len) {
    if (written)
        *written = 0;
    const resattn_model_info *info = resattn_model_get_info(model);
    resattn_mask_set *set = NULL;
    resattn_attn_pictures *p = NULL;
    resattn_status s = resattn_mask_set_copy(model, ctx, image, 1, &set, err, err_len);
    if (s == RESATTN_OK)
        s = resattn_attn_pictures_for_input(set, 0, chw, info->in_channels, info->in_height,
                                            info->in_width, &p, err, err_len);
    if (s == RESATTN_OK)
        s = resattn_attn_pictures_write_dir(p, dir, prefix, written, err, err_len);
    resattn_attn_pictures_free(p);
    resattn_mask_set_free(set);
    return s;
}
