/*
 * tables.c — the two open-addressing hash tables of the BPE model: token string -> id
 * (short keys stored inline) and (left id, right id) -> (rank, merged id), the latter
 * built in slot order so that loading sweeps memory instead of missing the cache.
 */
#include <stdlib.h>

#include "tokenizer/util.h"

/* Tables stay at most 3/4 full. */
static size_t table_size(size_t expected)
{
    size_t size = 16;
    while (size * 3 < expected * 4 + 4)
        size *= 2;
    return size;
}

static int too_full(size_t count, size_t mask)
{
    return (count + 1) * 4 > (mask + 1) * 3;
}

int tk_strmap_init(tk_strmap *m, size_t expected)
{
    size_t size = table_size(expected);
    m->slots = tk_big_alloc(size * sizeof *m->slots);
    m->mask = size - 1;
    m->count = 0;
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < size; i++)
        m->slots[i].value = -1;
    return 0;
}

static inline const char *slot_key(const tk_strmap_slot *s)
{
    return s->len <= 8 ? s->key.bytes : s->key.ptr;
}

static int strmap_grow(tk_strmap *m)
{
    tk_strmap old = *m;
    if (tk_strmap_init(m, (old.mask + 1)))
        return *m = old, -1;
    for (size_t i = 0; i <= old.mask; i++)
        if (old.slots[i].value >= 0)
            tk_strmap_put(m, slot_key(&old.slots[i]), old.slots[i].len, old.slots[i].value);
    tk_big_free(old.slots, (old.mask + 1) * sizeof *old.slots);
    return 0;
}

int tk_strmap_put_hashed(tk_strmap *m, const char *key, size_t len, int32_t value, uint64_t hash)
{
    if (too_full(m->count, m->mask) && strmap_grow(m))
        return -1;
    for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
        tk_strmap_slot *s = &m->slots[i];
        if (s->value < 0) {
            s->len = (uint32_t)len;
            if (len <= 8) {
                memset(s->key.bytes, 0, 8);     /* zero-padded: compared as one word */
                memcpy(s->key.bytes, key, len);
            } else {
                s->key.ptr = key;
            }
            s->value = value;
            m->count++;
            return 0;
        }
        if (s->len == len && !memcmp(slot_key(s), key, len)) {
            s->value = value;
            return 0;
        }
    }
}

int32_t tk_strmap_get_hashed(const tk_strmap *m, const char *key, size_t len, uint64_t hash)
{
    if (!m->slots)
        return -1;
    if (len <= 8) {
        uint64_t want = 0, have;
        memcpy(&want, key, len);
        for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
            const tk_strmap_slot *s = &m->slots[i];
            if (s->value < 0)
                return -1;
            memcpy(&have, s->key.bytes, 8);
            if (s->len == len && have == want)
                return s->value;
        }
    }
    for (size_t i = hash & m->mask;; i = (i + 1) & m->mask) {
        const tk_strmap_slot *s = &m->slots[i];
        if (s->value < 0)
            return -1;
        if (s->len == len && !memcmp(slot_key(s), key, len))
            return s->value;
    }
}

void tk_strmap_free(tk_strmap *m)
{
    if (m->slots)
        tk_big_free(m->slots, (m->mask + 1) * sizeof *m->slots);
    memset(m, 0, sizeof *m);
}

int tk_pairmap_init(tk_pairmap *m, size_t expected)
{
    size_t size = table_size(expected);
    m->slots = tk_big_alloc(size * sizeof *m->slots);
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < size; i++)
        m->slots[i].key = UINT64_MAX;
    m->mask = size - 1;
    m->count = 0;
    return 0;
}

int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged)
{
    if (too_full(m->count, m->mask)) {
        tk_pairmap old = *m;
        if (tk_pairmap_init(m, old.mask + 1))
            return *m = old, -1;
        for (size_t i = 0; i <= old.mask; i++)
            if (old.slots[i].key != UINT64_MAX)
                tk_pairmap_put(m, (int32_t)(old.slots[i].key >> 32), (int32_t)(uint32_t)old.slots[i].key,
                               old.slots[i].rank, old.slots[i].merged);
        tk_big_free(old.slots, (old.mask + 1) * sizeof *old.slots);
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = tk_pair_hash(a, b) & m->mask;; i = (i + 1) & m->mask) {
        tk_pairmap_slot *s = &m->slots[i];
        if (s->key == key) {            /* a repeated merge: the later rank wins, as in HF */
            s->rank = rank;
            s->merged = merged;
            return 0;
        }
        if (s->key == UINT64_MAX) {
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            m->count++;
            return 0;
        }
    }
}

int tk_pairmap_build(tk_pairmap *m, const tk_pairmap_slot *entries, size_t n)
{
    if (tk_pairmap_init(m, n))
        return -1;
    size_t size = m->mask + 1, shift = 0;
    while ((size >> shift) > 4096)
        shift++;
    size_t n_buckets = size >> shift;
    size_t *start = calloc(n_buckets + 1, sizeof *start);
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!start || !order) {
        free(start);
        free(order);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        start[((tk_pair_hash(entries[i].key >> 32, (int32_t)entries[i].key) & m->mask) >> shift) + 1]++;
    for (size_t b = 0; b < n_buckets; b++)
        start[b + 1] += start[b];
    for (size_t i = 0; i < n; i++)
        order[start[(tk_pair_hash(entries[i].key >> 32, (int32_t)entries[i].key) & m->mask) >> shift]++] = (uint32_t)i;
    for (size_t i = 0; i < n; i++) {
        const tk_pairmap_slot *e = &entries[order[i]];
        tk_pairmap_put(m, (int32_t)(e->key >> 32), (int32_t)e->key, e->rank, e->merged);
    }
    free(start);
    free(order);
    return 0;
}

const tk_pairmap_slot *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = tk_pair_hash(a, b) & m->mask;; i = (i + 1) & m->mask) {
        const tk_pairmap_slot *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

void tk_pairmap_free(tk_pairmap *m)
{
    if (m->slots)
        tk_big_free(m->slots, (m->mask + 1) * sizeof *m->slots);
    memset(m, 0, sizeof *m);
}
