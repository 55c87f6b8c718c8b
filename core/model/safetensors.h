/*
 * Safetensors reader. A file is an 8-byte little-endian header length L, L bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {...}}),
 * then the raw little-endian data section. Parsing validates the whole table up front
 * (lengths, offsets inside the data section, no overlaps, byte sizes matching shapes,
 * known dtypes) so later reads never leave the buffer. The buffer is borrowed, not copied.
 */
#ifndef RESATTN_SAFETENSORS_H
#define RESATTN_SAFETENSORS_H

#include <resattn/resattn.h>
#include <stddef.h>
#include <stdint.h>

#define RESATTN_ST_MAX_DIMS 8

typedef enum resattn_dtype {
    RESATTN_DT_F32 = 0,
    RESATTN_DT_F16,
    RESATTN_DT_BF16,
    RESATTN_DT_F64, /* known but not accepted for weights */
    RESATTN_DT_F8,  /* F8_E4M3 / F8_E5M2: known, not accepted */
    RESATTN_DT_INT, /* any integer or BOOL dtype: ignored by the model loader */
} resattn_dtype;

typedef struct resattn_st_tensor {
    char *name;
    char dtype_name[16];
    resattn_dtype dtype;
    int ndim;
    int64_t shape[RESATTN_ST_MAX_DIMS];
    size_t count;      /* product of shape */
    size_t begin, end; /* byte offsets inside the data section */
    int used;          /* set by the model binder */
} resattn_st_tensor;

typedef struct resattn_st {
    resattn_st_tensor *tensors; /* [num_tensors], sorted by begin offset */
    int num_tensors;
    char *config_json;         /* __metadata__["resattn.config"], or NULL */
    const unsigned char *data; /* start of the data section (borrowed) */
    size_t data_len;
} resattn_st;

/* 1 when buf may be a safetensors file: 9 bytes or more and the header (after the 8-byte
 * length) starts with '{', as the format requires. A PNG, a JPEG, a pickle or text fail this
 * before their first bytes are taken for an absurd header length. */
int resattn_st_looks_like(const void *buf, size_t len);
#define RESATTN_ST_NOT_ST_REASON "no 8-byte header length followed by a JSON header"

/* Parse and validate; on error *st is empty and err names the offending tensor or field. */
resattn_status resattn_st_parse(const void *buf, size_t len, resattn_st *st, char *err,
                                size_t err_len);
void resattn_st_release(resattn_st *st);
/* Tensor by name, or NULL. */
resattn_st_tensor *resattn_st_find(resattn_st *st, const char *name);
/* Convert a float tensor (F32/F16/BF16) to float32 into dst[count]. */
void resattn_st_read_f32(const resattn_st *st, const resattn_st_tensor *t, float *dst);

#endif
