/*
 * Request and response codecs of the HTTP protocols, as pure functions over byte buffers:
 * no sockets, no threads, no model execution. The HTTP layer (server/http/http.c) collects a
 * body, calls a parser to turn it into a resattn_infer_request, hands that to the worker
 * pool, and calls an encoder on the logits. Parsers never read outside the buffer and
 * return an HTTP status (0 when the request is good) with a message naming what is wrong;
 * they are the fuzzing targets.
 */
#ifndef RESATTN_PROTOCOL_H
#define RESATTN_PROTOCOL_H

#include <resattn/resattn.h>
#include <stddef.h>
#include <stdint.h>

#define RESATTN_PROTO_ERR_LEN 256

typedef enum resattn_protocol {
    RESATTN_PROTO_V2 = 0, /* Open Inference Protocol (KServe v2) JSON, binary extension, npy */
    RESATTN_PROTO_TFS,    /* TensorFlow Serving REST :predict */
    RESATTN_PROTO_PREDICT /* /predict: images in, top-k labels out */
} resattn_protocol;

/* Limits a parser enforces; filled from the server configuration. */
typedef struct resattn_parse_limits {
    int max_batch;       /* most images in one request */
    int allow_nonfinite; /* accept NaN/Inf in inputs */
    int max_json_depth;  /* nesting depth of `data` arrays and envelopes */
    /* the caller keeps the body alive and unchanged until it releases the request: a v2
     * binary FP32 tensor that is aligned in the body is then used in place, not copied */
    int input_in_body_ok;
} resattn_parse_limits;

/* The outputs of a v2 answer (server/protocol/v2_outputs.h). */
enum {
    RESATTN_OUT_LOGITS = 1 << 0,              /* FP32 [n, K] */
    RESATTN_OUT_PROBABILITIES = 1 << 1,       /* FP32 [n, K], softmax of the logits */
    RESATTN_OUT_TOP_K_LABELS = 1 << 2,        /* BYTES [n, top_k], best first */
    RESATTN_OUT_TOP_K_INDICES = 1 << 3,       /* INT64 [n, top_k] */
    RESATTN_OUT_TOP_K_PROBABILITIES = 1 << 4, /* FP32 [n, top_k] */
    RESATTN_OUT_ATTENTION_SUMMARY = 1 << 5,   /* BYTES [n]: each image's mask summary as JSON */
};
#define RESATTN_OUT_TOP_K                                                                          \
    (RESATTN_OUT_TOP_K_LABELS | RESATTN_OUT_TOP_K_INDICES | RESATTN_OUT_TOP_K_PROBABILITIES)
/* The outputs the model metadata lists: what a v2 request without "outputs" gets. The
 * attention outputs are left out: they cost mask capture and can be large. */
#define RESATTN_OUT_DEFAULT (RESATTN_OUT_LOGITS | RESATTN_OUT_PROBABILITIES | RESATTN_OUT_TOP_K)
#define RESATTN_DEFAULT_TOP_K 5

/* The model's v2 inputs: a numeric tensor, or encoded images (BYTES). */
#define RESATTN_V2_INPUT "input"
#define RESATTN_V2_IMAGE_INPUT "image"

/* What a request asked of the attention masks (server/protocol/attention_api.h). */
enum {
    RESATTN_ATTN_SUMMARY = 1 << 0, /* per-block mask summary (v2: output attention_summary) */
    RESATTN_ATTN_IMAGES = 1 << 1,  /* plus base64 PNG heatmaps / bars per block */
    RESATTN_ATTN_TENSORS = 1 << 2, /* v2 output tensors "attention/<block>[/<kind>]" */
};
struct resattn_attn_output;
struct resattn_mask_set;

/* One parsed inference request, ready for the worker pool. Owns its buffers. */
typedef struct resattn_infer_request {
    resattn_protocol protocol;
    int n;             /* images */
    int c, h, w;       /* per-image shape, equal to the model's input */
    float *input;      /* [n, c, h, w], malloc'ed, owned (unless input_in_body) */
    int input_in_body; /* input points into the parsed body (input_in_body_ok): not freed */
    char *id;          /* v2 request "id" to echo, or NULL; owned */
    char *input_name;  /* v2 input tensor name, or NULL; owned */
    unsigned outputs;  /* RESATTN_OUT_* to answer */
    unsigned binary;   /* RESATTN_OUT_* answered as binary_data (v2 binary extension) */
    int outputs_named; /* v2: the request listed "outputs" (else RESATTN_OUT_DEFAULT) */
    /* v2 classification extension: the top K of the logits [0] / probabilities [1] as
     * "value:index[:label]" strings instead of the tensor; 0: the tensor */
    int classification[2];
    int top_k;          /* columns of the top_k_* outputs and /predict's labels */
    int tfs_columnar;   /* TF Serving: request used "inputs" (answer "outputs") */
    int tfs_nchw;       /* TF Serving: instances given as [C,H,W] (else [H,W,C] is accepted) */
    unsigned attention; /* RESATTN_ATTN_* asked for; 0: the worker does not capture masks */
    struct resattn_attn_output *attn_outputs; /* [num_attn_outputs] v2 mask outputs, owned */
    int num_attn_outputs;
    struct resattn_mask_set *masks; /* this request's masks after inference, owned */
    const char *model_version;      /* v2 answers' "model_version" (not owned); NULL = "1" */
} resattn_infer_request;

void resattn_infer_request_release(resattn_infer_request *r);

/* An encoded response body. */
typedef struct resattn_response_body {
    unsigned char *data; /* malloc'ed, owned */
    size_t len;
    size_t json_header_len; /* v2 binary: length of the JSON part, else 0 */
    const char *content_type;
} resattn_response_body;

void resattn_response_body_release(resattn_response_body *b);

/*
 * v2 infer body. content_type decides: application/json (with optional binary extension:
 * header_len = value of Inference-Header-Content-Length, or -1 when absent) or
 * application/x-npy. Returns 0 or an HTTP status (400, 413, 415, 422) with err filled.
 */
int resattn_v2_parse(const char *content_type, const unsigned char *body, size_t len,
                     long long header_len, const resattn_model_info *model,
                     const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                     size_t err_len);

/* v2 infer response for logits [n, model->num_classes]: the outputs req asks for (labels
 * from model). Returns 0 or 500. */
int resattn_v2_encode(const resattn_infer_request *req, const char *model_name,
                      const resattn_model_info *model, const float *logits, int n,
                      resattn_response_body *out);

/* GET /v2/models/{m}: name, versions, platform "resattn_safetensors", the inputs, the
 * outputs of RESATTN_OUT_DEFAULT and "parameters" (string values: precision,
 * precision_requested, kernel_path). Returns 0 or 500. */
int resattn_v2_model_metadata(const char *name, const resattn_model_info *model,
                              resattn_response_body *out);
/* The same for a model with several ready versions (versions[num_versions], highest first). */
int resattn_v2_model_metadata_at(const char *name, const char *const *versions, int num_versions,
                                 const resattn_model_info *model, resattn_response_body *out);

/* GET /v2: name, version and the protocol extensions served. Returns 0 or 500. */
int resattn_v2_server_metadata(const char *version, resattn_response_body *out);

/* TF Serving :predict body ("instances" or "inputs"). Same conventions as resattn_v2_parse. */
int resattn_tfs_parse(const unsigned char *body, size_t len, const resattn_model_info *model,
                      const resattn_parse_limits *limits, resattn_infer_request *out, char *err,
                      size_t err_len);

int resattn_tfs_encode(const resattn_infer_request *req, const float *logits, int n,
                       int num_classes, resattn_response_body *out);

#endif
