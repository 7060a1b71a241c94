/*
 * encode.c — the encode and decode pipelines over a loaded tokenizer. Encode: split
 * added tokens out of the raw text; normalize each remaining segment, split out
 * normalized added tokens, pre-tokenize, BPE each piece; wrap in the post-processor's
 * ids when asked. Decode: ids -> token strings (special ones optionally dropped) ->
 * decoder chain -> text.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

void tk_scratch_free(tk_scratch *s)
{
    if (s->md)
        pcre2_match_data_free(s->md);
    if (s->mctx)
        pcre2_match_context_free(s->mctx);
    if (s->jit)
        pcre2_jit_stack_free(s->jit);
    tk_pieces_free(&s->a);
    tk_pieces_free(&s->b);
    tk_buf_free(&s->norm);
    tk_buf_free(&s->tmp);
    free(s->ids);
    free(s->spans);
    tk_bpe_work_free(s->bpe);
    memset(s, 0, sizeof *s);
}

int tk_ids_push(tk_scratch *s, int32_t id)
{
    if (s->n_ids == s->cap_ids) {
        size_t cap = s->cap_ids ? s->cap_ids * 2 : 64;
        int32_t *ids = realloc(s->ids, cap * sizeof *ids);
        if (!ids)
            return -1;
        s->ids = ids;
        s->cap_ids = cap;
    }
    s->ids[s->n_ids++] = id;
    return 0;
}

static int push_all(tk_scratch *s, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tk_ids_push(s, ids[i]))
            return -1;
    return 0;
}

/* Pre-tokenize one normalized span and BPE each piece. */
static strata_status encode_words(const strata_tokenizer *tok, tk_scratch *sc, const char *s, size_t n,
                                  int at_origin, strata_error *err)
{
    tk_pieces_clear(&sc->a);
    if (tk_pieces_add(&sc->a, s, n, at_origin))
        return tk_nomem(err);
    if (tok->pretok)
        STRATA_TRY(tk_pretokenize(tok->pretok, sc, err));
    for (size_t i = 0; i < sc->a.n; i++)
        if (sc->a.len[i])
            STRATA_TRY(tk_bpe_encode(&tok->bpe, sc, tk_piece(&sc->a, i), sc->a.len[i], err));
    return STRATA_OK;
}

/* A segment of raw text between added tokens. */
static strata_status encode_segment(const strata_tokenizer *tok, tk_scratch *sc, const char *s, size_t n,
                                    int at_origin, int parse_special, strata_error *err)
{
    sc->norm.len = 0;
    if (tk_buf_append(&sc->norm, s, n))
        return tk_nomem(err);
    STRATA_TRY(tk_tokenizer_normalize(tok, sc, &sc->norm, err));
    if (!tok->added.norm.n)
        return sc->norm.len ? encode_words(tok, sc, sc->norm.p, sc->norm.len, at_origin, err) : STRATA_OK;
    tk_segment *segs;
    size_t n_segs;
    if (tk_added_split(&tok->added, &tok->added.norm, sc->norm.p, sc->norm.len, parse_special, &segs, &n_segs))
        return tk_nomem(err);
    strata_status st = STRATA_OK;
    for (size_t i = 0; i < n_segs && st == STRATA_OK; i++) {
        if (segs[i].token >= 0)
            st = tk_ids_push(sc, tok->added.tokens[segs[i].token].id) ? tk_nomem(err) : STRATA_OK;
        else
            st = encode_words(tok, sc, sc->norm.p + segs[i].start, segs[i].end - segs[i].start,
                              at_origin && segs[i].start == 0, err);
    }
    free(segs);
    return st;
}

static strata_status encode_text(const strata_tokenizer *tok, tk_scratch *sc, const char *text, size_t len,
                                 unsigned flags, strata_error *err)
{
    int parse_special = (flags & STRATA_TOKENIZE_PARSE_SPECIAL) != 0;
    tk_segment *segs;
    size_t n_segs;
    if (tk_added_split(&tok->added, &tok->added.raw, text, len, parse_special, &segs, &n_segs))
        return tk_nomem(err);
    strata_status st = STRATA_OK;
    for (size_t i = 0; i < n_segs && st == STRATA_OK; i++) {
        if (segs[i].token >= 0)
            st = tk_ids_push(sc, tok->added.tokens[segs[i].token].id) ? tk_nomem(err) : STRATA_OK;
        else
            st = encode_segment(tok, sc, text + segs[i].start, segs[i].end - segs[i].start, segs[i].start == 0,
                                parse_special, err);
    }
    free(segs);
    return st;
}

strata_status strata_tokenizer_encode(const strata_tokenizer *tok, const char *text, size_t len,
                                      unsigned flags, int32_t **ids, size_t *n_ids, strata_error *err)
{
    if (!tok || !ids || !n_ids || (!text && len))
        return strata_fail(err, STRATA_E_INVALID, "strata_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (len > TK_MAX_TEXT_BYTES)
        return strata_fail(err, STRATA_E_LIMIT, "text to encode is larger than 1 GiB");
    size_t valid = len ? tk_utf8_valid_prefix(text, len) : 0;
    if (valid != len)
        return strata_fail(err, STRATA_E_INVALID, "text to encode is not valid UTF-8 at byte offset %zu", valid);
    tk_scratch sc = {0};
    int add = (flags & STRATA_TOKENIZE_ADD_SPECIAL) != 0;
    strata_status st = STRATA_OK;
    if (tk_ids_push(&sc, 0))    /* makes sc.ids non-NULL even for no ids */
        st = tk_nomem(err);
    sc.n_ids = 0;
    if (st == STRATA_OK && add && push_all(&sc, tok->post.prefix, tok->post.n_prefix))
        st = tk_nomem(err);
    if (st == STRATA_OK && len)
        st = encode_text(tok, &sc, text, len, flags, err);
    if (st == STRATA_OK && add && push_all(&sc, tok->post.suffix, tok->post.n_suffix))
        st = tk_nomem(err);
    if (st == STRATA_OK) {
        *ids = sc.ids;
        *n_ids = sc.n_ids;
        sc.ids = NULL;
    }
    tk_scratch_free(&sc);
    return st;
}

strata_status tk_decode_ids(const strata_tokenizer *tok, tk_scratch *sc, const int32_t *ids, size_t n,
                            int skip_special, tk_buf *out, strata_error *err)
{
    tk_pieces_clear(&sc->a);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->tok_str[id])
            return strata_fail(err, STRATA_E_RANGE, "token id %d (position %zu) is not in the vocabulary", id, i);
        if (skip_special && tok->tok_special[id])
            continue;
        if (tk_pieces_add(&sc->a, tok->tok_str[id], tok->tok_len[id], 0))
            return tk_nomem(err);
    }
    if (tok->decoder)
        STRATA_TRY(tk_decode_chain(tok->decoder, sc, err));
    if (tk_buf_reserve(out, 0))
        return tk_nomem(err);
    for (size_t i = 0; i < sc->a.n; i++)
        if ((!tok->decoder && i && tk_buf_append(out, " ", 1)) || tk_buf_append(out, tk_piece(&sc->a, i), sc->a.len[i]))
            return tk_nomem(err);
    return STRATA_OK;
}

strata_status strata_tokenizer_decode(const strata_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                      int skip_special, char **text, size_t *len, strata_error *err)
{
    if (!tok || !text || !len || (!ids && n_ids))
        return strata_fail(err, STRATA_E_INVALID, "strata_tokenizer_decode: NULL argument");
    *text = NULL;
    *len = 0;
    tk_scratch sc = {0};
    tk_buf out = {0};
    strata_status st = tk_decode_ids(tok, &sc, ids, n_ids, skip_special, &out, err);
    tk_scratch_free(&sc);
    if (st != STRATA_OK) {
        tk_buf_free(&out);
        return st;
    }
    out.p[out.len] = '\0';
    *text = out.p;
    *len = out.len;
    return STRATA_OK;
}

strata_status strata_tokenizer_token_bytes(const strata_tokenizer *tok, int32_t n, char **blob, uint32_t **offsets,
                                           strata_error *err)
{
    if (!tok || !blob || !offsets || n < 0)
        return strata_fail(err, STRATA_E_INVALID, "strata_tokenizer_token_bytes: bad argument");
    *blob = NULL;
    *offsets = malloc(sizeof(uint32_t) * ((size_t)n + 1));
    tk_scratch sc = {.raw = 1};
    tk_buf out = {0};
    strata_status st = *offsets && !tk_buf_reserve(&out, 0) ? STRATA_OK : tk_nomem(err);
    for (int32_t id = 0; id < n && st == STRATA_OK; id++) {
        (*offsets)[id] = (uint32_t)out.len;
        if (id < tok->n_ids && tok->tok_str[id] && !tok->tok_special[id])
            st = tk_decode_ids(tok, &sc, &id, 1, 0, &out, err);
        if (out.len > UINT32_MAX / 2)
            st = strata_fail(err, STRATA_E_LIMIT, "tokenizer: the vocabulary's bytes pass 2 GiB");
    }
    tk_scratch_free(&sc);
    if (st != STRATA_OK) {
        tk_buf_free(&out);
        free(*offsets);
        *offsets = NULL;
        return st;
    }
    (*offsets)[n] = (uint32_t)out.len;
    *blob = out.p;
    return STRATA_OK;
}
