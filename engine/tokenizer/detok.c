/*
 * detok.c — streaming decode (HF's DecodeStream): the ids since the last emitted
 * piece are kept with one batch of context before them; each push decodes that
 * window and emits what extends the previous decode of the context, unless the
 * result ends in U+FFFD (an incomplete UTF-8 character, held back; what comes
 * before that last U+FFFD cannot change, as UTF-8 decoding resynchronises at the
 * next character, so it is emitted: a stream of broken UTF-8 is not held back
 * whole). Because the
 * context is decoded the same way both times, decoder rules for the stream start
 * (Strip, Metaspace) cancel out, and the pieces concatenate to the whole decode.
 * One decoder is not monotone: ByteFallback turns a whole run of <0xNN> tokens into
 * U+FFFD per byte when the run is not UTF-8, so text already valid ("/a") can turn
 * into U+FFFD when the run grows. Nothing is emitted while such a run may still grow,
 * i.e. after a byte token or after a token that decodes to nothing (a skipped special).
 * Holding back is bounded: after DETOK_MAX_PENDING ids without output the text so far
 * is emitted anyway, so garbage streams cost linear work; only such streams (64 ids of
 * broken UTF-8) can then differ from the whole decode.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

#define DETOK_MAX_PENDING 64

struct strata_detok {
    const strata_tokenizer *tok;
    int skip_special;
    int byte_runs;              /* the decoder has ByteFallback */
    int32_t *ids;               /* context + pending ids */
    size_t n, cap;
    size_t prefix_index;        /* ids[0..prefix_index) are context */
    tk_buf prefix;              /* decode of the context */
    tk_buf text;                /* decode of the window */
    tk_buf piece;               /* what the last call returned */
    size_t sent;                /* bytes of the window's decode past the context's already emitted */
    tk_scratch sc;
};

strata_status strata_detok_new(const strata_tokenizer *tok, int skip_special, strata_detok **out,
                               strata_error *err)
{
    if (!tok || !out)
        return strata_fail(err, STRATA_E_INVALID, "strata_detok_new: NULL argument");
    strata_detok *d = calloc(1, sizeof *d);
    if (!d || tk_buf_reserve(&d->prefix, 0) || tk_buf_reserve(&d->text, 0) || tk_buf_reserve(&d->piece, 0)) {
        strata_detok_free(d);
        return tk_nomem(err);
    }
    d->tok = tok;
    d->skip_special = skip_special;
    d->byte_runs = tk_decoder_has(tok->decoder, DEC_BYTEFALLBACK);
    *out = d;
    return STRATA_OK;
}

void strata_detok_free(strata_detok *d)
{
    if (!d)
        return;
    free(d->ids);
    tk_buf_free(&d->prefix);
    tk_buf_free(&d->text);
    tk_buf_free(&d->piece);
    tk_scratch_free(&d->sc);
    free(d);
}

static strata_status decode_into(strata_detok *d, const int32_t *ids, size_t n, tk_buf *out, strata_error *err)
{
    out->len = 0;
    STRATA_TRY(tk_decode_ids(d->tok, &d->sc, ids, n, d->skip_special, out, err));
    out->p[out->len] = '\0';
    return STRATA_OK;
}

static int ends_in_fffd(const tk_buf *b)
{
    return b->len >= 3 && !memcmp(b->p + b->len - 3, "\xEF\xBF\xBD", 3);
}

static strata_status set_piece(strata_detok *d, const char *s, size_t n, const char **text, size_t *len,
                               strata_error *err)
{
    d->piece.len = 0;
    if (tk_buf_append(&d->piece, s, n))
        return tk_nomem(err);
    *text = d->piece.p;
    *len = d->piece.len;
    return STRATA_OK;
}

/* 1 when the text after id may still change with the ids that follow. */
static int holds_back(const strata_detok *d, int32_t id)
{
    const strata_tokenizer *tok = d->tok;
    return (d->skip_special && tok->tok_special[id]) ||
           (d->byte_runs && tk_is_byte_token(tok->tok_str[id], tok->tok_len[id]));
}

/* Of n new bytes, those emitted already (settled_text). */
static size_t sent_of(const strata_detok *d, size_t n)
{
    return d->sent < n ? d->sent : n;
}

/* A window whose decode ends in U+FFFD: emit what precedes that U+FFFD (past what
 * was emitted), when the window's decode still extends the context's. */
static strata_status settled_text(strata_detok *d, const char **text, size_t *len, strata_error *err)
{
    size_t settled = d->text.len - 3;
    if (settled <= d->prefix.len + d->sent || memcmp(d->text.p, d->prefix.p, d->prefix.len))
        return STRATA_OK;
    size_t from = d->prefix.len + d->sent;
    d->sent = settled - d->prefix.len;
    return set_piece(d, d->text.p + from, settled - from, text, len, err);
}

/* The window's decode past the context's. Past the common part, should a forced
 * emission have let the context change (see DETOK_MAX_PENDING). */
static void new_text(const strata_detok *d, const char **s, size_t *n)
{
    size_t common = 0, max = d->text.len < d->prefix.len ? d->text.len : d->prefix.len;
    while (common < max && d->text.p[common] == d->prefix.p[common])
        common++;
    *s = d->text.p + common;
    *n = d->text.len - common;
}

strata_status strata_detok_push(strata_detok *d, int32_t id, const char **text, size_t *len, strata_error *err)
{
    if (!d || !text || !len)
        return strata_fail(err, STRATA_E_INVALID, "strata_detok_push: NULL argument");
    *text = "";
    *len = 0;
    if (id < 0 || id >= d->tok->n_ids || !d->tok->tok_str[id])
        return strata_fail(err, STRATA_E_RANGE, "token id %d is not in the vocabulary", id);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        int32_t *ids = realloc(d->ids, cap * sizeof *ids);
        if (!ids)
            return tk_nomem(err);
        d->ids = ids;
        d->cap = cap;
    }
    if (d->prefix.len == 0 && d->n && !holds_back(d, d->ids[d->n - 1])) {   /* context empty so far: retry it */
        STRATA_TRY(decode_into(d, d->ids, d->n, &d->text, err));
        if (!ends_in_fffd(&d->text)) {
            if (d->text.len == 0) {     /* nothing decoded yet: one id of context is enough */
                d->ids[0] = d->ids[d->n - 1];
                d->n = 1;
            }
            tk_buf t = d->prefix;
            d->prefix = d->text;
            d->text = t;
            d->prefix_index = d->n;
        }
    }
    d->ids[d->n++] = id;
    int forced = d->n - d->prefix_index >= DETOK_MAX_PENDING;
    if (holds_back(d, id) && !forced)
        return STRATA_OK;
    STRATA_TRY(decode_into(d, d->ids, d->n, &d->text, err));
    if (ends_in_fffd(&d->text) && !forced)
        return settled_text(d, text, len, err);
    if (d->text.len <= d->prefix.len && !forced)
        return STRATA_OK;
    const char *s = NULL;
    size_t n = 0;
    new_text(d, &s, &n);
    STRATA_TRY(set_piece(d, s + sent_of(d, n), n - sent_of(d, n), text, len, err));
    d->sent = 0;
    /* the ids since the old context become the new context */
    size_t keep = d->n - d->prefix_index;
    memmove(d->ids, d->ids + d->prefix_index, keep * sizeof *d->ids);
    d->n = keep;
    d->prefix_index = keep;
    return decode_into(d, d->ids, d->n, &d->prefix, err);
}

strata_status strata_detok_flush(strata_detok *d, const char **text, size_t *len, strata_error *err)
{
    if (!d || !text || !len)
        return strata_fail(err, STRATA_E_INVALID, "strata_detok_flush: NULL argument");
    *text = "";
    *len = 0;
    strata_status st = STRATA_OK;
    if (d->n > d->prefix_index) {
        const char *s = NULL;
        size_t n = 0;
        st = decode_into(d, d->ids, d->n, &d->text, err);
        if (st == STRATA_OK && d->text.len > d->prefix.len) {
            new_text(d, &s, &n);
            st = set_piece(d, s + sent_of(d, n), n - sent_of(d, n), text, len, err);
        }
    }
    d->sent = 0;
    d->n = 0;
    d->prefix_index = 0;
    d->prefix.len = 0;
    return st;
}
