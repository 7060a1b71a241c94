/*
 * spread.c — spread_run: plain threads started and joined per call, since the
 * load runs once and its loops (quantizing, packing) are long enough that the
 * start-up is noise next to them.
 */
#include <pthread.h>
#include <unistd.h>

#include "core/spread.h"

#define SPREAD_MAX_THREADS 16

typedef struct spread_part {
    spread_fn fn;
    void *arg;
    int lo, hi;
    strata_error err;
    strata_status status;
} spread_part;

static void *part_run(void *arg)
{
    spread_part *p = arg;
    p->status = p->fn(p->arg, p->lo, p->hi, &p->err);
    return NULL;
}

strata_status spread_run(int n, int unit, int min_items, spread_fn fn, void *arg, strata_error *err)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int units = (n + unit - 1) / unit;
    int nt = cpus < 1 ? 1 : cpus > SPREAD_MAX_THREADS ? SPREAD_MAX_THREADS : (int)cpus;
    if (n < min_items)
        nt = 1;
    if (nt > units)
        nt = units > 0 ? units : 1;
    spread_part parts[SPREAD_MAX_THREADS];
    pthread_t tids[SPREAD_MAX_THREADS];
    int started[SPREAD_MAX_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        int lo = (int)((long long)units * t / nt) * unit, hi = (int)((long long)units * (t + 1) / nt) * unit;
        parts[t] = (spread_part){.fn = fn, .arg = arg, .lo = lo, .hi = hi < n ? hi : n};
        started[t] = t > 0 && pthread_create(&tids[t], NULL, part_run, &parts[t]) == 0;
    }
    for (int t = 0; t < nt; t++)
        if (!started[t])
            part_run(&parts[t]);
    strata_status s = STRATA_OK;
    for (int t = 0; t < nt; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        if (s == STRATA_OK && parts[t].status != STRATA_OK) {
            s = parts[t].status;
            if (err)
                *err = parts[t].err;
        }
    }
    return s;
}
