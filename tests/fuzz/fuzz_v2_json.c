/*
 * libFuzzer harness for the v2 (Open Inference Protocol) JSON request body:
 * resattn_v2_parse with Content-Type application/json and no
 * Inference-Header-Content-Length (header_len = -1). The whole input is the body.
 * A request that parses is answered (fuzz_v2_answer). Seeds: tests/fuzz/corpus_v2_json/.
 * Any non-zero status is a normal rejection; only
 * sanitizer reports and crashes count.
 */
#include "fuzz_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const resattn_model_info *info = fuzz_model_info();
    resattn_infer_request req;
    char err[RESATTN_PROTO_ERR_LEN];
    if (resattn_v2_parse("application/json", data, size, -1, info, &fuzz_limits, &req, err,
                         sizeof err) == 0) {
        fuzz_v2_answer(&req, info);
        resattn_infer_request_release(&req);
    }
    return 0;
}
