/*
 * resattn — inference for residual CNNs with attention inside the residual branch.
 *
 * Every block computes f = F(x), a = A(f), y = relu(s + a ⊙ f), where s is x or its
 * downsample and A is SE, ECA, CBAM, coordinate attention or nothing.
 *
 * Usage:
 *
 *     char err[RESATTN_ERR_LEN];
 *     resattn_model *m = NULL;
 *     if (resattn_model_load_file("model.safetensors", &m, err, sizeof err) != RESATTN_OK) {
 *         fprintf(stderr, "%s\n", err);
 *         return 1;
 *     }
 *     // or, BF16 products where the CPU has AMX or AVX512-BF16 (FP32 elsewhere):
 *     // resattn_model_options o = {.precision = RESATTN_PRECISION_BF16};
 *     // resattn_model_load_file_opts("model.safetensors", &o, &m, err, sizeof err);
 *     const resattn_model_info *info = resattn_model_get_info(m);
 *     resattn_ctx *ctx = NULL;
 *     resattn_ctx_new(m, 8, &ctx, err, sizeof err);        // workspace for up to 8 images
 *     // input: float32 [n, C, H, W] row-major; logits: float32 [n, num_classes]
 *     resattn_forward(ctx, input, n, logits, err, sizeof err);
 *     resattn_ctx_free(ctx);
 *     resattn_model_free(m);
 *
 * Ownership: whoever calls *_load / *_new calls the matching *_free (NULL is accepted).
 * Threads: a loaded model is immutable and may be shared by any number of threads; a
 * context belongs to one thread at a time. The forward pass takes no lock and allocates
 * nothing.
 */
#ifndef RESATTN_RESATTN_H
#define RESATTN_RESATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RESATTN_ERR_LEN 256
#define RESATTN_MAX_STAGES 6

typedef enum resattn_status {
    RESATTN_OK = 0,
    RESATTN_ERR_IO,               /* file could not be opened or read */
    RESATTN_ERR_FORMAT,           /* not a valid safetensors file (header, offsets, dtype) */
    RESATTN_ERR_CONFIG,           /* resattn.config missing, invalid JSON or invalid value */
    RESATTN_ERR_TENSOR,           /* tensor missing, unexpected, or with a contradicting shape */
    RESATTN_ERR_INVALID_ARGUMENT, /* bad argument to an API call (e.g. batch too large) */
    RESATTN_ERR_NOMEM,            /* allocation failed */
} resattn_status;

typedef enum resattn_block_kind {
    RESATTN_BLOCK_BASIC = 0,
    RESATTN_BLOCK_BOTTLENECK,
} resattn_block_kind;

typedef enum resattn_stem_kind {
    RESATTN_STEM_IMAGENET = 0, /* conv 7x7/2 pad 3, bn, relu, maxpool 3x3/2 pad 1 */
    RESATTN_STEM_CIFAR,        /* conv 3x3/1 pad 1, bn, relu */
} resattn_stem_kind;

typedef enum resattn_attention_kind {
    RESATTN_ATTENTION_NONE = 0,
    RESATTN_ATTENTION_SE,
    RESATTN_ATTENTION_ECA,
    RESATTN_ATTENTION_CBAM,
    RESATTN_ATTENTION_CA,
} resattn_attention_kind;

/* The arithmetic of convolutions and the classifier. */
typedef enum resattn_precision {
    RESATTN_PRECISION_FP32 = 0, /* FP32 throughout (the default) */
    RESATTN_PRECISION_BF16,     /* BF16 weights and BF16-rounded activations in the products,
                                   FP32 sums; BatchNorm folding, attention, the residual tail
                                   and softmax stay FP32 */
} resattn_precision;

typedef struct resattn_model resattn_model;
typedef struct resattn_ctx resattn_ctx;

/* What a loaded model is; owned by the model, valid until resattn_model_free. */
typedef struct resattn_model_info {
    const char *name; /* config "name", or NULL */
    resattn_block_kind block;
    resattn_stem_kind stem;
    resattn_attention_kind attention;
    int num_stages;
    int layers[RESATTN_MAX_STAGES]; /* blocks per stage */
    int num_classes;
    int in_channels, in_height, in_width;
    const char *const *labels;   /* num_classes names, or NULL when the config has none */
    const char *preprocess_json; /* the config's "preprocess" object as JSON text, or NULL */
    const char *config_json;     /* the whole resattn.config string */
    size_t num_params;           /* PyTorch's sum(p.numel() for p in model.parameters()):
                                    the stored weights and biases, before BatchNorm folding */
    size_t num_bn_stats;         /* BatchNorm running_mean + running_var entries (buffers) */
    double flops_per_image;      /* multiply-adds x 2 of one forward pass of one image */
    int num_blocks;              /* residual blocks in the network */
    resattn_precision precision_requested;
    resattn_precision precision; /* effective: BF16 only when requested and this CPU has AMX-BF16
                                    or AVX512-BF16, else FP32 */
    const char *kernel_path;     /* what computes the products: "amx", "avx512bf16" or "fp32" */
} resattn_model_info;

/* How to load a model; zero-initialised (or a NULL pointer) means the defaults. */
typedef struct resattn_model_options {
    resattn_precision precision; /* requested precision (resattn_model_info says what runs) */
} resattn_model_options;

/* Load a model from a .safetensors file (read whole; the file may be closed afterwards).
 * Error messages name the file ("not a safetensors file: PATH ...", "PATH: tensor ..."). */
resattn_status resattn_model_load_file(const char *path, resattn_model **out, char *err,
                                       size_t err_len);
/* Load from memory; the buffer is copied from as needed and not kept. */
resattn_status resattn_model_load_buffer(const void *data, size_t len, resattn_model **out,
                                         char *err, size_t err_len);
/* The same with options (opts may be NULL): e.g. {.precision = RESATTN_PRECISION_BF16}. */
resattn_status resattn_model_load_file_opts(const char *path, const resattn_model_options *opts,
                                            resattn_model **out, char *err, size_t err_len);
resattn_status resattn_model_load_buffer_opts(const void *data, size_t len,
                                              const resattn_model_options *opts,
                                              resattn_model **out, char *err, size_t err_len);
void resattn_model_free(resattn_model *model);
const resattn_model_info *resattn_model_get_info(const resattn_model *model);

/* Name of residual block i (0 <= i < num_blocks), e.g. "layer2.1". */
const char *resattn_model_block_name(const resattn_model *model, int i);

/* An execution context: the workspace for batches of up to max_batch images. */
resattn_status resattn_ctx_new(const resattn_model *model, int max_batch, resattn_ctx **out,
                               char *err, size_t err_len);
void resattn_ctx_free(resattn_ctx *ctx);
/* Bytes of workspace this context holds. */
size_t resattn_ctx_workspace_bytes(const resattn_ctx *ctx);

/* input: float32 [n, C, H, W]; logits: float32 [n, num_classes]. 1 <= n <= max_batch. */
resattn_status resattn_forward(resattn_ctx *ctx, const float *input, int n, float *logits,
                               char *err, size_t err_len);

/* ---- Attention masks (opt-in; costs nothing when off) ---------------------------------- */

typedef enum resattn_mask_kind {
    RESATTN_MASK_CHANNEL = 0, /* [n, C]        (SE, ECA, CBAM channel part) */
    RESATTN_MASK_SPATIAL,     /* [n, H, W]     (CBAM spatial part) */
    RESATTN_MASK_COORD_H,     /* [n, C, H]     (coordinate attention, along height) */
    RESATTN_MASK_COORD_W,     /* [n, C, W]     (coordinate attention, along width) */
} resattn_mask_kind;

typedef struct resattn_mask {
    int block; /* block index; resattn_model_block_name gives its name */
    resattn_mask_kind kind;
    int c, h, w;       /* per-image extents; unused ones are 1 */
    const float *data; /* [n, ...] for the last forward pass; owned by the context */
} resattn_mask;

/* Keep every block's masks from the following forward passes (on != 0) or not. */
void resattn_ctx_capture_masks(resattn_ctx *ctx, int on);
/* Number of masks kept by the last forward pass (0 when capture is off or attention none). */
int resattn_ctx_mask_count(const resattn_ctx *ctx);
/* Mask i of the last forward pass; NULL when out of range. */
const resattn_mask *resattn_ctx_mask(const resattn_ctx *ctx, int i);

/* ---- Threads -------------------------------------------------------------------------- */

/*
 * Threads one forward call may use (process-wide). With 2 or more: a batch of 2+ images is
 * split over two threads; a single image has its layers split over two threads (on CPUs
 * with AVX-512F, where resattn's packed GEMM computes the convolutions) or OpenBLAS uses
 * n threads inside each GEMM (elsewhere). Before any call: OpenBLAS's own setting.
 */
void resattn_set_blas_threads(int n);
int resattn_get_blas_threads(void);
/* OpenBLAS core name and parallel mode (0 serial, 1 pthreads, 2 OpenMP), for metrics. */
const char *resattn_blas_corename(void);
int resattn_blas_parallel(void);
/* The compute paths this process takes, for metrics and logs (decided at first use by the CPU
 * and the RESATTN_GEMM / RESATTN_WINOGRAD variables): the convolution GEMM, "avx512_packed"
 * (resattn's packed AVX-512 GEMM; OpenBLAS is then not called in a forward pass) or
 * "openblas"; the Winograd transforms, "avx512", "generic" (portable C) or "off". */
const char *resattn_gemm_path(void);
const char *resattn_winograd_path(void);

/* "fp32" or "bf16". */
const char *resattn_precision_name(resattn_precision p);
/* "fp32" or "bf16" (any case) -> *out and 0; anything else -> -1. */
int resattn_precision_parse(const char *s, resattn_precision *out);

const char *resattn_status_name(resattn_status s);
/* The library version: RESATTN_VERSION, the one place it is written. */
#define RESATTN_VERSION "0.1.0"
const char *resattn_version(void);

#ifdef __cplusplus
}
#endif
#endif
