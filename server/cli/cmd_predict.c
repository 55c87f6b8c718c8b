/*
 * `resattn predict`: run a model on an input tensor and write or print the logits.
 * The input file becomes a float32 [N, C, H, W] tensor in load_input (one place, so other
 * input kinds such as images plug in there); a [C, H, W] array is taken as N = 1.
 * A PNG or JPEG input is decoded and preprocessed per the model's "preprocess" config
 * (core/data/preprocess.c) into [1, C, H, W], and its top-k labels are printed (--top-k, 5).
 * Output: --output Y.npy gets float32 [N, num_classes]; otherwise the logits are printed.
 */
#include "cli/commands.h"
#include "maps/heatmap.h"
#include "data/npy.h"
#include "data/preprocess.h"
#include "protocol/protocol_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Read a whole file into a new buffer. */
static int read_file(const char *path, unsigned char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *nb = realloc(b, cap *= 2);
        if (!nb)
            free(b);
        b = nb;
    }
    int bad = ferror(f) || !b;
    fclose(f);
    if (bad) {
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* A PNG/JPEG file (buf) preprocessed for the model into x [1, C, H, W]. */
static int load_image(const char *path, const unsigned char *buf, size_t len,
                      const resattn_model_info *in, resattn_npy *x) {
    char err[RESATTN_ERR_LEN];
    resattn_preprocess p;
    if (resattn_preprocess_from_model(in, &p, err, sizeof err)) {
        fprintf(stderr, "resattn predict: %s: this model does not take images: %s\n", path, err);
        return 1;
    }
    memset(x, 0, sizeof *x);
    x->ndim = 4;
    x->shape[0] = 1;
    x->shape[1] = in->in_channels;
    x->shape[2] = in->in_height;
    x->shape[3] = in->in_width;
    x->count = (size_t)in->in_channels * in->in_height * in->in_width;
    x->data = malloc(x->count * sizeof(float));
    if (!x->data) {
        fprintf(stderr, "resattn predict: out of memory\n");
        return 1;
    }
    if (resattn_preprocess_bytes(&p, buf, len, 0, x->data, err, sizeof err)) {
        fprintf(stderr, "resattn predict: %s: %s\n", path, err);
        resattn_npy_release(x);
        return 1;
    }
    return 0;
}

/*
 * Turn the --input file into a float32 tensor [N, C, H, W] matching the model's input;
 * returns 0 or prints a one-line error and returns non-zero. *is_image tells PNG/JPEG.
 */
static int load_input(const char *path, const resattn_model_info *in, resattn_npy *x,
                      int *is_image) {
    unsigned char *buf;
    size_t len;
    char err[RESATTN_ERR_LEN];
    if (read_file(path, &buf, &len)) {
        fprintf(stderr, "resattn predict: cannot read input %s\n", path);
        return 1;
    }
    *is_image = resattn_image_sniff(buf, len) != RESATTN_IMAGE_FORMAT_UNKNOWN;
    if (*is_image) {
        int rc = load_image(path, buf, len, in, x);
        free(buf);
        return rc;
    }
    resattn_status s = resattn_npy_parse(buf, len, x, err, sizeof err);
    free(buf);
    if (s) {
        fprintf(stderr, "resattn predict: %s: %s\n", path, err);
        return 1;
    }
    if (x->ndim == 3) { /* one image [C, H, W] */
        memmove(x->shape + 1, x->shape, 3 * sizeof x->shape[0]);
        x->shape[0] = 1;
        x->ndim = 4;
    }
    if (x->ndim != 4 || x->shape[0] < 1 || x->shape[1] != in->in_channels ||
        x->shape[2] != in->in_height || x->shape[3] != in->in_width) {
        fprintf(stderr,
                "resattn predict: %s: input must be float [N, %d, %d, %d] (or [C, H, W]) for "
                "this model\n",
                path, in->in_channels, in->in_height, in->in_width);
        resattn_npy_release(x);
        return 1;
    }
    return 0;
}

static int write_output(const char *path, const float *logits, int64_t n, int64_t k) {
    int64_t shape[2] = {n, k};
    unsigned char *buf;
    size_t len;
    if (resattn_npy_encode(logits, 2, shape, &buf, &len)) {
        fprintf(stderr, "resattn predict: out of memory encoding the output\n");
        return 1;
    }
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(buf, 1, len, f) != len;
    if (f && fclose(f))
        bad = 1;
    free(buf);
    if (bad) {
        fprintf(stderr, "resattn predict: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* With --attention-dir: the pictures of images [first, first + k) of the last forward pass
 * (core/maps/heatmap.h), named <block>_<kind>.png, prefixed img<i>_ when there are several. */
static int write_attention(const resattn_model *m, const resattn_ctx *ctx, const resattn_npy *x,
                           int first, int k, const char *dir, int *written) {
    const resattn_model_info *in = resattn_model_get_info(m);
    size_t img = (size_t)in->in_channels * in->in_height * in->in_width;
    for (int j = 0; j < k; j++) {
        char prefix[32], err[RESATTN_ERR_LEN];
        snprintf(prefix, sizeof prefix, "img%d_", first + j);
        int w = 0;
        if (resattn_attention_write_dir(m, ctx, j, x->data + (size_t)(first + j) * img, dir,
                                        x->shape[0] > 1 ? prefix : NULL, &w, err, sizeof err)) {
            fprintf(stderr, "resattn predict: --attention-dir: %s\n", err);
            return 1;
        }
        *written += w;
    }
    return 0;
}

/* Run the whole batch in chunks of at most max_batch images. */
static int run(const resattn_model *m, const resattn_npy *x, float *logits, const char *attn_dir) {
    const resattn_model_info *in = resattn_model_get_info(m);
    int n = (int)x->shape[0], chunk = n < 16 ? n : 16;
    size_t img = (size_t)in->in_channels * in->in_height * in->in_width;
    char err[RESATTN_ERR_LEN];
    resattn_ctx *ctx = NULL;
    if (resattn_ctx_new(m, chunk, &ctx, err, sizeof err)) {
        fprintf(stderr, "resattn predict: %s\n", err);
        return 1;
    }
    resattn_ctx_capture_masks(ctx, attn_dir != NULL);
    int written = 0;
    for (int i = 0; i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        if (resattn_forward(ctx, x->data + (size_t)i * img, k, logits + (size_t)i * in->num_classes,
                            err, sizeof err)) {
            fprintf(stderr, "resattn predict: %s\n", err);
            resattn_ctx_free(ctx);
            return 1;
        }
        if (attn_dir && write_attention(m, ctx, x, i, k, attn_dir, &written)) {
            resattn_ctx_free(ctx);
            return 1;
        }
    }
    resattn_ctx_free(ctx);
    if (attn_dir)
        fprintf(stderr, "predict: %d attention picture%s in %s\n", written, written == 1 ? "" : "s",
                attn_dir);
    return 0;
}

static void print_logits(const resattn_model_info *in, const float *logits, int n) {
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * in->num_classes;
        int best = 0;
        for (int c = 1; c < in->num_classes; c++)
            best = l[c] > l[best] ? c : best;
        printf("image %d: class %d", i, best);
        if (in->labels)
            printf(" (%s)", in->labels[best]);
        printf(", logits");
        for (int c = 0; c < in->num_classes; c++)
            printf(" %.6g", l[c]);
        printf("\n");
    }
}

/* The top_k labels of one image by softmax probability. */
static void print_top_k(const resattn_model_info *in, const float *logits, int top_k) {
    int k = in->num_classes, top = top_k < k ? top_k : k;
    float *p = malloc(sizeof(float) * (size_t)k);
    int *idx = malloc(sizeof(int) * (size_t)k);
    if (p && idx && top > 0) {
        resattn_softmax_rows(logits, 1, k, p);
        resattn_top_indices(p, k, top, idx);
        for (int i = 0; i < top; i++)
            printf("%d. %s (class %d): %.4f\n", i + 1, in->labels ? in->labels[idx[i]] : "-",
                   idx[i], p[idx[i]]);
    }
    free(idx);
    free(p);
}

static void usage(FILE *f) {
    fprintf(f, "usage: resattn predict [--model M.safetensors|builtin] --input X.npy|X.png|X.jpg\n"
               "                       [--output Y.npy] [--top-k K] [--attention-dir DIR]\n"
               "                       [--precision fp32|bf16]\n\n"
               "Run the model on X (float32 [N, C, H, W] or [C, H, W]). With --output, write\n"
               "the logits as float32 [N, num_classes] .npy and print a summary; without it,\n"
               "print each image's class and logits. A PNG or JPEG image is preprocessed as the\n"
               "model's config says, and its K most likely labels are printed (default 5).\n"
               "Without --model, the built-in model. --attention-dir writes each block's\n"
               "attention as PNGs: <block>_channel.png (one bar per channel), <block>_spatial.png\n"
               "(CBAM) or <block>_coord.png (coordinate attention) heatmaps over the input\n"
               "(prefixed img<i>_ for several images). --precision bf16 multiplies in BF16 where\n"
               "the CPU has AMX-BF16 or AVX512-BF16 (default fp32, or RESATTN_PRECISION).\n");
}

int resattn_cmd_predict(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *output = NULL, *attn_dir = NULL, *precision = NULL;
    int top_k = 5, is_image = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        static const char *const flags[] = {"--model",  "--input", "--attention-dir",
                                            "--output", "--top-k", "--precision"};
        const char **dst[] = {&model, &input, &attn_dir, &output, NULL, &precision};
        const int nflags = (int)(sizeof flags / sizeof flags[0]);
        int f = 0;
        while (f < nflags && strcmp(a, flags[f]))
            f++;
        if (f == nflags) {
            resattn_cli_unknown_option("predict", a);
            return 2;
        }
        const char *v = resattn_cli_value("predict", argc, argv, &i);
        if (!v || (!dst[f] && resattn_cli_int("predict", a, v, 1, 100000, &top_k)))
            return 2;
        if (dst[f])
            *dst[f] = v;
    }
    if (!input) {
        fprintf(stderr, "resattn predict: --input is required\n");
        return 2;
    }
    resattn_precision prec;
    int rc = resattn_cli_precision("predict", precision, &prec);
    if (rc)
        return rc;
    resattn_model *m = NULL;
    rc = resattn_cli_load_model("predict", model, prec, &m, NULL, 0);
    if (rc)
        return rc;
    const resattn_model_info *in = resattn_model_get_info(m);
    if (attn_dir && in->attention == RESATTN_ATTENTION_NONE) {
        fprintf(stderr, "resattn predict: --attention-dir: this model has no attention\n");
        resattn_model_free(m);
        return 2;
    }
    if (attn_dir && mkdir(attn_dir, 0777) && errno != EEXIST) {
        fprintf(stderr, "resattn predict: --attention-dir: cannot create %s: %s\n", attn_dir,
                strerror(errno));
        resattn_model_free(m);
        return 1;
    }
    resattn_npy x;
    if ((rc = load_input(input, in, &x, &is_image))) {
        resattn_model_free(m);
        return rc;
    }
    int n = (int)x.shape[0];
    float *logits = malloc((size_t)n * in->num_classes * sizeof *logits);
    rc = logits ? run(m, &x, logits, attn_dir) : 1;
    if (!rc && output) {
        rc = write_output(output, logits, n, in->num_classes);
        if (!rc)
            printf("predict: %d image%s -> %s [%d, %d]\n", n, n == 1 ? "" : "s", output, n,
                   in->num_classes);
    } else if (!rc && is_image) {
        print_top_k(in, logits, top_k);
    } else if (!rc) {
        print_logits(in, logits, n);
    }
    free(logits);
    resattn_npy_release(&x);
    resattn_model_free(m);
    return rc;
}
