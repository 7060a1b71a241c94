/*
 * template_globals.c — the functions a chat template can call by name: range,
 * namespace and dict (Jinja's globals), raise_exception and strftime_now (the two
 * transformers adds). raise_exception's message becomes the error message as is,
 * because the server hands it to the client. range() is bounded as in Jinja's sandbox.
 */
#include <string.h>
#include <time.h>

#include "tokenizer/template_internal.h"

static const char *const names[] = {
    [TPL_FN_RANGE] = "range", [TPL_FN_NAMESPACE] = "namespace", [TPL_FN_DICT] = "dict",
    [TPL_FN_RAISE] = "raise_exception", [TPL_FN_STRFTIME] = "strftime_now"};

int tpl_global_find(const char *name)
{
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

static int64_t int_arg(tpl_render *r, const tpl_node *at, tv v)
{
    if (v.kind == TV_INT) return v.u.i;
    if (v.kind == TV_BOOL) return v.u.b;
    tpl_fail(r, at, "range: '%s' object cannot be interpreted as an integer", tv_type_name(v));
}

static tv range(tpl_render *r, const tpl_node *at, tpl_args *args)
{
    if (args->n < 1 || args->n > 3 || args->nkw)
        tpl_fail(r, at, "range expects 1 to 3 integer arguments");
    int64_t start = 0, stop, stepv = 1;
    if (args->n == 1)
        stop = int_arg(r, at, args->pos[0]);
    else {
        start = int_arg(r, at, args->pos[0]);
        stop = int_arg(r, at, args->pos[1]);
        if (args->n == 3)
            stepv = int_arg(r, at, args->pos[2]);
    }
    if (!stepv)
        tpl_fail(r, at, "range() arg 3 must not be zero");
    /* the item count in unsigned arithmetic: stop - start may not fit an int64 */
    uint64_t span = stepv > 0 ? (stop > start ? (uint64_t)stop - (uint64_t)start : 0)
                              : (start > stop ? (uint64_t)start - (uint64_t)stop : 0);
    uint64_t stride = stepv > 0 ? (uint64_t)stepv : (uint64_t)0 - (uint64_t)stepv;
    uint64_t n = span ? (span - 1) / stride + 1 : 0;
    if (n > TPL_MAX_RANGE)
        tpl_throw(r->arena, STRATA_E_LIMIT,
                  "chat template line %d: range too big (more than %d items)", at->line, TPL_MAX_RANGE);
    tv l = tv_list(r->arena, (size_t)n);
    for (uint64_t k = 0; k < n; k++) /* start + k * step stays within [start, stop) */
        tpl_list_push(r->arena, l.u.l, tv_int((int64_t)((uint64_t)start + k * (uint64_t)stepv)));
    return l;
}

/* namespace(...) and dict(...): an optional mapping, then keyword arguments. */
static tv mapping(tpl_render *r, const tpl_node *at, tpl_args *args, tpl_kind kind)
{
    tv d = tv_dict(r->arena, args->nkw);
    d.kind = kind;
    if (args->n > 1)
        tpl_fail(r, at, "%s expected at most 1 positional argument", kind == TV_NS ? "namespace" : "dict");
    if (args->n == 1) {
        tv src = args->pos[0];
        if (src.kind != TV_DICT && src.kind != TV_NS)
            tpl_fail(r, at, "cannot convert '%s' to a mapping", tv_type_name(src));
        for (size_t i = 0; i < src.u.d->n; i++)
            tpl_dict_set(r->arena, d.u.d, src.u.d->keys[i], src.u.d->vals[i]);
    }
    for (size_t i = 0; i < args->nkw; i++)
        tpl_dict_set(r->arena, d.u.d, tv_cstr(args->kwnames[i]), args->kw[i]);
    return d;
}

/* A naive datetime (the given "now") has no zone: Python prints %z and %Z as "". */
static char *drop_zone(tpl_render *r, tv fmt)
{
    char *f = tpl_alloc(r->arena, fmt.u.s.n + 1);
    size_t n = 0;
    for (size_t i = 0; i < fmt.u.s.n; i++) {
        char c = fmt.u.s.p[i];
        if (c == '%' && i + 1 < fmt.u.s.n) {
            char d = fmt.u.s.p[++i];
            if (d == 'z' || d == 'Z')
                continue;
            f[n++] = c;
            c = d;
        }
        f[n++] = c;
    }
    f[n] = '\0';
    return f;
}

static tv strftime_now(tpl_render *r, const tpl_node *at, tpl_args *args)
{
    tv fmt = tpl_arg(args, 0, "format", tv_none());
    if (fmt.kind != TV_STR)
        tpl_fail(r, at, "strftime_now expects a format string");
    struct tm tm = r->now;
    char *f;
    if (r->have_now)
        f = drop_zone(r, fmt);
    else {
        time_t t = time(NULL);
        localtime_r(&t, &tm);
        f = tpl_strndup(r->arena, fmt.u.s.p, fmt.u.s.n);
    }
    size_t cap = 256 + fmt.u.s.n * 16;
    char *out = tpl_alloc(r->arena, cap);
    size_t n = *f ? strftime(out, cap, f, &tm) : 0;
    return tv_str(out, n);
}

tv tpl_global_call(tpl_render *r, const tpl_node *at, int fn, tpl_args *args)
{
    switch (fn) {
    case TPL_FN_RANGE: return range(r, at, args);
    case TPL_FN_NAMESPACE: return mapping(r, at, args, TV_NS);
    case TPL_FN_DICT: return mapping(r, at, args, TV_DICT);
    case TPL_FN_RAISE: {
        tv msg = tv_to_str(r->arena, tpl_arg(args, 0, "message", tv_str("", 0)));
        tpl_throw(r->arena, STRATA_E_TEMPLATE, "%.*s", (int)msg.u.s.n, msg.u.s.p);
    }
    case TPL_FN_STRFTIME: return strftime_now(r, at, args);
    default: tpl_fail(r, at, "unknown function");
    }
}
