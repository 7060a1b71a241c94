/*
 * template_text.c — growable output buffers and Python's text forms of values:
 * str() is what {{ x }}, ~ and |string print, repr() is what str() of a list or
 * dict prints for its items, and floats print as Python's shortest round-trip repr.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/template_internal.h"

void tpl_buf_put(tpl_arena *a, tpl_buf *b, const char *s, size_t n)
{
    if (!n)
        return;
    size_t limit = b->limit ? b->limit : TPL_MAX_OUTPUT; /* no string outgrows the output */
    if (b->n + n > limit)
        tpl_throw(a, STRATA_E_LIMIT, "chat template: output limit of %zu bytes reached", limit);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = tpl_alloc(a, cap);
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void tpl_buf_putc(tpl_arena *a, tpl_buf *b, char c) { tpl_buf_put(a, b, &c, 1); }

void tpl_buf_printf(tpl_arena *a, tpl_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        tpl_buf_put(a, b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

tv tpl_buf_value(tpl_buf *b) { return tv_str(b->p, b->n); }

/* Python repr(float): the shortest digits that read back to the same double,
 * fixed notation for exponents in [-4, 16), scientific otherwise. */
void tpl_put_float(tpl_arena *a, tpl_buf *b, double f)
{
    if (isnan(f)) { tpl_buf_put(a, b, "nan", 3); return; }
    if (isinf(f)) { tpl_buf_put(a, b, f < 0 ? "-inf" : "inf", f < 0 ? 4 : 3); return; }
    char sci[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, f);
        if (strtod(sci, NULL) == f)
            break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = sci;
    int neg = *p == '-';
    if (neg)
        p++;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        tpl_buf_putc(a, b, '-');
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            tpl_buf_put(a, b, "0.", 2);
            for (int i = 0; i < -exp - 1; i++)
                tpl_buf_putc(a, b, '0');
            tpl_buf_put(a, b, digits, nd);
            return;
        }
        for (int i = 0; i <= exp; i++)
            tpl_buf_putc(a, b, (size_t)i < nd ? digits[i] : '0');
        tpl_buf_putc(a, b, '.');
        if ((size_t)exp + 1 < nd)
            tpl_buf_put(a, b, digits + exp + 1, nd - (size_t)exp - 1);
        else
            tpl_buf_putc(a, b, '0');
        return;
    }
    tpl_buf_putc(a, b, digits[0]);
    if (nd > 1) {
        tpl_buf_putc(a, b, '.');
        tpl_buf_put(a, b, digits + 1, nd - 1);
    }
    tpl_buf_printf(a, b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
}

/* Python's str.isprintable for one code point, which decides repr escapes. */
static int printable(int32_t c)
{
    if (c == ' ')
        return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

static void put_str_repr(tpl_arena *a, tpl_buf *b, const char *s, size_t n)
{
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    tpl_buf_putc(a, b, q);
    for (size_t pos = 0; pos < n;) {
        size_t start = pos;
        int32_t c = tpl_utf8_next(s, n, &pos);
        if (c == q || c == '\\') {
            tpl_buf_putc(a, b, '\\');
            tpl_buf_putc(a, b, (char)c);
        } else if (c == '\n') tpl_buf_put(a, b, "\\n", 2);
        else if (c == '\r') tpl_buf_put(a, b, "\\r", 2);
        else if (c == '\t') tpl_buf_put(a, b, "\\t", 2);
        else if (c >= 0 && !printable(c))
            tpl_buf_printf(a, b, c < 0x100 ? "\\x%02x" : c < 0x10000 ? "\\u%04x" : "\\U%08x",
                           (unsigned)c);
        else
            tpl_buf_put(a, b, s + start, pos - start);
    }
    tpl_buf_putc(a, b, q);
}

/* Containers nest at most this deep when printed: a namespace can hold itself. */
#define MAX_PRINT_DEPTH 200

static void put_value(tpl_arena *a, tpl_buf *b, tv v, int repr, int depth);

static void put_list(tpl_arena *a, tpl_buf *b, tv v, int depth)
{
    tpl_buf_putc(a, b, v.is_tuple ? '(' : '[');
    for (size_t i = 0; i < v.u.l->n; i++) {
        if (i)
            tpl_buf_put(a, b, ", ", 2);
        put_value(a, b, v.u.l->items[i], 1, depth + 1);
    }
    if (v.is_tuple && v.u.l->n == 1)
        tpl_buf_putc(a, b, ',');
    tpl_buf_putc(a, b, v.is_tuple ? ')' : ']');
}

static void put_dict(tpl_arena *a, tpl_buf *b, const tpl_dict *d, int depth)
{
    tpl_buf_putc(a, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            tpl_buf_put(a, b, ", ", 2);
        put_value(a, b, d->keys[i], 1, depth + 1);
        tpl_buf_put(a, b, ": ", 2);
        put_value(a, b, d->vals[i], 1, depth + 1);
    }
    tpl_buf_putc(a, b, '}');
}

static void put_value(tpl_arena *a, tpl_buf *b, tv v, int repr, int depth)
{
    if (depth > MAX_PRINT_DEPTH && (v.kind == TV_LIST || v.kind == TV_DICT || v.kind == TV_NS)) {
        tpl_buf_put(a, b, "...", 3);
        return;
    }
    switch (v.kind) {
    case TV_UNDEF: if (repr) tpl_buf_put(a, b, "Undefined", 9); break;
    case TV_NONE: tpl_buf_put(a, b, "None", 4); break;
    case TV_BOOL: tpl_buf_put(a, b, v.u.b ? "True" : "False", v.u.b ? 4 : 5); break;
    case TV_INT: tpl_buf_printf(a, b, "%lld", (long long)v.u.i); break;
    case TV_FLOAT: tpl_put_float(a, b, v.u.f); break;
    case TV_STR:
        if (repr)
            put_str_repr(a, b, v.u.s.p, v.u.s.n);
        else
            tpl_buf_put(a, b, v.u.s.p, v.u.s.n);
        break;
    case TV_LIST: put_list(a, b, v, depth); break;
    case TV_DICT: put_dict(a, b, v.u.d, depth); break;
    case TV_NS:
        tpl_buf_put(a, b, "<Namespace ", 11);
        put_dict(a, b, v.u.d, depth);
        tpl_buf_putc(a, b, '>');
        break;
    case TV_MACRO: tpl_buf_printf(a, b, "<Macro '%s'>", v.u.macro->node->name); break;
    case TV_LOOP: tpl_buf_put(a, b, "<LoopContext>", 13); break;
    case TV_METHOD: tpl_buf_printf(a, b, "<built-in method %s>", v.u.m->name); break;
    case TV_FUNC: tpl_buf_put(a, b, "<function>", 10); break;
    }
}

void tpl_put_str(tpl_arena *a, tpl_buf *b, tv v) { put_value(a, b, v, 0, 0); }
void tpl_put_repr(tpl_arena *a, tpl_buf *b, tv v) { put_value(a, b, v, 1, 0); }

tv tv_to_str(tpl_arena *a, tv v)
{
    if (v.kind == TV_STR)
        return v;
    tpl_buf b = {0};
    tpl_put_str(a, &b, v);
    return tpl_buf_value(&b);
}
