/*
 * normalizer.c — tokenizer.json normalizers: Sequence, Prepend, Replace, NFC, NFD,
 * NFKC, NFKD (libutf8proc), Lowercase, Strip. A normalizer rewrites one segment of
 * text (the parts between added tokens) before pre-tokenization; no offsets are kept
 * because strata never returns them.
 */
#include <stdlib.h>
#include <utf8proc.h>

#include "tokenizer/internal.h"

strata_status tk_unsupported(strata_error *err, const char *what, const tj_value *type)
{
    if (!tj_str(type))
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: %s has no \"type\"", what);
    return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: %s type '%s' is not supported", what,
                       type->u.str);
}

strata_status tk_need_str(const tj_value *obj, const char *key, const char *what, const char **out,
                          size_t *len, strata_error *err)
{
    const tj_value *v = tj_get(obj, key);
    if (!tj_str(v))
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: %s needs a string \"%s\"", what, key);
    *out = v->u.str;
    if (len)
        *len = v->n;
    return STRATA_OK;
}

static strata_status parse_children(const tj_value *arr, tk_normalizer *n, strata_error *err)
{
    if (!arr || arr->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: normalizer Sequence needs \"normalizers\"");
    n->children = calloc(arr->n ? arr->n : 1, sizeof *n->children);
    if (!n->children)
        return tk_nomem(err);
    for (uint32_t i = 0; i < arr->n; i++) {
        n->n_children = i + 1;
        STRATA_TRY(tk_normalizer_parse(&arr->u.items[i], &n->children[i], err));
    }
    return STRATA_OK;
}

strata_status tk_normalizer_parse(const tj_value *v, tk_normalizer *n, strata_error *err)
{
    const tj_value *type = tj_get(v, "type");
    const char *t = tj_str(type);
    memset(n, 0, sizeof *n);
    if (!t)
        return tk_unsupported(err, "normalizer", type);
    if (!strcmp(t, "Sequence")) {
        n->kind = NORM_SEQUENCE;
        return parse_children(tj_get(v, "normalizers"), n, err);
    }
    if (!strcmp(t, "Prepend")) {
        n->kind = NORM_PREPEND;
        return tk_need_str(v, "prepend", "normalizer Prepend", &n->content, &n->content_len, err);
    }
    if (!strcmp(t, "Replace")) {
        n->kind = NORM_REPLACE;
        STRATA_TRY(tk_need_str(v, "content", "normalizer Replace", &n->content, &n->content_len, err));
        return tk_pattern_parse(tj_get(v, "pattern"), "normalizer Replace", &n->pattern, err);
    }
    static const struct { const char *name; int flags; } forms[] = {
        {"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
        {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
        {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
        {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(t, forms[i].name)) {
            n->kind = NORM_UNICODE;
            n->utf8proc_flags = forms[i].flags;
            return STRATA_OK;
        }
    if (!strcmp(t, "Lowercase")) {
        n->kind = NORM_LOWERCASE;
        return STRATA_OK;
    }
    if (!strcmp(t, "Strip")) {
        n->kind = NORM_STRIP;
        n->strip_left = tj_bool(tj_get(v, "strip_left"), 1);
        n->strip_right = tj_bool(tj_get(v, "strip_right"), 1);
        return STRATA_OK;
    }
    return tk_unsupported(err, "normalizer", type);
}

void tk_normalizer_free(tk_normalizer *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_children; i++)
        tk_normalizer_free(&n->children[i]);
    free(n->children);
    tk_pattern_free(&n->pattern);
}

/* buf <- tmp, keeping both allocations alive for reuse. */
static void swap_bufs(tk_buf *a, tk_buf *b)
{
    tk_buf t = *a;
    *a = *b;
    *b = t;
}

static strata_status prepend(const tk_normalizer *n, tk_scratch *sc, tk_buf *buf, strata_error *err)
{
    if (!buf->len)
        return STRATA_OK;
    sc->tmp.len = 0;
    if (tk_buf_append(&sc->tmp, n->content, n->content_len) || tk_buf_append(&sc->tmp, buf->p, buf->len))
        return tk_nomem(err);
    swap_bufs(buf, &sc->tmp);
    return STRATA_OK;
}

static strata_status replace(const tk_normalizer *n, tk_scratch *sc, tk_buf *buf, strata_error *err)
{
    size_t at = 0, ms, me;
    int rc;
    sc->tmp.len = 0;
    if (tk_buf_reserve(&sc->tmp, buf->len))
        return tk_nomem(err);
    while ((rc = tk_pattern_next(&n->pattern, sc, buf->p, buf->len, at, &ms, &me, err)) == 1) {
        if (tk_buf_append(&sc->tmp, buf->p + at, ms - at) || tk_buf_append(&sc->tmp, n->content, n->content_len))
            return tk_nomem(err);
        at = me;
    }
    if (rc < 0)
        return err ? err->status : STRATA_E_LIMIT;
    if (tk_buf_append(&sc->tmp, buf->p + at, buf->len - at))
        return tk_nomem(err);
    swap_bufs(buf, &sc->tmp);
    return STRATA_OK;
}

static strata_status unicode_form(const tk_normalizer *n, tk_buf *buf, strata_error *err)
{
    utf8proc_uint8_t *out = NULL;
    if (!buf->len)
        return STRATA_OK;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)buf->p, (utf8proc_ssize_t)buf->len, &out,
                                        (utf8proc_option_t)n->utf8proc_flags);
    if (len < 0)
        return strata_fail(err, STRATA_E_INVALID, "unicode normalization failed: %s", utf8proc_errmsg(len));
    buf->len = 0;
    int bad = tk_buf_append(buf, out, (size_t)len);
    free(out);
    return bad ? tk_nomem(err) : STRATA_OK;
}

static strata_status lowercase(tk_scratch *sc, tk_buf *buf, strata_error *err)
{
    sc->tmp.len = 0;
    for (size_t i = 0; i < buf->len;) {
        uint32_t cp;
        char enc[8];
        i += (size_t)tk_utf8_decode(buf->p + i, &cp);
        int k;
        if (cp == 0x130) {      /* the one full lowercase mapping of two chars: İ -> i̇ */
            memcpy(enc, "i\xCC\x87", 3);
            k = 3;
        } else {
            k = tk_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        }
        if (tk_buf_append(&sc->tmp, enc, (size_t)k))
            return tk_nomem(err);
    }
    swap_bufs(buf, &sc->tmp);
    return STRATA_OK;
}

static void strip(const tk_normalizer *n, tk_buf *buf)
{
    size_t start = 0, end = buf->len;
    uint32_t cp;
    while (n->strip_left && start < end) {
        int k = tk_utf8_decode(buf->p + start, &cp);
        if (!tk_is_whitespace(cp))
            break;
        start += (size_t)k;
    }
    while (n->strip_right && end > start) {
        size_t k = end - 1;
        while (k > start && ((unsigned char)buf->p[k] & 0xC0) == 0x80)
            k--;
        tk_utf8_decode(buf->p + k, &cp);
        if (!tk_is_whitespace(cp))
            break;
        end = k;
    }
    memmove(buf->p, buf->p + start, end - start);
    buf->len = end - start;
    if (buf->cap)
        buf->p[buf->len] = '\0';
}

strata_status tk_normalize(const tk_normalizer *n, tk_scratch *sc, tk_buf *buf, strata_error *err)
{
    switch (n->kind) {
    case NORM_SEQUENCE:
        for (size_t i = 0; i < n->n_children; i++)
            STRATA_TRY(tk_normalize(&n->children[i], sc, buf, err));
        return STRATA_OK;
    case NORM_PREPEND: return prepend(n, sc, buf, err);
    case NORM_REPLACE: return replace(n, sc, buf, err);
    case NORM_UNICODE: return unicode_form(n, buf, err);
    case NORM_LOWERCASE: return lowercase(sc, buf, err);
    case NORM_STRIP: strip(n, buf); return STRATA_OK;
    }
    return STRATA_OK;
}
