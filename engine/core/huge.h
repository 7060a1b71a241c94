/*
 * huge.h — zeroed anonymous memory on 2 MiB huge pages (MADV_HUGEPAGE), for what
 * the engine streams whole every step: the sessions' SSM state and the weights it
 * repacks at load. On 4 KiB pages a stream of hundreds of MiB pays a page walk
 * every 4 KiB — on the Zen 4 this was written on, read bandwidth 25 GB/s instead
 * of 34. Below one huge page it is plain calloc.
 */
#ifndef STRATA_CORE_HUGE_H
#define STRATA_CORE_HUGE_H

#include <stddef.h>

/* bytes of zeroed memory, or NULL; *len is what huge_free needs back. */
void *huge_zalloc(size_t bytes, size_t *len);
/* Frees what huge_zalloc returned (NULL: nothing). */
void huge_free(void *p, size_t len);

/* Many allocations, freed together, carved from huge-page chunks of at least
 * HUGE_ARENA_CHUNK bytes (pages of a chunk never touched cost nothing). Zero-init. */
#define HUGE_ARENA_CHUNK ((size_t)64 << 20)
typedef struct huge_chunk huge_chunk;
typedef struct huge_arena {
    huge_chunk *chunks;     /* the newest first */
} huge_arena;

/* bytes of zeroed memory, 64-byte aligned, or NULL when out of memory. */
void *huge_arena_alloc(huge_arena *a, size_t bytes);
void huge_arena_free(huge_arena *a);

#endif
