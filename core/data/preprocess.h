/*
 * Image preprocessing from a model's "preprocess" config, reproducing PIL + torchvision:
 *   decode -> colour (gray: PIL's convert("L") luma; rgb: gray replicated; alpha dropped)
 *   -> resize, bilinear with PIL's antialiasing ("direct": to the model's height x width;
 *      "shorter": shorter side to resize_size, then centre crop, as Resize(int)+CenterCrop)
 *   -> x / scale -> invert (x -> 1 - x; "auto": when the mean of the 1-pixel border > 0.5)
 *   -> (x - mean[c]) / std[c]
 * The resize is PIL's fixed-point two-pass algorithm (horizontal, then vertical, rounding to
 * 8 bits in between), so results equal PIL's bit for bit on 8-bit images.
 */
#ifndef RESATTN_PREPROCESS_H
#define RESATTN_PREPROCESS_H

#include "data/image.h"
#include <resattn/resattn.h>

typedef enum resattn_invert {
    RESATTN_INVERT_NO = 0,
    RESATTN_INVERT_YES,
    RESATTN_INVERT_AUTO
} resattn_invert;

typedef struct resattn_preprocess {
    int channels, height, width; /* the model's input; channels 1 = gray, 3 = rgb */
    int resize_shorter;          /* 0 direct, 1 shorter side then centre crop */
    int resize_size;             /* shorter side length for resize_shorter */
    float scale;                 /* divide 8-bit values by this (255 for [0, 1]) */
    resattn_invert invert;
    float mean[3], std[3];
} resattn_preprocess;

/*
 * Build the pipeline from a "preprocess" JSON object (json may be NULL: gray or rgb by the
 * channel count, direct resize, scale 255, no inversion, mean 0, std 1) for an input of
 * channels x height x width. Fails with RESATTN_ERR_CONFIG naming the bad key.
 */
resattn_status resattn_preprocess_parse(const char *json, int channels, int height, int width,
                                        resattn_preprocess *out, char *err, size_t err_len);

/* The same from a loaded model's info. */
resattn_status resattn_preprocess_from_model(const resattn_model_info *info,
                                             resattn_preprocess *out, char *err, size_t err_len);

/* Colour conversion to 1 (PIL "L") or 3 (RGB, gray replicated) channels. 0 or -1 (no memory). */
int resattn_image_to_channels(const resattn_image *in, int channels, resattn_image *out);

/* PIL's Image.resize(..., BILINEAR) on 8-bit pixels, any channel count. 0 or -1. */
int resattn_image_resize_bilinear(const resattn_image *in, int width, int height,
                                  resattn_image *out);

/* Run the pipeline on a decoded image; out: float32 [channels, height, width]. 0 or -1. */
int resattn_preprocess_run(const resattn_preprocess *p, const resattn_image *img, float *out);

/*
 * Decode an encoded PNG/JPEG (see image.h for max_pixels) and run the pipeline into
 * out [channels, height, width]. Returns an image status with err filled.
 */
resattn_image_status resattn_preprocess_bytes(const resattn_preprocess *p, const void *data,
                                              size_t len, long long max_pixels, float *out,
                                              char *err, size_t err_len);

#endif
