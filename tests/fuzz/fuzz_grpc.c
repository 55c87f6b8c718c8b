/*
 * libFuzzer harness for the gRPC codec (server/protocol/grpc_codec.c): byte 0 picks the
 * target, the rest is the input:
 *   0  a request body: gRPC framing (resattn_grpc_unframe), then as 1;
 *   1  a ModelInferRequest message: protobuf-c unpacking, resattn_grpc_infer_parse, and for a
 *      request that parses its answer (resattn_grpc_infer_encode, raw or typed as asked);
 *   2  the small requests (ModelMetadataRequest / ModelReadyRequest, HealthCheckRequest).
 * Seeds: tests/fuzz/corpus_grpc/ (tests/fuzz/make_grpc_corpus.py).
 */
#include "fuzz_common.h"
#include "protocol/grpc_codec.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void infer(const uint8_t *msg, size_t len) {
    const resattn_model_info *info = fuzz_model_info();
    char err[RESATTN_PROTO_ERR_LEN];
    Inference__ModelInferRequest *m = resattn_grpc_infer_unpack(msg, len, err, sizeof err);
    if (!m)
        return;
    resattn_parse_limits limits = fuzz_limits;
    limits.input_in_body_ok = 1; /* m outlives the request, as in the server */
    resattn_infer_request req;
    int raw = 0;
    if (resattn_grpc_infer_parse(m, info, &limits, 1 << 20, &req, &raw, err, sizeof err) == 0) {
        size_t k = (size_t)info->num_classes, count = (size_t)req.n * k;
        size_t in = (size_t)req.n * (size_t)req.c * (size_t)req.h * (size_t)req.w;
        float *logits = malloc(sizeof *logits * (count ? count : 1));
        for (size_t i = 0; logits && i < count; i++)
            logits[i] = in ? req.input[i % in] : 0;
        resattn_grpc_message out;
        if (logits && resattn_grpc_infer_encode(&req, "m", info, logits, req.n, raw, &out) == 0)
            resattn_grpc_message_release(&out);
        free(logits);
        resattn_infer_request_release(&req);
    }
    resattn_grpc_infer_free(m, msg, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (data[0] % 3 == 0) {
        const unsigned char *msg;
        size_t len;
        char err[RESATTN_PROTO_ERR_LEN];
        if (resattn_grpc_unframe(p, n, 1 << 20, &msg, &len, err, sizeof err) == 0)
            infer(msg, len);
    } else if (data[0] % 3 == 1) {
        infer(p, n);
    } else {
        Inference__ModelMetadataRequest *m = inference__model_metadata_request__unpack(NULL, n, p);
        if (m)
            inference__model_metadata_request__free_unpacked(m, NULL);
        Grpc__Health__V1__HealthCheckRequest *h =
            grpc__health__v1__health_check_request__unpack(NULL, n, p);
        if (h)
            grpc__health__v1__health_check_request__free_unpacked(h, NULL);
    }
    return 0;
}
