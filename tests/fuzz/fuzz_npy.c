/*
 * libFuzzer harness for the .npy reader (resattn_npy_parse, core/data/npy.h): header
 * dictionary, dtype, shape, version 1/2/3 framing and the data-length check.
 * Seeds: tests/fuzz/corpus_npy/.
 */
#include "data/npy.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    resattn_npy a;
    char err[256];
    if (resattn_npy_parse(data, size, &a, err, sizeof err) == RESATTN_OK)
        resattn_npy_release(&a);
    return 0;
}
