/*
 * template_value.c — the value model of the chat-template interpreter: constructors,
 * lists and insertion-ordered dicts (hashed past a few keys), and the Python rules templates rely on for
 * truthiness, equality (1 == 1.0 == True) and ordering.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/template_internal.h"

tv tv_undef(const char *name)
{
    tv v = {.kind = TV_UNDEF};
    v.u.s.p = name;
    v.u.s.n = name ? strlen(name) : 0;
    return v;
}

tv tv_undef_why(tpl_arena *a, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    tv v = {.kind = TV_UNDEF, .described = 1};
    v.u.s.p = tpl_strndup(a, msg, len);
    v.u.s.n = len;
    return v;
}

const char *tv_undef_message(tv u, char *buf, size_t size)
{
    if (u.described)
        snprintf(buf, size, "%.*s", (int)u.u.s.n, u.u.s.p);
    else
        snprintf(buf, size, "'%.*s' is undefined", (int)u.u.s.n, u.u.s.p ? u.u.s.p : "");
    return buf;
}

tv tv_none(void) { return (tv){.kind = TV_NONE}; }
tv tv_bool(int b) { return (tv){.kind = TV_BOOL, .u.b = !!b}; }
tv tv_int(int64_t i) { return (tv){.kind = TV_INT, .u.i = i}; }
tv tv_float(double f) { return (tv){.kind = TV_FLOAT, .u.f = f}; }

tv tv_str(const char *p, size_t n)
{
    tv v = {.kind = TV_STR};
    v.u.s.p = p ? p : "";
    v.u.s.n = n;
    return v;
}

tv tv_cstr(const char *p) { return tv_str(p, strlen(p)); }

tv tv_list(tpl_arena *a, size_t cap)
{
    tv v = {.kind = TV_LIST};
    v.u.l = tpl_alloc(a, sizeof *v.u.l);
    if (cap) {
        v.u.l->items = tpl_alloc(a, cap * sizeof(tv));
        v.u.l->cap = cap;
    }
    return v;
}

tv tv_dict(tpl_arena *a, size_t cap)
{
    tv v = {.kind = TV_DICT};
    v.u.d = tpl_alloc(a, sizeof *v.u.d);
    if (cap) {
        v.u.d->keys = tpl_alloc(a, cap * sizeof(tv));
        v.u.d->vals = tpl_alloc(a, cap * sizeof(tv));
        v.u.d->cap = cap;
    }
    return v;
}

/* Grow an array of tv to hold at least need items; arena memory is not reused. */
static tv *grow(tpl_arena *a, tv *old, size_t n, size_t *cap, size_t need)
{
    if (need <= *cap)
        return old;
    size_t c = *cap ? *cap * 2 : 4;
    while (c < need)
        c *= 2;
    tv *p = tpl_alloc(a, c * sizeof(tv));
    if (n)
        memcpy(p, old, n * sizeof(tv));
    *cap = c;
    return p;
}

void tpl_list_push(tpl_arena *a, tpl_list *l, tv v)
{
    l->items = grow(a, l->items, l->n, &l->cap, l->n + 1);
    l->items[l->n++] = v;
}

#define HASH_FROM 16 /* dicts with fewer keys are scanned */

static size_t hash_str(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

static void slot_insert(tpl_dict *d, size_t index)
{
    tv k = d->keys[index];
    size_t mask = d->nslots - 1, h = hash_str(k.u.s.p, k.u.s.n) & mask;
    while (d->slots[h])
        h = (h + 1) & mask;
    d->slots[h] = index + 1;
}

/* Keep the hash index at most half full, rebuilding it at twice the size. */
static void index_key(tpl_arena *a, tpl_dict *d, size_t index)
{
    if (d->n < HASH_FROM)
        return;
    if (!d->slots || 2 * d->n > d->nslots) {
        size_t ns = 64;
        while (ns < 4 * d->n)
            ns *= 2;
        d->slots = tpl_alloc(a, ns * sizeof *d->slots);
        d->nslots = ns;
        for (size_t i = 0; i < d->n; i++)
            if (d->keys[i].kind == TV_STR)
                slot_insert(d, i);
        return;
    }
    if (d->keys[index].kind == TV_STR)
        slot_insert(d, index);
}

tv *tpl_dict_get(const tpl_dict *d, tv key)
{
    if (d->slots && key.kind == TV_STR) {
        size_t mask = d->nslots - 1, h = hash_str(key.u.s.p, key.u.s.n) & mask;
        for (; d->slots[h]; h = (h + 1) & mask) {
            size_t i = d->slots[h] - 1;
            if (d->keys[i].u.s.n == key.u.s.n && !memcmp(d->keys[i].u.s.p, key.u.s.p, key.u.s.n))
                return &d->vals[i];
        }
        return NULL;
    }
    for (size_t i = 0; i < d->n; i++)
        if (tv_equal(d->keys[i], key))
            return &d->vals[i];
    return NULL;
}

tv *tpl_dict_get_str(const tpl_dict *d, const char *key)
{
    return tpl_dict_get(d, tv_str(key, strlen(key)));
}

void tpl_dict_set(tpl_arena *a, tpl_dict *d, tv key, tv val)
{
    tv *slot = tpl_dict_get(d, key);
    if (slot)
        *slot = val;
    else
        tpl_dict_append(a, d, key, val);
}

void tpl_dict_append(tpl_arena *a, tpl_dict *d, tv key, tv val)
{
    size_t kcap = d->cap;
    d->keys = grow(a, d->keys, d->n, &kcap, d->n + 1);
    d->vals = grow(a, d->vals, d->n, &d->cap, d->n + 1);
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
    index_key(a, d, d->n - 1);
}

int tv_truthy(tv v)
{
    switch (v.kind) {
    case TV_UNDEF: case TV_NONE: return 0;
    case TV_BOOL: return v.u.b;
    case TV_INT: return v.u.i != 0;
    case TV_FLOAT: return v.u.f != 0.0;
    case TV_STR: return v.u.s.n != 0;
    case TV_LIST: return v.u.l->n != 0;
    case TV_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

int tv_is_num(tv v) { return v.kind == TV_BOOL || v.kind == TV_INT || v.kind == TV_FLOAT; }

double tv_num(tv v)
{
    return v.kind == TV_FLOAT ? v.u.f : v.kind == TV_INT ? (double)v.u.i : (double)v.u.b;
}

static int64_t tv_intval(tv v) { return v.kind == TV_INT ? v.u.i : v.u.b; }

int tv_equal(tv a, tv b)
{
    if (tv_is_num(a) && tv_is_num(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return tv_intval(a) == tv_intval(b);
        return tv_num(a) == tv_num(b);
    }
    if (a.kind != b.kind)
        return 0;
    switch (a.kind) {
    case TV_UNDEF: case TV_NONE: return 1;
    case TV_STR: return a.u.s.n == b.u.s.n && !memcmp(a.u.s.p, b.u.s.p, a.u.s.n);
    case TV_LIST:
        if (a.u.l->n != b.u.l->n || a.is_tuple != b.is_tuple)
            return 0;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!tv_equal(a.u.l->items[i], b.u.l->items[i]))
                return 0;
        return 1;
    case TV_DICT:
        if (a.u.d->n != b.u.d->n)
            return 0;
        for (size_t i = 0; i < a.u.d->n; i++) {
            tv *o = tpl_dict_get(b.u.d, a.u.d->keys[i]);
            if (!o || !tv_equal(a.u.d->vals[i], *o))
                return 0;
        }
        return 1;
    case TV_NS: return a.u.d == b.u.d;
    case TV_MACRO: return a.u.macro->node == b.u.macro->node;
    case TV_FUNC: return a.u.func == b.u.func;
    default: return 0;
    }
}

static int sign(double d) { return d < 0 ? -1 : d > 0 ? 1 : 0; }

int tv_compare(tv a, tv b)
{
    if (tv_is_num(a) && tv_is_num(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT) {
            int64_t x = tv_intval(a), y = tv_intval(b);
            return x < y ? -1 : x > y;
        }
        if (isnan(tv_num(a)) || isnan(tv_num(b)))
            return 3; /* unordered: every comparison is false */
        return sign(tv_num(a) - tv_num(b));
    }
    if (a.kind == TV_STR && b.kind == TV_STR) {
        size_t n = a.u.s.n < b.u.s.n ? a.u.s.n : b.u.s.n;
        int c = n ? memcmp(a.u.s.p, b.u.s.p, n) : 0; /* UTF-8 bytes order as code points */
        if (c)
            return c < 0 ? -1 : 1;
        return a.u.s.n < b.u.s.n ? -1 : a.u.s.n > b.u.s.n;
    }
    if (a.kind == TV_LIST && b.kind == TV_LIST && a.is_tuple == b.is_tuple) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (tv_equal(a.u.l->items[i], b.u.l->items[i]))
                continue;
            return tv_compare(a.u.l->items[i], b.u.l->items[i]);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    return 2;
}

const char *tv_type_name(tv v)
{
    switch (v.kind) {
    case TV_UNDEF: return "Undefined";
    case TV_NONE: return "NoneType";
    case TV_BOOL: return "bool";
    case TV_INT: return "int";
    case TV_FLOAT: return "float";
    case TV_STR: return "str";
    case TV_LIST: return v.is_tuple ? "tuple" : "list";
    case TV_DICT: return "dict";
    case TV_NS: return "Namespace";
    case TV_MACRO: return "Macro";
    case TV_LOOP: return "LoopContext";
    default: return "function";
    }
}
