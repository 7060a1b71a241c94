/*
 * buf.c — the growable byte buffer and the piece lists every stage passes along, and
 * big allocations on huge pages (hash tables, the JSON arena).
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "tokenizer/util.h"

int tk_buf_reserve(tk_buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tk_buf_append(tk_buf *b, const void *s, size_t n)
{
    if (tk_buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

void tk_buf_free(tk_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void tk_pieces_clear(tk_pieces *p)
{
    p->text.len = 0;
    p->n = 0;
}

int tk_pieces_open(tk_pieces *p, int at_origin)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        size_t *off = realloc(p->off, cap * sizeof *off);
        if (!off)
            return -1;
        p->off = off;
        size_t *len = realloc(p->len, cap * sizeof *len);
        if (!len)
            return -1;
        p->len = len;
        uint8_t *o = realloc(p->at_origin, cap);
        if (!o)
            return -1;
        p->at_origin = o;
        p->cap = cap;
    }
    p->off[p->n] = p->text.len;
    p->len[p->n] = 0;
    p->at_origin[p->n] = (uint8_t)at_origin;
    return 0;
}

void tk_pieces_close(tk_pieces *p)
{
    p->len[p->n] = p->text.len - p->off[p->n];
    p->n++;
}

int tk_pieces_add(tk_pieces *p, const char *s, size_t n, int at_origin)
{
    if (tk_pieces_open(p, at_origin) || tk_buf_append(&p->text, s, n))
        return -1;
    tk_pieces_close(p);
    return 0;
}

void tk_pieces_free(tk_pieces *p)
{
    tk_buf_free(&p->text);
    free(p->off);
    free(p->len);
    free(p->at_origin);
    memset(p, 0, sizeof *p);
}

#define HUGE_PAGE ((size_t)2 << 20)

/* Own mappings rather than malloc: freed memory goes back to the system at once,
 * instead of staying in the heap after a tokenizer is freed. */
void *tk_big_alloc(size_t bytes)
{
    if (bytes < HUGE_PAGE)
        return malloc(bytes);
    size_t size = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    char *map = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)map + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (p > map)
        munmap(map, (size_t)(p - map));
    if (p + size < map + size + HUGE_PAGE)
        munmap(p + size, (size_t)(map + size + HUGE_PAGE - (p + size)));
    madvise(p, size, MADV_HUGEPAGE);
    return p;
}

void tk_big_free(void *p, size_t bytes)
{
    if (!p)
        return;
    if (bytes < HUGE_PAGE)
        free(p);
    else
        munmap(p, (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
}
