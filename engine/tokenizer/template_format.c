/*
 * template_format.c — Python's printf-style string formatting ("%s: %d" % args),
 * which both the % operator on strings and the |format filter use. Covers the
 * conversions templates need (s r d i f F e E g G x X o c %), flags, width and
 * precision, a tuple of arguments, a single one, or a mapping with %(name)s.
 */
#include <stdio.h>
#include <string.h>

#include "tokenizer/template_internal.h"

typedef struct fmt_args {
    tv all;         /* the right operand */
    size_t next;    /* next positional argument */
} fmt_args;

static tv next_arg(tpl_render *r, const tpl_node *at, fmt_args *fa)
{
    if (fa->all.kind == TV_LIST && fa->all.is_tuple) {
        if (fa->next >= fa->all.u.l->n)
            tpl_fail(r, at, "not enough arguments for format string");
        return fa->all.u.l->items[fa->next++];
    }
    if (fa->next++ > 0)
        tpl_fail(r, at, "not enough arguments for format string");
    return fa->all;
}

static void pad(tpl_render *r, tpl_buf *b, const char *s, size_t n, int width, int left)
{
    size_t len = tpl_utf8_len(s, n);
    if (!left)
        for (size_t i = len; (int)i < width; i++)
            tpl_buf_putc(r->arena, b, ' ');
    tpl_buf_put(r->arena, b, s, n);
    if (left)
        for (size_t i = len; (int)i < width; i++)
            tpl_buf_putc(r->arena, b, ' ');
}

static void put_number(tpl_render *r, const tpl_node *at, tpl_buf *b, tv v, char conv, const char *flags,
                       int width, int prec)
{
    char spec[32], out[512];
    if (!tv_is_num(v))
        tpl_fail(r, at, "%%%c format: a real number is required, not %s", conv, tv_type_name(v));
    if (strchr("diuxXoc", conv)) {
        long long i = v.kind == TV_FLOAT ? (long long)v.u.f : v.kind == TV_INT ? (long long)v.u.i : v.u.b;
        if (conv == 'c') {
            char one[2] = {(char)i, 0};
            pad(r, b, one, 1, width, strchr(flags, '-') != NULL);
            return;
        }
        snprintf(spec, sizeof spec, "%%%s*ll%c", flags, conv == 'i' || conv == 'u' ? 'd' : conv);
        snprintf(out, sizeof out, spec, width, i);
    } else {
        snprintf(spec, sizeof spec, "%%%s*.*%c", flags, conv);
        snprintf(out, sizeof out, spec, width, prec < 0 ? 6 : prec, tv_num(v));
    }
    tpl_buf_put(r->arena, b, out, strlen(out));
}

tv tpl_percent_format(tpl_render *r, const tpl_node *at, tv fmt, tv args)
{
    fmt_args fa = {.all = args};
    tpl_buf b = {.limit = TPL_MAX_OUTPUT};
    const char *p = fmt.u.s.p, *end = p + fmt.u.s.n;
    int used_mapping = 0;
    while (p < end) {
        const char *pc = memchr(p, '%', (size_t)(end - p));
        if (!pc) {
            tpl_buf_put(r->arena, &b, p, (size_t)(end - p));
            break;
        }
        tpl_buf_put(r->arena, &b, p, (size_t)(pc - p));
        p = pc + 1;
        tv v = tv_none();
        int have_v = 0;
        if (p < end && *p == '(') { /* %(name)s */
            const char *close = memchr(p, ')', (size_t)(end - p));
            if (!close || args.kind != TV_DICT)
                tpl_fail(r, at, "format requires a mapping");
            tv *found = tpl_dict_get(args.u.d, tv_str(p + 1, (size_t)(close - p - 1)));
            if (!found)
                tpl_fail(r, at, "format: key '%.*s' missing", (int)(close - p - 1), p + 1);
            v = *found;
            have_v = used_mapping = 1;
            p = close + 1;
        }
        char flags[8] = "";
        size_t nf = 0;
        while (p < end && strchr("-+ #0", *p) && nf < sizeof flags - 1)
            flags[nf++] = *p++;
        int width = 0, prec = -1;
        while (p < end && *p >= '0' && *p <= '9')
            width = width * 10 + (*p++ - '0');
        if (p < end && *p == '.')
            for (prec = 0, p++; p < end && *p >= '0' && *p <= '9';)
                prec = prec * 10 + (*p++ - '0');
        if (p >= end)
            tpl_fail(r, at, "incomplete format");
        char conv = *p++;
        if (conv == '%') {
            tpl_buf_putc(r->arena, &b, '%');
            continue;
        }
        if (!have_v)
            v = next_arg(r, at, &fa);
        if (conv == 's' || conv == 'r' || conv == 'a') {
            tpl_buf t = {0};
            if (conv == 's')
                tpl_put_str(r->arena, &t, v);
            else
                tpl_put_repr(r->arena, &t, v);
            size_t n = prec >= 0 ? tpl_utf8_offset(t.p, t.n, (size_t)prec) : t.n;
            pad(r, &b, t.p, n, width, strchr(flags, '-') != NULL);
        } else if (strchr("diuxXocfFeEgG", conv))
            put_number(r, at, &b, v, conv, flags, width, prec);
        else
            tpl_fail(r, at, "unsupported format character '%c'", conv);
    }
    /* Python lets a list or dict (anything with __getitem__) go unused */
    int tuple = args.kind == TV_LIST && args.is_tuple, mapping = args.kind == TV_DICT || args.kind == TV_LIST;
    if (!used_mapping && ((tuple && fa.next < args.u.l->n) || (!mapping && fa.next == 0)))
        tpl_fail(r, at, "not all arguments converted during string formatting");
    return tpl_buf_value(&b);
}
