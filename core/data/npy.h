/*
 * NumPy .npy files (format versions 1.0, 2.0 and 3.0), the tensor exchange format of
 * `resattn predict` and of the server's application/x-npy body.
 * Reading accepts little-endian float32/float64/float16 and (u)int8/16/32/64 in C order
 * and converts to float32; it never reads outside the buffer and rejects shapes whose
 * element count overflows or disagrees with the data length.
 */
#ifndef RESATTN_NPY_H
#define RESATTN_NPY_H

#include <resattn/resattn.h>
#include <stdint.h>
#include <stdio.h>

#define RESATTN_NPY_MAX_DIMS 8

typedef struct resattn_npy {
    int ndim;
    int64_t shape[RESATTN_NPY_MAX_DIMS];
    size_t count; /* product of shape */
    float *data;  /* [count] float32, owned; freed by resattn_npy_release */
} resattn_npy;

/* Parse a whole .npy file held in memory. On error *out is left empty and err names why. */
resattn_status resattn_npy_parse(const void *buf, size_t len, resattn_npy *out, char *err,
                                 size_t err_len);
void resattn_npy_release(resattn_npy *a);

/* Encode float32 data as a .npy (version 1.0, '<f4', C order) into a new malloc'ed buffer. */
resattn_status resattn_npy_encode(const float *data, int ndim, const int64_t *shape,
                                  unsigned char **out, size_t *out_len);

#endif
