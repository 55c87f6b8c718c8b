/*
 * libFuzzer driver for the untrusted-input side of images: the first byte picks the target,
 *   0: resattn_image_decode + the preprocessing pipeline (PNG/JPEG bytes);
 *   1: resattn_multipart_parse (boundary "XyZ");
 *   2: resattn_image_api_parse as /predict, 3: as v2 (content type from the second byte);
 *   4: resattn_base64_decode; 5: as 3 with the binary extension (the next two bytes, little-
 *   endian, are the Inference-Header-Content-Length).
 * Build and run (see tests/fuzz/README.md):
 *   make BUILD=build-fuzz fuzz && build-tests/fuzz/fuzz_image -max_len=65536 tests/fuzz/corpus
 * The pixel limit is lowered to 1 megapixel so the fuzzer explores parsers, not memory.
 */
#include "data/base64.h"
#include "data/image.h"
#include "protocol/image_api.h"
#include "protocol/multipart.h"
#include "data/preprocess.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const labels[3] = {"a", "b", "c"};

static const char *const types[] = {"multipart/form-data; boundary=XyZ", "image/png",
                                    "application/json", "application/octet-stream", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    int target = data[0] % 6;
    const char *ct = types[data[1] % 5];
    data += 2;
    size -= 2;
    long long header_len = -1;
    if (target == 5) { /* v2 with the binary extension: 2 bytes of JSON header length */
        if (size < 2)
            return 0;
        header_len = (long long)(data[0] | data[1] << 8);
        data += 2;
        size -= 2;
        target = 3;
    }
    char err[256];
    if (target == 0) {
        resattn_preprocess p;
        if (resattn_preprocess_parse("{\"color\":\"rgb\",\"resize\":\"shorter\",\"resize_size\":9,"
                                     "\"invert\":\"auto\"}",
                                     3, 7, 8, &p, err, sizeof err))
            abort();
        float out[3 * 7 * 8];
        resattn_preprocess_bytes(&p, data, size, 1 << 20, out, err, sizeof err);
    } else if (target == 1) {
        resattn_multipart_part parts[8];
        int n;
        resattn_multipart_parse(data, size, "XyZ", parts, 8, &n, err, sizeof err);
    } else if (target == 4) {
        unsigned char *out = malloc(resattn_base64_decoded_max(size));
        size_t n;
        resattn_base64_decode((const char *)data, size, out, &n, err, sizeof err);
        free(out);
    } else {
        resattn_model_info m;
        memset(&m, 0, sizeof m);
        m.in_channels = 1;
        m.in_height = 5;
        m.in_width = 6;
        m.num_classes = 3;
        m.labels = labels;
        m.preprocess_json = "{\"color\":\"gray\",\"invert\":\"auto\"}";
        resattn_parse_limits lim = {.max_batch = 4, .max_json_depth = 64};
        resattn_infer_request r;
        int st = resattn_image_api_parse(target == 2 ? RESATTN_PROTO_PREDICT : RESATTN_PROTO_V2, ct,
                                         data, size, header_len, -1, 1 << 20, &m, &lim, &r, err,
                                         sizeof err);
        if (!st) {
            float logits[4 * 3] = {0};
            resattn_response_body b;
            if (resattn_image_api_owns(&r)) /* /predict; v2 images get the v2 answer */
                resattn_image_api_encode(&r, "m", &m, logits, r.n, &b);
            else
                resattn_v2_encode(&r, "m", &m, logits, r.n, &b);
            resattn_response_body_release(&b);
        }
        resattn_infer_request_release(&r);
    }
    return 0;
}
