/*
 * Triton-shaped statistics of one model version (see model_stats.h). Durations are kept as
 * integer nanoseconds in relaxed atomics; a reader may see one request half recorded (its
 * count before its time), as with the Prometheus metrics.
 */
#include "runtime/model_stats.h"

#include <stdlib.h>
#include <time.h>

resattn_model_stats *resattn_model_stats_new(int max_batch) {
    resattn_model_stats *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->batch = calloc((size_t)s->max_batch, sizeof *s->batch);
    if (!s->batch) {
        free(s);
        return NULL;
    }
    return s;
}

void resattn_model_stats_free(resattn_model_stats *s) {
    if (!s)
        return;
    free(s->batch);
    free(s);
}

static void add(resattn_stat_duration *d, double seconds) {
    atomic_fetch_add_explicit(&d->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->ns, (unsigned long long)(seconds > 0 ? seconds * 1e9 + 0.5 : 0),
                              memory_order_relaxed);
}

void resattn_model_stats_success(resattn_model_stats *s, int n, double total, double queue,
                                 double input, double infer, double output) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_fetch_add_explicit(&s->inference_count, (unsigned long long)n, memory_order_relaxed);
    atomic_store_explicit(&s->last_inference,
                          (unsigned long long)ts.tv_sec * 1000 +
                              (unsigned long long)ts.tv_nsec / 1000000,
                          memory_order_relaxed);
    add(&s->success, total);
    add(&s->queue, queue);
    add(&s->compute_input, input);
    add(&s->compute_infer, infer);
    add(&s->compute_output, output);
}

void resattn_model_stats_fail(resattn_model_stats *s, double total) {
    add(&s->fail, total);
}

void resattn_model_stats_execution(resattn_model_stats *s, int batch, double input, double infer,
                                   double output) {
    atomic_fetch_add_explicit(&s->execution_count, 1, memory_order_relaxed);
    if (batch < 1 || batch > s->max_batch)
        return;
    resattn_batch_stat *b = &s->batch[batch - 1];
    add(&b->compute_input, input);
    add(&b->compute_infer, infer);
    add(&b->compute_output, output);
}

static json_t *duration(const resattn_stat_duration *d) {
    return json_pack("{s:I, s:I}", "count",
                     (json_int_t)atomic_load_explicit(&d->count, memory_order_relaxed), "ns",
                     (json_int_t)atomic_load_explicit(&d->ns, memory_order_relaxed));
}

json_t *resattn_model_stats_json(const resattn_model_stats *s, const char *name,
                                 const char *version) {
    json_t *batches = json_array();
    for (int i = 0; batches && i < s->max_batch; i++) {
        const resattn_batch_stat *b = &s->batch[i];
        if (!atomic_load_explicit(&b->compute_infer.count, memory_order_relaxed))
            continue; /* Triton lists only the batch sizes that ran */
        json_array_append_new(batches, json_pack("{s:i, s:o, s:o, s:o}", "batch_size", i + 1,
                                                 "compute_input", duration(&b->compute_input),
                                                 "compute_infer", duration(&b->compute_infer),
                                                 "compute_output", duration(&b->compute_output)));
    }
    json_t *inference =
        json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "success", duration(&s->success), "fail",
                  duration(&s->fail), "queue", duration(&s->queue), "compute_input",
                  duration(&s->compute_input), "compute_infer", duration(&s->compute_infer),
                  "compute_output", duration(&s->compute_output));
    if (!batches || !inference) {
        json_decref(batches);
        json_decref(inference);
        return NULL;
    }
    return json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "name", name, "version", version,
                     "last_inference",
                     (json_int_t)atomic_load_explicit(&s->last_inference, memory_order_relaxed),
                     "inference_count",
                     (json_int_t)atomic_load_explicit(&s->inference_count, memory_order_relaxed),
                     "execution_count",
                     (json_int_t)atomic_load_explicit(&s->execution_count, memory_order_relaxed),
                     "inference_stats", inference, "batch_stats", batches);
}
