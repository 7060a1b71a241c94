/*
 * error.h — how the engine reports failure: strata_fail() fills a strata_error
 * (which may be NULL) and returns the status, so a failing path is one line:
 *     return strata_fail(err, STRATA_E_WEIGHTS, "%s: tensor %s missing", file, name);
 */
#ifndef STRATA_CORE_ERROR_H
#define STRATA_CORE_ERROR_H

#include "strata.h"

#if defined(__GNUC__)
#define STRATA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define STRATA_PRINTF(a, b)
#endif

strata_status strata_fail(strata_error *err, strata_status status, const char *fmt, ...)
    STRATA_PRINTF(3, 4);

/* Prefix an existing error message with context ("model.safetensors: " ...). */
strata_status strata_fail_prefix(strata_error *err, strata_status status, const char *fmt, ...)
    STRATA_PRINTF(3, 4);

#define STRATA_TRY(expr)                      \
    do {                                      \
        strata_status try_status_ = (expr);   \
        if (try_status_ != STRATA_OK)         \
            return try_status_;               \
    } while (0)

#endif
