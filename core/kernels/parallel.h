/*
 * Two-way parallelism inside one forward pass: a process-wide helper thread that runs the
 * second half of a task while the caller runs the first. Used for single images with two
 * threads (a batch of two or more is split over threads whole instead, core/model/ctx.c).
 *
 * The hand-off spins briefly before sleeping, so the dozens of hand-offs of one forward
 * pass cost microseconds, not scheduler wake-ups. One caller at a time owns the helper; a
 * caller that finds it busy (another context) runs the whole task itself, as does a process
 * after fork() (the child has no helper thread).
 */
#ifndef RESATTN_PARALLEL_H
#define RESATTN_PARALLEL_H

/* A task: do part `part` of `nparts` (1 or 2) of the work described by arg. */
typedef void (*resattn_task)(void *arg, int part, int nparts);

/*
 * fn(arg, 0, 2) on this thread and fn(arg, 1, 2) on the helper when two != 0 and the helper
 * is free, else fn(arg, 0, 1). Returns when every part has finished.
 */
void resattn_parallel2(resattn_task fn, void *arg, int two);

/* A barrier for the parts of one task (zero-initialise; wait with the task's nparts). */
typedef struct resattn_barrier {
    int count, phase;
} resattn_barrier;

void resattn_barrier_wait(resattn_barrier *b, int nparts);

/* The thread budget of one forward call (resattn_set_blas_threads); before any call, the
 * OpenBLAS setting (OPENBLAS_NUM_THREADS or the core count). */
void resattn_parallel_set_threads(int n);
int resattn_parallel_threads(void);

/* Marks the calling thread as running one part of a batch already split over threads
 * (core/model/ctx.c): its layers then run whole, without the helper. */
void resattn_parallel_in_split(int on);

/* Whether this thread's layers should be split over two threads. */
int resattn_parallel_wanted(void);

#endif
