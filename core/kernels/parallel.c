/*
 * The helper thread of core/kernels/parallel.h. State machine on one atomic word:
 * 0 idle -> 1 task posted (by the owner) -> 2 task done (by the helper) -> 0 (owner).
 * Both sides spin on the word for a short while (SPIN_NS) with a pause instruction, then
 * block: the helper on a condition variable, the owner by yielding.
 */
#include "kernels/parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long the idle helper keeps spinning for the next task of the same forward pass
 * before it sleeps (the gaps between layers are well under this). */
#define SPIN_NS 200000L

static struct {
    pthread_mutex_t mu, owner;
    pthread_cond_t go;
    resattn_task fn;
    void *arg;
    int state;
    int sleeping;
    int started;
} helper = {PTHREAD_MUTEX_INITIALIZER,
            PTHREAD_MUTEX_INITIALIZER,
            PTHREAD_COND_INITIALIZER,
            NULL,
            NULL,
            0,
            0,
            0};
static pthread_once_t helper_once = PTHREAD_ONCE_INIT;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *helper_main(void *unused) {
    (void)unused;
    for (;;) {
        long t0 = now_ns();
        int spins = 0;
        while (__atomic_load_n(&helper.state, __ATOMIC_ACQUIRE) != 1) {
            cpu_relax();
            if (++spins % 256 == 0 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&helper.mu);
                helper.sleeping = 1;
                while (__atomic_load_n(&helper.state, __ATOMIC_ACQUIRE) != 1)
                    pthread_cond_wait(&helper.go, &helper.mu);
                helper.sleeping = 0;
                pthread_mutex_unlock(&helper.mu);
            }
        }
        helper.fn(helper.arg, 1, 2);
        __atomic_store_n(&helper.state, 2, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void helper_forget(void) {
    helper.started = 0;
}

static void helper_start(void) {
    pthread_t t;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr))
        return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, helper_main, NULL) == 0 &&
        pthread_atfork(NULL, NULL, helper_forget) == 0)
        helper.started = 1;
    pthread_attr_destroy(&attr);
}

void resattn_parallel2(resattn_task fn, void *arg, int two) {
    if (two)
        pthread_once(&helper_once, helper_start);
    if (!two || !helper.started || pthread_mutex_trylock(&helper.owner)) {
        fn(arg, 0, 1);
        return;
    }
    helper.fn = fn, helper.arg = arg;
    __atomic_store_n(&helper.state, 1, __ATOMIC_RELEASE);
    /* wake it if it went to sleep; taking the mutex orders this after its last check */
    pthread_mutex_lock(&helper.mu);
    if (helper.sleeping)
        pthread_cond_signal(&helper.go);
    pthread_mutex_unlock(&helper.mu);
    fn(arg, 0, 2);
    for (int spins = 0; __atomic_load_n(&helper.state, __ATOMIC_ACQUIRE) != 2; spins++) {
        cpu_relax();
        if (spins > 4096) /* the helper was descheduled: give it the core */
            sched_yield();
    }
    __atomic_store_n(&helper.state, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&helper.owner);
}

void resattn_barrier_wait(resattn_barrier *b, int nparts) {
    if (nparts < 2)
        return;
    int phase = __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nparts) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->phase, phase + 1, __ATOMIC_RELEASE);
        return;
    }
    for (int spins = 0; __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) == phase; spins++) {
        cpu_relax();
        if (spins > 4096)
            sched_yield();
    }
}

static int budget; /* 0: not set, follow OpenBLAS */
static _Thread_local int in_split;

void resattn_parallel_set_threads(int n) {
    __atomic_store_n(&budget, n < 1 ? 1 : n, __ATOMIC_RELAXED);
}

int resattn_parallel_threads(void) {
    int n = __atomic_load_n(&budget, __ATOMIC_RELAXED);
    return n ? n : openblas_get_num_threads();
}

void resattn_parallel_in_split(int on) {
    in_split = on;
}

int resattn_parallel_wanted(void) {
    return !in_split && resattn_parallel_threads() > 1;
}
