/*
 * Decoding PNG (libpng) and JPEG (libjpeg-turbo) files held in memory into 8-bit pixels.
 * The result is gray [h, w] or RGB [h, w, 3], row-major; alpha is dropped (not composited)
 * and palettes are expanded, as PIL's convert("RGB") does; CMYK and YCCK JPEGs become RGB
 * as PIL's convert("RGB") makes them (PIL reads them as Adobe's inverted CMYK). 16-bit PNG samples
 * keep their high byte (as PIL does for RGB). The width and height are read from the header and
 * checked against a pixel-count limit before any pixel memory is allocated, so a
 * decompression bomb costs nothing. Every failure returns a status and a message naming
 * what is wrong (truncated, corrupt, unsupported, zero-sized, too large).
 */
#ifndef RESATTN_IMAGE_H
#define RESATTN_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Default most pixels (width x height) a decoded image may have: 40 megapixels. */
#define RESATTN_IMAGE_MAX_PIXELS 40000000LL

typedef enum resattn_image_status {
    RESATTN_IMAGE_OK = 0,
    RESATTN_IMAGE_UNSUPPORTED, /* neither PNG nor JPEG, or an unsupported variant */
    RESATTN_IMAGE_CORRUPT,     /* truncated, corrupt or zero-sized */
    RESATTN_IMAGE_TOO_LARGE,   /* more pixels than the limit */
    RESATTN_IMAGE_NOMEM,
} resattn_image_status;

typedef enum resattn_image_format {
    RESATTN_IMAGE_FORMAT_UNKNOWN = 0,
    RESATTN_IMAGE_FORMAT_PNG,
    RESATTN_IMAGE_FORMAT_JPEG,
} resattn_image_format;

/* A decoded image: channels 1 (gray) or 3 (RGB); pixels [height, width, channels]. */
typedef struct resattn_image {
    int width, height, channels;
    uint8_t *pixels; /* malloc'ed, owned */
} resattn_image;

/* The format from the first bytes (magic numbers), or UNKNOWN. */
resattn_image_format resattn_image_sniff(const void *data, size_t len);

/*
 * Decode a whole PNG or JPEG file from memory. max_pixels <= 0 means
 * RESATTN_IMAGE_MAX_PIXELS. On failure *out is left empty and err names the problem.
 */
resattn_image_status resattn_image_decode(const void *data, size_t len, long long max_pixels,
                                          resattn_image *out, char *err, size_t err_len);

/* Free the pixels (NULL and empty images are accepted). */
void resattn_image_release(resattn_image *img);

/* HTTP status for a decoding failure: 415 unsupported, 413 too large, 422 corrupt, 500. */
int resattn_image_http_status(resattn_image_status s);

#endif
