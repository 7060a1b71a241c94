/*
 * template_format.c — Python's printf-style string formatting ("%s: %d" % args),
 * which both the % operator on strings and the |format filter use. Covers the
 * conversions templates need (s r d i f F e E g G x X o c %), flags, width and
 * precision, a tuple of arguments, a single one, or a mapping with %(name)s. And
 * str.format's common subset: automatic, numbered and named fields, !s/!r, and
 * fill, alignment, sign, zero padding, width, precision and type.
 */
#include <math.h>
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

/* A decimal width or precision, capped so that no int overflows (output is bounded anyway). */
static int read_count(const char **p, const char *end)
{
    int v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        if (v < 100000)
            v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
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
    if (v.kind == TV_FLOAT && strchr("diu", conv)) { /* Python truncates; huge values stay exact */
        snprintf(spec, sizeof spec, "%%%s*.0f", flags);
        snprintf(out, sizeof out, spec, width, isfinite(v.u.f) ? trunc(v.u.f) : v.u.f);
    } else if (strchr("diuxXoc", conv)) {
        if (v.kind == TV_FLOAT)
            tpl_fail(r, at, "%%%c format: an integer is required, not float", conv);
        long long i = v.kind == TV_INT ? (long long)v.u.i : v.u.b;
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

/* The value a "%(name)" names in the mapping operand. */
static tv mapped_arg(tpl_render *r, const tpl_node *at, const char **pp, const char *end, tv args)
{
    const char *p = *pp, *close = memchr(p, ')', (size_t)(end - p));
    if (!close || args.kind != TV_DICT)
        tpl_fail(r, at, "format requires a mapping");
    tv *found = tpl_dict_get(args.u.d, tv_str(p + 1, (size_t)(close - p - 1)));
    if (!found)
        tpl_fail(r, at, "format: key '%.*s' missing", (int)(close - p - 1), p + 1);
    *pp = close + 1;
    return *found;
}

/* One conversion, "[(name)][flags][width][.precision]type" after a '%'; returns 1
 * when it took its value from the mapping. */
static int percent_one(tpl_render *r, const tpl_node *at, const char **pp, const char *end, fmt_args *fa,
                       tpl_buf *b)
{
    const char *p = *pp;
    int mapped = p < end && *p == '(';
    tv v = mapped ? mapped_arg(r, at, &p, end, fa->all) : tv_none();
    char flags[8] = "";
    size_t nf = 0;
    while (p < end && strchr("-+ #0", *p) && nf < sizeof flags - 1)
        flags[nf++] = *p++;
    int width = read_count(&p, end), prec = -1;
    if (p < end && *p == '.') {
        p++;
        prec = read_count(&p, end);
    }
    if (p >= end)
        tpl_fail(r, at, "incomplete format");
    char conv = *p++;
    *pp = p;
    if (conv == '%') {
        tpl_buf_putc(r->arena, b, '%');
        return mapped;
    }
    if (!mapped)
        v = next_arg(r, at, fa);
    if (conv == 's' || conv == 'r' || conv == 'a') {
        tpl_buf t = {0};
        if (conv == 's')
            tpl_put_str(r->arena, &t, v);
        else
            tpl_put_repr(r->arena, &t, v);
        size_t n = prec >= 0 ? tpl_utf8_offset(t.p, t.n, (size_t)prec) : t.n;
        pad(r, b, t.p, n, width, strchr(flags, '-') != NULL);
    } else if (strchr("diuxXocfFeEgG", conv))
        put_number(r, at, b, v, conv, flags, width, prec);
    else
        tpl_fail(r, at, "unsupported format character '%c'", conv);
    return mapped;
}

tv tpl_percent_format(tpl_render *r, const tpl_node *at, tv fmt, tv args)
{
    fmt_args fa = {.all = args};
    tpl_buf b = {0};
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
        used_mapping |= percent_one(r, at, &p, end, &fa, &b);
    }
    /* Python lets a list or dict (anything with __getitem__) go unused */
    int tuple = args.kind == TV_LIST && args.is_tuple, mapping = args.kind == TV_DICT || args.kind == TV_LIST;
    if (!used_mapping && ((tuple && fa.next < args.u.l->n) || (!mapping && fa.next == 0)))
        tpl_fail(r, at, "not all arguments converted during string formatting");
    return tpl_buf_value(&b);
}

/* ---- str.format: "{}", "{0}", "{name}", with !s/!r and [[fill]align][sign][0][width][.prec][type] */

typedef struct spec {
    char fill, align, sign, type;
    int zero, width, prec;
} spec;

static const char *parse_spec(const char *p, const char *end, spec *s)
{
    *s = (spec){.fill = ' ', .prec = -1};
    if (end - p >= 2 && strchr("<>^=", p[1])) { /* fill + align */
        s->fill = p[0];
        s->align = p[1];
        p += 2;
    } else if (p < end && strchr("<>^=", *p))
        s->align = *p++;
    if (p < end && strchr("+- ", *p))
        s->sign = *p++;
    if (p < end && *p == '0') {
        s->zero = 1;
        p++;
    }
    s->width = read_count(&p, end);
    if (p < end && *p == '.') {
        p++;
        s->prec = read_count(&p, end);
    }
    if (p < end)
        s->type = *p++;
    return p;
}

/* Pad text to the spec's width; numbers align right by default, text left. */
static void put_aligned(tpl_render *r, tpl_buf *b, const char *t, size_t n, const spec *s, int numeric)
{
    size_t len = tpl_utf8_len(t, n), pad = (size_t)s->width > len ? (size_t)s->width - len : 0;
    char align = s->align ? s->align : s->zero && numeric ? '=' : numeric ? '>' : '<';
    char fill = s->zero && !s->align ? '0' : s->fill;
    size_t left = align == '>' ? pad : align == '^' ? pad / 2 : 0;
    if (align == '=' && n && (t[0] == '-' || t[0] == '+' || t[0] == ' ')) { /* pad after sign */
        tpl_buf_putc(r->arena, b, t[0]);
        t++, n--;
        left = pad;
    } else if (align == '=')
        left = pad;
    for (size_t i = 0; i < left; i++)
        tpl_buf_putc(r->arena, b, fill);
    tpl_buf_put(r->arena, b, t, n);
    for (size_t i = left; i < pad; i++)
        tpl_buf_putc(r->arena, b, fill);
}

static void format_field(tpl_render *r, const tpl_node *at, tpl_buf *b, tv v, char conv, const spec *s)
{
    tpl_buf t = {0};
    if (conv == 'r' || conv == 'a') {
        tpl_put_repr(r->arena, &t, v);
        v = tpl_buf_value(&t);
        t = (tpl_buf){0};
    } else if (conv == 's')
        v = tv_to_str(r->arena, v);
    int numeric = tv_is_num(v) && v.kind != TV_BOOL;
    if (s->type && !strchr("sdfFeEgGxXoc%", s->type))
        tpl_fail(r, at, "format specifier with '%c' is not supported", s->type);
    if (!s->type && (!numeric || s->prec < 0)) { /* str() of the value */
        tpl_put_str(r->arena, &t, v);
        if (!numeric && s->prec >= 0)
            t.n = tpl_utf8_offset(t.p, t.n, (size_t)s->prec);
    } else if (s->type == 's') {
        if (v.kind != TV_STR)
            tpl_fail(r, at, "Unknown format code 's' for object of type '%s'", tv_type_name(v));
        tpl_put_str(r->arena, &t, v);
        if (s->prec >= 0)
            t.n = tpl_utf8_offset(t.p, t.n, (size_t)s->prec);
    } else {
        char flags[4] = {0};
        if (s->sign && s->sign != '-')
            flags[0] = s->sign;
        char type = s->type ? s->type : 'g';
        tv x = v;
        if (type == '%') {
            x = tv_float(tv_num(v) * 100);
            type = 'f';
        }
        if (!tv_is_num(x))
            tpl_fail(r, at, "Unknown format code '%c' for object of type '%s'", type, tv_type_name(x));
        if (strchr("dxXob", type) && x.kind == TV_FLOAT)
            tpl_fail(r, at, "Unknown format code '%c' for object of type 'float'", type);
        put_number(r, at, &t, x, type == 'b' ? 'd' : type, flags, 0, s->prec);
        if (s->type == '%')
            tpl_buf_putc(r->arena, &t, '%');
    }
    put_aligned(r, b, t.p ? t.p : "", t.n, s, numeric);
}

/* The value a replacement field names: "" (next), a position, or a keyword. */
static tv field_value(tpl_render *r, const tpl_node *at, const char *name, size_t n, tpl_args *args,
                      size_t *auto_index, int *manual)
{
    int numbered = n && name[0] >= '0' && name[0] <= '9';
    if (!n || numbered) { /* Python refuses to mix {} and {0} */
        if (*manual >= 0 && *manual != numbered)
            tpl_fail(r, at, "cannot switch between automatic and manual field numbering");
        *manual = numbered;
    }
    if (!n) {
        if (*auto_index >= args->n)
            tpl_fail(r, at, "Replacement index %zu out of range for positional args tuple", *auto_index);
        return args->pos[(*auto_index)++];
    }
    if (numbered) {
        size_t i = 0;
        for (size_t k = 0; k < n; k++)
            i = i * 10 + (size_t)(name[k] - '0');
        if (i >= args->n)
            tpl_fail(r, at, "Replacement index %zu out of range for positional args tuple", i);
        return args->pos[i];
    }
    for (size_t k = 0; k < args->nkw; k++)
        if (strlen(args->kwnames[k]) == n && !memcmp(args->kwnames[k], name, n))
            return args->kw[k];
    tpl_fail(r, at, "format: no argument named '%.*s'", (int)n, name);
}

tv tpl_str_format(tpl_render *r, const tpl_node *at, tv fmt, tpl_args *args)
{
    tpl_buf b = {.limit = TPL_MAX_OUTPUT};
    const char *p = fmt.u.s.p, *end = p + fmt.u.s.n;
    size_t auto_index = 0;
    int manual = -1;
    while (p < end) {
        if ((*p == '{' || *p == '}') && p + 1 < end && p[1] == *p) { /* {{ and }} */
            tpl_buf_putc(r->arena, &b, *p);
            p += 2;
            continue;
        }
        if (*p == '}')
            tpl_fail(r, at, "Single '}' encountered in format string");
        if (*p != '{') {
            tpl_buf_putc(r->arena, &b, *p++);
            continue;
        }
        const char *close = memchr(p, '}', (size_t)(end - p));
        if (!close)
            tpl_fail(r, at, "Single '{' encountered in format string");
        const char *name = p + 1, *q = name;
        while (q < close && *q != '!' && *q != ':')
            q++;
        tv v = field_value(r, at, name, (size_t)(q - name), args, &auto_index, &manual);
        char conv = 0;
        if (q < close && *q == '!') {
            conv = q + 1 < close ? q[1] : 0;
            q += 2;
        }
        spec s;
        if (q < close && *q == ':')
            q++;
        if (parse_spec(q, close, &s) != close)
            tpl_fail(r, at, "Invalid format specifier '%.*s'", (int)(close - q), q);
        format_field(r, at, &b, v, conv, &s);
        p = close + 1;
    }
    return tpl_buf_value(&b);
}
