/*
 * Pictures of attention masks, encoded as PNG (libpng) into memory or a file.
 *
 * - Heatmap: a spatial mask [H, W] (CBAM) or a coordinate mask (the outer product of the
 *   channel-averaged a_h [H] and a_w [W]) upsampled bilinearly to the picture size,
 *   coloured with viridis on an absolute 0..1 scale (so a dead mask ≈ 0.5 looks uniformly
 *   teal, and two blocks compare directly) and alpha-blended over the input picture.
 * - Bars: a channel mask [C] as one bar per channel, height and colour by value, with
 *   faint guide lines at 0.1 and 0.9.
 * The base picture is the model input itself (min-max scaled to 0..255), so the heatmap
 * is aligned with exactly what the network saw. All images are RGB8 [h, w, 3].
 */
#ifndef RESATTN_HEATMAP_H
#define RESATTN_HEATMAP_H

#include "maps/mask_summary.h"
#include <resattn/resattn.h>
#include <stddef.h>

/* An 8-bit picture [h, w, channels], channels 1 (gray) or 3 (RGB). */
typedef struct resattn_picture {
    int w, h, channels;
    unsigned char *px; /* owned when obtained from resattn_picture_* functions */
} resattn_picture;

/* Picture of a model input tensor chw [c, h, w]: min-max scaled over the whole tensor;
 * gray for c != 3 (channels averaged), RGB for c == 3. Caller frees with
 * resattn_picture_free. */
resattn_status resattn_picture_from_tensor(const float *chw, int c, int h, int w,
                                           resattn_picture **out, char *err, size_t err_len);
void resattn_picture_free(resattn_picture *p);

/* Viridis colour of v (clamped to 0..1) into rgb[3]. */
void resattn_colormap(float v, unsigned char rgb[3]);

/* Bilinear resize (pixel centres, as PyTorch align_corners=False) of a float map
 * [ih, iw] to [oh, ow]. */
void resattn_resize_bilinear(const float *in, int ih, int iw, float *out, int oh, int ow);

/* The channel-averaged outer product of a coordinate mask: out[y, x] = mean_c a_h[c, y] *
 * mean_c a_w[c, x]; a_h [c, h], a_w [c, w], out [h, w]. */
void resattn_coord_to_spatial(const float *a_h, const float *a_w, int c, int h, int w, float *out);

/* Heatmap of mask [mh, mw] over base, rendered at [oh, ow] into rgb [oh, ow, 3];
 * alpha is the weight of the colour (0..1). */
resattn_status resattn_heatmap_render(const float *mask, int mh, int mw,
                                      const resattn_picture *base, int ow, int oh, float alpha,
                                      unsigned char *rgb, char *err, size_t err_len);

/* Width of the bar strip of a channel mask with c channels: c * bar width, where the bar
 * is as wide as fits in about 512 pixels (1 to 8 pixels). */
int resattn_bars_width(int c);
/* Bars of mask [c] into rgb [height, resattn_bars_width(c), 3]. */
resattn_status resattn_bars_render(const float *mask, int c, int height, unsigned char *rgb,
                                   char *err, size_t err_len);

/* PNG of rgb [h, w, 3]: a new malloc'ed buffer (*png, *len) the caller frees. */
resattn_status resattn_png_encode(const unsigned char *rgb, int w, int h, unsigned char **png,
                                  size_t *len, char *err, size_t err_len);
resattn_status resattn_png_write_file(const char *path, const unsigned char *rgb, int w, int h,
                                      char *err, size_t err_len);

/* ---- Every picture of one image's masks ------------------------------------------------- */

typedef struct resattn_attn_picture {
    int block;              /* block index */
    const char *block_name; /* borrowed from the mask set */
    const char *kind;       /* "channel" (bars), "spatial" or "coord" (heatmaps) */
    int width, height;
    unsigned char *png; /* owned */
    size_t png_len;
} resattn_attn_picture;

typedef struct resattn_attn_pictures {
    int count;
    resattn_attn_picture *items; /* [count], in network order */
} resattn_attn_pictures;

/*
 * One picture per block and kind for image `image` of set: channel masks → bars
 * (height bar_height), spatial masks → heatmaps, a coord_h/coord_w pair → one "coord"
 * heatmap; heatmaps are rendered over base at [oh, ow]. The pictures borrow block names
 * from set, which must outlive them.
 */
resattn_status resattn_attn_pictures_render(const resattn_mask_set *set, int image,
                                            const resattn_picture *base, int ow, int oh,
                                            int bar_height, resattn_attn_pictures **out, char *err,
                                            size_t err_len);
void resattn_attn_pictures_free(resattn_attn_pictures *p);

/* Write each picture to dir/<prefix><block>_<kind>.png (prefix may be NULL); *written
 * (may be NULL) counts the files written. */
resattn_status resattn_attn_pictures_write_dir(const resattn_attn_pictures *p, const char *dir,
                                               const char *prefix, int *written, char *err,
                                               size_t err_len);

/* Sizes used by the server and `resattn predict`: heatmaps at the input size scaled up to
 * a longer side of at least 224 pixels, bar strips 64 pixels high. */
#define RESATTN_HEATMAP_MIN_SIDE 224
#define RESATTN_BARS_HEIGHT 64

/* Pictures of image `image` of set over the model input chw [c, h, w] of that image, at
 * the sizes above: picture_from_tensor + display_size + attn_pictures_render. */
resattn_status resattn_attn_pictures_for_input(const resattn_mask_set *set, int image,
                                               const float *chw, int c, int h, int w,
                                               resattn_attn_pictures **out, char *err,
                                               size_t err_len);

/* Everything `resattn predict --attention-dir` needs for image `image` of the context's
 * last forward pass (capture on), whose input is chw [C, H, W] of the model: copy its
 * masks, render them and write dir/<prefix><block>_<kind>.png. *written may be NULL. */
resattn_status resattn_attention_write_dir(const resattn_model *model, const resattn_ctx *ctx,
                                           int image, const float *chw, const char *dir,
                                           const char *prefix, int *written, char *err,
                                           size_t err_len);

/* resattn_mask_summary_json with, when chw is not NULL, each block's pictures added as
 * "images": {"channel": "<base64 PNG>", "spatial" | "coord": "<base64 PNG>"}.
 * Returns a new reference, or NULL with err filled. */
json_t *resattn_attention_json(const resattn_mask_set *set, int image, const float *chw, int c,
                               int h, int w, char *err, size_t err_len);

/* Display size of a heatmap for an input of [h, w]: scaled by the smallest integer that
 * makes the longer side at least min_side (28x28 with 224 gives 224x224). */
void resattn_heatmap_display_size(int h, int w, int min_side, int *oh, int *ow);

#endif
