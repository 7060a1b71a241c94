/*
 * log.c — the server's log lines (UTC time stamp, level, message on stderr, filtered
 * by --log-level) and its monotonic clock. Apart from main.c so that the fuzz
 * harnesses and tests can link the route code without the daemon's main.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server.h"

static const char *const levels[] = {"error", "warn", "info", "debug"};

static int level_rank(const char *l)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(levels[i], l))
            return i;
    return 2;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void log_line(const server *srv, const char *level, const char *fmt, ...)
{
    if (level_rank(level) > level_rank(srv->cfg.log_level))
        return;
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s %s ", stamp, level);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
