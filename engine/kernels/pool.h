/*
 * pool.h — a small fixed pool of worker threads that runs one function on every
 * thread at once (fork-join), the way the layers split matmuls and per-head loops.
 */
#ifndef STRATA_KERNELS_POOL_H
#define STRATA_KERNELS_POOL_H

#include "strata.h"

typedef struct pool pool;

/* fn(arg, ti, nt) runs once for each ti in [0, nt). */
typedef void (*pool_fn)(void *arg, int ti, int nt);

/* A pool of n_threads (the caller counts as thread 0, so n_threads - 1 are started). */
strata_status pool_new(int n_threads, pool **out, strata_error *err);
/* Stops and joins the workers; accepts NULL. */
void pool_free(pool *p);
int pool_threads(const pool *p);
/* Run fn on every thread and return when all have finished. Not reentrant. */
void pool_run(pool *p, pool_fn fn, void *arg);

/* Threads to use by default: $STRATA_THREADS if set and valid, else the online CPUs. */
int pool_default_threads(void);

#endif
