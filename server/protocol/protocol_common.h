/*
 * Helpers shared by the protocol codecs (server/protocol/v2.c, server/protocol/tfs.c): the tensor
 * datatypes of the Open Inference Protocol and their conversion to float32, a growable byte buffer
 * for building answers, JSON answer bodies, float printing that round-trips float32, and softmax.
 */
#ifndef RESATTN_PROTOCOL_COMMON_H
#define RESATTN_PROTOCOL_COMMON_H

#include "protocol/json_scan.h"
#include "protocol/protocol.h"

#include <jansson.h>
#include <stddef.h>

/* One v2 datatype: name, bytes per element in binary form, how JSON elements are read. */
typedef struct resattn_dtype {
    const char *name;
    int size;
    resattn_elem_kind kind;
    double lo, hi; /* RESATTN_ELEM_INT */
    int json_ok;   /* may be sent as JSON numbers (FP16/BF16 are binary only) */
} resattn_dtype;

/* The parsers' error exit: err = the printf-formatted message; returns status. */
int resattn_proto_fail(char *err, size_t err_len, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The datatype called `name`, or NULL. */
const resattn_dtype *resattn_dtype_find(const char *name);

/* The comma-separated list of datatype names, for messages. */
const char *resattn_dtype_names(void);

/*
 * Convert count little-endian elements of type dt at src into dst. Returns 0, or 400 with
 * err naming `what` and the element (non-finite floats unless allowed, BOOL bytes not 0/1).
 * For FP32, dst may be src itself (a tensor used in place is only checked).
 */
int resattn_dtype_decode(const resattn_dtype *dt, const unsigned char *src, size_t count,
                         int allow_nonfinite, float *dst, const char *what, char *err,
                         size_t err_len);

/* Refuse NaN/Inf in data (unless allowed). Returns 0 or 400 naming `what` and the element. */
int resattn_check_finite(const float *x, size_t count, int allow_nonfinite, const char *what,
                         char *err, size_t err_len);

/* A growable byte buffer; on allocation failure `failed` is set and appends do nothing. */
typedef struct resattn_buf {
    char *data;
    size_t len, cap;
    int failed;
} resattn_buf;

void resattn_buf_put(resattn_buf *b, const void *s, size_t n);
void resattn_buf_str(resattn_buf *b, const char *s);
/* s as a JSON string literal (quotes and escapes added); s is valid UTF-8 from jansson. */
void resattn_buf_json_string(resattn_buf *b, const char *s);
/* x as printf's "%.9g" writes it (9 significant digits round-trip a float32), the same bytes,
 * computed in integer arithmetic for magnitudes in [1e-9, 1e12) (8x faster than printf);
 * out has room for 32 bytes. Returns the length. */
int resattn_format_f32(float x, char *out);
/* A JSON array of floats, each printed with 9 significant digits (round-trips float32);
   non-finite values become null (JSON has no NaN). */
void resattn_buf_floats(resattn_buf *b, const float *x, size_t n);

/* probs[n, k] = softmax of each row of logits[n, k] (computed in double). */
void resattn_softmax_rows(const float *logits, int n, int k, float *probs);

/* idx[top] = the indices of the top (1 <= top <= k) largest of v[k], best first; ties by
 * increasing index, NaN after every number. O(k log top): a 1000-class model asked for
 * top_k=1000 costs one sort, not top passes over the classes. */
void resattn_top_indices(const float *v, int k, int top, int *idx);

/*
 * The per-image part of a request: the given shape must be [N, C, H, W] or [C, H, W] with
 * C, H, W the model's and 1 <= N <= max_batch. Returns 0 and *n, or 400 (bad dims),
 * 422 (not the model's image shape) or 413 (N > max_batch) with err naming `what`.
 */
int resattn_check_image_shape(const int64_t *dims, int ndim, const resattn_model_info *model,
                              const resattn_parse_limits *limits, int *n, const char *what,
                              char *err, size_t err_len);

/* "[1,3,32,32]" into s. */
void resattn_format_shape(const int64_t *dims, int ndim, char *s, size_t len);

/* o (stolen; NULL when building it failed) dumped with json_dumps `flags` as an
 * application/json body. Returns 0 or 500 (no value, or no memory to dump it). */
int resattn_json_response(json_t *o, size_t flags, resattn_response_body *out);

/* Logits [n, num_classes] as a NumPy .npy body (application/x-npy). Returns 0 or 500. */
int resattn_npy_response(const float *logits, int n, int num_classes, resattn_response_body *out);

#endif
