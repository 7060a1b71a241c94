/*
 * vocab.c — every token's bytes, as constrained decoding sees them: raw (a token
 * may hold part of a UTF-8 character), and grouped by first byte, so a mask can skip
 * at once every token whose first byte the text cannot take next (after `{` only
 * tokens starting with `"`, `}` or whitespace are worth walking).
 */
#include <stdlib.h>

#include "constraint/internal.h"
#include "core/error.h"

void strata_vocab_free(strata_vocab *v)
{
    if (!v)
        return;
    free(v->blob);
    free(v->off);
    free(v->by_first);
    free(v->empty);
    free(v->plain);
    free(v);
}

/* by_first and first_at: a counting sort of the ids with bytes by their first byte. */
static void group_by_first(strata_vocab *v)
{
    int32_t count[257] = {0};
    for (int id = 0; id < v->n; id++)
        if (v->off[id + 1] > v->off[id])
            count[(unsigned char)v->blob[v->off[id]] + 1]++;
    v->first_at[0] = 0;
    for (int b = 0; b < 256; b++)
        v->first_at[b + 1] = v->first_at[b] + count[b + 1];
    int32_t next[256];
    for (int b = 0; b < 256; b++)
        next[b] = v->first_at[b];
    for (int id = 0; id < v->n; id++)
        if (v->off[id + 1] > v->off[id])
            v->by_first[next[(unsigned char)v->blob[v->off[id]]]++] = id;
        else
            v->empty[v->n_empty++] = id;
}

/* plain[id] (see internal.h): the characters of s[0..n), or 0. */
static uint8_t plain_chars(const unsigned char *s, uint32_t n)
{
    uint32_t chars = 0;
    for (uint32_t i = 0; i < n; chars++) {
        unsigned char b = s[i++];
        if (b < 0x80) {
            if (b < 0x20 || b == '"' || b == '\\')
                return 0;
            continue;
        }
        uint8_t lo, hi;
        int need = jf_utf8_lead(b, &lo, &hi);
        if (!need || n - i < (uint32_t)need || s[i] < lo || s[i] > hi)
            return 0;
        for (int k = 1; k < need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += (uint32_t)need;
    }
    return chars <= 255 ? (uint8_t)chars : 0;
}

strata_status strata_vocab_new(const strata_tokenizer *tok, int vocab_size, strata_vocab **out, strata_error *err)
{
    *out = NULL;
    if (!tok || vocab_size <= 0)
        return strata_fail(err, STRATA_E_INVALID, "strata_vocab_new: no tokenizer or an empty vocabulary");
    strata_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    v->n = vocab_size;
    strata_status st = strata_tokenizer_token_bytes(tok, vocab_size, &v->blob, &v->off, err);
    if (st == STRATA_OK && (!(v->by_first = malloc(sizeof(int32_t) * (size_t)vocab_size)) ||
                            !(v->empty = malloc(sizeof(int32_t) * (size_t)vocab_size)) ||
                            !(v->plain = malloc((size_t)vocab_size))))
        st = strata_fail(err, STRATA_E_NOMEM, "out of memory");
    if (st != STRATA_OK) {
        strata_vocab_free(v);
        return st;
    }
    group_by_first(v);
    for (int id = 0; id < vocab_size; id++)
        v->plain[id] = plain_chars((const unsigned char *)v->blob + v->off[id], v->off[id + 1] - v->off[id]);
    *out = v;
    return STRATA_OK;
}
