/*
 * The worker pool: a bounded FIFO of inference jobs in front of N worker threads. A job
 * names what to run by a resattn_pool_model handle: a loaded model plus its batching limits
 * and one resattn_ctx per worker (sized for its max_batch images). A worker takes the oldest
 * job, adds later queued jobs for the same handle while the batch has room, waits up to the
 * handle's max_delay for more, runs one forward pass over the concatenated inputs and splits
 * the logits back. Jobs for different handles (two models, or two versions of one model
 * while a new version replaces an old one) are never batched together. Every pushed job gets
 * exactly one call of its `done` callback, from a worker or the timeout reaper thread:
 * status 0 (logits filled), 504 (deadline passed before it ran) or 500 (engine error,
 * message in err).
 *
 * Handles: resattn_pool_new makes one for each model it is given (resattn_pool_fixed); more
 * come and go with resattn_pool_model_new / _free while the pool runs (the model repository
 * does this for each version it loads). The pool does not count references: whoever frees
 * a handle makes sure that no job for it is queued or running (the repository frees a
 * version when its last request is done).
 */
#ifndef RESATTN_POOL_H
#define RESATTN_POOL_H

#include "runtime/metrics.h"
#include "runtime/model_stats.h"
#include <resattn/resattn.h>

/* Largest max_batch of a pool or handle (the --max-batch bound). */
#define RESATTN_POOL_MAX_BATCH 1024

typedef struct resattn_pool_model resattn_pool_model;

typedef struct resattn_job resattn_job;
typedef void (*resattn_job_done_fn)(resattn_job *job);

struct resattn_job {
    /* Filled by the submitter. input and logits stay valid until done() runs. */
    resattn_pool_model *model; /* what to run; NULL = the first model of resattn_pool_new */
    const float *input;        /* [n, C, H, W] */
    int n;                     /* 1 <= n <= max_batch */
    float *logits;             /* [n, num_classes], written by the worker */
    double deadline;           /* resattn_now() value after which the job answers 504 */
    resattn_job_done_fn done;
    void *user;
    int want_masks; /* capture this job's attention masks into `masks` */
    /* Filled by the pool before done(). */
    int status;
    char err[RESATTN_ERR_LEN];
    int batch_size;       /* images in the forward pass that computed this job */
    double queue_wait;    /* seconds from push to pick-up */
    double infer_seconds; /* duration of that forward pass */
    /* With want_masks: the job's n images' masks, owned by the submitter (mask_summary.h) */
    struct resattn_mask_set *masks;
    /* Private. */
    double enqueued;
    resattn_job *next;
};

typedef struct resattn_pool resattn_pool;

typedef struct resattn_pool_options {
    int workers;
    int max_batch;
    int max_delay_ms;
    int capacity; /* jobs queued or reserved at once */
} resattn_pool_options;

/* Start the workers; each warms up with one forward pass per model. The models stay owned by
 * the caller and must outlive the pool. num_models may be 0 (models then come as handles
 * made with resattn_pool_model_new). metrics may be NULL. */
resattn_status resattn_pool_new(resattn_model *const *models, int num_models,
                                const resattn_pool_options *opt, resattn_metrics *metrics,
                                resattn_pool **out, char *err, size_t err_len);
/* Block until every worker finished its warm-up; non-zero (err filled) if one failed. */
int resattn_pool_wait_ready(resattn_pool *pool, char *err, size_t err_len);
int resattn_pool_ready(resattn_pool *pool);
/* Reserve a queue slot: 0 on success, -1 when the queue is full. */
int resattn_pool_reserve(resattn_pool *pool);
void resattn_pool_unreserve(resattn_pool *pool);
/* Queue a job on a reserved slot (never fails). */
void resattn_pool_push(resattn_pool *pool, resattn_job *job);
/* Answer every queued job at once with `status` (e.g. 503 when a drain runs out of time). */
void resattn_pool_cancel_queued(resattn_pool *pool, int status, const char *msg);
/* Jobs queued now. */
int resattn_pool_depth(resattn_pool *pool);
/* Finish every queued job, stop and join the threads, free. NULL is accepted. */
void resattn_pool_free(resattn_pool *pool);

/* The handle of models[i] of resattn_pool_new (owned by the pool), or NULL. */
resattn_pool_model *resattn_pool_fixed(resattn_pool *pool, int i);

/*
 * A new handle for `model` (owned by the caller, which keeps the model alive until the
 * handle is freed); its forward passes count in the metrics' per-model series of
 * metrics_index (-1: none). max_batch <= 0 and max_delay_ms < 0 take the pool's settings. With
 * warm != 0 every worker's context is created now and runs one forward pass on zeros that
 * must give finite logits (the caller's thread does the work: call it off the request path,
 * before the first job); otherwise each worker creates its context at its first batch.
 * RESATTN_ERR_NOMEM or the forward pass's status on failure, err filled.
 */
resattn_status resattn_pool_model_new(resattn_pool *pool, const resattn_model *model,
                                      int metrics_index, int max_batch, int max_delay_ms, int warm,
                                      resattn_pool_model **out, char *err, size_t err_len);
/* Free the contexts; no job for the handle may be queued or running. NULL is accepted. */
void resattn_pool_model_free(resattn_pool_model *pm);
const resattn_model *resattn_pool_model_model(const resattn_pool_model *pm);
int resattn_pool_model_max_batch(const resattn_pool_model *pm);
int resattn_pool_model_metrics_index(const resattn_pool_model *pm);
/* Workspace bytes of the contexts created so far. */
size_t resattn_pool_model_bytes(const resattn_pool_model *pm);
/* The handle's statistics (executions recorded by the workers, requests by the caller). */
resattn_model_stats *resattn_pool_model_stats(resattn_pool_model *pm);

/* Monotonic clock in seconds. */
double resattn_now(void);

/* Drain helper of the transports: wait until *in_flight has stayed 0 for grace_s seconds
 * (a request sent just before the drain may still be on its way from a socket buffer), and
 * busy(arg) has said 0 as long, when busy is given (a transport's own reasons to wait);
 * 0 if that happened within timeout_ms, else -1 (-1 only while requests are in flight). */
int resattn_wait_idle(const _Atomic long *in_flight, int timeout_ms, double grace_s,
                      int (*busy)(void *arg), void *arg);

#endif
