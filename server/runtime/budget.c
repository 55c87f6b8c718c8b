/*
 * The memory budget (see budget.h): an atomic byte count against an atomic limit. Admission
 * is a compare-and-swap loop, so two threads can never both take the last bytes; charges
 * that must not fail are plain atomic adds. Holds are owned by one request and touched by
 * one thread at a time (the transport's thread, or the worker while the request is
 * suspended), so they need no lock of their own.
 */
#include "runtime/budget.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIB (1024LL * 1024)
/* Encoded answer bytes per class and image: logits and probabilities as JSON numbers (up to
 * 16 characters each with the comma), plus a top-k entry ({"label":...,"index":...,
 * "probability":...}) besides the label itself. */
#define ANSWER_BYTES_PER_CLASS 80
#define ANSWER_FIXED_BYTES 4096

struct resattn_budget {
    atomic_llong limit;
    atomic_llong in_use;
};

resattn_budget *resattn_budget_new(long long limit) {
    resattn_budget *b = calloc(1, sizeof *b);
    if (b)
        atomic_init(&b->limit, limit);
    return b;
}

void resattn_budget_free(resattn_budget *b) {
    free(b);
}

long long resattn_budget_limit(const resattn_budget *b) {
    return atomic_load(&((resattn_budget *)b)->limit);
}

void resattn_budget_set_limit(resattn_budget *b, long long limit) {
    atomic_store(&b->limit, limit);
}

long long resattn_budget_in_use(const resattn_budget *b) {
    return atomic_load(&((resattn_budget *)b)->in_use);
}

/* The part of the budget a request of `total` bytes may use: a large one (over 1/16 of the
 * budget) leaves the last eighth to small ones. */
static long long usable_by(long long limit, size_t total) {
    return (long long)total > limit / 16 ? limit - limit / 8 : limit;
}

resattn_budget_verdict resattn_budget_hold_grow(resattn_budget_hold *h, size_t more) {
    if (!h->budget || more == 0) {
        h->bytes += more;
        return RESATTN_BUDGET_OK;
    }
    resattn_budget *b = h->budget;
    size_t total = h->bytes + more;
    long long cap = usable_by(atomic_load(&b->limit), total);
    if ((long long)total > cap)
        return RESATTN_BUDGET_NEVER;
    long long cur = atomic_load(&b->in_use);
    do {
        if (cur + (long long)more > cap)
            return RESATTN_BUDGET_FULL;
    } while (!atomic_compare_exchange_weak(&b->in_use, &cur, cur + (long long)more));
    h->bytes = total;
    return RESATTN_BUDGET_OK;
}

void resattn_budget_hold_set(resattn_budget_hold *h, size_t bytes) {
    if (h->budget && bytes != h->bytes)
        atomic_fetch_add(&h->budget->in_use, (long long)bytes - (long long)h->bytes);
    h->bytes = bytes;
}

void resattn_budget_hold_release(resattn_budget_hold *h) {
    resattn_budget_hold_set(h, 0);
}

/* ---- estimates -------------------------------------------------------------------------- */

size_t resattn_budget_infer_bytes(const resattn_model_info *m, int n, int input_in_body) {
    size_t chw = (size_t)m->in_channels * (size_t)m->in_height * (size_t)m->in_width;
    size_t k = (size_t)m->num_classes, label = 0;
    for (int i = 0; m->labels && i < m->num_classes; i++) {
        size_t l = strlen(m->labels[i]);
        label = l > label ? l : label;
    }
    size_t input = input_in_body ? 0 : (size_t)n * chw * sizeof(float);
    return input + (size_t)n * k * (sizeof(float) + ANSWER_BYTES_PER_CLASS + label) +
           ANSWER_FIXED_BYTES;
}

static int type_is(const char *ct, const char *prefix) {
    return ct && !strncasecmp(ct, prefix, strlen(prefix));
}

size_t resattn_budget_parse_bytes(const char *ct, size_t len) {
    if (type_is(ct, "image/") || type_is(ct, "multipart/") ||
        type_is(ct, "application/octet-stream") || type_is(ct, "application/x-npy"))
        return 0; /* parsed where it lies in the body */
    return 2 * len;
}

long long resattn_budget_decode_bytes(long long pixels, int channels) {
    return pixels * (3 + channels);
}

/* ---- the default budget ----------------------------------------------------------------- */

void resattn_memory_plan_compute(resattn_memory_plan *p) {
    p->margin = p->limit / 10 > 16 * MIB ? p->limit / 10 : 16 * MIB;
    p->fixed = p->resident + p->workspaces + p->connections + p->parse + p->margin;
    p->budget = p->limit - p->fixed;
}
