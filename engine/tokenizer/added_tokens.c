/*
 * added_tokens.c — tokenizer.json "added_tokens": parsed once into two byte tries
 * (tokens matched in the raw text, and normalized:true tokens matched after
 * normalization), and the split of a text into plain segments and tokens,
 * leftmost-longest like HF's aho-corasick, with lstrip / rstrip / single_word.
 * Special tokens are skipped when the caller does not parse specials (untrusted text).
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

static int trie_node(tk_trie *t, unsigned char byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        tk_trie_node *nodes = realloc(t->nodes, cap * sizeof *nodes);
        if (!nodes)
            return -1;
        t->nodes = nodes;
        t->cap = cap;
    }
    t->nodes[t->n] = (tk_trie_node){-1, -1, -1, byte};
    return (int)t->n++;
}

static void trie_init(tk_trie *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 256; i++)
        t->root[i] = -1;
}

static int32_t trie_child(const tk_trie *t, int32_t node, unsigned char byte)
{
    for (int32_t c = t->nodes[node].child; c >= 0; c = t->nodes[c].sibling)
        if (t->nodes[c].byte == byte)
            return c;
    return -1;
}

static int trie_insert(tk_trie *t, const char *s, size_t n, int32_t token)
{
    const unsigned char *u = (const unsigned char *)s;
    if (t->root[u[0]] < 0) {
        int k = trie_node(t, u[0]);
        if (k < 0)
            return -1;
        t->root[u[0]] = k;
    }
    int32_t node = t->root[u[0]];
    for (size_t i = 1; i < n; i++) {
        int32_t c = trie_child(t, node, u[i]);
        if (c < 0) {
            if ((c = trie_node(t, u[i])) < 0)
                return -1;
            t->nodes[c].sibling = t->nodes[node].child;
            t->nodes[node].child = c;
        }
        node = c;
    }
    t->nodes[node].token = token;
    return 0;
}

/* Leftmost-longest match at or after from: returns the token and sets [*ms, *me). */
static int32_t trie_find(const tk_trie *t, const char *s, size_t n, size_t from, size_t *ms, size_t *me)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = from; i < n; i++) {
        int32_t node = t->root[u[i]], best = -1;
        size_t j = i;
        while (node >= 0) {
            if (t->nodes[node].token >= 0) {
                best = t->nodes[node].token;
                *me = j + 1;
            }
            if (++j >= n)
                break;
            node = trie_child(t, node, u[j]);
        }
        if (best >= 0) {
            *ms = i;
            return best;
        }
    }
    return -1;
}

static int field(const tj_value *o, const char *key, int def)
{
    return tj_bool(tj_get(o, key), def);
}

static strata_status parse_token(const tj_value *o, uint32_t i, tk_added_token *t, strata_error *err)
{
    const tj_value *id = tj_get(o, "id"), *content = tj_get(o, "content");
    if (!id || id->kind != TJ_NUMBER || id->u.num < 0 || id->u.num >= (double)TK_MAX_IDS ||
        id->u.num != (int32_t)id->u.num || !tj_str(content))
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: added_tokens[%u] needs an id and a content", i);
    t->id = (int32_t)id->u.num;
    t->content = content->u.str;
    t->len = content->n;
    t->special = (uint8_t)field(o, "special", 0);
    t->normalized = (uint8_t)field(o, "normalized", !t->special);
    t->lstrip = (uint8_t)field(o, "lstrip", 0);
    t->rstrip = (uint8_t)field(o, "rstrip", 0);
    t->single_word = (uint8_t)field(o, "single_word", 0);
    return STRATA_OK;
}

/* Add token i to the trie that matches it; normalized tokens are normalized first. */
static strata_status index_token(strata_tokenizer *tok, size_t i, tk_scratch *sc, strata_error *err)
{
    tk_added *a = &tok->added;
    const tk_added_token *t = &a->tokens[i];
    if (!t->len)
        return STRATA_OK;
    if (!t->normalized || !tok->normalizer)
        return trie_insert(t->normalized ? &a->norm : &a->raw, t->content, t->len, (int32_t)i)
                   ? tk_nomem(err) : STRATA_OK;
    sc->norm.len = 0;
    if (tk_buf_append(&sc->norm, t->content, t->len))
        return tk_nomem(err);
    STRATA_TRY(tk_tokenizer_normalize(tok, sc, &sc->norm, err));
    if (sc->norm.len && trie_insert(&a->norm, sc->norm.p, sc->norm.len, (int32_t)i))
        return tk_nomem(err);
    return STRATA_OK;
}

strata_status tk_added_parse(strata_tokenizer *tok, const tj_value *arr, strata_error *err)
{
    tk_added *a = &tok->added;
    trie_init(&a->raw);
    trie_init(&a->norm);
    if (!arr || arr->kind == TJ_NULL)
        return STRATA_OK;
    if (arr->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: added_tokens must be an array");
    a->tokens = calloc(arr->n ? arr->n : 1, sizeof *a->tokens);
    if (!a->tokens)
        return tk_nomem(err);
    a->n = arr->n;
    for (uint32_t i = 0; i < arr->n; i++)
        STRATA_TRY(parse_token(&arr->u.items[i], i, &a->tokens[i], err));
    tk_scratch sc = {0};
    strata_status s = STRATA_OK;
    for (size_t i = 0; i < a->n && s == STRATA_OK; i++)
        s = index_token(tok, i, &sc, err);
    tk_scratch_free(&sc);
    return s;
}

void tk_added_free(tk_added *a)
{
    free(a->tokens);
    free(a->raw.nodes);
    free(a->norm.nodes);
}

static int last_char_is_word(const char *s, size_t n)
{
    if (!n)
        return 0;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    uint32_t cp;
    tk_utf8_decode(s + k, &cp);
    return tk_is_word_char(cp);
}

static int first_char_is_word(const char *s, size_t n)
{
    uint32_t cp;
    if (!n)
        return 0;
    tk_utf8_decode(s, &cp);
    return tk_is_word_char(cp);
}

/* Start of the whitespace run that ends s[0..n). */
static size_t trailing_space_start(const char *s, size_t n)
{
    while (n > 0) {
        size_t k = n - 1;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        uint32_t cp;
        tk_utf8_decode(s + k, &cp);
        if (!tk_is_whitespace(cp))
            break;
        n = k;
    }
    return n;
}

static size_t leading_space_len(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int k = tk_utf8_decode(s + i, &cp);
        if (!tk_is_whitespace(cp))
            break;
        i += (size_t)k;
    }
    return i;
}

static int seg_push(tk_segment **segs, size_t *n, size_t *cap, size_t start, size_t end, int32_t token)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        tk_segment *s = realloc(*segs, c * sizeof *s);
        if (!s)
            return -1;
        *segs = s;
        *cap = c;
    }
    (*segs)[(*n)++] = (tk_segment){start, end, token};
    return 0;
}

int tk_added_split(const tk_added *a, const tk_trie *trie, const char *s, size_t n, int parse_special,
                   tk_segment **segs, size_t *n_segs)
{
    size_t cap = 0, from = 0, done = 0, ms = 0, me = 0;
    int32_t t;
    *segs = NULL;
    *n_segs = 0;
    while (trie->n && (t = trie_find(trie, s, n, from, &ms, &me)) >= 0) {
        const tk_added_token *tk = &a->tokens[t];
        from = me;
        if (tk->special && !parse_special)
            continue;
        if (tk->single_word && (last_char_is_word(s, ms) || first_char_is_word(s + me, n - me)))
            continue;
        size_t start = ms, stop = me;
        if (tk->lstrip) {
            start = trailing_space_start(s, ms);
            if (start < done)
                start = done;
        }
        if (tk->rstrip)
            stop += leading_space_len(s + stop, n - stop);
        if ((done < start && seg_push(segs, n_segs, &cap, done, start, -1)) ||
            seg_push(segs, n_segs, &cap, start, stop, t))
            return -1;
        done = stop;
    }
    if (done < n && seg_push(segs, n_segs, &cap, done, n, -1))
        return -1;
    return 0;
}
