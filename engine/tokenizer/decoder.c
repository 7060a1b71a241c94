/*
 * decoder.c — tokenizer.json decoders, run over the token strings of a decode:
 * Sequence, ByteLevel (GPT-2 chars back to bytes, invalid UTF-8 -> U+FFFD),
 * Metaspace, ByteFallback (<0xNN> runs -> bytes, or one U+FFFD per byte when the run
 * is not UTF-8), Fuse, Strip and Replace. Each maps the pieces in sc->a to sc->b,
 * exactly as HF's decode_chain does, then the two swap.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

static const char FFFD[] = "\xEF\xBF\xBD";

static strata_status parse_size(const tj_value *v, const char *key, size_t *out, strata_error *err)
{
    const tj_value *n = tj_get(v, key);
    if (!n || n->kind != TJ_NUMBER || n->u.num < 0 || n->u.num > 1e6)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: decoder Strip needs a count \"%s\"", key);
    *out = (size_t)n->u.num;
    return STRATA_OK;
}

static strata_status parse_sequence(const tj_value *arr, tk_decoder *d, strata_error *err)
{
    d->kind = DEC_SEQUENCE;
    if (!arr || arr->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: decoder Sequence needs \"decoders\"");
    d->children = calloc(arr->n ? arr->n : 1, sizeof *d->children);
    if (!d->children)
        return tk_nomem(err);
    for (uint32_t i = 0; i < arr->n; i++) {
        d->n_children = i + 1;
        STRATA_TRY(tk_decoder_parse(&arr->u.items[i], &d->children[i], err));
    }
    return STRATA_OK;
}

strata_status tk_decoder_parse(const tj_value *v, tk_decoder *d, strata_error *err)
{
    const tj_value *type = tj_get(v, "type");
    const char *t = tj_str(type);
    memset(d, 0, sizeof *d);
    if (!t)
        return tk_unsupported(err, "decoder", type);
    if (!strcmp(t, "Sequence"))
        return parse_sequence(tj_get(v, "decoders"), d, err);
    if (!strcmp(t, "Metaspace")) {
        d->kind = DEC_METASPACE;
        return tk_metaspace_parse(v, d->replacement, &d->replacement_len, &d->prepend_scheme, err);
    }
    if (!strcmp(t, "Strip")) {
        d->kind = DEC_STRIP;
        STRATA_TRY(tk_need_str(v, "content", "decoder Strip", &d->content, &d->content_len, err));
        if (!d->content_len || tk_utf8_len((unsigned char)d->content[0]) != (int)d->content_len)
            return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: decoder Strip content must be one char");
        STRATA_TRY(parse_size(v, "start", &d->start, err));
        return parse_size(v, "stop", &d->stop, err);
    }
    if (!strcmp(t, "Replace")) {
        d->kind = DEC_REPLACE;
        STRATA_TRY(tk_need_str(v, "content", "decoder Replace", &d->content, &d->content_len, err));
        return tk_pattern_parse(tj_get(v, "pattern"), "decoder Replace", &d->pattern, err);
    }
    static const struct { const char *name; tk_dec_kind kind; } plain[] = {
        {"ByteLevel", DEC_BYTELEVEL}, {"ByteFallback", DEC_BYTEFALLBACK}, {"Fuse", DEC_FUSE}};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        if (!strcmp(t, plain[i].name)) {
            d->kind = plain[i].kind;
            return STRATA_OK;
        }
    return tk_unsupported(err, "decoder", type);
}

void tk_decoder_free(tk_decoder *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_children; i++)
        tk_decoder_free(&d->children[i]);
    free(d->children);
    tk_pattern_free(&d->pattern);
}

/* Bytes of one token under the GPT-2 map, or its own bytes when a char is unmapped. */
static int bytelevel_token(tk_buf *out, const char *s, size_t n)
{
    size_t mark = out->len;
    if (tk_buf_reserve(out, n))
        return -1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)tk_utf8_decode(s + i, &cp);
        int b = tk_char_to_byte(cp);
        if (b < 0) {
            out->len = mark;
            return tk_buf_append(out, s, n);
        }
        out->p[out->len++] = (char)b;
    }
    return 0;
}

static strata_status dec_bytelevel(tk_scratch *sc, strata_error *err)
{
    sc->tmp.len = 0;
    for (size_t i = 0; i < sc->a.n; i++)
        if (bytelevel_token(&sc->tmp, tk_piece(&sc->a, i), sc->a.len[i]))
            return tk_nomem(err);
    if (tk_pieces_open(&sc->b, 0) || (sc->raw ? tk_buf_append(&sc->b.text, sc->tmp.p, sc->tmp.len)
                                              : tk_utf8_append_lossy(&sc->b.text, sc->tmp.p, sc->tmp.len)))
        return tk_nomem(err);
    tk_pieces_close(&sc->b);
    return STRATA_OK;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte of a "<0xNN>" token, or -1. */
static int fallback_byte(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
        return -1;
    int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

int tk_is_byte_token(const char *s, size_t n)
{
    return fallback_byte(s, n) >= 0;
}

int tk_decoder_has(const tk_decoder *d, tk_dec_kind kind)
{
    if (!d)
        return 0;
    if (d->kind == kind)
        return 1;
    for (size_t i = 0; i < d->n_children; i++)
        if (tk_decoder_has(&d->children[i], kind))
            return 1;
    return 0;
}

static int flush_bytes(tk_scratch *sc)
{
    if (!sc->tmp.len)
        return 0;
    if (sc->raw || tk_utf8_valid(sc->tmp.p, sc->tmp.len)) {
        if (tk_pieces_add(&sc->b, sc->tmp.p, sc->tmp.len, 0))
            return -1;
    } else {
        for (size_t i = 0; i < sc->tmp.len; i++)
            if (tk_pieces_add(&sc->b, FFFD, 3, 0))
                return -1;
    }
    sc->tmp.len = 0;
    return 0;
}

static strata_status dec_bytefallback(tk_scratch *sc, strata_error *err)
{
    sc->tmp.len = 0;
    for (size_t i = 0; i < sc->a.n; i++) {
        const char *s = tk_piece(&sc->a, i);
        int b = fallback_byte(s, sc->a.len[i]);
        char c = (char)b;
        if (b >= 0 ? tk_buf_append(&sc->tmp, &c, 1) : (flush_bytes(sc) || tk_pieces_add(&sc->b, s, sc->a.len[i], 0)))
            return tk_nomem(err);
    }
    return flush_bytes(sc) ? tk_nomem(err) : STRATA_OK;
}

static strata_status dec_fuse(tk_scratch *sc, strata_error *err)
{
    if (tk_pieces_open(&sc->b, 0))
        return tk_nomem(err);
    for (size_t i = 0; i < sc->a.n; i++)
        if (tk_buf_append(&sc->b.text, tk_piece(&sc->a, i), sc->a.len[i]))
            return tk_nomem(err);
    tk_pieces_close(&sc->b);
    return STRATA_OK;
}

/* Strip up to start leading and stop trailing copies of the content char. */
static strata_status dec_strip(const tk_decoder *d, tk_scratch *sc, strata_error *err)
{
    size_t c = d->content_len, start = sc->raw ? 0 : d->start, stop = sc->raw ? 0 : d->stop;
    for (size_t i = 0; i < sc->a.n; i++) {
        const char *s = tk_piece(&sc->a, i);
        size_t lo = 0, hi = sc->a.len[i];
        for (size_t k = 0; k < start && hi - lo >= c && !memcmp(s + lo, d->content, c); k++)
            lo += c;
        size_t nchars_left = 0;
        for (size_t j = lo; j < hi; j += (size_t)tk_utf8_len((unsigned char)s[j]))
            nchars_left++;
        for (size_t k = 0; k < stop && nchars_left && hi - lo >= c && !memcmp(s + hi - c, d->content, c); k++) {
            hi -= c;
            nchars_left--;
        }
        if (tk_pieces_add(&sc->b, s + lo, hi - lo, 0))
            return tk_nomem(err);
    }
    return STRATA_OK;
}

static strata_status dec_metaspace(const tk_decoder *d, tk_scratch *sc, strata_error *err)
{
    size_t r = d->replacement_len;
    for (size_t i = 0; i < sc->a.n; i++) {
        const char *s = tk_piece(&sc->a, i);
        size_t n = sc->a.len[i];
        int drop = i == 0 && d->prepend_scheme != PREPEND_NEVER && !sc->raw;
        if (tk_pieces_open(&sc->b, 0))
            return tk_nomem(err);
        for (size_t j = 0; j < n;) {
            if (n - j >= r && !memcmp(s + j, d->replacement, r)) {
                if (!drop && tk_buf_append(&sc->b.text, " ", 1))
                    return tk_nomem(err);
                j += r;
            } else {
                size_t k = (size_t)tk_utf8_len((unsigned char)s[j]);
                if (tk_buf_append(&sc->b.text, s + j, k))
                    return tk_nomem(err);
                j += k;
            }
        }
        tk_pieces_close(&sc->b);
    }
    return STRATA_OK;
}

static strata_status dec_replace(const tk_decoder *d, tk_scratch *sc, strata_error *err)
{
    for (size_t i = 0; i < sc->a.n; i++) {
        const char *s = tk_piece(&sc->a, i);
        size_t n = sc->a.len[i], at = 0, ms, me;
        int rc;
        if (tk_pieces_open(&sc->b, 0))
            return tk_nomem(err);
        while ((rc = tk_pattern_next(&d->pattern, sc, s, n, at, &ms, &me, err)) == 1) {
            if (tk_buf_append(&sc->b.text, s + at, ms - at) || tk_buf_append(&sc->b.text, d->content, d->content_len))
                return tk_nomem(err);
            at = me;
        }
        if (rc < 0)
            return err ? err->status : STRATA_E_LIMIT;
        if (tk_buf_append(&sc->b.text, s + at, n - at))
            return tk_nomem(err);
        tk_pieces_close(&sc->b);
    }
    return STRATA_OK;
}

static strata_status decode_step(const tk_decoder *d, tk_scratch *sc, strata_error *err)
{
    tk_pieces_clear(&sc->b);
    switch (d->kind) {
    case DEC_BYTELEVEL: STRATA_TRY(dec_bytelevel(sc, err)); break;
    case DEC_BYTEFALLBACK: STRATA_TRY(dec_bytefallback(sc, err)); break;
    case DEC_FUSE: STRATA_TRY(dec_fuse(sc, err)); break;
    case DEC_STRIP: STRATA_TRY(dec_strip(d, sc, err)); break;
    case DEC_METASPACE: STRATA_TRY(dec_metaspace(d, sc, err)); break;
    case DEC_REPLACE: STRATA_TRY(dec_replace(d, sc, err)); break;
    case DEC_SEQUENCE: return STRATA_OK;
    }
    tk_pieces t = sc->a;
    sc->a = sc->b;
    sc->b = t;
    return STRATA_OK;
}

strata_status tk_decode_chain(const tk_decoder *d, tk_scratch *sc, strata_error *err)
{
    if (d->kind != DEC_SEQUENCE)
        return decode_step(d, sc, err);
    for (size_t i = 0; i < d->n_children; i++)
        STRATA_TRY(tk_decode_chain(&d->children[i], sc, err));
    return STRATA_OK;
}
