/*
 * strbuf.h — a growable byte buffer for building responses (redis's sds, smaller).
 * Allocation failure is sticky: the buffer records it and later appends do nothing,
 * so callers check `failed` once at the end.
 */
#ifndef STRATA_SERVER_STRBUF_H
#define STRATA_SERVER_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct strbuf {
    char *data;     /* NUL-terminated when len > 0 */
    size_t len, cap;
    int failed;
} strbuf;

void sb_append(strbuf *b, const char *s, size_t n);
void sb_puts(strbuf *b, const char *s);
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (quotes and escapes). */
void sb_json_string(strbuf *b, const char *s, size_t n);
/* Drop the first n bytes. */
void sb_consume(strbuf *b, size_t n);
void sb_free(strbuf *b);

#endif
