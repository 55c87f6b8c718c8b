/*
 * The worker pool: a bounded FIFO of inference jobs in front of N worker threads. Each
 * worker owns one resattn_ctx per model (sized for max_batch images); it takes the oldest
 * job, adds later queued jobs for the same model while the batch has room, waits up to
 * max_delay for more, runs one forward pass over the concatenated inputs and splits the
 * logits back. Every pushed job gets exactly one call of its `done` callback, from a worker
 * or the timeout reaper thread: status 0 (logits filled), 504 (deadline passed before it
 * ran) or 500 (engine error, message in err).
 */
#ifndef RESATTN_POOL_H
#define RESATTN_POOL_H

#include "runtime/metrics.h"
#include <resattn/resattn.h>

typedef struct resattn_job resattn_job;
typedef void (*resattn_job_done_fn)(resattn_job *job);

struct resattn_job {
    /* Filled by the submitter. input and logits stay valid until done() runs. */
    int model;          /* index into the pool's models */
    const float *input; /* [n, C, H, W] */
    int n;              /* 1 <= n <= max_batch */
    float *logits;      /* [n, num_classes], written by the worker */
    double deadline;    /* resattn_now() value after which the job answers 504 */
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

/* Start the workers; each warms up with one forward pass per model. The models, and the
 * models array itself (the pool keeps the pointer), stay owned by the caller and must outlive
 * the pool. metrics may be NULL. */
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

/* Monotonic clock in seconds. */
double resattn_now(void);

#endif
