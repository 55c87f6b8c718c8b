/*
 * Worker pool with dynamic batching (see pool.h). One mutex guards the queue (a singly
 * linked FIFO) and the slot count; `slots` counts reserved plus queued jobs so that the HTTP
 * layer can refuse a request (503) before suspending its connection. Workers hold the mutex
 * only to pick jobs, never while computing. A reaper thread answers queued jobs whose
 * deadline passed while every worker was busy, so a 504 never waits for a worker. It sleeps
 * until that can happen (jobs queued, every worker busy), then until the earliest deadline:
 * an idle server, or one whose workers keep up, never wakes it.
 */
#include "runtime/pool.h"
#include "maps/mask_summary.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct worker {
    resattn_pool *pool;
    pthread_t thread;
    resattn_ctx **ctx; /* [num_models] */
    float *input;      /* [max_batch, max C*H*W] concatenated batch */
    float *logits;     /* [max_batch, max num_classes] */
} worker;

struct resattn_pool {
    resattn_model *const *models;
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

/* Move queued jobs of `model` that fit into the batch (total images <= max_batch). */
static void gather(resattn_pool *p, int model, resattn_job **batch, int *count, int *total) {
    resattn_job *prev = NULL, *j = p->head;
    while (j && *total < p->opt.max_batch) {
        resattn_job *next = j->next;
        if (j->model == model && *total + j->n <= p->opt.max_batch) {
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
    int model = p->head->model, total = 0;
    *count = 0;
    gather(p, model, batch, count, &total);
    /* Wait for more only when no other worker is idle: an idle worker would take the next
     * request at once, so waiting would only add latency (e.g. to a lone client). */
    if (total < p->opt.max_batch && p->opt.max_delay_ms > 0 && !p->stop &&
        p->busy >= p->opt.workers - 1) {
        struct timespec until = abs_after(p->opt.max_delay_ms * 1e-3);
        while (total < p->opt.max_batch && !p->stop) {
            int rc = pthread_cond_timedwait(&p->nonempty, &p->mu, &until);
            gather(p, model, batch, count, &total);
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

static void run_batch(worker *w, resattn_job **batch, int count) {
    resattn_pool *p = w->pool;
    double now = resattn_now();
    int live = 0, total = 0;
    for (int i = 0; i < count; i++) {
        resattn_job *j = batch[i];
        j->queue_wait = now - j->enqueued;
        if (p->metrics)
            resattn_metrics_queue_wait(p->metrics, j->model, j->queue_wait);
        if (now > j->deadline) {
            complete(p, j, 504, "request timed out waiting for a worker");
            continue;
        }
        batch[live++] = j;
        total += j->n;
    }
    if (!live)
        return;
    const resattn_model_info *info = resattn_model_get_info(p->models[batch[0]->model]);
    size_t in_sz = (size_t)info->in_channels * info->in_height * info->in_width;
    size_t k = (size_t)info->num_classes;
    const float *in = batch[0]->input;
    float *out = batch[0]->logits;
    if (live > 1) { /* concatenate [n_i, C, H, W] inputs into one [total, C, H, W] */
        size_t off = 0;
        for (int i = 0; i < live; i++) {
            memcpy(w->input + off, batch[i]->input, sizeof(float) * in_sz * batch[i]->n);
            off += in_sz * batch[i]->n;
        }
        in = w->input;
        out = w->logits;
    }
    char err[RESATTN_ERR_LEN] = "";
    int masks = 0; /* capture costs a copy per block: only for batches that ask */
    for (int i = 0; i < live; i++)
        masks |= batch[i]->want_masks;
    resattn_ctx_capture_masks(w->ctx[batch[0]->model], masks);
    double t0 = resattn_now(), c0 = thread_cpu_seconds();
    resattn_status st = resattn_forward(w->ctx[batch[0]->model], in, total, out, err, sizeof err);
    double dt = resattn_now() - t0;
    if (p->metrics && st == RESATTN_OK)
        resattn_metrics_batch(p->metrics, batch[0]->model, total, dt, thread_cpu_seconds() - c0);
    size_t off = 0;
    int first = 0; /* the job's first image in the batch */
    for (int i = 0; i < live; i++) {
        resattn_job *j = batch[i];
        j->batch_size = total;
        j->infer_seconds = dt;
        first += j->n;
        resattn_status cs = RESATTN_OK;
        if (st == RESATTN_OK && j->want_masks)
            cs = resattn_mask_set_copy(p->models[j->model], w->ctx[j->model], first - j->n, j->n,
                                       &j->masks, err, sizeof err);
        if (st != RESATTN_OK || cs != RESATTN_OK) {
            off += k * j->n;
            complete(p, j, 500, err);
            continue;
        }
        if (live > 1)
            memcpy(j->logits, out + off, sizeof(float) * k * j->n);
        off += k * j->n;
        complete(p, j, 0, NULL);
    }
}

static void warm_up(worker *w) {
    resattn_pool *p = w->pool;
    char err[RESATTN_ERR_LEN] = "";
    int failed = 0;
    for (int m = 0; m < p->num_models && !failed; m++) {
        const resattn_model_info *info = resattn_model_get_info(p->models[m]);
        size_t in_sz = (size_t)info->in_channels * info->in_height * info->in_width;
        memset(w->input, 0, sizeof(float) * in_sz);
        if (resattn_forward(w->ctx[m], w->input, 1, w->logits, err, sizeof err) != RESATTN_OK)
            failed = 1;
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
    resattn_job **batch = malloc(sizeof *batch * (size_t)w->pool->opt.max_batch);
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

static resattn_status worker_init(resattn_pool *p, worker *w, char *err, size_t err_len) {
    size_t in_max = 0, k_max = 0;
    w->pool = p;
    w->ctx = calloc((size_t)p->num_models, sizeof *w->ctx);
    if (!w->ctx)
        return RESATTN_ERR_NOMEM;
    for (int m = 0; m < p->num_models; m++) {
        const resattn_model_info *info = resattn_model_get_info(p->models[m]);
        size_t in_sz = (size_t)info->in_channels * info->in_height * info->in_width;
        in_max = in_sz > in_max ? in_sz : in_max;
        k_max = (size_t)info->num_classes > k_max ? (size_t)info->num_classes : k_max;
        resattn_status st =
            resattn_ctx_new(p->models[m], p->opt.max_batch, &w->ctx[m], err, err_len);
        if (st != RESATTN_OK)
            return st;
    }
    w->input = malloc(sizeof(float) * in_max * (size_t)p->opt.max_batch);
    w->logits = malloc(sizeof(float) * k_max * (size_t)p->opt.max_batch);
    if (!w->input || !w->logits) {
        snprintf(err, err_len, "out of memory for the batch buffers");
        return RESATTN_ERR_NOMEM;
    }
    return RESATTN_OK;
}

resattn_status resattn_pool_new(resattn_model *const *models, int num_models,
                                const resattn_pool_options *opt, resattn_metrics *metrics,
                                resattn_pool **out, char *err, size_t err_len) {
    *out = NULL;
    if (num_models < 1 || opt->workers < 1 || opt->max_batch < 1 || opt->capacity < 1) {
        snprintf(err, err_len, "pool: need at least one model, worker, batch slot, queue slot");
        return RESATTN_ERR_INVALID_ARGUMENT;
    }
    resattn_pool *p = calloc(1, sizeof *p);
    if (!p)
        return RESATTN_ERR_NOMEM;
    p->models = models;
    p->num_models = num_models;
    p->opt = *opt;
    p->metrics = metrics;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->nonempty, NULL);
    pthread_cond_init(&p->warmed, NULL);
    pthread_cond_init(&p->reap, NULL);
    p->workers = calloc((size_t)opt->workers, sizeof *p->workers);
    if (!p->workers) {
        resattn_pool_free(p);
        return RESATTN_ERR_NOMEM;
    }
    for (int i = 0; i < opt->workers; i++) {
        resattn_status st = worker_init(p, &p->workers[i], err, err_len);
        if (st != RESATTN_OK) {
            resattn_pool_free(p);
            return st;
        }
    }
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
        worker *w = &p->workers[i];
        for (int m = 0; w->ctx && m < p->num_models; m++)
            resattn_ctx_free(w->ctx[m]);
        free(w->ctx);
        free(w->input);
        free(w->logits);
    }
    free(p->workers);
    pthread_cond_destroy(&p->nonempty);
    pthread_cond_destroy(&p->warmed);
    pthread_cond_destroy(&p->reap);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
