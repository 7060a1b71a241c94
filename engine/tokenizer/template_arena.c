/*
 * template_arena.c — the bump allocator behind every parse and render, and the
 * one way to fail (tpl_throw). A render's values all die together when the render
 * ends, so an arena replaces reference counting; its byte bound turns a template
 * that grows strings without end into STRATA_E_LIMIT instead of exhausting memory.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "tokenizer/template_internal.h"

#define CHUNK_MIN (64u << 10)

struct tpl_chunk {
    tpl_chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
};

_Noreturn void tpl_throw(tpl_arena *a, strata_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->err->message, sizeof a->err->message, fmt, ap);
    va_end(ap);
    a->err->status = status;
    longjmp(*a->jump, 1);
}

void *tpl_alloc(tpl_arena *a, size_t n)
{
    if (n > SIZE_MAX / 4)
        tpl_throw(a, STRATA_E_LIMIT, "chat template: allocation of %zu bytes refused", n);
    n = (n + 15) & ~(size_t)15;
    tpl_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > CHUNK_MIN ? n : CHUNK_MIN;
        if (a->cap && a->total + size > a->cap)
            tpl_throw(a, STRATA_E_LIMIT, "chat template: memory limit of %zu bytes reached",
                      a->cap);
        c = malloc(sizeof *c + size);
        if (!c)
            tpl_throw(a, STRATA_E_NOMEM, "chat template: out of memory");
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->total += size;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *tpl_strndup(tpl_arena *a, const char *s, size_t n)
{
    char *p = tpl_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    return p;
}

void tpl_arena_free(tpl_arena *a)
{
    while (a->head) {
        tpl_chunk *next = a->head->next;
        free(a->head);
        a->head = next;
    }
    a->total = 0;
}
