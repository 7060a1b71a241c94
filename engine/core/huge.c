/*
 * huge.c — see huge.h. A mapping one huge page longer than asked is trimmed to a
 * 2 MiB-aligned run, so every page of it can be a huge page.
 */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "core/huge.h"

#define HUGE_PAGE ((size_t)2 << 20)

void *huge_zalloc(size_t bytes, size_t *len)
{
    *len = 0;
    if (bytes < HUGE_PAGE)
        return calloc(1, bytes ? bytes : 1);
    size_t want = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1), span = want + HUGE_PAGE;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    char *a = (char *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    if (a + want < p + span)
        munmap(a + want, (size_t)(p + span - (a + want)));
#ifdef MADV_HUGEPAGE
    madvise(a, want, MADV_HUGEPAGE);
#endif
    *len = want;
    return a;
}

void huge_free(void *p, size_t len)
{
    if (p && len)
        munmap(p, len);
    else
        free(p);
}

struct huge_chunk {
    char *base;
    size_t len, used;
    huge_chunk *next;
};

void *huge_arena_alloc(huge_arena *a, size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    huge_chunk *c = a->chunks;
    if (!c || c->len - c->used < bytes) {
        c = malloc(sizeof *c);
        if (!c)
            return NULL;
        c->base = huge_zalloc(bytes > HUGE_ARENA_CHUNK ? bytes : HUGE_ARENA_CHUNK, &c->len);
        if (!c->base) {
            free(c);
            return NULL;
        }
        c->used = 0;
        c->next = a->chunks;
        a->chunks = c;
    }
    void *p = c->base + c->used;
    c->used += bytes;
    return p;
}

void huge_arena_free(huge_arena *a)
{
    while (a->chunks) {
        huge_chunk *c = a->chunks;
        a->chunks = c->next;
        huge_free(c->base, c->len);
        free(c);
    }
}
