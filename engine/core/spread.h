/*
 * spread.h — one-off work split over the online CPUs, for the load's long loops
 * (quantizing to int8, packing panels), where a runner's thread pool does not
 * exist yet: fn over [0, n) in contiguous parts, one thread each.
 */
#ifndef STRATA_CORE_SPREAD_H
#define STRATA_CORE_SPREAD_H

#include "strata.h"

/* Work on items [lo, hi); a failure's message goes to err. */
typedef strata_status (*spread_fn)(void *arg, int lo, int hi, strata_error *err);

/* fn over [0, n) in up to one part per online CPU (at most 16), part bounds on
 * multiples of `unit`; below `min_items` items, or where a thread cannot start,
 * the caller does the part itself. Returns the first failing part's status. */
strata_status spread_run(int n, int unit, int min_items, spread_fn fn, void *arg, strata_error *err);

#endif
