/*
 * Shared by the protocol harnesses (fuzz_v2_json.c, fuzz_v2_binary.c, fuzz_tfs.c): a fixed
 * model description loaded once from a small fixture, so that the parsers check shapes and
 * label counts against a real model (basic_cifar_se: 1x9x11 in, 10 classes), and the v2
 * encoder run on what a parsed request asks for.
 * RESATTN_FUZZ_MODEL overrides the path; the default is relative to the repository root,
 * where `make fuzz` runs the harnesses.
 */
#ifndef RESATTN_FUZZ_COMMON_H
#define RESATTN_FUZZ_COMMON_H

#include "protocol/protocol.h"

#include <resattn/resattn.h>
#include <stdio.h>
#include <stdlib.h>

static resattn_model *fuzz_model;

/* Limits as `resattn serve` sets them by default (server/cli/cmd_serve.c), batch raised to 4. */
static const resattn_parse_limits fuzz_limits = {
    .max_batch = 4, .allow_nonfinite = 0, .max_json_depth = 64};

static const resattn_model_info *fuzz_model_info(void) {
    if (!fuzz_model) {
        const char *path = getenv("RESATTN_FUZZ_MODEL");
        char err[256];
        if (!path)
            path = "tests/fixtures/basic_cifar_se.safetensors";
        if (resattn_model_load_file(path, &fuzz_model, err, sizeof err)) {
            fprintf(stderr, "fuzz: cannot load %s: %s\n", path, err);
            abort();
        }
    }
    return resattn_model_get_info(fuzz_model);
}

/* Encode the v2 answer a parsed request asks for (outputs, classification, top-k; the
 * attention parts fail cleanly, as no masks were computed), with logits taken from its
 * input so that they vary with the fuzzer's bytes. */
static inline void fuzz_v2_answer(const resattn_infer_request *req,
                                  const resattn_model_info *info) {
    size_t k = (size_t)info->num_classes, count = (size_t)req->n * k;
    size_t in = (size_t)req->n * (size_t)req->c * (size_t)req->h * (size_t)req->w;
    float *logits = malloc(sizeof *logits * (count ? count : 1));
    if (!logits)
        return;
    for (size_t i = 0; i < count; i++)
        logits[i] = in ? req->input[i % in] : 0;
    resattn_response_body b;
    if (resattn_v2_encode(req, "m", info, logits, req->n, &b) == 0)
        resattn_response_body_release(&b);
    free(logits);
}

#endif
