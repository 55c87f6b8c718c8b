/*
 * Test helper: build model files in memory. A ut_model is a list of named float tensors
 * plus a resattn.config string; ut_serialize writes it as safetensors, with per-tensor
 * overrides (dtype string, data offsets) so tests can craft every kind of bad file.
 * ut_build_resnet fills a complete, valid Pattern-1 network with random weights and
 * non-trivial BatchNorm statistics.
 */
#ifndef RESATTN_TEST_UTIL_ST_H
#define RESATTN_TEST_UTIL_ST_H

#include <stddef.h>
#include <stdint.h>

typedef struct ut_tensor {
    char name[128];
    char dtype[16]; /* written as is; element size from the dtype name (F32 default) */
    int ndim;
    int64_t shape[4];
    size_t count;
    float *data;
    int override_offsets; /* write begin/end below instead of the real offsets */
    int64_t begin, end;
} ut_tensor;

typedef struct ut_model {
    ut_tensor *t;
    int n, cap;
    char *config; /* NULL: no __metadata__ */
    uint32_t rng;
} ut_model;

void ut_model_init(ut_model *m, const char *config, uint32_t seed);
void ut_model_free(ut_model *m);
/* Add a tensor of random values in [-scale, scale]; returns it. */
ut_tensor *ut_add(ut_model *m, const char *name, int ndim, const int64_t *shape, float scale);
ut_tensor *ut_find(ut_model *m, const char *name);
int ut_remove(ut_model *m, const char *name);
void ut_set_config(ut_model *m, const char *config);
/* The safetensors bytes (malloc'ed). */
unsigned char *ut_serialize(const ut_model *m, size_t *len);

/* A resnet per the contract: widths[s] = planes of stage s (bottleneck output 4x). */
void ut_build_resnet(ut_model *m, const char *block, const char *stem, const char *attention,
                     int nstages, const int *layers, const int *widths, int in_c, int h, int w,
                     int classes);

unsigned char *ut_read_file(const char *path, size_t *len);
int ut_write_file(const char *path, const void *buf, size_t len);
/* mkdir -p: path and every missing parent (mode 0755); errors are left to later opens. */
void ut_mkdirs(const char *path);
/* rm -r: path and everything below it, links not followed. */
void ut_rm_tree(const char *path);
/* A self-signed certificate for 127.0.0.1 (openssl, valid one day) as dir/cert.pem and
 * dir/key.pem; their paths in cert[len] and key[len]. Returns 0, or -1 when openssl failed. */
int ut_make_cert(const char *dir, char *cert, char *key, size_t len);

#endif
