/*
 * error.c — status names and the strata_fail helpers every module reports through.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

const char *strata_status_name(strata_status status)
{
    switch (status) {
    case STRATA_OK: return "ok";
    case STRATA_E_IO: return "io";
    case STRATA_E_FORMAT: return "format";
    case STRATA_E_CONFIG: return "config";
    case STRATA_E_WEIGHTS: return "weights";
    case STRATA_E_INVALID: return "invalid";
    case STRATA_E_RANGE: return "range";
    case STRATA_E_UNSUPPORTED: return "unsupported";
    case STRATA_E_NOMEM: return "nomem";
    case STRATA_E_TEMPLATE: return "template";
    case STRATA_E_LIMIT: return "limit";
    }
    return "unknown";
}

strata_status strata_fail(strata_error *err, strata_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

strata_status strata_fail_prefix(strata_error *err, strata_status status, const char *fmt, ...)
{
    if (err) {
        char prefix[512], old[sizeof err->message];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        size_t n = strlen(prefix);
        memcpy(old, err->message, sizeof old);
        if (n >= sizeof err->message)
            n = sizeof err->message - 1;
        memcpy(err->message, prefix, n);
        size_t room = sizeof err->message - 1 - n, len = strnlen(old, sizeof old - 1);
        if (len > room)
            len = room;
        memcpy(err->message + n, old, len);
        err->message[n + len] = '\0';
        err->status = status;
    }
    return status;
}
