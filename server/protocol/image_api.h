/*
 * Images in, labels out: the server's image request forms, as pure functions over a
 * complete body (no sockets; fuzz-ready like the other codecs in protocol.h).
 * Accepted bodies, on POST /predict[/{m}] and on /v2/models/{m}/infer:
 *   - multipart/form-data: every part is an image, except a part named "top_k";
 *   - a raw PNG/JPEG body (image/png, image/jpeg, application/octet-stream, or any type
 *     when the bytes start with a PNG/JPEG signature);
 *   - /predict JSON: {"image": "<base64>"} or {"images": ["<base64>", ...]}, "top_k"?: k;
 *   - v2 JSON with the input "image" of datatype BYTES whose data holds base64 images, or
 *     with the binary tensor extension the raw files (each a 4-byte little-endian length,
 *     then the bytes) after a JSON header of Inference-Header-Content-Length bytes.
 * Each image is decoded and preprocessed per the model's "preprocess" config. The answer
 * to /predict is {"model", "predictions": [{"label", "index", "probability"}...]} sorted by
 * probability, or {"model", "batch": [[...], ...]} for several images; a v2 image request
 * reads its "outputs" and "parameters" as a tensor request does and is answered by
 * resattn_v2_encode (server/protocol/v2_outputs.h).
 */
#ifndef RESATTN_IMAGE_API_H
#define RESATTN_IMAGE_API_H

#include "protocol/protocol.h"

/* Whether a v2 infer body carries images (and so goes to resattn_image_api_parse). */
int resattn_image_api_is_image(const char *content_type, const unsigned char *body, size_t len);

/*
 * Parse an image request for protocol RESATTN_PROTO_PREDICT or RESATTN_PROTO_V2 into out.
 * header_len: v2's Inference-Header-Content-Length, or -1 when absent (ignored for
 * /predict). top_k: from the URL query, or -1 when not given (the body may then give it;
 * default RESATTN_DEFAULT_TOP_K, at most the class count). max_pixels <= 0: the default
 * of image.h. Returns 0 or an HTTP status (400, 413, 415, 422, 500) with err filled.
 */
int resattn_image_api_parse(resattn_protocol proto, const char *content_type,
                            const unsigned char *body, size_t len, long long header_len, int top_k,
                            long long max_pixels, const resattn_model_info *model,
                            const resattn_parse_limits *limits, resattn_infer_request *out,
                            char *err, size_t err_len);

/* Whether a parsed request is answered by resattn_image_api_encode (/predict). */
int resattn_image_api_owns(const resattn_infer_request *req);

/* Encode the /predict answer for logits [n, num_classes]. Returns 0 or 500. */
int resattn_image_api_encode(const resattn_infer_request *req, const char *model_name,
                             const resattn_model_info *model, const float *logits, int n,
                             resattn_response_body *out);

#endif
