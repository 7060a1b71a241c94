/*
 * pattern.c — the String/Regex patterns of Split, Replace (normalizer and decoder):
 * literal search, or PCRE2 with UTF+UCP (JIT-compiled when available) standing in
 * for the regex engines HF uses (Oniguruma, the regex crate). Matching state lives in
 * the caller's tk_scratch.
 */
#include <stdlib.h>

#include "tokenizer/internal.h"

strata_status tk_pattern_compile(const char *regex, size_t len, const char *what, tk_pattern *p,
                                 strata_error *err)
{
    int code;
    PCRE2_SIZE at;
    p->literal = NULL;
    p->re = pcre2_compile((PCRE2_SPTR)regex, len, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: %s regex does not compile at %zu: %s",
                           what, (size_t)at, (const char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE);      /* falls back to the interpreter */
    return STRATA_OK;
}

strata_status tk_pattern_parse(const tj_value *v, const char *what, tk_pattern *p, strata_error *err)
{
    const char *s;
    memset(p, 0, sizeof *p);
    if ((s = tj_str(tj_get(v, "String")))) {
        p->literal = s;
        p->literal_len = tj_get(v, "String")->n;
        return STRATA_OK;
    }
    if ((s = tj_str(tj_get(v, "Regex"))))
        return tk_pattern_compile(s, tj_get(v, "Regex")->n, what, p, err);
    return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: %s pattern needs a String or Regex", what);
}

void tk_pattern_free(tk_pattern *p)
{
    if (p->re)
        pcre2_code_free(p->re);
    p->re = NULL;
}

static int literal_next(const tk_pattern *p, const char *s, size_t n, size_t from, size_t *ms, size_t *me)
{
    if (!p->literal_len || from >= n)
        return 0;
    const char *hit = memmem(s + from, n - from, p->literal, p->literal_len);
    if (!hit)
        return 0;
    *ms = (size_t)(hit - s);
    *me = *ms + p->literal_len;
    return 1;
}

static int ensure_match_state(tk_scratch *sc)
{
    if (!sc->md && !(sc->md = pcre2_match_data_create(1, NULL)))
        return -1;
    if (!sc->mctx && !(sc->mctx = pcre2_match_context_create(NULL)))
        return -1;
    return 0;
}

/* JIT matching starts on PCRE2's small default stack (no per-call cost); only a
 * match that outgrows it gets a bigger one, bounded at 1 MB. */
static int grow_jit_stack(tk_scratch *sc)
{
    if (sc->jit)
        return -1;                  /* already at the bound */
    if (!(sc->jit = pcre2_jit_stack_create(64 * 1024, 1024 * 1024, NULL)))
        return -1;
    pcre2_jit_stack_assign(sc->mctx, NULL, sc->jit);
    return 0;
}

int tk_pattern_next(const tk_pattern *p, tk_scratch *sc, const char *s, size_t n, size_t from,
                    size_t *ms, size_t *me, strata_error *err)
{
    if (p->literal)
        return literal_next(p, s, n, from, ms, me);
    if (ensure_match_state(sc)) {
        tk_nomem(err);
        return -1;
    }
    while (from <= n) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, sc->md, sc->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && grow_jit_stack(sc) == 0)
            continue;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            strata_fail(err, STRATA_E_LIMIT, "regex matching failed: %s", (const char *)msg);
            return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return 1;
        }
        /* an empty match: skip one char, as the split would drop it anyway */
        if (ov[0] >= n)
            return 0;
        from = ov[0] + (size_t)tk_utf8_len((unsigned char)s[ov[0]]);
    }
    return 0;
}
