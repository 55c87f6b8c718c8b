/*
 * libFuzzer harness for the TensorFlow Serving :predict body (resattn_tfs_parse,
 * "instances" row form and "inputs" columnar form). The whole input is the body.
 * Seeds: tests/fuzz/corpus_tfs/.
 */
#include "fuzz_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const resattn_model_info *info = fuzz_model_info();
    resattn_infer_request req;
    char err[RESATTN_PROTO_ERR_LEN];
    if (resattn_tfs_parse(data, size, info, &fuzz_limits, &req, err, sizeof err) == 0)
        resattn_infer_request_release(&req);
    return 0;
}
