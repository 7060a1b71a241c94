/*
 * template_json.c — JSON at the interpreter's edges: the render variables arrive
 * as JSON text (so the public header needs no jansson types) and become values;
 * |tojson prints values exactly as Python's json.dumps does with the arguments
 * transformers passes (ensure_ascii=False, separators, indent, sort_keys).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tokenizer/template_internal.h"

static tv from_json(tpl_arena *a, json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: { /* keys are unique in a jansson object: no lookups */
        tv d = tv_dict(a, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
            tpl_dict_append(a, d.u.d, tv_str(tpl_strndup(a, k, strlen(k)), strlen(k)), from_json(a, v));
        return d;
    }
    case JSON_ARRAY: {
        tv l = tv_list(a, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
            tpl_list_push(a, l.u.l, from_json(a, v));
        return l;
    }
    case JSON_STRING: {
        size_t n = json_string_length(j);
        return tv_str(tpl_strndup(a, json_string_value(j), n), n);
    }
    case JSON_INTEGER: return tv_int(json_integer_value(j));
    case JSON_REAL: return tv_float(json_real_value(j));
    case JSON_TRUE: return tv_bool(1);
    case JSON_FALSE: return tv_bool(0);
    default: return tv_none();
    }
}

tv tpl_json_parse(tpl_arena *a, const char *text, const char *what)
{
    json_t *j;
    strata_error err;
    if (json_parse_python(text ? text : "{}", text ? strlen(text) : 2, what, &j, &err) != STRATA_OK)
        tpl_throw(a, STRATA_E_INVALID, "%s", err.message);
    if (!json_is_object(j)) {
        json_decref(j);
        tpl_throw(a, STRATA_E_INVALID, "%s: expected a JSON object", what);
    }
    /* Converting allocates from the arena, which may unwind: keep j reachable. */
    jmp_buf *outer = a->jump, here;
    tv v;
    if (setjmp(here)) {
        a->jump = outer;
        json_decref(j);
        longjmp(*outer, 1);
    }
    a->jump = &here;
    v = from_json(a, j);
    a->jump = outer;
    json_decref(j);
    return v;
}

static void dump_string(tpl_arena *a, tpl_buf *b, const char *s, size_t n, int ascii)
{
    tpl_buf_putc(a, b, '"');
    for (size_t pos = 0; pos < n;) {
        size_t start = pos;
        int32_t c = tpl_utf8_next(s, n, &pos);
        switch (c) {
        case '"': tpl_buf_put(a, b, "\\\"", 2); continue;
        case '\\': tpl_buf_put(a, b, "\\\\", 2); continue;
        case '\n': tpl_buf_put(a, b, "\\n", 2); continue;
        case '\r': tpl_buf_put(a, b, "\\r", 2); continue;
        case '\t': tpl_buf_put(a, b, "\\t", 2); continue;
        case '\b': tpl_buf_put(a, b, "\\b", 2); continue;
        case '\f': tpl_buf_put(a, b, "\\f", 2); continue;
        }
        if (c < 0x20 || (ascii && c > 0x7e)) {
            if (c >= 0x10000) {
                int32_t v = c - 0x10000;
                tpl_buf_printf(a, b, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
            } else
                tpl_buf_printf(a, b, "\\u%04x", (unsigned)c);
        } else
            tpl_buf_put(a, b, s + start, pos - start);
    }
    tpl_buf_putc(a, b, '"');
}

static void newline(tpl_arena *a, tpl_buf *b, const tpl_json_opts *o, int level)
{
    if (!o->has_indent)
        return;
    tpl_buf_putc(a, b, '\n');
    for (int i = 0; i < level; i++)
        tpl_buf_put(a, b, o->indent, o->indent_n);
}

static int cmp_keys(const void *x, const void *y)
{
    return tv_compare(*(const tv *)x, *(const tv *)y);
}

static int dump(tpl_arena *a, tpl_buf *b, tv v, const tpl_json_opts *o, int level, tv *bad);

static int dump_dict(tpl_arena *a, tpl_buf *b, const tpl_dict *d, const tpl_json_opts *o,
                     int level, tv *bad)
{
    if (!d->n) {
        tpl_buf_put(a, b, "{}", 2);
        return 0;
    }
    size_t *order = tpl_alloc(a, d->n * sizeof *order);
    tv *pairs = tpl_alloc(a, d->n * 2 * sizeof(tv));
    for (size_t i = 0; i < d->n; i++) {
        pairs[2 * i] = d->keys[i];
        pairs[2 * i + 1] = tv_int((int64_t)i);
    }
    if (o->sort_keys)
        qsort(pairs, d->n, 2 * sizeof(tv), cmp_keys);
    for (size_t i = 0; i < d->n; i++)
        order[i] = (size_t)pairs[2 * i + 1].u.i;
    tpl_buf_putc(a, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        tv k = d->keys[order[i]];
        if (i)
            tpl_buf_put(a, b, o->item_sep, strlen(o->item_sep));
        newline(a, b, o, level + 1);
        if (k.kind == TV_STR)
            dump_string(a, b, k.u.s.p, k.u.s.n, o->ensure_ascii);
        else if (k.kind == TV_INT || k.kind == TV_FLOAT || k.kind == TV_BOOL || k.kind == TV_NONE) {
            tpl_buf t = {0}; /* json.dumps turns such keys into their JSON text */
            if (dump(a, &t, k, o, level, bad))
                return -1;
            dump_string(a, b, t.p, t.n, 0);
        } else {
            *bad = k;
            return -1;
        }
        tpl_buf_put(a, b, o->key_sep, strlen(o->key_sep));
        if (dump(a, b, d->vals[order[i]], o, level + 1, bad))
            return -1;
    }
    newline(a, b, o, level);
    tpl_buf_putc(a, b, '}');
    return 0;
}

static int dump(tpl_arena *a, tpl_buf *b, tv v, const tpl_json_opts *o, int level, tv *bad)
{
    if (level > 500) {
        *bad = v;
        return -1;
    }
    switch (v.kind) {
    case TV_NONE: tpl_buf_put(a, b, "null", 4); return 0;
    case TV_BOOL: tpl_buf_put(a, b, v.u.b ? "true" : "false", v.u.b ? 4 : 5); return 0;
    case TV_INT: tpl_buf_printf(a, b, "%lld", (long long)v.u.i); return 0;
    case TV_FLOAT:
        if (v.u.f != v.u.f) tpl_buf_put(a, b, "NaN", 3);
        else if (isinf(v.u.f) && v.u.f > 0) tpl_buf_put(a, b, "Infinity", 8);
        else if (isinf(v.u.f)) tpl_buf_put(a, b, "-Infinity", 9);
        else tpl_put_float(a, b, v.u.f);
        return 0;
    case TV_STR: dump_string(a, b, v.u.s.p, v.u.s.n, o->ensure_ascii); return 0;
    case TV_LIST:
        if (!v.u.l->n) {
            tpl_buf_put(a, b, "[]", 2);
            return 0;
        }
        tpl_buf_putc(a, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i)
                tpl_buf_put(a, b, o->item_sep, strlen(o->item_sep));
            newline(a, b, o, level + 1);
            if (dump(a, b, v.u.l->items[i], o, level + 1, bad))
                return -1;
        }
        newline(a, b, o, level);
        tpl_buf_putc(a, b, ']');
        return 0;
    case TV_DICT: return dump_dict(a, b, v.u.d, o, level, bad);
    default:
        *bad = v;
        return -1;
    }
}

int tpl_json_dump(tpl_arena *a, tpl_buf *b, tv v, const tpl_json_opts *o, tv *bad)
{
    return dump(a, b, v, o, 0, bad);
}
