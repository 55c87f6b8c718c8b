/*
 * The outputs of the Open Inference Protocol (v2) answer, whatever the input form (a tensor
 * in server/protocol/v2.c, images in server/protocol/image_api.c):
 *   - what the model metadata lists, which is also what a request without "outputs" gets:
 *     logits, probabilities, top_k_labels, top_k_indices, top_k_probabilities;
 *   - what else a request may name: "attention/<block>[/<kind>]" mask tensors and
 *     "attention_summary" (server/protocol/attention_api.h);
 *   - per output "parameters": "binary_data" (binary tensor extension) and, on logits or
 *     probabilities, "classification": K (Triton's classification extension: a BYTES
 *     [n, K] tensor of "value:index[:label]" strings, best first, value printed as %f);
 *   - request "parameters": "binary_data_output" (every output binary unless it says
 *     otherwise), "top_k", "attention", "attention_images".
 * The encoder (resattn_v2_encode, protocol.h) writes the outputs in the order above; BYTES
 * in binary form are, per element, a 4-byte little-endian length and the bytes. Response
 * "parameters" are never written: the spec allows only strings, numbers and booleans there,
 * so the per-block attention summary travels as the output tensor attention_summary.
 */
#ifndef RESATTN_V2_OUTPUTS_H
#define RESATTN_V2_OUTPUTS_H

#include "protocol/protocol.h"
#include <jansson.h>

/* Read a v2 request's "parameters" and "outputs" (root is the request object) into out:
 * outputs, binary, outputs_named, classification, top_k (parameters.top_k, else
 * RESATTN_DEFAULT_TOP_K, at most the class count), attention and attn_outputs. Returns 0,
 * or 400 (500 out of memory) with err naming the field. */
int resattn_v2_read_options(json_t *root, const resattn_model_info *model,
                            resattn_infer_request *out, char *err, size_t err_len);

/* k (a request's top_k; <= 0: the default) at most the class count. */
int resattn_top_k_clamp(int k, const resattn_model_info *model);

#endif
