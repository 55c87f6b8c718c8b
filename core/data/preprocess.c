/*
 * The image preprocessing pipeline (see preprocess.h): config parsing, PIL's colour
 * conversion, PIL's antialiased bilinear resize (Pillow's Resample.c: coefficients
 * computed in double, normalised, turned into 22-bit fixed point; horizontal pass first
 * over the rows the vertical pass needs, rounded to 8 bits, then the vertical pass),
 * torchvision's Resize(int) + CenterCrop geometry, scaling, inversion and normalisation.
 */
#include "data/preprocess.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- config --------------------------------------------------------------------------- */

static resattn_status cfg_fail(char *err, size_t err_len, const char *msg) {
    snprintf(err, err_len, "preprocess: %s", msg);
    return RESATTN_ERR_CONFIG;
}

/* mean/std: a number or an array of `channels` numbers (one number applies to all). */
static resattn_status parse_vec(json_t *v, const char *key, int channels, float *dst, char *err,
                                size_t err_len) {
    char msg[128];
    if (json_is_number(v)) {
        for (int c = 0; c < channels; c++)
            dst[c] = (float)json_number_value(v);
        return RESATTN_OK;
    }
    size_t n = json_array_size(v);
    if (!json_is_array(v) || (n != 1 && n != (size_t)channels)) {
        snprintf(msg, sizeof msg, "\"%s\" must be a number or an array of 1 or %d numbers", key,
                 channels);
        return cfg_fail(err, err_len, msg);
    }
    for (int c = 0; c < channels; c++) {
        json_t *x = json_array_get(v, n == 1 ? 0 : (size_t)c);
        if (!json_is_number(x)) {
            snprintf(msg, sizeof msg, "\"%s\"[%d] is not a number", key, c);
            return cfg_fail(err, err_len, msg);
        }
        dst[c] = (float)json_number_value(x);
    }
    return RESATTN_OK;
}

/* The keys of "preprocess"; anything else (a typo such as "stdev", or an option we do not
 * have such as "interpolation") is refused rather than silently ignored. */
static const char *const known_keys[] = {"color",  "resize", "resize_size", "scale",
                                         "invert", "mean",   "std"};

static resattn_status check_keys(json_t *o, char *err, size_t err_len) {
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        size_t i = 0, n = sizeof known_keys / sizeof known_keys[0];
        while (i < n && strcmp(key, known_keys[i]))
            i++;
        if (i == n) {
            snprintf(err, err_len,
                     "preprocess: unknown key \"%.40s\" (expected color, resize, resize_size, "
                     "scale, invert, mean, std)",
                     key);
            return RESATTN_ERR_CONFIG;
        }
    }
    return RESATTN_OK;
}

static resattn_status parse_object(json_t *o, resattn_preprocess *p, char *err, size_t err_len) {
    json_t *v;
    resattn_status s;
    if ((s = check_keys(o, err, err_len)))
        return s;
    if ((v = json_object_get(o, "color"))) {
        const char *name = json_string_value(v);
        int want = name && !strcmp(name, "gray") ? 1 : name && !strcmp(name, "rgb") ? 3 : 0;
        if (!want)
            return cfg_fail(err, err_len, "\"color\" must be \"gray\" or \"rgb\"");
        if (want != p->channels) {
            char msg[96];
            snprintf(msg, sizeof msg, "\"color\": \"%s\" needs input.channels %d, not %d", name,
                     want, p->channels);
            return cfg_fail(err, err_len, msg);
        }
    }
    if ((v = json_object_get(o, "resize"))) {
        const char *name = json_string_value(v);
        if (name && !strcmp(name, "shorter"))
            p->resize_shorter = 1;
        else if (!name || strcmp(name, "direct"))
            return cfg_fail(err, err_len, "\"resize\" must be \"direct\" or \"shorter\"");
    }
    if ((v = json_object_get(o, "resize_size"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65536)
            return cfg_fail(err, err_len, "\"resize_size\" must be an integer in 1..65536");
        if (!p->resize_shorter) /* direct resizing would silently ignore it */
            return cfg_fail(err, err_len, "\"resize_size\" needs \"resize\": \"shorter\"");
        p->resize_size = (int)json_integer_value(v);
    } else if (p->resize_shorter) {
        p->resize_size = p->height < p->width ? p->height : p->width;
    }
    if ((v = json_object_get(o, "scale"))) {
        if (!json_is_number(v) || !(json_number_value(v) > 0))
            return cfg_fail(err, err_len, "\"scale\" must be a positive number");
        p->scale = (float)json_number_value(v);
    }
    if ((v = json_object_get(o, "invert"))) {
        if (json_is_boolean(v))
            p->invert = json_is_true(v) ? RESATTN_INVERT_YES : RESATTN_INVERT_NO;
        else if (json_is_string(v) && !strcmp(json_string_value(v), "auto"))
            p->invert = RESATTN_INVERT_AUTO;
        else
            return cfg_fail(err, err_len, "\"invert\" must be true, false or \"auto\"");
    }
    if ((v = json_object_get(o, "mean")) &&
        (s = parse_vec(v, "mean", p->channels, p->mean, err, err_len)))
        return s;
    if ((v = json_object_get(o, "std")) &&
        (s = parse_vec(v, "std", p->channels, p->std, err, err_len)))
        return s;
    for (int c = 0; c < p->channels; c++)
        if (!(p->std[c] > 0) && !(p->std[c] < 0))
            return cfg_fail(err, err_len, "\"std\" must not be zero");
    return RESATTN_OK;
}

resattn_status resattn_preprocess_parse(const char *json, int channels, int height, int width,
                                        resattn_preprocess *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    if ((channels != 1 && channels != 3) || height < 1 || width < 1) {
        snprintf(err, err_len,
                 "preprocess: images need an input of 1 or 3 channels, not [%d, %d, %d]", channels,
                 height, width);
        return RESATTN_ERR_CONFIG;
    }
    out->channels = channels;
    out->height = height;
    out->width = width;
    out->scale = 255.0f;
    for (int c = 0; c < 3; c++)
        out->std[c] = 1.0f;
    if (!json)
        return RESATTN_OK;
    json_error_t je;
    json_t *o = json_loadb(json, strlen(json), 0, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        return cfg_fail(err, err_len, "not a JSON object");
    }
    resattn_status s = parse_object(o, out, err, err_len);
    json_decref(o);
    return s;
}

resattn_status resattn_preprocess_from_model(const resattn_model_info *info,
                                             resattn_preprocess *out, char *err, size_t err_len) {
    return resattn_preprocess_parse(info->preprocess_json, info->in_channels, info->in_height,
                                    info->in_width, out, err, err_len);
}

/* ---- colour --------------------------------------------------------------------------- */

/* PIL's L24: ITU-R 601-2 luma in 16-bit fixed point, rounded. */
static uint8_t luma(const uint8_t *rgb) {
    return (uint8_t)((rgb[0] * 19595u + rgb[1] * 38470u + rgb[2] * 7471u + 0x8000u) >> 16);
}

int resattn_image_to_channels(const resattn_image *in, int channels, resattn_image *out) {
    size_t n = (size_t)in->width * (size_t)in->height;
    memset(out, 0, sizeof *out);
    out->pixels = malloc(n * (size_t)channels);
    if (!out->pixels)
        return -1;
    out->width = in->width;
    out->height = in->height;
    out->channels = channels;
    const uint8_t *s = in->pixels;
    uint8_t *d = out->pixels;
    if (in->channels == channels)
        memcpy(d, s, n * (size_t)channels);
    else if (channels == 1) /* RGB -> L */
        for (size_t i = 0; i < n; i++)
            d[i] = luma(s + 3 * i);
    else /* L -> RGB */
        for (size_t i = 0; i < n; i++)
            d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    return 0;
}

/* ---- resize (Pillow's Resample.c, bilinear) ------------------------------------------- */

#define PRECISION_BITS (32 - 8 - 2)

static double bilinear(double x) {
    x = x < 0 ? -x : x;
    return x < 1 ? 1 - x : 0;
}

/* Coefficients for in_size -> out_size: bounds [out, 2] (first tap, taps), kk [out, ksize]. */
static int coeffs(int in_size, int out_size, int **bounds_out, int **kk_out) {
    double scale = (double)in_size / out_size, filterscale = scale < 1 ? 1 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
    int *kk = calloc((size_t)out_size * (size_t)ksize, sizeof(int));
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!bounds || !kk || !k) {
        free(bounds);
        free(kk);
        free(k);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        xmin = xmin < 0 ? 0 : xmin;
        xmax = (xmax > in_size ? in_size : xmax) - xmin;
        for (int x = 0; x < xmax; x++) {
            k[x] = bilinear((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (int x = 0; x < xmax; x++) {
            double w = ww != 0 ? k[x] / ww : k[x];
            kk[xx * ksize + x] =
                (int)(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(k);
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static uint8_t clip8(long long v) {
    if (v >= (1LL << PRECISION_BITS << 8))
        return 255;
    if (v <= 0)
        return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

int resattn_image_resize_bilinear(const resattn_image *in, int width, int height,
                                  resattn_image *out) {
    memset(out, 0, sizeof *out);
    int ch = in->channels, *bh = NULL, *kh = NULL, *bv = NULL, *kv = NULL;
    int ksh = coeffs(in->width, width, &bh, &kh);
    int ksv = ksh < 0 ? -1 : coeffs(in->height, height, &bv, &kv);
    /* rows of the source the vertical pass reads: [y0, y1) */
    int y0 = ksv < 0 ? 0 : bv[0], y1 = ksv < 0 ? 0 : bv[2 * height - 2] + bv[2 * height - 1];
    size_t tstride = (size_t)width * ch, sstride = (size_t)in->width * ch;
    uint8_t *tmp = ksv < 0 ? NULL : malloc(tstride * (size_t)(y1 - y0) + 1);
    out->pixels = tmp ? malloc(tstride * (size_t)height) : NULL;
    if (!out->pixels) {
        free(bh), free(kh), free(bv), free(kv), free(tmp);
        return -1;
    }
    out->width = width;
    out->height = height;
    out->channels = ch;
    /* horizontal pass: tmp [y1 - y0, width, ch] (a copy when the width is unchanged: the
     * coefficients are then the identity, as Pillow skips the pass) */
    for (int y = y0; y < y1; y++)
        for (int xx = 0; xx < width; xx++)
            for (int c = 0; c < ch; c++) {
                const int *k = kh + xx * ksh;
                const uint8_t *s = in->pixels + (size_t)y * sstride + (size_t)bh[2 * xx] * ch + c;
                long long ss = 1LL << (PRECISION_BITS - 1);
                for (int x = 0; x < bh[2 * xx + 1]; x++)
                    ss += (long long)s[(size_t)x * ch] * k[x];
                tmp[(size_t)(y - y0) * tstride + (size_t)xx * ch + c] = clip8(ss);
            }
    /* vertical pass: out [height, width, ch] */
    for (int yy = 0; yy < height; yy++) {
        const int *k = kv + yy * ksv;
        const uint8_t *s = tmp + (size_t)(bv[2 * yy] - y0) * tstride;
        for (size_t i = 0; i < tstride; i++) {
            long long ss = 1LL << (PRECISION_BITS - 1);
            for (int y = 0; y < bv[2 * yy + 1]; y++)
                ss += (long long)s[(size_t)y * tstride + i] * k[y];
            out->pixels[(size_t)yy * tstride + i] = clip8(ss);
        }
    }
    free(bh), free(kh), free(bv), free(kv), free(tmp);
    return 0;
}

/* ---- the pipeline --------------------------------------------------------------------- */

/* torchvision Resize(int): shorter side to `size`, the other int(size * long / short). */
static void shorter_size(int w, int h, int size, int *ow, int *oh) {
    if (w <= h) {
        *ow = size;
        *oh = (int)((double)size * h / w);
    } else {
        *oh = size;
        *ow = (int)((double)size * w / h);
    }
}

/* torchvision CenterCrop offset of a crop of `want` from `have` (zero padding when larger). */
static int crop_offset(int have, int want) {
    if (have >= want)
        return (int)nearbyint((have - want) / 2.0); /* Python's round: half to even */
    return -((want - have) / 2);
}

int resattn_preprocess_run(const resattn_preprocess *p, const resattn_image *img, float *out) {
    resattn_image col, rs;
    if (resattn_image_to_channels(img, p->channels, &col))
        return -1;
    int rw = p->width, rh = p->height;
    if (p->resize_shorter)
        shorter_size(col.width, col.height, p->resize_size, &rw, &rh);
    int same = rw == col.width && rh == col.height;
    if (same)
        rs = col;
    else if (resattn_image_resize_bilinear(&col, rw, rh, &rs)) {
        resattn_image_release(&col);
        return -1;
    }
    int top = crop_offset(rh, p->height), left = crop_offset(rw, p->width), C = p->channels;
    size_t plane = (size_t)p->height * p->width;
    /* gather, scale: out [C, H, W] in [0, 1]; outside the resized image (padding) is 0 */
    double border = 0;
    long border_n = 0;
    for (int y = 0; y < p->height; y++)
        for (int x = 0; x < p->width; x++) {
            int sy = y + top, sx = x + left;
            int inside = sy >= 0 && sy < rh && sx >= 0 && sx < rw;
            int edge = y == 0 || x == 0 || y == p->height - 1 || x == p->width - 1;
            for (int c = 0; c < C; c++) {
                float v = inside ? rs.pixels[((size_t)sy * rw + sx) * C + c] / p->scale : 0.0f;
                out[c * plane + (size_t)y * p->width + x] = v;
                if (edge) {
                    border += v;
                    border_n++;
                }
            }
        }
    if (!same)
        resattn_image_release(&rs);
    resattn_image_release(&col);
    int inv = p->invert == RESATTN_INVERT_YES ||
              (p->invert == RESATTN_INVERT_AUTO && border / (double)border_n > 0.5);
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < plane; i++) {
            float v = out[c * plane + i];
            out[c * plane + i] = ((inv ? 1.0f - v : v) - p->mean[c]) / p->std[c];
        }
    return 0;
}

resattn_image_status resattn_preprocess_bytes(const resattn_preprocess *p, const void *data,
                                              size_t len, long long max_pixels, float *out,
                                              char *err, size_t err_len) {
    resattn_image img;
    resattn_image_status s = resattn_image_decode(data, len, max_pixels, &img, err, err_len);
    if (s)
        return s;
    int rc = resattn_preprocess_run(p, &img, out), w = img.width, h = img.height;
    resattn_image_release(&img);
    if (rc) {
        snprintf(err, err_len, "out of memory preprocessing a %dx%d image", w, h);
        return RESATTN_IMAGE_NOMEM;
    }
    return RESATTN_IMAGE_OK;
}
