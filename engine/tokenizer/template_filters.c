/*
 * template_filters.c — the Jinja filters real chat templates use, each matching
 * Jinja 3.1's definition (and |tojson matching transformers' override, which is
 * json.dumps). The table at the end is what the parser checks names against, so
 * an unsupported filter is a parse error, never a silent difference.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/template_internal.h"

#define FILTER(name) static tv f_##name(tpl_render *r, const tpl_node *at, tv v, tpl_args *args)
#define A (r->arena)

static tv need_str(tpl_render *r, tv v) { return v.kind == TV_UNDEF ? tv_str("", 0) : tv_to_str(A, v); }

static int64_t int_arg(tpl_render *r, const tpl_node *at, tv v, const char *what)
{
    if (v.kind == TV_INT) return v.u.i;
    if (v.kind == TV_BOOL) return v.u.b;
    tpl_fail(r, at, "%s must be an integer, not '%s'", what, tv_type_name(v));
}

FILTER(trim)
{
    tv chars = tpl_arg(args, 0, "chars", tv_none());
    tv s = need_str(r, v);
    if (chars.kind == TV_STR)
        return tpl_strip(s, chars.u.s.p, chars.u.s.n, 3);
    (void)at;
    return tpl_strip(s, NULL, 0, 3);
}

FILTER(length)
{
    (void)args;
    switch (v.kind) {
    case TV_STR: return tv_int((int64_t)tpl_utf8_len(v.u.s.p, v.u.s.n));
    case TV_LIST: return tv_int((int64_t)v.u.l->n);
    case TV_DICT: return tv_int((int64_t)v.u.d->n);
    case TV_UNDEF: return tv_int(0);
    default: tpl_fail(r, at, "object of type '%s' has no len()", tv_type_name(v));
    }
}

FILTER(tojson)
{
    tpl_json_opts o = {.ensure_ascii = tv_truthy(tpl_arg(args, 0, "ensure_ascii", tv_bool(0))),
                       .sort_keys = tv_truthy(tpl_arg(args, 3, "sort_keys", tv_bool(0)))};
    tv indent = tpl_arg(args, 1, "indent", tv_none()), seps = tpl_arg(args, 2, "separators", tv_none());
    if (indent.kind == TV_INT || indent.kind == TV_BOOL) {
        int64_t n = indent.kind == TV_INT ? indent.u.i : indent.u.b;
        char *sp = tpl_alloc(A, n > 0 ? (size_t)n + 1 : 1);
        for (int64_t i = 0; i < n; i++)
            sp[i] = ' ';
        o.indent = sp;
        o.indent_n = n > 0 ? (size_t)n : 0;
        o.has_indent = 1;
    } else if (indent.kind == TV_STR) {
        o.indent = indent.u.s.p;
        o.indent_n = indent.u.s.n;
        o.has_indent = 1;
    } else if (indent.kind != TV_NONE)
        tpl_fail(r, at, "tojson: indent must be an integer or a string");
    o.item_sep = o.has_indent ? "," : ", ";
    o.key_sep = ": ";
    if (seps.kind == TV_LIST && seps.u.l->n == 2 && seps.u.l->items[0].kind == TV_STR &&
        seps.u.l->items[1].kind == TV_STR) {
        o.item_sep = tpl_strndup(A, seps.u.l->items[0].u.s.p, seps.u.l->items[0].u.s.n);
        o.key_sep = tpl_strndup(A, seps.u.l->items[1].u.s.p, seps.u.l->items[1].u.s.n);
    } else if (seps.kind != TV_NONE)
        tpl_fail(r, at, "tojson: separators must be a pair of strings");
    tpl_buf b = {0};
    tv bad;
    if (tpl_json_dump(A, &b, v, &o, &bad))
        tpl_fail(r, at, "Object of type %s is not JSON serializable", tv_type_name(bad));
    return tpl_buf_value(&b);
}

FILTER(string) { (void)at; (void)args; return need_str(r, v); }
FILTER(safe) { (void)r; (void)at; (void)args; return v; }
FILTER(lower) { (void)at; (void)args; return tpl_case(A, need_str(r, v), TPL_CASE_LOWER); }
FILTER(upper) { (void)at; (void)args; return tpl_case(A, need_str(r, v), TPL_CASE_UPPER); }
FILTER(title) { (void)at; (void)args; return tpl_case(A, need_str(r, v), TPL_CASE_JTITLE); }
FILTER(capitalize) { (void)at; (void)args; return tpl_case(A, need_str(r, v), TPL_CASE_CAPITALIZE); }

FILTER(replace)
{
    tv old = need_str(r, tpl_arg(args, 0, "old", tv_undef("old")));
    tv new = need_str(r, tpl_arg(args, 1, "new", tv_undef("new")));
    tv count = tpl_arg(args, 2, "count", tv_none());
    tpl_args m = {.n = count.kind == TV_NONE ? 2 : 3, .pos = (tv[]){old, new, count}};
    tpl_method meth = {.self = need_str(r, v), .name = "replace"};
    return tpl_method_call(r, at, &meth, &m);
}

/* The item or attribute named by a dotted path ("a.b", "0"), as Jinja's attribute=. */
static tv lookup_path(tpl_render *r, const tpl_node *at, tv item, tv path)
{
    if (path.kind == TV_INT)
        return tpl_getitem(r, at, item, path);
    if (path.kind != TV_STR)
        tpl_fail(r, at, "attribute must be a string");
    const char *p = path.u.s.p, *end = p + path.u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        char *part = tpl_strndup(A, p, (size_t)(dot - p));
        char *e;
        long long idx = strtoll(part, &e, 10);
        if (*part && !*e)
            item = tpl_getitem(r, at, item, tv_int(idx));
        else
            item = tpl_getitem(r, at, item, tv_cstr(part));
        p = dot + 1;
    }
    return item;
}

FILTER(join)
{
    tv sep = tpl_arg(args, 0, "d", tv_str("", 0)), attr = tpl_arg(args, 1, "attribute", tv_none());
    tpl_list *items = tpl_iterate(r, at, v);
    sep = need_str(r, sep);
    tpl_buf b = {0};
    for (size_t i = 0; i < items->n; i++) {
        if (i)
            tpl_buf_put(A, &b, sep.u.s.p, sep.u.s.n);
        tv x = attr.kind == TV_NONE ? items->items[i] : lookup_path(r, at, items->items[i], attr);
        tpl_put_str(A, &b, x);
    }
    return tpl_buf_value(&b);
}

FILTER(default)
{
    (void)r; (void)at;
    tv dflt = tpl_arg(args, 0, "default_value", tv_str("", 0));
    int boolean = tv_truthy(tpl_arg(args, 1, "boolean", tv_bool(0)));
    if (v.kind == TV_UNDEF || (boolean && !tv_truthy(v)))
        return dflt;
    return v;
}

FILTER(first)
{
    (void)args;
    tpl_list *items = tpl_iterate(r, at, v);
    return items->n ? items->items[0] : tv_undef_why(A, "No first item, sequence was empty.");
}

FILTER(last)
{
    (void)args;
    tpl_list *items = tpl_iterate(r, at, v);
    return items->n ? items->items[items->n - 1] : tv_undef_why(A, "No last item, sequence was empty.");
}

FILTER(list)
{
    (void)args;
    tpl_list *items = tpl_iterate(r, at, v);
    tv l = tv_list(A, items->n);
    for (size_t i = 0; i < items->n; i++)
        tpl_list_push(A, l.u.l, items->items[i]);
    return l;
}

FILTER(items)
{
    (void)args;
    if (v.kind == TV_UNDEF)
        return tv_list(A, 0);
    if (v.kind != TV_DICT)
        tpl_fail(r, at, "items: can only get item pairs from a mapping, not '%s'", tv_type_name(v));
    tv l = tv_list(A, v.u.d->n);
    for (size_t i = 0; i < v.u.d->n; i++) {
        tv pair = tv_list(A, 2);
        pair.is_tuple = 1;
        tpl_list_push(A, pair.u.l, v.u.d->keys[i]);
        tpl_list_push(A, pair.u.l, v.u.d->vals[i]);
        tpl_list_push(A, l.u.l, pair);
    }
    return l;
}

/* select/reject/selectattr/rejectattr: keep items whose test result is want. */
static tv select_items(tpl_render *r, const tpl_node *at, tv v, tpl_args *args, int by_attr, int want)
{
    tpl_list *items = tpl_iterate(r, at, v);
    size_t first = by_attr ? 1 : 0;
    tv attr = by_attr ? tpl_arg(args, 0, NULL, tv_none()) : tv_none();
    tv tname = tpl_arg(args, first, NULL, tv_none());
    tpl_test_fn test = NULL;
    if (tname.kind == TV_STR) {
        char *name = tpl_strndup(A, tname.u.s.p, tname.u.s.n);
        test = tpl_test_find(name);
        if (!test)
            tpl_fail(r, at, "test '%s' is not supported", name);
    } else if (tname.kind != TV_NONE)
        tpl_fail(r, at, "the test name must be a string");
    tpl_args rest = {.n = args->n > first + 1 ? args->n - first - 1 : 0};
    rest.pos = rest.n ? args->pos + first + 1 : NULL;  /* no arguments: no array to point into */
    tv out = tv_list(A, 0);
    for (size_t i = 0; i < items->n; i++) {
        tv x = by_attr ? lookup_path(r, at, items->items[i], attr) : items->items[i];
        int ok = test ? test(r, at, x, &rest) : tv_truthy(x);
        if (ok == want)
            tpl_list_push(A, out.u.l, items->items[i]);
    }
    return out;
}

FILTER(select) { return select_items(r, at, v, args, 0, 1); }
FILTER(reject) { return select_items(r, at, v, args, 0, 0); }
FILTER(selectattr) { return select_items(r, at, v, args, 1, 1); }
FILTER(rejectattr) { return select_items(r, at, v, args, 1, 0); }

FILTER(map)
{
    tpl_list *items = tpl_iterate(r, at, v);
    tv attr = tpl_arg(args, SIZE_MAX, "attribute", tv_none());
    tv out = tv_list(A, items->n);
    if (attr.kind != TV_NONE) {
        tv dflt = tpl_arg(args, SIZE_MAX, "default", tv_undef(NULL));
        for (size_t i = 0; i < items->n; i++) {
            tv x = lookup_path(r, at, items->items[i], attr);
            tpl_list_push(A, out.u.l, x.kind == TV_UNDEF && dflt.kind != TV_UNDEF ? dflt : x);
        }
        return out;
    }
    tv fname = tpl_arg(args, 0, NULL, tv_none());
    if (fname.kind != TV_STR)
        tpl_fail(r, at, "map: a filter name or attribute= is required");
    char *name = tpl_strndup(A, fname.u.s.p, fname.u.s.n);
    tpl_filter_fn f = tpl_filter_find(name);
    if (!f)
        tpl_fail(r, at, "filter '%s' is not supported", name);
    tpl_args rest = {.n = args->n - 1, .pos = args->pos + 1, .nkw = args->nkw, .kw = args->kw,
                     .kwnames = args->kwnames};
    for (size_t i = 0; i < items->n; i++)
        tpl_list_push(A, out.u.l, f(r, at, items->items[i], &rest));
    return out;
}

FILTER(int)
{
    tv dflt = tpl_arg(args, 0, "default", tv_int(0));
    switch (v.kind) {
    case TV_INT: return v;
    case TV_BOOL: return tv_int(v.u.b);
    case TV_FLOAT:
        if (!isfinite(v.u.f) || fabs(v.u.f) > 9.2e18)
            return dflt;
        return tv_int((int64_t)v.u.f);
    case TV_STR: {
        tv s = tpl_strip(v, NULL, 0, 3);
        char *t = tpl_strndup(A, s.u.s.p, s.u.s.n), *e;
        long long i = strtoll(t, &e, 10);
        if (*t && !*e)
            return tv_int(i);
        double d = strtod(t, &e);
        if (*t && !*e && isfinite(d))
            return tv_int((int64_t)d);
        return dflt;
    }
    default: (void)at; return dflt;
    }
}

FILTER(float)
{
    tv dflt = tpl_arg(args, 0, "default", tv_float(0.0));
    (void)at;
    if (tv_is_num(v))
        return tv_float(tv_num(v));
    if (v.kind == TV_STR) {
        tv s = tpl_strip(v, NULL, 0, 3);
        char *t = tpl_strndup(A, s.u.s.p, s.u.s.n), *e;
        double d = strtod(t, &e);
        if (*t && !*e)
            return tv_float(d);
    }
    return dflt;
}

FILTER(abs)
{
    (void)args;
    if (v.kind == TV_INT) {
        if (v.u.i == INT64_MIN)
            tpl_fail(r, at, "integer overflow");
        return tv_int(v.u.i < 0 ? -v.u.i : v.u.i);
    }
    if (v.kind == TV_BOOL) return tv_int(v.u.b);
    if (v.kind == TV_FLOAT) return tv_float(fabs(v.u.f));
    tpl_fail(r, at, "bad operand type for abs(): '%s'", tv_type_name(v));
}

FILTER(round)
{
    int64_t prec = int_arg(r, at, tpl_arg(args, 0, "precision", tv_int(0)), "precision");
    tv method = tpl_arg(args, 1, "method", tv_cstr("common"));
    if (!tv_is_num(v))
        tpl_fail(r, at, "round: expected a number, not '%s'", tv_type_name(v));
    int common = method.kind != TV_STR || (method.u.s.n == 6 && !memcmp(method.u.s.p, "common", 6));
    if (common && v.kind != TV_FLOAT && prec >= 0) /* Python's round(int, n) is that int */
        return tv_int(v.kind == TV_INT ? v.u.i : v.u.b);
    double x = tv_num(v), scale = pow(10.0, (double)prec), y = x * scale;
    if (method.kind == TV_STR && method.u.s.n == 4 && !memcmp(method.u.s.p, "ceil", 4)) y = ceil(y);
    else if (method.kind == TV_STR && method.u.s.n == 5 && !memcmp(method.u.s.p, "floor", 5)) y = floor(y);
    else y = nearbyint(y); /* Python's round: half to even */
    return tv_float(y / scale);
}

/* The key an item sorts or compares by: its attribute path if given, lowercased
 * unless case_sensitive (Jinja's ignore_case). Computed once per item. */
static tv item_key(tpl_render *r, const tpl_node *at, tv item, tv attr, int case_sensitive)
{
    tv key = attr.kind == TV_NONE ? item : lookup_path(r, at, item, attr);
    return !case_sensitive && key.kind == TV_STR ? tpl_case(A, key, TPL_CASE_LOWER) : key;
}

typedef struct sort_item { tv key, item; } sort_item;

/* Stable merge sort (Python's sort is stable) with errors for unorderable keys. */
static void sort_items(tpl_render *r, const tpl_node *at, sort_item *it, size_t n, int rev)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_items(r, at, it, h, rev);
    sort_items(r, at, it + h, n - h, rev);
    sort_item *tmp = tpl_alloc(A, n * sizeof *tmp);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int c = tv_compare(it[j].key, it[i].key);
        if (c == 2)
            tpl_fail(r, at, "'<' not supported between instances of '%s' and '%s'",
                     tv_type_name(it[j].key), tv_type_name(it[i].key));
        int take_right = rev ? c == 1 : c == -1;
        tmp[k++] = take_right ? it[j++] : it[i++];
    }
    while (i < h) tmp[k++] = it[i++];
    while (j < n) tmp[k++] = it[j++];
    memcpy(it, tmp, n * sizeof *tmp);
}

/* Sort items by key (attribute path, or element index for pairs) into a new list. */
static tv sorted(tpl_render *r, const tpl_node *at, tpl_list *items, tv attr, int cs, int rev)
{
    sort_item *it = tpl_alloc(A, (items->n + 1) * sizeof *it);
    for (size_t i = 0; i < items->n; i++) {
        it[i].item = items->items[i];
        it[i].key = item_key(r, at, it[i].item, attr, cs);
    }
    sort_items(r, at, it, items->n, rev);
    tv out = tv_list(A, items->n);
    for (size_t i = 0; i < items->n; i++)
        tpl_list_push(A, out.u.l, it[i].item);
    return out;
}

FILTER(sort)
{
    int rev = tv_truthy(tpl_arg(args, 0, "reverse", tv_bool(0)));
    int cs = tv_truthy(tpl_arg(args, 1, "case_sensitive", tv_bool(0)));
    tv attr = tpl_arg(args, 2, "attribute", tv_none());
    return sorted(r, at, tpl_iterate(r, at, v), attr, cs, rev);
}

FILTER(dictsort)
{
    int cs = tv_truthy(tpl_arg(args, 0, "case_sensitive", tv_bool(0)));
    tv by = tpl_arg(args, 1, "by", tv_cstr("key"));
    int rev = tv_truthy(tpl_arg(args, 2, "reverse", tv_bool(0)));
    int by_value = by.kind == TV_STR && by.u.s.n == 5 && !memcmp(by.u.s.p, "value", 5);
    tv pairs = f_items(r, at, v, &(tpl_args){0});
    return sorted(r, at, pairs.u.l, tv_int(by_value), cs, rev);
}

FILTER(unique)
{
    int cs = tv_truthy(tpl_arg(args, 0, "case_sensitive", tv_bool(0)));
    tv attr = tpl_arg(args, 1, "attribute", tv_none());
    tpl_list *items = tpl_iterate(r, at, v);
    tv out = tv_list(A, 0), seen = tv_list(A, 0);
    for (size_t i = 0; i < items->n; i++) {
        tv key = item_key(r, at, items->items[i], attr, cs);
        size_t k = 0;
        for (; k < seen.u.l->n; k++) { /* quadratic: each comparison is a step */
            tpl_step(r);
            if (tv_equal(seen.u.l->items[k], key))
                break;
        }
        if (k < seen.u.l->n)
            continue;
        tpl_list_push(A, seen.u.l, key);
        tpl_list_push(A, out.u.l, items->items[i]);
    }
    return out;
}

static tv extreme(tpl_render *r, const tpl_node *at, tv v, tpl_args *args, int want)
{
    int cs = tv_truthy(tpl_arg(args, 0, "case_sensitive", tv_bool(0)));
    tv attr = tpl_arg(args, 1, "attribute", tv_none());
    tpl_list *items = tpl_iterate(r, at, v);
    if (!items->n)
        return tv_undef(NULL);
    tv best = items->items[0], bkey = item_key(r, at, best, attr, cs);
    for (size_t i = 1; i < items->n; i++) {
        tv key = item_key(r, at, items->items[i], attr, cs);
        int c = tv_compare(key, bkey);
        if (c == 2)
            tpl_fail(r, at, "values cannot be compared");
        if (c == want) {
            best = items->items[i];
            bkey = key;
        }
    }
    return best;
}

FILTER(min) { return extreme(r, at, v, args, -1); }
FILTER(max) { return extreme(r, at, v, args, 1); }

FILTER(sum)
{
    tv attr = tpl_arg(args, 0, "attribute", tv_none()), total = tpl_arg(args, 1, "start", tv_int(0));
    tpl_list *items = tpl_iterate(r, at, v);
    for (size_t i = 0; i < items->n; i++) {
        tv x = attr.kind == TV_NONE ? items->items[i] : lookup_path(r, at, items->items[i], attr);
        total = tpl_binop(r, at, OP_ADD, total, x);
    }
    return total;
}

FILTER(reverse)
{
    (void)args;
    if (v.kind == TV_STR) {
        tpl_list *chars = tpl_iterate(r, at, v);
        tpl_buf b = {0};
        for (size_t i = chars->n; i-- > 0;)
            tpl_buf_put(A, &b, chars->items[i].u.s.p, chars->items[i].u.s.n);
        return tpl_buf_value(&b);
    }
    tpl_list *items = tpl_iterate(r, at, v);
    tv out = tv_list(A, items->n);
    for (size_t i = items->n; i-- > 0;)
        tpl_list_push(A, out.u.l, items->items[i]);
    return out;
}

FILTER(indent)
{
    tv width = tpl_arg(args, 0, "width", tv_int(4));
    int first = tv_truthy(tpl_arg(args, 1, "first", tv_bool(0)));
    int blank = tv_truthy(tpl_arg(args, 2, "blank", tv_bool(0)));
    tv ind = width.kind == TV_STR ? width : tv_none();
    if (ind.kind == TV_NONE) {
        int64_t w = int_arg(r, at, width, "indent width");
        char *sp = tpl_alloc(A, w > 0 ? (size_t)w + 1 : 1);
        for (int64_t i = 0; i < w; i++)
            sp[i] = ' ';
        ind = tv_str(sp, w > 0 ? (size_t)w : 0);
    }
    tv s = need_str(r, v);
    tpl_buf b = {0};
    if (first)
        tpl_buf_put(A, &b, ind.u.s.p, ind.u.s.n);
    /* lines as Python's splitlines() of s + "\n": every "\n" ends a line */
    size_t start = 0, line = 0;
    while (start < s.u.s.n) {
        const char *nl = memchr(s.u.s.p + start, '\n', s.u.s.n - start);
        size_t end = nl ? (size_t)(nl - s.u.s.p) : s.u.s.n;
        if (line++) {
            tpl_buf_putc(A, &b, '\n');
            if (blank || end > start)
                tpl_buf_put(A, &b, ind.u.s.p, ind.u.s.n);
        }
        tpl_buf_put(A, &b, s.u.s.p + start, end - start);
        start = end + 1;
        if (!nl)
            break;
    }
    return tpl_buf_value(&b);
}

FILTER(escape)
{
    (void)at; (void)args;
    tv s = need_str(r, v);
    tpl_buf b = {0};
    for (size_t i = 0; i < s.u.s.n; i++) {
        switch (s.u.s.p[i]) {
        case '&': tpl_buf_put(A, &b, "&amp;", 5); break;
        case '<': tpl_buf_put(A, &b, "&lt;", 4); break;
        case '>': tpl_buf_put(A, &b, "&gt;", 4); break;
        case '"': tpl_buf_put(A, &b, "&#34;", 5); break;
        case '\'': tpl_buf_put(A, &b, "&#39;", 5); break;
        default: tpl_buf_putc(A, &b, s.u.s.p[i]);
        }
    }
    return tpl_buf_value(&b);
}

FILTER(wordcount)
{
    (void)at; (void)args;
    tv s = need_str(r, v);
    int64_t words = 0;
    int in_word = 0;
    for (size_t pos = 0; pos < s.u.s.n;) { /* runs of \w, as Jinja's re.findall(r"\w+") */
        int32_t c = tpl_utf8_next(s.u.s.p, s.u.s.n, &pos);
        int w = c == '_' || tpl_is_alnum(c);
        words += w && !in_word;
        in_word = w;
    }
    return tv_int(words);
}

FILTER(batch)
{
    int64_t n = int_arg(r, at, tpl_arg(args, 0, "linecount", tv_none()), "batch size");
    tv fill = tpl_arg(args, 1, "fill_with", tv_none());
    int has_fill = args->n > 1 || args->nkw > 0;
    if (n <= 0)
        tpl_fail(r, at, "batch size must be positive");
    tpl_list *items = tpl_iterate(r, at, v);
    tv out = tv_list(A, 0), cur = tv_none();
    for (size_t i = 0; i < items->n; i++) {
        if (cur.kind == TV_NONE || (int64_t)cur.u.l->n == n) {
            cur = tv_list(A, (size_t)n);
            tpl_list_push(A, out.u.l, cur);
        }
        tpl_list_push(A, cur.u.l, items->items[i]);
    }
    while (has_fill && cur.kind == TV_LIST && (int64_t)cur.u.l->n < n)
        tpl_list_push(A, cur.u.l, fill);
    return out;
}

FILTER(center)
{
    int64_t w = int_arg(r, at, tpl_arg(args, 0, "width", tv_int(80)), "width");
    tv s = need_str(r, v);
    int64_t len = (int64_t)tpl_utf8_len(s.u.s.p, s.u.s.n);
    if (w <= len)
        return s;
    int64_t pad = w - len, left = pad / 2 + (pad & w & 1);
    tpl_buf b = {0};
    for (int64_t i = 0; i < left; i++) tpl_buf_putc(A, &b, ' ');
    tpl_buf_put(A, &b, s.u.s.p, s.u.s.n);
    for (int64_t i = left; i < pad; i++) tpl_buf_putc(A, &b, ' ');
    return tpl_buf_value(&b);
}

FILTER(format)
{
    if (args->n && args->nkw)
        tpl_fail(r, at, "format: can't handle positional and keyword arguments at the same time");
    tv operand;
    if (args->nkw) {
        operand = tv_dict(A, args->nkw);
        for (size_t i = 0; i < args->nkw; i++)
            tpl_dict_set(A, operand.u.d, tv_cstr(args->kwnames[i]), args->kw[i]);
    } else {
        operand = tv_list(A, args->n);
        operand.is_tuple = 1;
        for (size_t i = 0; i < args->n; i++)
            tpl_list_push(A, operand.u.l, args->pos[i]);
    }
    return tpl_percent_format(r, at, need_str(r, v), operand);
}

FILTER(attr)
{
    tv name = tpl_arg(args, 0, "name", tv_none());
    if (name.kind != TV_STR)
        tpl_fail(r, at, "attr: the attribute name must be a string");
    char *attr = tpl_strndup(A, name.u.s.p, name.u.s.n);
    if (v.kind == TV_DICT && !tpl_has_method(v, attr)) /* Python attributes only, no items */
        return tv_undef(attr);
    return tpl_getattr(r, v, attr);
}

/* Jinja's truncate: cut at a word boundary (or anywhere with killwords), append end,
 * leave strings within length + leeway alone. Lengths count code points. */
FILTER(truncate)
{
    tv s = need_str(r, v);
    int64_t length = int_arg(r, at, tpl_arg(args, 0, "length", tv_int(255)), "length");
    int killwords = tv_truthy(tpl_arg(args, 1, "killwords", tv_bool(0)));
    tv end = need_str(r, tpl_arg(args, 2, "end", tv_cstr("...")));
    tv leeway = tpl_arg(args, 3, "leeway", tv_none());
    int64_t lee = leeway.kind == TV_NONE ? 5 : int_arg(r, at, leeway, "leeway");
    int64_t n = (int64_t)tpl_utf8_len(s.u.s.p, s.u.s.n), endn = (int64_t)tpl_utf8_len(end.u.s.p, end.u.s.n);
    if (length < endn || lee < 0)
        tpl_fail(r, at, "truncate: expected length >= %lld and leeway >= 0", (long long)endn);
    if (n <= length + lee)
        return s;
    tv head = tv_str(s.u.s.p, tpl_utf8_offset(s.u.s.p, s.u.s.n, (size_t)(length - endn)));
    if (!killwords) {
        const char *sp = head.u.s.n ? memrchr(head.u.s.p, ' ', head.u.s.n) : NULL;
        if (sp)
            head.u.s.n = (size_t)(sp - head.u.s.p);
    }
    return tpl_binop(r, at, OP_ADD, head, end);
}

static const struct { const char *name; tpl_filter_fn fn; } filters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort},
    {"e", f_escape}, {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"format", f_format},
    {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last},
    {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max},
    {"min", f_min}, {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace},
    {"reverse", f_reverse}, {"round", f_round}, {"safe", f_safe}, {"select", f_select},
    {"selectattr", f_selectattr}, {"sort", f_sort}, {"string", f_string}, {"sum", f_sum},
    {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim}, {"truncate", f_truncate}, {"unique", f_unique},
    {"upper", f_upper}, {"wordcount", f_wordcount},
};

tpl_filter_fn tpl_filter_find(const char *name)
{
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
        if (!strcmp(filters[i].name, name))
            return filters[i].fn;
    return NULL;
}
