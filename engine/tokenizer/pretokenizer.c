/*
 * pretokenizer.c — tokenizer.json pre-tokenizers: Sequence, Split (String/Regex
 * pattern, the five split behaviours, invert), ByteLevel (prefix space, GPT-2 regex,
 * byte->char map), Metaspace, and Digits / Whitespace / WhitespaceSplit, which are
 * Splits with a fixed regex. Each step maps the pieces in sc->a to new pieces.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static strata_status fixed_split(tk_pretok *p, const char *regex, tk_split_behavior b, int invert,
                                 strata_error *err)
{
    p->kind = PT_SPLIT;
    p->behavior = b;
    p->invert = invert;
    return tk_pattern_compile(regex, strlen(regex), "pre_tokenizer", &p->pattern, err);
}

static strata_status parse_behavior(const tj_value *v, tk_split_behavior *out, strata_error *err)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const char *s = tj_str(v);
    for (int i = 0; s && i < 5; i++)
        if (!strcmp(s, names[i])) {
            *out = (tk_split_behavior)i;
            return STRATA_OK;
        }
    return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: Split behavior '%s' is not supported",
                       s ? s : "(missing)");
}

strata_status tk_metaspace_parse(const tj_value *v, char *rep, size_t *rep_len,
                                 tk_prepend_scheme *scheme, strata_error *err)
{
    const char *r;
    size_t n;
    STRATA_TRY(tk_need_str(v, "replacement", "Metaspace", &r, &n, err));
    if (n == 0 || n > 4 || tk_utf8_len((unsigned char)r[0]) != (int)n)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: Metaspace replacement must be one char");
    memcpy(rep, r, n);
    rep[n] = '\0';
    *rep_len = n;
    const char *ps = tj_str(tj_get(v, "prepend_scheme"));
    if (!ps)
        *scheme = tj_bool(tj_get(v, "add_prefix_space"), 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
    else if (!strcmp(ps, "always"))
        *scheme = PREPEND_ALWAYS;
    else if (!strcmp(ps, "first"))
        *scheme = PREPEND_FIRST;
    else if (!strcmp(ps, "never"))
        *scheme = PREPEND_NEVER;
    else
        return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: Metaspace prepend_scheme '%s' is not supported", ps);
    return STRATA_OK;
}

static strata_status parse_sequence(const tj_value *arr, tk_pretok *p, strata_error *err)
{
    p->kind = PT_SEQUENCE;
    if (!arr || arr->kind != TJ_ARRAY)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: pre_tokenizer Sequence needs \"pretokenizers\"");
    p->children = calloc(arr->n ? arr->n : 1, sizeof *p->children);
    if (!p->children)
        return tk_nomem(err);
    for (uint32_t i = 0; i < arr->n; i++) {
        p->n_children = i + 1;
        STRATA_TRY(tk_pretok_parse(&arr->u.items[i], &p->children[i], err));
    }
    return STRATA_OK;
}

strata_status tk_pretok_parse(const tj_value *v, tk_pretok *p, strata_error *err)
{
    const tj_value *type = tj_get(v, "type");
    const char *t = tj_str(type);
    memset(p, 0, sizeof *p);
    if (!t)
        return tk_unsupported(err, "pre_tokenizer", type);
    if (!strcmp(t, "Sequence"))
        return parse_sequence(tj_get(v, "pretokenizers"), p, err);
    if (!strcmp(t, "Split")) {
        p->kind = PT_SPLIT;
        p->invert = tj_bool(tj_get(v, "invert"), 0);
        STRATA_TRY(parse_behavior(tj_get(v, "behavior"), &p->behavior, err));
        return tk_pattern_parse(tj_get(v, "pattern"), "pre_tokenizer Split", &p->pattern, err);
    }
    if (!strcmp(t, "ByteLevel")) {
        p->kind = PT_BYTELEVEL;
        p->add_prefix_space = tj_bool(tj_get(v, "add_prefix_space"), 1);
        p->use_regex = tj_bool(tj_get(v, "use_regex"), 1);
        if (p->use_regex)
            return tk_pattern_compile(GPT2_REGEX, sizeof GPT2_REGEX - 1, "ByteLevel", &p->pattern, err);
        return STRATA_OK;
    }
    if (!strcmp(t, "Metaspace")) {
        p->kind = PT_METASPACE;
        p->split = tj_bool(tj_get(v, "split"), 1);
        return tk_metaspace_parse(v, p->replacement, &p->replacement_len, &p->prepend_scheme, err);
    }
    if (!strcmp(t, "Digits"))
        return fixed_split(p, tj_bool(tj_get(v, "individual_digits"), 0) ? "\\p{N}" : "\\p{N}+",
                           SPLIT_ISOLATED, 0, err);
    if (!strcmp(t, "Whitespace"))
        return fixed_split(p, "\\w+|[^\\w\\s]+", SPLIT_REMOVED, 1, err);
    if (!strcmp(t, "WhitespaceSplit"))
        return fixed_split(p, "\\s+", SPLIT_REMOVED, 0, err);
    return tk_unsupported(err, "pre_tokenizer", type);
}

void tk_pretok_free(tk_pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_children; i++)
        tk_pretok_free(&p->children[i]);
    free(p->children);
    tk_pattern_free(&p->pattern);
}

static int span_push(tk_scratch *sc, size_t *n, size_t start, size_t end, int match)
{
    if (*n == sc->spans_cap) {
        size_t cap = sc->spans_cap ? sc->spans_cap * 2 : 64;
        tk_span *s = realloc(sc->spans, cap * sizeof *s);
        if (!s)
            return -1;
        sc->spans = s;
        sc->spans_cap = cap;
    }
    sc->spans[(*n)++] = (tk_span){start, end, match};
    return 0;
}

/* Cover s[0..n) with match / non-match spans (HF's find_matches). */
static strata_status find_spans(const tk_pattern *pat, int invert, tk_scratch *sc, const char *s, size_t n,
                                size_t *n_spans, strata_error *err)
{
    size_t at = 0, ms, me;
    int rc;
    *n_spans = 0;
    while ((rc = tk_pattern_next(pat, sc, s, n, at, &ms, &me, err)) == 1) {
        if ((ms > at && span_push(sc, n_spans, at, ms, invert)) || span_push(sc, n_spans, ms, me, !invert))
            return tk_nomem(err);
        at = me;
    }
    if (rc < 0)
        return err ? err->status : STRATA_E_LIMIT;
    if (at < n && span_push(sc, n_spans, at, n, invert))
        return tk_nomem(err);
    return STRATA_OK;
}

/* Apply a split behaviour to the spans in place (HF's SplitDelimiterBehavior). */
static size_t apply_behavior(tk_split_behavior b, tk_span *sp, size_t n)
{
    size_t out = 0;
    int prev_match = 0;
    switch (b) {
    case SPLIT_ISOLATED:
        return n;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!sp[i].match)
                sp[out++] = sp[i];
        return out;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            if (sp[i].match && !prev_match && out)
                sp[out - 1].end = sp[i].end;
            else
                sp[out++] = sp[i];
            prev_match = sp[i].match;
        }
        return out;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            int m = sp[i].match;
            if (m == prev_match && out)
                sp[out - 1].end = sp[i].end;
            else
                sp[out++] = sp[i];
            prev_match = m;
        }
        return out;
    case SPLIT_MERGED_NEXT: {
        /* fold from the right, writing merged spans to the array's tail */
        size_t w = n;
        for (size_t i = n; i-- > 0;) {
            int m = sp[i].match;
            if (m && !prev_match && w < n)
                sp[w].start = sp[i].start;
            else
                sp[--w] = sp[i];
            prev_match = m;
        }
        memmove(sp, sp + w, (n - w) * sizeof *sp);
        return n - w;
    }
    }
    return n;
}

static strata_status emit_spans(tk_scratch *sc, const char *s, size_t n_spans, int at_origin,
                                strata_error *err)
{
    for (size_t i = 0; i < n_spans; i++) {
        tk_span sp = sc->spans[i];
        if (sp.end > sp.start && tk_pieces_add(&sc->b, s + sp.start, sp.end - sp.start, at_origin && sp.start == 0))
            return tk_nomem(err);
    }
    return STRATA_OK;
}

static strata_status split_piece(const tk_pretok *p, tk_scratch *sc, const char *s, size_t n, int at_origin,
                                 strata_error *err)
{
    size_t n_spans;
    STRATA_TRY(find_spans(&p->pattern, p->invert, sc, s, n, &n_spans, err));
    n_spans = apply_behavior(p->behavior, sc->spans, n_spans);
    return emit_spans(sc, s, n_spans, at_origin, err);
}

/* Append s[0..n) to the open piece with every byte mapped to its GPT-2 char. */
static int append_bytelevel(tk_buf *b, const char *s, size_t n)
{
    if (tk_buf_reserve(b, 2 * n))
        return -1;
    char *w = b->p + b->len;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tk_byte_to_char((unsigned char)s[i]);
        if (cp < 0x80) {
            *w++ = (char)cp;
        } else {
            *w++ = (char)(0xC0 | (cp >> 6));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    b->len = (size_t)(w - b->p);
    b->p[b->len] = '\0';
    return 0;
}

static strata_status bytelevel_piece(const tk_pretok *p, tk_scratch *sc, const char *s, size_t n, int at_origin,
                                     strata_error *err)
{
    if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
        sc->tmp.len = 0;
        if (tk_buf_append(&sc->tmp, " ", 1) || tk_buf_append(&sc->tmp, s, n))
            return tk_nomem(err);
        s = sc->tmp.p;
        n = sc->tmp.len;
    }
    size_t n_spans = 0;
    if (p->use_regex)
        STRATA_TRY(find_spans(&p->pattern, 0, sc, s, n, &n_spans, err));
    else if (n && span_push(sc, &n_spans, 0, n, 0))
        return tk_nomem(err);
    for (size_t i = 0; i < n_spans; i++) {
        tk_span sp = sc->spans[i];
        if (tk_pieces_open(&sc->b, at_origin && sp.start == 0) ||
            append_bytelevel(&sc->b.text, s + sp.start, sp.end - sp.start))
            return tk_nomem(err);
        tk_pieces_close(&sc->b);
    }
    return STRATA_OK;
}

static strata_status metaspace_piece(const tk_pretok *p, tk_scratch *sc, const char *s, size_t n, int at_origin,
                                     strata_error *err)
{
    tk_buf *t = &sc->tmp;
    t->len = 0;
    int starts_with_rep = n >= p->replacement_len && !memcmp(s, p->replacement, p->replacement_len);
    int prepend = !starts_with_rep && s[0] != ' ' &&
                  (p->prepend_scheme == PREPEND_ALWAYS || (p->prepend_scheme == PREPEND_FIRST && at_origin));
    if (prepend && tk_buf_append(t, p->replacement, p->replacement_len))
        return tk_nomem(err);
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' ? tk_buf_append(t, p->replacement, p->replacement_len) : tk_buf_append(t, s + i, 1))
            return tk_nomem(err);
    if (!p->split)
        return tk_pieces_add(&sc->b, t->p, t->len, at_origin) ? tk_nomem(err) : STRATA_OK;
    tk_pattern lit = {.literal = p->replacement, .literal_len = p->replacement_len};
    size_t n_spans;
    STRATA_TRY(find_spans(&lit, 0, sc, t->p, t->len, &n_spans, err));
    n_spans = apply_behavior(SPLIT_MERGED_NEXT, sc->spans, n_spans);
    return emit_spans(sc, t->p, n_spans, at_origin, err);
}

static strata_status pretok_step(const tk_pretok *p, tk_scratch *sc, strata_error *err)
{
    tk_pieces_clear(&sc->b);
    for (size_t i = 0; i < sc->a.n; i++) {
        const char *s = tk_piece(&sc->a, i);
        size_t n = sc->a.len[i];
        int origin = sc->a.at_origin[i];
        if (n == 0)
            continue;
        switch (p->kind) {
        case PT_SPLIT: STRATA_TRY(split_piece(p, sc, s, n, origin, err)); break;
        case PT_BYTELEVEL: STRATA_TRY(bytelevel_piece(p, sc, s, n, origin, err)); break;
        case PT_METASPACE: STRATA_TRY(metaspace_piece(p, sc, s, n, origin, err)); break;
        case PT_SEQUENCE: break;
        }
    }
    tk_pieces t = sc->a;
    sc->a = sc->b;
    sc->b = t;
    return STRATA_OK;
}

strata_status tk_pretokenize(const tk_pretok *p, tk_scratch *sc, strata_error *err)
{
    if (p->kind != PT_SEQUENCE)
        return pretok_step(p, sc, err);
    for (size_t i = 0; i < p->n_children; i++)
        STRATA_TRY(tk_pretokenize(&p->children[i], sc, err));
    return STRATA_OK;
}
