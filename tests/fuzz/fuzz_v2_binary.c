/*
 * libFuzzer harness for the v2 binary-data extension framing and the npy body:
 * byte 0 picks the Content-Type (application/json, application/octet-stream,
 * application/x-npy), bytes 1-2 (little-endian) the Inference-Header-Content-Length
 * (0xffff meaning "absent", -1), the rest is the body: a JSON header followed by raw
 * tensor bytes; a request that parses is answered (fuzz_v2_answer).
 * Seeds: tests/fuzz/corpus_v2_binary/.
 */
#include "fuzz_common.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const types[3] = {"application/json", "application/octet-stream",
                                     "application/x-npy"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    const resattn_model_info *info = fuzz_model_info();
    const char *ct = types[data[0] % 3];
    unsigned hl = (unsigned)data[1] | (unsigned)data[2] << 8;
    long long header_len = hl == 0xffff ? -1 : (long long)hl;
    resattn_infer_request req;
    char err[RESATTN_PROTO_ERR_LEN];
    if (resattn_v2_parse(ct, data + 3, size - 3, header_len, info, &fuzz_limits, &req, err,
                         sizeof err) == 0) {
        fuzz_v2_answer(&req, info);
        resattn_infer_request_release(&req);
    }
    return 0;
}
