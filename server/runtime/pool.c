/*
 * Worker pool with dynamic batching (see pool.h). One mutex guards the queue (a singly
 * linked FIFO) and the slot count; `slots` counts reserved plus queued jobs so that the HTTP
 * layer can refuse a request (503) before suspending its connection. Workers hold the mutex
 * only to pick jobs, never while computing. A reaper thread answers queued jobs whose
 * deadline passed while every worker was busy, so a 504 never waits for a worker. It sleeps
 * until that can happen (jobs queued, every worker busy), then until the earliest deadline:
 * an idle server, or one whose workers keep up, never wakes it.
 *
 * A handle (resattn_pool_model) keeps worker i's context in slot i: only worker i touches
 * it after the handle is published (a warm handle's slots were filled before any job could
 * name it), and the handle is freed only when no job names it, so the slots need no lock.
 */
#include "runtime/pool.h"
#include "maps/mask_summary.h"
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct resattn_pool_model {
    const resattn_model *model;
    int metrics_index; /* the model's index in the metrics' per-model series, or -1 */
    int max_batch, max_delay_ms;
    size_t in_floats; /* C*H*W of one image */
    size_t classes;
    int num_ctx;
    resattn_ctx **ctx;   /* [num_ctx] worker i's context, or NULL until it first needs it */
    atomic_size_t bytes; /* workspace of the contexts created so far */
    resattn_model_stats *stats;
};

typedef struct worker {
    resattn_pool *pool;
    int index; /* this worker's context slot in every handle */
    pthread_t thread;
    float *input;  /* [in_cap] concatenated batch */
    float *logits; /* [out_cap] */
    size_t in_cap, out_cap;
} worker;

struct resattn_pool {
    resattn_pool_model **fixed; /* [num_models] handles of the models given at creation */
    int num_models;
    resattn_pool_options opt;
    resattn_metrics *metrics;
    pthread_mutex_t mu;
    pthread_cond_t nonempty; /* a job was queued, or stop */
    pthread_cond_t warmed;   /* a worker finished its warm-up */
    pthread_cond_t reap;     /* for the reaper's sleep */
    resattn_job *head, *tail;
    int depth, slots, stop;
    int busy;           /* workers between taking a batch and finishing it */
    int reaper_idle;    /* the reaper waits for jobs to become expirable */
    double reaper_wake; /* while it sleeps until a deadline: that time, else 0 */
    int num_warm, warm_failed;
    char warm_err[RESATTN_ERR_LEN + 64];
    worker *workers;
    int started; /* threads started, for joining */
    pthread_t reaper;
    int reaper_started;
};

double resattn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int resattn_wait_idle(const _Atomic long *in_flight, int timeout_ms, double grace_s,
                      int (*busy)(void *arg), void *arg) {
    double until = resattn_now() + timeout_ms * 1e-3, idle_since = -1;
    for (;;) {
        double now = resattn_now();
        if (atomic_load(in_flight) > 0 || (busy && busy(arg)))
            idle_since = -1;
        else if (idle_since < 0)
            idle_since = now;
        else if (now - idle_since >= grace_s)
            return 0;
        if (now > until)
            return atomic_load(in_flight) > 0 ? -1 : 0;
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
}

static struct timespec abs_after(double seconds) {
    /* condition variables use CLOCK_REALTIME by default */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double t = (double)ts.tv_nsec * 1e-9 + seconds;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
    return ts;
}

static void complete(resattn_pool *p, resattn_job *job, int status, const char *msg) {
    job->status = status;
    if (msg)
        snprintf(job->err, sizeof job->err, "%s", msg);
    if (status == 504 && p->metrics)
        resattn_metrics_reject(p->metrics, RESATTN_REJECT_TIMEOUT);
    job->done(job);
}

/* Unlink `job` (whose predecessor is prev, or NULL for the head). Caller holds mu. */
static void unlink_job(resattn_pool *p, resattn_job *prev, resattn_job *job) {
    if (prev)
        prev->next = job->next;
    else
        p->head = job->next;
    if (p->tail == job)
        p->tail = prev;
    job->next = NULL;
    p->depth--;
    p->slots--;
    if (p->metrics)
        resattn_metrics_queue_depth_add(p->metrics, -1);
}

/* Move queued jobs of `pm` that fit into the batch (total images <= its max_batch). */
static void gather(resattn_pool *p, const resattn_pool_model *pm, resattn_job **batch, int *count,
                   int *total) {
    resattn_job *prev = NULL, *j = p->head;
    while (j && *total < pm->max_batch) {
        resattn_job *next = j->next;
        if (j->model == pm && *total + j->n <= pm->max_batch) {
            unlink_job(p, prev, j);
            batch[(*count)++] = j;
            *total += j->n;
        } else {
            prev = j;
        }
        j = next;
    }
}

/* Take a batch: blocks until a job is queued; returns 0 when stopping with an empty queue. */
static int take_batch(resattn_pool *p, resattn_job **batch, int *count) {
    pthread_mutex_lock(&p->mu);
    while (!p->head && !p->stop)
        pthread_cond_wait(&p->nonempty, &p->mu);
    if (!p->head) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    const resattn_pool_model *pm = p->head->model;
    int total = 0;
    *count = 0;
    gather(p, pm, batch, count, &total);
    /* Wait for more only when no other worker is idle: an idle worker would take the next
     * request at once, so waiting would only add latency (e.g. to a lone client). */
    if (total < pm->max_batch && pm->max_delay_ms > 0 && !p->stop &&
        p->busy >= p->opt.workers - 1) {
        struct timespec until = abs_after(pm->max_delay_ms * 1e-3);
        while (total < pm->max_batch && !p->stop) {
            int rc = pthread_cond_timedwait(&p->nonempty, &p->mu, &until);
            gather(p, pm, batch, count, &total);
            if (rc == ETIMEDOUT)
                break;
        }
    }
    /* other workers may be asleep while jobs for another model wait */
    if (p->head)
        pthread_cond_signal(&p->nonempty);
    p->busy++;
    if (p->reaper_idle && p->head && p->busy >= p->opt.workers)
        pthread_cond_signal(&p->reap);
    pthread_mutex_unlock(&p->mu);
    return 1;
}

/* This thread's CPU time: with the wall time it shows how much of a forward pass the worker
 * really computed (other jobs on the machine stretch only the wall time). */
static double thread_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Worker w's context for pm, created at its first use. */
static resattn_ctx *worker_ctx(worker *w, resattn_pool_model *pm, char *err, size_t err_len) {
    if (w->index >= pm->num_ctx) {
        snprintf(err, err_len, "model handle has no context for worker %d", w->index);
        return NULL;
    }
    resattn_ctx **slot = &pm->ctx[w->index];
    if (!*slot && resattn_ctx_new(pm->model, pm->max_batch, slot, err, err_len) == RESATTN_OK)
        atomic_fetch_add(&pm->bytes, resattn_ctx_workspace_bytes(*slot));
    return *slot;
}

/* Room for `in` input and `out` logit floats in w's batch buffers. */
static int worker_buffers(worker *w, size_t in, size_t out) {
    if (in > w->in_cap) {
        float *b = realloc(w->input, sizeof(float) * in);
        if (!b)
            return -1;
        w->input = b;
        w->in_cap = in;
    }
    if (out > w->out_cap) {
        float *b = realloc(w->logits, sizeof(float) * out);
        if (!b)
            return -1;
        w->logits = b;
        w->out_cap = out;
    }
    return 0;
}

/* The forward pass of `live` jobs of one handle (`total` images); each job's status is set
 * (0, or 500 with err) but nothing is completed yet. */
static void compute(worker *w, resattn_pool_model *pm, resattn_job **batch, int live, int total) {
    resattn_pool *p = w->pool;
    size_t in_sz = pm->in_floats, k = pm->classes;
    char err[RESATTN_ERR_LEN] = "";
    double t0 = resattn_now();
    resattn_ctx *ctx = worker_ctx(w, pm, err, sizeof err);
    int st = ctx ? 0 : 1;
    if (!st && live > 1 && worker_buffers(w, in_sz * total, k * total)) {
        snprintf(err, sizeof err, "out of memory for a batch of %d images", total);
        st = 1;
    }
    const float *in = batch[0]->input;
    float *out = batch[0]->logits;
    if (!st && live > 1) { /* concatenate [n_i, C, H, W] inputs into one [total, C, H, W] */
        size_t off = 0;
        for (int i = 0; i < live; i++) {
            memcpy(w->input + off, batch[i]->input, sizeof(float) * in_sz * batch[i]->n);
            off += in_sz * batch[i]->n;
        }
        in = w->input;
        out = w->logits;
    }
    int masks = 0; /* capture costs a copy per block: only for batches that ask */
    for (int i = 0; i < live; i++)
        masks |= batch[i]->want_masks;
    double t1 = resattn_now(), c1 = thread_cpu_seconds(), t2 = t1;
    if (!st) {
        resattn_ctx_capture_masks(ctx, masks);
        st = resattn_forward(ctx, in, total, out, err, sizeof err) != RESATTN_OK;
        t2 = resattn_now();
        if (p->metrics && !st)
            resattn_metrics_batch(p->metrics, pm->metrics_index, total, t2 - t1,
                                  thread_cpu_seconds() - c1);
    }
    size_t off = 0;
    int first = 0; /* the job's first image in the batch */
    for (int i = 0; i < live; i++) {
        resattn_job *j = batch[i];
        j->batch_size = total;
        j->infer_seconds = t2 - t1;
        j->status = st ? 500 : 0;
        if (!st && j->want_masks &&
            resattn_mask_set_copy(pm->model, ctx, first, j->n, &j->masks, err, sizeof err))
            j->status = 500;
        if (!st && live > 1)
            memcpy(j->logits, out + off, sizeof(float) * k * j->n);
        if (j->status)
            snprintf(j->err, sizeof j->err, "%s", err);
        first += j->n;
        off += k * j->n;
    }
    if (!st)
        resattn_model_stats_execution(pm->stats, total, t1 - t0, t2 - t1, resattn_now() - t2);
}

static void run_batch(worker *w, resattn_job **batch, int count) {
    resattn_pool *p = w->pool;
    double now = resattn_now();
    int live = 0, total = 0;
    for (int i = 0; i < count; i++) {
        resattn_job *j = batch[i];
        j->queue_wait = now - j->enqueued;
        if (p->metrics)
            resattn_metrics_queue_wait(p->metrics, j->model->metrics_index, j->queue_wait);
        if (now > j->deadline) {
            complete(p, j, 504, "request timed out waiting for a worker");
            continue;
        }
        batch[live++] = j;
        total += j->n;
    }
    if (!live)
        return;
    compute(w, batch[0]->model, batch, live, total);
    /* after the last completion the handle may be freed: it is not touched again */
    for (int i = 0; i < live; i++)
        complete(p, batch[i], batch[i]->status, NULL);
}

/* One forward pass on zeros with context ctx of pm; 0, or -1 with err filled. */
static int warm_pass(resattn_pool_model *pm, resattn_ctx *ctx, float *input, float *logits,
                     char *err, size_t err_len) {
    memset(input, 0, sizeof(float) * pm->in_floats);
    if (resattn_forward(ctx, input, 1, logits, err, err_len) != RESATTN_OK)
        return -1;
    for (size_t i = 0; i < pm->classes; i++)
        if (!isfinite(logits[i])) {
            snprintf(err, err_len, "logit %zu is %s on an all-zero input", i,
                     isnan(logits[i]) ? "NaN" : "infinite");
            return -1;
        }
    return 0;
}

static void warm_up(worker *w) {
    resattn_pool *p = w->pool;
    char err[RESATTN_ERR_LEN] = "";
    int failed = 0;
    for (int m = 0; m < p->num_models && !failed; m++) {
        resattn_pool_model *pm = p->fixed[m];
        resattn_ctx *ctx = worker_ctx(w, pm, err, sizeof err);
        failed = !ctx || worker_buffers(w, pm->in_floats, pm->classes) ||
                 warm_pass(pm, ctx, w->input, w->logits, err, sizeof err);
    }
    pthread_mutex_lock(&p->mu);
    p->num_warm++;
    if (failed && !p->warm_failed) {
        p->warm_failed = 1;
        snprintf(p->warm_err, sizeof p->warm_err, "warm-up forward pass failed: %s", err);
    }
    pthread_cond_broadcast(&p->warmed);
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    warm_up(w);
    /* a batch holds at most max_batch jobs of at least one image each */
    resattn_job **batch = malloc(sizeof *batch * RESATTN_POOL_MAX_BATCH);
    int count;
    while (batch && take_batch(w->pool, batch, &count)) {
        run_batch(w, batch, count);
        pthread_mutex_lock(&w->pool->mu);
        w->pool->busy--;
        pthread_mutex_unlock(&w->pool->mu);
    }
    free(batch);
    return NULL;
}

/* The earliest deadline of the queued jobs, or 0 when a queued job could not expire unseen:
 * while a worker is idle it takes each job at once and checks the deadline itself. */
static double reap_deadline(const resattn_pool *p) {
    if (!p->head || p->busy < p->opt.workers)
        return 0;
    double first = p->head->deadline;
    for (const resattn_job *j = p->head->next; j; j = j->next)
        first = j->deadline < first ? j->deadline : first;
    return first;
}

/* Answers queued jobs whose deadline passed while every worker was busy. */
static void *reaper_main(void *arg) {
    resattn_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        double first = reap_deadline(p), now = resattn_now();
        if (first == 0) {
            p->reaper_idle = 1;
            pthread_cond_wait(&p->reap, &p->mu);
            p->reaper_idle = 0;
            continue;
        }
        if (first >= now) { /* a millisecond late, so that the job has expired on waking */
            p->reaper_wake = first;
            struct timespec until = abs_after(first - now + 1e-3);
            pthread_cond_timedwait(&p->reap, &p->mu, &until);
            p->reaper_wake = 0;
            continue;
        }
        resattn_job *expired = NULL, *prev = NULL, *j = p->head;
        while (j) {
            resattn_job *next = j->next;
            if (now > j->deadline) {
                unlink_job(p, prev, j);
                j->next = expired;
                expired = j;
            } else {
                prev = j;
            }
            j = next;
        }
        pthread_mutex_unlock(&p->mu);
        while (expired) {
            resattn_job *next = expired->next;
            expired->queue_wait = now - expired->enqueued;
            complete(p, expired, 504, "request timed out waiting for a worker");
            expired = next;
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

resattn_status resattn_pool_model_new(resattn_pool *p, const resattn_model *model,
                                      int metrics_index, int max_batch, int max_delay_ms, int warm,
                                      resattn_pool_model **out, char *err, size_t err_len) {
    *out = NULL;
    if (max_batch > RESATTN_POOL_MAX_BATCH) {
        snprintf(err, err_len, "max batch %d is more than %d", max_batch, RESATTN_POOL_MAX_BATCH);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    const resattn_model_info *info = resattn_model_get_info(model);
    resattn_pool_model *pm = calloc(1, sizeof *pm);
    if (!pm)
        return RESATTN_ERR_NOMEM;
    pm->model = model;
    pm->metrics_index = metrics_index;
    pm->max_batch = max_batch > 0 ? max_batch : p->opt.max_batch;
    pm->max_delay_ms = max_delay_ms >= 0 ? max_delay_ms : p->opt.max_delay_ms;
    pm->in_floats = (size_t)info->in_channels * info->in_height * info->in_width;
    pm->classes = (size_t)info->num_classes;
    pm->num_ctx = p->opt.workers;
    pm->ctx = calloc((size_t)pm->num_ctx, sizeof *pm->ctx);
    pm->stats = resattn_model_stats_new(pm->max_batch);
    float *input = warm ? malloc(sizeof(float) * pm->in_floats) : NULL;
    float *logits = warm ? malloc(sizeof(float) * pm->classes) : NULL;
    resattn_status st = RESATTN_OK;
    if (!pm->ctx || !pm->stats || (warm && (!input || !logits))) {
        snprintf(err, err_len, "out of memory for a model handle");
        st = RESATTN_ERR_NOMEM;
    }
    /* every context now and a pass on each: the first requests find their pages touched */
    for (int i = 0; warm && !st && i < pm->num_ctx; i++) {
        st = resattn_ctx_new(model, pm->max_batch, &pm->ctx[i], err, err_len);
        if (!st) {
            atomic_fetch_add(&pm->bytes, resattn_ctx_workspace_bytes(pm->ctx[i]));
            if (warm_pass(pm, pm->ctx[i], input, logits, err, err_len))
                st = RESATTN_ERR_INVALID_ARGUMENT;
        }
    }
    free(input);
    free(logits);
    if (st) {
        resattn_pool_model_free(pm);
        return st;
    }
    *out = pm;
    return RESATTN_OK;
}

void resattn_pool_model_free(resattn_pool_model *pm) {
    if (!pm)
        return;
    for (int i = 0; pm->ctx && i < pm->num_ctx; i++)
        resattn_ctx_free(pm->ctx[i]);
    free(pm->ctx);
    resattn_model_stats_free(pm->stats);
    free(pm);
}

const resattn_model *resattn_pool_model_model(const resattn_pool_model *pm) {
    return pm->model;
}

int resattn_pool_model_max_batch(const resattn_pool_model *pm) {
    return pm->max_batch;
}

int resattn_pool_model_metrics_index(const resattn_pool_model *pm) {
    return pm->metrics_index;
}

size_t resattn_pool_model_bytes(const resattn_pool_model *pm) {
    return atomic_load(&((resattn_pool_model *)pm)->bytes);
}

resattn_model_stats *resattn_pool_model_stats(resattn_pool_model *pm) {
    return pm->stats;
}

resattn_pool_model *resattn_pool_fixed(resattn_pool *p, int i) {
    return i >= 0 && i < p->num_models ? p->fixed[i] : NULL;
}

resattn_status resattn_pool_new(resattn_model *const *models, int num_models,
                                const resattn_pool_options *opt, resattn_metrics *metrics,
                                resattn_pool **out, char *err, size_t err_len) {
    *out = NULL;
    if (num_models < 0 || opt->workers < 1 || opt->max_batch < 1 ||
        opt->max_batch > RESATTN_POOL_MAX_BATCH || opt->capacity < 1) {
        snprintf(err, err_len,
                 "pool: need at least one worker, batch slot (at most %d) and "
                 "queue slot",
                 RESATTN_POOL_MAX_BATCH);
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    resattn_pool *p = calloc(1, sizeof *p);
    if (!p)
        return RESATTN_ERR_NOMEM;
    p->opt = *opt;
    p->metrics = metrics;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->nonempty, NULL);
    pthread_cond_init(&p->warmed, NULL);
    pthread_cond_init(&p->reap, NULL);
    p->workers = calloc((size_t)opt->workers, sizeof *p->workers);
    p->fixed = calloc((size_t)num_models + 1, sizeof *p->fixed);
    if (!p->workers || !p->fixed) {
        resattn_pool_free(p);
        return RESATTN_ERR_NOMEM;
    }
    for (; p->num_models < num_models; p->num_models++) {
        /* fixed model i has the metrics' model index i (the order the server adds them) */
        resattn_status st = resattn_pool_model_new(p, models[p->num_models], p->num_models, 0, -1,
                                                   0, &p->fixed[p->num_models], err, err_len);
        if (st != RESATTN_OK) {
            resattn_pool_free(p);
            return st;
        }
    }
    for (int i = 0; i < opt->workers; i++)
        p->workers[i] = (worker){.pool = p, .index = i};
    for (; p->started < opt->workers; p->started++)
        if (pthread_create(&p->workers[p->started].thread, NULL, worker_main,
                           &p->workers[p->started])) {
            snprintf(err, err_len, "pool: cannot start worker thread %d", p->started);
            resattn_pool_free(p);
            return RESATTN_ERR_NOMEM;
        }
    if (pthread_create(&p->reaper, NULL, reaper_main, p)) {
        snprintf(err, err_len, "pool: cannot start the timeout thread");
        resattn_pool_free(p);
        return RESATTN_ERR_NOMEM;
    }
    p->reaper_started = 1;
    *out = p;
    return RESATTN_OK;
}

int resattn_pool_wait_ready(resattn_pool *p, char *err, size_t err_len) {
    pthread_mutex_lock(&p->mu);
    while (p->num_warm < p->opt.workers)
        pthread_cond_wait(&p->warmed, &p->mu);
    int failed = p->warm_failed;
    if (failed)
        snprintf(err, err_len, "%s", p->warm_err);
    pthread_mutex_unlock(&p->mu);
    return failed;
}

int resattn_pool_ready(resattn_pool *p) {
    pthread_mutex_lock(&p->mu);
    int ready = p->num_warm == p->opt.workers && !p->warm_failed;
    pthread_mutex_unlock(&p->mu);
    return ready;
}

int resattn_pool_reserve(resattn_pool *p) {
    pthread_mutex_lock(&p->mu);
    int ok = p->slots < p->opt.capacity;
    if (ok)
        p->slots++;
    pthread_mutex_unlock(&p->mu);
    return ok ? 0 : -1;
}

void resattn_pool_unreserve(resattn_pool *p) {
    pthread_mutex_lock(&p->mu);
    p->slots--;
    pthread_mutex_unlock(&p->mu);
}

void resattn_pool_push(resattn_pool *p, resattn_job *job) {
    if (!job->model)
        job->model = p->num_models ? p->fixed[0] : NULL;
    if (!job->model || job->n < 1 || job->n > job->model->max_batch) {
        pthread_mutex_lock(&p->mu);
        p->slots--; /* the reserved slot */
        pthread_mutex_unlock(&p->mu);
        job->masks = NULL;
        complete(p, job, 500, job->model ? "more images than the model's max batch" : "no model");
        return;
    }
    job->enqueued = resattn_now();
    job->next = NULL;
    job->status = 0;
    job->err[0] = 0;
    job->batch_size = 0;
    job->masks = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->depth++;
    if (p->metrics)
        resattn_metrics_queue_depth_add(p->metrics, 1);
    pthread_cond_signal(&p->nonempty);
    /* wake the reaper only when this job could expire before it next looks */
    if (p->busy >= p->opt.workers &&
        (p->reaper_idle || (p->reaper_wake > 0 && job->deadline < p->reaper_wake)))
        pthread_cond_signal(&p->reap);
    pthread_mutex_unlock(&p->mu);
}

void resattn_pool_cancel_queued(resattn_pool *p, int status, const char *msg) {
    pthread_mutex_lock(&p->mu);
    resattn_job *list = NULL;
    while (p->head) {
        resattn_job *j = p->head;
        unlink_job(p, NULL, j);
        j->next = list;
        list = j;
    }
    pthread_mutex_unlock(&p->mu);
    while (list) {
        resattn_job *next = list->next;
        complete(p, list, status, msg);
        list = next;
    }
}

int resattn_pool_depth(resattn_pool *p) {
    pthread_mutex_lock(&p->mu);
    int d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

void resattn_pool_free(resattn_pool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1; /* workers empty the queue before they exit */
    pthread_cond_broadcast(&p->nonempty);
    pthread_cond_broadcast(&p->reap);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->workers[i].thread, NULL);
    if (p->reaper_started)
        pthread_join(p->reaper, NULL);
    for (int i = 0; p->workers && i < p->opt.workers; i++) {
        free(p->workers[i].input);
        free(p->workers[i].logits);
    }
    for (int m = 0; m < p->num_models; m++)
        resattn_pool_model_free(p->fixed[m]);
    free(p->fixed);
    free(p->workers);
    pthread_cond_destroy(&p->nonempty);
    pthread_cond_destroy(&p->warmed);
    pthread_cond_destroy(&p->reap);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
