/*
 * util.c — buffers, pieces, UTF-8 and hash tables shared by the tokenizer stages.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <utf8proc.h>

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

/* Bytes of the valid char at s[0..n), or 0 when s starts an invalid or incomplete
 * sequence; *consumed is set to the length of the maximal subpart either way. */
static size_t utf8_char(const unsigned char *s, size_t n, size_t *consumed)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    *consumed = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned char lower = i == 1 ? lo : 0x80, upper = i == 1 ? hi : 0xBF;
        if (s[i] < lower || s[i] > upper)
            return 0;
        *consumed = i + 1;
    }
    return need;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, consumed;
    while (i < n) {
        if (u[i] < 0x80) {
            uint64_t w;
            while (i + 8 <= n && (memcpy(&w, u + i, 8), !(w & 0x8080808080808080ULL)))
                i += 8;
            while (i < n && u[i] < 0x80)
                i++;
            continue;
        }
        if (u[i] >= 0xC2 && u[i] <= 0xDF && i + 1 < n && (u[i + 1] & 0xC0) == 0x80) {
            i += 2;             /* the common two-byte char, e.g. GPT-2's Ġ */
            continue;
        }
        size_t k = utf8_char(u + i, n - i, &consumed);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

int tk_utf8_append_lossy(tk_buf *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t good = tk_utf8_valid_prefix(s + i, n - i);
        if (tk_buf_append(b, s + i, good))
            return -1;
        i += good;
        if (i < n) {
            size_t consumed;
            utf8_char((const unsigned char *)s + i, n - i, &consumed);
            if (tk_buf_append(b, "\xEF\xBF\xBD", 3))
                return -1;
            i += consumed;
        }
    }
    return 0;
}

int tk_utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int tk_is_whitespace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* GPT-2's map: printable Latin-1 bytes stand for themselves; the other 68 bytes
 * (0..32, 127..160, 173) take 256, 257, ... in byte order. */
uint32_t tk_byte_to_char(unsigned char b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return (uint32_t)b + 162u;
    if (b == 173)
        return 323;
    return b;
}

int tk_char_to_byte(uint32_t cp)
{
    if (cp >= 256 && cp <= 288)
        return (int)(cp - 256);
    if (cp >= 289 && cp <= 322)
        return (int)(cp - 162);
    if (cp == 323)
        return 173;
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 255 && cp != 173))
        return (int)cp;
    return -1;
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

int tk_is_word_char(uint32_t cp)
{
    if (cp == '_')
        return 1;
    if (cp == 0x200C || cp == 0x200D)       /* Join_Control */
        return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}
