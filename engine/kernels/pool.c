/*
 * pool.c — the thread pool behind strata's parallel loops (no OpenMP: one pool per
 * runner, sized to the cores, so steps never oversubscribe the machine).
 *
 * A run publishes (fn, arg) and bumps a generation counter; workers spin briefly on
 * the counter (a forward step issues a parallel region every few tens of
 * microseconds), then sleep on a condition variable. The caller does share 0 itself
 * and waits for the pending count to reach zero.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/error.h"
#include "kernels/pool.h"

/* Spins before sleeping; ~100 µs on current x86 cores. */
#define POOL_SPINS 4000

struct pool {
    int n;                      /* threads including the caller */
    pthread_t *threads;         /* (n - 1) */
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;            /* bumped once per run (and once to stop) */
    atomic_int pending;         /* workers still running the current fn */
    atomic_int stop;
    pool_fn fn;
    void *arg;
};

typedef struct worker_arg {
    pool *p;
    int index;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static unsigned wait_generation(pool *p, unsigned seen)
{
    unsigned g;
    for (int i = 0; i < POOL_SPINS; i++) {
        if ((g = atomic_load(&p->gen)) != seen)
            return g;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while ((g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *varg)
{
    pool *p = ((worker_arg *)varg)->p;
    int index = ((worker_arg *)varg)->index;
    free(varg);
    unsigned seen = 0;
    for (;;) {
        seen = wait_generation(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(p->arg, index, p->n);
        atomic_fetch_sub(&p->pending, 1);
    }
}

int pool_default_threads(void)
{
    const char *env = getenv("STRATA_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v >= 1 && v <= 256)
            return (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

strata_status pool_new(int n_threads, pool **out, strata_error *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 256)
        return strata_fail(err, STRATA_E_INVALID, "thread count %d is outside [1, 256]", n_threads);
    pool *p = calloc(1, sizeof *p);
    if (!p)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    if (n_threads > 1 && !(p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads))) {
        pool_free(p);
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (a)
            *a = (worker_arg){p, i};
        if (!a || pthread_create(&p->threads[i - 1], NULL, worker_main, a) != 0) {
            free(a);
            pool_free(p);
            return strata_fail(err, STRATA_E_NOMEM, "could not start worker thread %d of %d", i, n_threads);
        }
        p->started++;
    }
    *out = p;
    return STRATA_OK;
}

void pool_free(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

int pool_threads(const pool *p)
{
    return p ? p->n : 1;
}

void pool_run(pool *p, pool_fn fn, void *arg)
{
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    for (int i = 0; atomic_load(&p->pending) > 0; i++) {
        if (i < POOL_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}
