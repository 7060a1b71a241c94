/*
 * util.h — the small building blocks every tokenizer stage shares: a growable byte
 * buffer, a list of text pieces (what normalizers, pre-tokenizers and decoders pass
 * along), UTF-8 helpers with Rust's semantics (strict validation, lossy repair,
 * char::is_whitespace), the GPT-2 byte<->char map, and two open-addressing hash
 * tables: token string -> id and (left id, right id) -> merge. Implemented in buf.c,
 * utf8.c and tables.c.
 */
#ifndef STRATA_TOKENIZER_UTIL_H
#define STRATA_TOKENIZER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- growable byte buffer (always NUL-terminated when non-empty) */
typedef struct tk_buf {
    char *p;
    size_t len, cap;
} tk_buf;

int tk_buf_reserve(tk_buf *b, size_t extra);      /* 0 on success, -1 out of memory */
int tk_buf_append(tk_buf *b, const void *s, size_t n);
void tk_buf_free(tk_buf *b);

/* Memory for megabytes touched at once (hash tables, the JSON arena): on 2 MB pages
 * where the kernel allows them, so loading takes far fewer page faults and random
 * lookups miss the TLB less. Release with tk_big_free and the same size. */
void *tk_big_alloc(size_t bytes);
void tk_big_free(void *p, size_t bytes);

/* ---- pieces: spans of one text buffer. at_origin marks a piece that starts at
 * offset 0 of the original input (Metaspace's prepend_scheme "first" needs it). */
typedef struct tk_pieces {
    tk_buf text;
    size_t *off, *len;
    uint8_t *at_origin;
    size_t n, cap;
} tk_pieces;

void tk_pieces_clear(tk_pieces *p);
int tk_pieces_add(tk_pieces *p, const char *s, size_t n, int at_origin);
/* Start a piece whose bytes are appended to p->text afterwards; end it with _close. */
int tk_pieces_open(tk_pieces *p, int at_origin);
void tk_pieces_close(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);
/* Pieces that are all empty leave text.p NULL (no offset may be added to it). */
static inline const char *tk_piece(const tk_pieces *p, size_t i) { return p->text.p ? p->text.p + p->off[i] : ""; }

/* ---- UTF-8 */
/* Length of the valid UTF-8 prefix of s; equals n when all of s is valid. */
size_t tk_utf8_valid_prefix(const char *s, size_t n);
/* Decode one char of valid UTF-8; returns its byte length. */
static inline int tk_utf8_decode(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    if (u[0] < 0xE0) { *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); return 2; }
    if (u[0] < 0xF0) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}
static inline int tk_utf8_len(unsigned char lead)
{
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}
int tk_utf8_encode(uint32_t cp, char *out);        /* returns bytes written (1..4) */
/* Append s to b, replacing each maximal invalid subpart by U+FFFD (Rust's
 * String::from_utf8_lossy). */
int tk_utf8_append_lossy(tk_buf *b, const char *s, size_t n);
/* 1 when the bytes of s, all together, are valid UTF-8 (Rust's String::from_utf8). */
static inline int tk_utf8_valid(const char *s, size_t n) { return tk_utf8_valid_prefix(s, n) == n; }
int tk_is_whitespace(uint32_t cp);                 /* Rust char::is_whitespace */
int tk_is_word_char(uint32_t cp);                  /* regex \w: letter, mark, number, connector */

/* ---- GPT-2 byte-level map */
uint32_t tk_byte_to_char(unsigned char b);
int tk_char_to_byte(uint32_t cp);                  /* -1 when cp is not in the map */

/* ---- hashing */
static inline uint64_t tk_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = tk_mix(h ^ w);
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return tk_mix(h ^ w ^ ((uint64_t)n << 59));
}

/* ---- string -> id. Keys of up to 8 bytes are stored in the slot itself, longer ones
 * are borrowed: a lookup of a short token touches one cache line. */
typedef struct tk_strmap_slot {
    union {
        const char *ptr;
        char bytes[8];
    } key;
    uint32_t len;
    int32_t value;              /* -1 marks an empty slot */
} tk_strmap_slot;

typedef struct tk_strmap {
    tk_strmap_slot *slots;
    size_t mask, count;
} tk_strmap;

int tk_strmap_init(tk_strmap *m, size_t expected);
int tk_strmap_put_hashed(tk_strmap *m, const char *key, size_t len, int32_t value, uint64_t hash);
static inline int tk_strmap_put(tk_strmap *m, const char *key, size_t len, int32_t value)   /* value >= 0 */
{
    return tk_strmap_put_hashed(m, key, len, value, tk_hash(key, len));
}
int32_t tk_strmap_get_hashed(const tk_strmap *m, const char *key, size_t len, uint64_t hash);
static inline int32_t tk_strmap_get(const tk_strmap *m, const char *key, size_t len)  /* -1: absent */
{
    return tk_strmap_get_hashed(m, key, len, tk_hash(key, len));
}
/* Start loading the slot a lookup with this hash will read (for batched lookups). */
static inline void tk_strmap_prefetch(const tk_strmap *m, uint64_t hash)
{
    __builtin_prefetch(&m->slots[hash & m->mask]);
}
void tk_strmap_free(tk_strmap *m);

/* ---- (left, right) -> (rank, merged id) */
typedef struct tk_pairmap_slot {
    uint64_t key;               /* UINT64_MAX marks an empty slot */
    int32_t rank, merged;
} tk_pairmap_slot;

typedef struct tk_pairmap {
    tk_pairmap_slot *slots;
    size_t mask, count;
} tk_pairmap;

int tk_pairmap_init(tk_pairmap *m, size_t expected);
/* A repeated pair takes the later rank (HF builds its merge map the same way). */
int tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
const tk_pairmap_slot *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b);
/* Build from n entries (key = a << 32 | b), inserting in slot order so that the
 * writes sweep the table once instead of missing the cache at random; a repeated
 * pair keeps its last entry. */
int tk_pairmap_build(tk_pairmap *m, const tk_pairmap_slot *entries, size_t n);
static inline size_t tk_pair_hash(int32_t a, int32_t b)
{
    return (size_t)tk_mix(((uint64_t)(uint32_t)a << 32) | (uint32_t)b);
}
void tk_pairmap_free(tk_pairmap *m);

#endif
