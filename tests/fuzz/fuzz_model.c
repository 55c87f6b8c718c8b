/*
 * libFuzzer harness for model loading from untrusted bytes (resattn_model_load_buffer):
 * the safetensors header (length prefix, JSON, dtypes, shapes, offsets), the
 * resattn.config metadata and the checks of tensor names and shapes against it.
 * Seeds: tests/fuzz/corpus_model/ (small fixtures; -max_len must cover them).
 */
#include <resattn/resattn.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    resattn_model *m = NULL;
    char err[256];
    if (resattn_model_load_buffer(data, size, &m, err, sizeof err) == RESATTN_OK)
        resattn_model_free(m);
    return 0;
}
