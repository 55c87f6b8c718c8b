/*
 * The gRPC codec of the Open Inference Protocol (inference.GRPCInferenceService, proto in
 * server/grpc/proto/), as pure functions over byte buffers like the HTTP codecs of
 * protocol.h: no sockets, no threads, so it can be fuzzed. It reads gRPC's length-prefixed
 * message frames, turns a ModelInferRequest into a resattn_infer_request and logits into a
 * ModelInferResponse, and builds the other RPCs' answers.
 *
 * It reuses the HTTP v2 codec rather than repeating it: the request's "parameters" and
 * "outputs" are read by resattn_v2_read_options (same names, same rules, same messages);
 * image inputs (BYTES) go through resattn_image_api_parse as a v2 binary-extension body;
 * answers and metadata are made by resattn_v2_encode / resattn_v2_model_metadata_at and
 * re-expressed as protobuf, so a gRPC answer carries exactly what the HTTP one does.
 * Statuses are HTTP codes (400, 413, 422, 500), mapped to gRPC codes by
 * resattn_grpc_code_from_http.
 */
#ifndef RESATTN_GRPC_CODEC_H
#define RESATTN_GRPC_CODEC_H

#include "protocol/protocol.h"
#include <grpc_service.pb-c.h>
#include <health.pb-c.h>
#include <stddef.h>

/* gRPC status codes (the ones resattn answers). */
enum {
    RESATTN_GRPC_OK = 0,
    RESATTN_GRPC_CANCELLED = 1,
    RESATTN_GRPC_UNKNOWN = 2,
    RESATTN_GRPC_INVALID_ARGUMENT = 3,
    RESATTN_GRPC_DEADLINE_EXCEEDED = 4,
    RESATTN_GRPC_NOT_FOUND = 5,
    RESATTN_GRPC_RESOURCE_EXHAUSTED = 8,
    RESATTN_GRPC_UNIMPLEMENTED = 12,
    RESATTN_GRPC_INTERNAL = 13,
    RESATTN_GRPC_UNAVAILABLE = 14,
    RESATTN_GRPC_UNAUTHENTICATED = 16,
};

/* The gRPC code of an HTTP status the server's shared logic decided: 400/406/415/422
 * INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 501
 * UNIMPLEMENTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, other 5xx INTERNAL. */
int resattn_grpc_code_from_http(int status);
/* "INVALID_ARGUMENT" etc. (metrics label). */
const char *resattn_grpc_code_name(int code);
/* msg percent-encoded for grpc-message (bytes outside 0x20..0x7e and '%' as %XX), truncated
 * to out_len - 1. Returns the length written. */
size_t resattn_grpc_percent_encode(const char *msg, char *out, size_t out_len);
/* A grpc-timeout header value ("100m", "5S", ...) in seconds; -1 when malformed. */
double resattn_grpc_timeout_seconds(const char *value);

/* A gRPC message frame: 1 byte compressed flag, 4 bytes big-endian length, the message. */
#define RESATTN_GRPC_PREFIX 5

/* The one message of a unary call's body [len]: 0 with *msg, *msg_len, or a gRPC code with
 * err filled (INVALID_ARGUMENT for a cut-short or trailing-bytes body, or a compressed
 * message: no grpc-encoding is accepted; RESOURCE_EXHAUSTED when it declares more than
 * max_bytes). */
int resattn_grpc_unframe(const unsigned char *body, size_t len, long long max_bytes,
                         const unsigned char **msg, size_t *msg_len, char *err, size_t err_len);

/* An encoded answer: the framed message (prefix included), ready to send. */
typedef struct resattn_grpc_message {
    unsigned char *data; /* malloc'ed, owned */
    size_t len;
} resattn_grpc_message;

void resattn_grpc_message_release(resattn_grpc_message *m);

/* Frame a protobuf message. Returns 0 or 500. */
int resattn_grpc_pack(const ProtobufCMessage *msg, resattn_grpc_message *out);

/* Unpack a ModelInferRequest; NULL (err filled) when it is not valid protobuf. Its
 * raw_input_contents point into msg (not copied): keep msg unchanged until
 * resattn_grpc_infer_free(m, msg, len). */
Inference__ModelInferRequest *resattn_grpc_infer_unpack(const unsigned char *msg, size_t len,
                                                        char *err, size_t err_len);
/* Free what resattn_grpc_infer_unpack made of msg [len]. NULL is accepted. */
void resattn_grpc_infer_free(Inference__ModelInferRequest *m, const unsigned char *msg, size_t len);

/*
 * The request for the model: one input, "input" (a numeric tensor [N,C,H,W] or [C,H,W], in
 * typed contents or raw_input_contents) or "image" (BYTES, encoded PNG/JPEG files, like the
 * HTTP "image" input); "outputs", "parameters" and "id" as in HTTP v2. *raw tells whether
 * the input was raw (then the answer is raw too). With limits->input_in_body_ok an aligned
 * FP32 tensor (typed or raw) is used in place in m (or the message it refers to), which must
 * then outlive out.
 * Returns 0 or 400/413/422/500 with err naming the field.
 */
int resattn_grpc_infer_parse(const Inference__ModelInferRequest *m, const resattn_model_info *model,
                             const resattn_parse_limits *limits, long long max_pixels,
                             resattn_infer_request *out, int *raw, char *err, size_t err_len);

/* The ModelInferResponse for logits [n, num_classes]: the outputs req asks for, in
 * raw_output_contents when raw, else in typed contents. Returns 0 or 500. */
int resattn_grpc_infer_encode(const resattn_infer_request *req, const char *model_name,
                              const resattn_model_info *model, const float *logits, int n, int raw,
                              resattn_grpc_message *out);

/* ModelMetadataResponse (versions[num_versions], highest first). Returns 0 or 500. */
int resattn_grpc_model_metadata(const char *name, const char *const *versions, int num_versions,
                                const resattn_model_info *model, resattn_grpc_message *out);
/* ServerMetadataResponse. Returns 0 or 500. */
int resattn_grpc_server_metadata(const char *version, resattn_grpc_message *out);

#endif
