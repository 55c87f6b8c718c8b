/*
 * PNG and JPEG decoding from memory (see image.h). Both libraries report fatal errors
 * through a callback that must not return, so each decoder sets a jump point with setjmp;
 * the error callback formats the library's message into our buffer and longjmps back,
 * where everything allocated so far is freed. Pointers assigned after setjmp and used
 * after the jump are volatile. The header is read first and its dimensions are checked
 * against the pixel limit before the pixel buffer is allocated.
 */
#include "data/image.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* Most progressive-JPEG scans accepted: each scan re-reads the whole coefficient buffer,
 * so thousands of tiny scans make a small file cost minutes of CPU. */
#define MAX_JPEG_SCANS 400
/* Most memory libjpeg may use for its own buffers (coefficients of progressive files). */
#define MAX_JPEG_MEMORY (512L << 20)

resattn_image_format resattn_image_sniff(const void *data, size_t len) {
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *p = data;
    if (len >= 8 && !memcmp(p, png_magic, 8))
        return RESATTN_IMAGE_FORMAT_PNG;
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return RESATTN_IMAGE_FORMAT_JPEG;
    return RESATTN_IMAGE_FORMAT_UNKNOWN;
}

void resattn_image_release(resattn_image *img) {
    if (!img)
        return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

int resattn_image_http_status(resattn_image_status s) {
    switch (s) {
    case RESATTN_IMAGE_OK:
        return 0;
    case RESATTN_IMAGE_UNSUPPORTED:
        return 415;
    case RESATTN_IMAGE_TOO_LARGE:
        return 413;
    case RESATTN_IMAGE_CORRUPT:
        return 422;
    default:
        return 500;
    }
}

/* Refuse zero-sized images and images over the pixel limit (before allocating). */
static resattn_image_status check_size(const char *fmt, long long w, long long h,
                                       long long max_pixels, char *err, size_t err_len) {
    if (w <= 0 || h <= 0) {
        snprintf(err, err_len, "%s image has zero size (%lldx%lld)", fmt, w, h);
        return RESATTN_IMAGE_CORRUPT;
    }
    if (w * h > max_pixels) {
        snprintf(err, err_len, "%s image of %lldx%lld = %lld pixels exceeds the limit of %lld", fmt,
                 w, h, w * h, max_pixels);
        return RESATTN_IMAGE_TOO_LARGE;
    }
    return RESATTN_IMAGE_OK;
}

/* ---- PNG ------------------------------------------------------------------------------ */

typedef struct png_src {
    const unsigned char *data;
    size_t len, pos;
    jmp_buf jmp;
    char *err;
    size_t err_len;
    resattn_image_status status; /* what the jump means */
    char warning[128];           /* the last warning, often the reason for the error */
} png_src;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    if (s->warning[0])
        snprintf(s->err, s->err_len, "corrupt PNG: %s (%s)", msg, s->warning);
    else
        snprintf(s->err, s->err_len, "corrupt PNG: %s", msg);
    s->status = RESATTN_IMAGE_CORRUPT;
    longjmp(s->jmp, 1);
}

/* Ancillary problems (bad CRC in a text chunk, ...) do not stop decoding; the last one is
 * kept for the message of a following error. */
static void png_on_warning(png_structp png, png_const_charp msg) {
    png_src *s = png_get_error_ptr(png);
    snprintf(s->warning, sizeof s->warning, "%s", msg);
}

static void png_on_read(png_structp png, png_bytep out, png_size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        snprintf(s->err, s->err_len, "truncated PNG: needed %zu more bytes at offset %zu of %zu",
                 (size_t)n, s->pos, s->len);
        s->status = RESATTN_IMAGE_CORRUPT;
        longjmp(s->jmp, 1);
    }
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static resattn_image_status decode_png(const unsigned char *data, size_t len, long long max_pixels,
                                       resattn_image *out, char *err, size_t err_len) {
    png_src src = {.data = data, .len = len, .err = err, .err_len = err_len};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        snprintf(err, err_len, "out of memory creating the PNG decoder");
        return RESATTN_IMAGE_NOMEM;
    }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(src.jmp)) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return src.status;
    }
    png_set_read_fn(png, &src, png_on_read);
    /* libpng's own caps: 1M per side by default; ancillary chunks at most 8 MB */
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    resattn_image_status st = check_size("PNG", w, h, max_pixels, err, err_len);
    if (st) {
        png_destroy_read_struct(&png, &info, NULL);
        return st;
    }
    int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16)
        png_set_strip_16(png); /* keep the high byte */
    if (type == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png); /* 0..2^d-1 scaled to 0..255 */
    if ((type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png); /* after any tRNS expansion into alpha */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    if ((ch != 1 && ch != 3) || png_get_bit_depth(png, info) != 8) {
        snprintf(err, err_len, "unsupported PNG variant (color type %d, bit depth %d)", type,
                 depth);
        png_destroy_read_struct(&png, &info, NULL);
        return RESATTN_IMAGE_UNSUPPORTED;
    }
    size_t stride = (size_t)w * (size_t)ch;
    pixels = malloc(stride * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) {
        snprintf(err, err_len, "out of memory for a %ux%u PNG image", (unsigned)w, (unsigned)h);
        src.status = RESATTN_IMAGE_NOMEM;
        longjmp(src.jmp, 1);
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = pixels + y * stride;
    png_read_image(png, rows);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->width = (int)w;
    out->height = (int)h;
    out->channels = ch;
    out->pixels = pixels;
    return RESATTN_IMAGE_OK;
}

/* ---- JPEG ----------------------------------------------------------------------------- */

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands back a pointer to it */
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    char *err;
    size_t err_len;
    resattn_image_status status;
} jpeg_err;

static void jpeg_fail(j_common_ptr cinfo, const char *what, resattn_image_status status) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    snprintf(e->err, e->err_len, "%s JPEG: %s", what, msg);
    e->status = status;
    longjmp(e->jmp, 1);
}

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_fail(cinfo, "corrupt", RESATTN_IMAGE_CORRUPT);
}

/* Warnings: a premature end of file is an error (as in PIL); the rest are tolerated. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        jpeg_fail(cinfo, "truncated", RESATTN_IMAGE_CORRUPT);
}

static void jpeg_on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > MAX_JPEG_SCANS) {
        jpeg_err *e = (jpeg_err *)cinfo->err;
        snprintf(e->err, e->err_len, "JPEG has more than %d scans", MAX_JPEG_SCANS);
        e->status = RESATTN_IMAGE_UNSUPPORTED;
        longjmp(e->jmp, 1);
    }
}

/*
 * One row of CMYK samples as libjpeg gives them (from CMYK or YCCK files) to RGB, as PIL
 * does: PIL reads every 4-channel JPEG as Adobe's inverted CMYK ("CMYK;I": C = 255 - c, ...),
 * then convert("RGB") computes R = (255 - K) - C * (255 - K) / 255 with its rounded
 * MULDIV255. With C = 255 - c and 255 - K = k that is k - (255 - c) * k / 255, per channel.
 */
static void cmyk_to_rgb(const uint8_t *in, unsigned width, uint8_t *out) {
    for (unsigned x = 0; x < width; x++, in += 4, out += 3) {
        int nk = in[3];
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * nk + 128;
            out[c] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

static resattn_image_status decode_jpeg(const unsigned char *data, size_t len, long long max_pixels,
                                        resattn_image *out, char *err, size_t err_len) {
    struct jpeg_decompress_struct cinfo;
    jpeg_err e = {.err = err, .err_len = err_len};
    cinfo.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_on_error;
    e.mgr.emit_message = jpeg_on_message;
    uint8_t *volatile pixels = NULL, *volatile cmyk_row = NULL;
    if (setjmp(e.jmp)) {
        free(pixels);
        free(cmyk_row);
        jpeg_destroy_decompress(&cinfo);
        return e.status;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.mem->max_memory_to_use = MAX_JPEG_MEMORY;
    e.progress.progress_monitor = jpeg_on_progress;
    cinfo.progress = &e.progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    resattn_image_status st =
        check_size("JPEG", cinfo.image_width, cinfo.image_height, max_pixels, err, err_len);
    if (st) {
        jpeg_destroy_decompress(&cinfo);
        return st;
    }
    int ch, cmyk = 0;
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
        ch = 1;
    } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
        cinfo.out_color_space = JCS_RGB;
        ch = 3;
    } else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        cinfo.out_color_space = JCS_CMYK; /* libjpeg turns YCCK into CMYK */
        ch = 3, cmyk = 1;
    } else {
        snprintf(err, err_len, "unsupported JPEG colour space %d", (int)cinfo.jpeg_color_space);
        jpeg_destroy_decompress(&cinfo);
        return RESATTN_IMAGE_UNSUPPORTED;
    }
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * (size_t)ch;
    pixels = malloc(stride * cinfo.output_height);
    cmyk_row = cmyk ? malloc((size_t)cinfo.output_width * 4) : NULL;
    if (!pixels || (cmyk && !cmyk_row)) {
        snprintf(err, err_len, "out of memory for a %ux%u JPEG image", cinfo.output_width,
                 cinfo.output_height);
        e.status = RESATTN_IMAGE_NOMEM;
        longjmp(e.jmp, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = pixels + (size_t)cinfo.output_scanline * stride;
        JSAMPROW row = cmyk ? cmyk_row : dst;
        jpeg_read_scanlines(&cinfo, &row, 1);
        if (cmyk)
            cmyk_to_rgb(cmyk_row, cinfo.output_width, dst);
    }
    free(cmyk_row);
    cmyk_row = NULL;
    jpeg_finish_decompress(&cinfo);
    out->width = (int)cinfo.output_width;
    out->height = (int)cinfo.output_height;
    out->channels = ch;
    out->pixels = pixels;
    jpeg_destroy_decompress(&cinfo);
    return RESATTN_IMAGE_OK;
}

resattn_image_status resattn_image_decode(const void *data, size_t len, long long max_pixels,
                                          resattn_image *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    if (max_pixels <= 0)
        max_pixels = RESATTN_IMAGE_MAX_PIXELS;
    if (!data || len == 0) {
        snprintf(err, err_len, "empty image (0 bytes)");
        return RESATTN_IMAGE_CORRUPT;
    }
    switch (resattn_image_sniff(data, len)) {
    case RESATTN_IMAGE_FORMAT_PNG:
        return decode_png(data, len, max_pixels, out, err, err_len);
    case RESATTN_IMAGE_FORMAT_JPEG:
        return decode_jpeg(data, len, max_pixels, out, err, err_len);
    default:
        snprintf(err, err_len, "unsupported image format (not PNG or JPEG; %zu bytes)", len);
        return RESATTN_IMAGE_UNSUPPORTED;
    }
}
