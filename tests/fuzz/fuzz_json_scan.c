/*
 * Differential libFuzzer harness for the tensor scanner (server/protocol/json_scan.c): the same
 * bytes through the AVX-512 bulk path and through the portable per-element path must give
 * the same status, message, shape, end and floats (bit for bit). Byte 0 picks the element
 * rule (float32, float32 with non-finite values allowed, UINT8 range, BOOL) and whether the
 * array may be followed by other bytes (the prefix form); the rest is the text. On a CPU
 * without the bulk path both runs take the portable one and only the sanitizers check.
 */
#include "protocol/json_scan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct scan_result {
    int status;
    char err[256];
    resattn_scan_shape shape;
    const char *end;
    float out[4096];
} scan_result;

static void scan(const char *p, size_t n, const resattn_elem_rule *rule, int prefix,
                 scan_result *r) {
    memset(r, 0, sizeof *r);
    r->status = prefix ? resattn_json_scan_tensor_prefix(p, p + n, rule, r->out, 4096, &r->shape,
                                                         &r->end, "data", r->err, sizeof r->err)
                       : resattn_json_scan_tensor(p, p + n, rule, r->out, 4096, &r->shape, "data",
                                                  r->err, sizeof r->err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static scan_result a, b;
    if (size < 1)
        return 0;
    static const resattn_elem_rule rules[4] = {
        {RESATTN_ELEM_FLOAT, 0, 0, "FP32", 0, 0},
        {RESATTN_ELEM_FLOAT, 0, 0, "FP32", 1, 0},
        {RESATTN_ELEM_INT, 0, 255, "UINT8", 0, 0},
        {RESATTN_ELEM_BOOL, 0, 1, "BOOL", 0, 0},
    };
    const resattn_elem_rule *rule = &rules[data[0] & 3];
    int prefix = data[0] >> 2 & 1;
    /* an exact-size copy, so that ASan sees any read past the end */
    char *p = malloc(size - 1 ? size - 1 : 1);
    memcpy(p, data + 1, size - 1);
    resattn_json_scan_force_portable(0);
    scan(p, size - 1, rule, prefix, &a);
    resattn_json_scan_force_portable(1);
    scan(p, size - 1, rule, prefix, &b);
    resattn_json_scan_force_portable(0);
    if (a.status != b.status || strcmp(a.err, b.err) || a.end != b.end ||
        memcmp(&a.shape, &b.shape, sizeof a.shape) ||
        (a.status == 0 && memcmp(a.out, b.out, sizeof(float) * a.shape.count)))
        __builtin_trap(); /* the two paths disagree */
    free(p);
    return 0;
}
