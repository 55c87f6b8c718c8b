/*
 * Per model-version statistics in the shape of Triton's statistics extension
 * (GET /v2/models/{m}/versions/{v}/stats): request counts and cumulative times of the
 * successful and failed requests and of their phases (queue, compute_input = parsing the
 * request, compute_infer = the forward pass, compute_output = encoding the answer), and per
 * batch size the phases of each forward pass (compute_input = gathering the batch's inputs,
 * compute_infer = the pass, compute_output = splitting the logits). Relaxed atomics: the HTTP
 * threads record requests, the pool's workers record executions, a stats request reads.
 */
#ifndef RESATTN_MODEL_STATS_H
#define RESATTN_MODEL_STATS_H

#include <jansson.h>
#include <stdatomic.h>

typedef struct resattn_stat_duration {
    atomic_ullong count, ns;
} resattn_stat_duration;

typedef struct resattn_batch_stat {
    resattn_stat_duration compute_input, compute_infer, compute_output;
} resattn_batch_stat;

typedef struct resattn_model_stats {
    atomic_ullong inference_count; /* images of successful requests */
    atomic_ullong execution_count; /* forward passes */
    atomic_ullong last_inference;  /* ms since the epoch of the last successful request, or 0 */
    resattn_stat_duration success, fail, queue, compute_input, compute_infer, compute_output;
    int max_batch;
    resattn_batch_stat *batch; /* [max_batch]: index = batch size - 1 */
} resattn_model_stats;

/* Statistics for batches of up to max_batch images; NULL when out of memory. */
resattn_model_stats *resattn_model_stats_new(int max_batch);
void resattn_model_stats_free(resattn_model_stats *s);

/* A successful request of n images: whole duration, queue wait, parse, forward pass, encode. */
void resattn_model_stats_success(resattn_model_stats *s, int n, double total, double queue,
                                 double input, double infer, double output);
/* A request that reached this version and failed (any status but 200): its duration. */
void resattn_model_stats_fail(resattn_model_stats *s, double total);
/* One forward pass of `batch` images: gathering, the pass, splitting (seconds). */
void resattn_model_stats_execution(resattn_model_stats *s, int batch, double input, double infer,
                                   double output);

/* {"name", "version", "last_inference", "inference_count", "execution_count",
 *  "inference_stats": {...}, "batch_stats": [...]} as Triton answers it; NULL on no memory. */
json_t *resattn_model_stats_json(const resattn_model_stats *s, const char *name,
                                 const char *version);

#endif
