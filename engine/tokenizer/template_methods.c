/*
 * template_methods.c — Python methods templates call on values: str methods
 * (split, strip, startswith, replace, ...), dict.items/keys/values/get, list
 * index/count, loop.cycle and loop.changed. Methods that would mutate a value exist (so
 * `x.append is defined` holds) but fail when called, as in the immutable sandbox
 * transformers renders with.
 */
#include <string.h>

#include "tokenizer/template_internal.h"

#define A (r->arena)

static const char *const str_methods[] = {
    "startswith", "endswith", "split", "rsplit", "strip", "lstrip", "rstrip", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "index", "count", "join", "isdigit",
    "isalpha", "isalnum", "isspace", "isupper", "islower", "splitlines", "format", NULL};
static const char *const dict_methods[] = {
    "items", "keys", "values", "get", "copy", "pop", "popitem", "update", "setdefault", "clear", NULL};
static const char *const list_methods[] = {
    "index", "count", "copy", "append", "extend", "insert", "pop", "remove", "reverse", "sort",
    "clear", NULL};

static int listed(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (!strcmp(*list, name))
            return 1;
    return 0;
}

int tpl_has_method(tv self, const char *name)
{
    switch (self.kind) {
    case TV_STR: return listed(str_methods, name);
    case TV_DICT: return listed(dict_methods, name);
    case TV_LIST: return listed(list_methods, name);
    default: return 0;
    }
}

static tv str_arg(tpl_render *r, const tpl_node *at, tpl_args *args, size_t i, const char *name)
{
    tv v = tpl_arg(args, i, name, tv_none());
    if (v.kind != TV_STR && v.kind != TV_NONE)
        tpl_fail(r, at, "%s: expected a string argument, not '%s'", name, tv_type_name(v));
    return v;
}

static int64_t int_or(tv v, int64_t dflt)
{
    return v.kind == TV_INT ? v.u.i : v.kind == TV_BOOL ? v.u.b : dflt;
}

static int affix(tv s, tv x, int end)
{
    if (x.u.s.n > s.u.s.n)
        return 0;
    return !memcmp(s.u.s.p + (end ? s.u.s.n - x.u.s.n : 0), x.u.s.p, x.u.s.n);
}

static tv starts_ends(tpl_render *r, const tpl_node *at, tv s, tpl_args *args, int end)
{
    tv x = tpl_arg(args, 0, NULL, tv_none());
    if (x.kind == TV_STR)
        return tv_bool(affix(s, x, end));
    if (x.kind == TV_LIST && x.is_tuple) {
        for (size_t i = 0; i < x.u.l->n; i++)
            if (x.u.l->items[i].kind == TV_STR && affix(s, x.u.l->items[i], end))
                return tv_bool(1);
        return tv_bool(0);
    }
    tpl_fail(r, at, "%s arg must be str or a tuple of str", end ? "endswith" : "startswith");
}

/* Words separated by runs of whitespace, at most max splits (-1: any), scanning from
 * the left or the right; the unsplit rest keeps its inner whitespace, as in Python. */
static void split_whitespace(tpl_render *r, tv s, int64_t max, int from_right, tpl_list *out)
{
    const char *p = s.u.s.p;
    size_t n = s.u.s.n, ncp = tpl_utf8_len(p, n);
    size_t *off = tpl_alloc(A, (ncp + 1) * sizeof *off);
    char *sp = tpl_alloc(A, ncp + 1);
    for (size_t k = 0, pos = 0; k < ncp; k++) {
        off[k] = pos;
        sp[k] = (char)tpl_is_space(tpl_utf8_next(p, n, &pos));
    }
    off[ncp] = n;
    size_t i = 0, j = ncp; /* the unsplit remainder, in code points */
    for (; max != 0; max--) {
        if (!from_right) {
            while (i < j && sp[i]) i++;
            size_t w = i;
            while (i < j && !sp[i]) i++;
            if (w == i) break;
            tpl_list_push(A, out, tv_str(p + off[w], off[i] - off[w]));
        } else {
            while (j > i && sp[j - 1]) j--;
            size_t w = j;
            while (j > i && !sp[j - 1]) j--;
            if (w == j) break;
            tpl_list_push(A, out, tv_str(p + off[j], off[w] - off[j]));
        }
    }
    if (!from_right) /* the rest loses whitespace only on the side scanned from */
        while (i < j && sp[i]) i++;
    else
        while (j > i && sp[j - 1]) j--;
    if (i < j)
        tpl_list_push(A, out, tv_str(p + off[i], off[j] - off[i]));
}

/* Pieces between occurrences of sep, at most max splits, from the left or right.
 * From the right, both strings are searched reversed, so each search is linear. */
static void split_sep(tpl_render *r, tv s, tv sep, int64_t max, int from_right, tpl_list *out)
{
    const char *p = s.u.s.p, *h = p, *nd = sep.u.s.p;
    size_t n = s.u.s.n, k = sep.u.s.n, pos = 0, lo = 0, hi = n;
    if (from_right) {
        h = tpl_reversed(A, p, n);
        nd = tpl_reversed(A, nd, k);
    }
    for (; max != 0; max--) {
        ptrdiff_t f = tpl_find(h, n, nd, k, pos);
        if (f < 0)
            break;
        pos = (size_t)f + k;
        if (!from_right) {
            tpl_list_push(A, out, tv_str(p + lo, (size_t)f - lo));
            lo = pos;
        } else { /* reversed [f, f+k) is [n-f-k, n-f) */
            tpl_list_push(A, out, tv_str(p + n - (size_t)f, hi - (n - (size_t)f)));
            hi = n - pos;
        }
    }
    tpl_list_push(A, out, tv_str(p + lo, hi - lo));
}

/* Python str.split / str.rsplit (rsplit collects right to left, then reverses). */
static tv split(tpl_render *r, const tpl_node *at, tv s, tpl_args *args, int from_right)
{
    tv sep = str_arg(r, at, args, 0, "sep");
    int64_t max = int_or(tpl_arg(args, 1, "maxsplit", tv_int(-1)), -1);
    if (max < 0)
        max = -1;
    if (sep.kind == TV_STR && !sep.u.s.n)
        tpl_fail(r, at, "empty separator");
    tv parts = tv_list(A, 0);
    if (sep.kind == TV_NONE)
        split_whitespace(r, s, max, from_right, parts.u.l);
    else
        split_sep(r, s, sep, max, from_right, parts.u.l);
    for (size_t i = 0; from_right && i < parts.u.l->n / 2; i++) {
        tv t = parts.u.l->items[i];
        parts.u.l->items[i] = parts.u.l->items[parts.u.l->n - 1 - i];
        parts.u.l->items[parts.u.l->n - 1 - i] = t;
    }
    return parts;
}

static tv replace(tpl_render *r, const tpl_node *at, tv s, tpl_args *args)
{
    tv old = str_arg(r, at, args, 0, "old"), new = str_arg(r, at, args, 1, "new");
    int64_t count = int_or(tpl_arg(args, 2, "count", tv_int(-1)), -1);
    if (old.kind != TV_STR || new.kind != TV_STR)
        tpl_fail(r, at, "replace() takes two string arguments");
    tpl_buf b = {.limit = TPL_MAX_OUTPUT};
    size_t pos = 0;
    if (!old.u.s.n) { /* Python inserts new around every character */
        while (pos <= s.u.s.n) {
            if (count-- != 0)
                tpl_buf_put(A, &b, new.u.s.p, new.u.s.n);
            else {
                tpl_buf_put(A, &b, s.u.s.p + pos, s.u.s.n - pos);
                break;
            }
            if (pos == s.u.s.n)
                break;
            size_t q = pos;
            tpl_utf8_next(s.u.s.p, s.u.s.n, &q);
            tpl_buf_put(A, &b, s.u.s.p + pos, q - pos);
            pos = q;
        }
        return tpl_buf_value(&b);
    }
    for (;;) {
        ptrdiff_t f = count != 0 ? tpl_find(s.u.s.p, s.u.s.n, old.u.s.p, old.u.s.n, pos) : -1;
        if (f < 0)
            break;
        tpl_buf_put(A, &b, s.u.s.p + pos, (size_t)f - pos);
        tpl_buf_put(A, &b, new.u.s.p, new.u.s.n);
        pos = (size_t)f + old.u.s.n;
        if (count > 0)
            count--;
    }
    tpl_buf_put(A, &b, s.u.s.p + pos, s.u.s.n - pos);
    return tpl_buf_value(&b);
}

static tv find(tpl_render *r, const tpl_node *at, tv s, tpl_args *args, int mode)
{
    tv sub = str_arg(r, at, args, 0, "sub");
    if (sub.kind != TV_STR)
        tpl_fail(r, at, "must be str, not NoneType");
    if (mode == 2) { /* count, non-overlapping */
        if (!sub.u.s.n)
            return tv_int((int64_t)tpl_utf8_len(s.u.s.p, s.u.s.n) + 1);
        int64_t c = 0;
        for (ptrdiff_t f = 0; (f = tpl_find(s.u.s.p, s.u.s.n, sub.u.s.p, sub.u.s.n, (size_t)f)) >= 0;
             f += (ptrdiff_t)sub.u.s.n)
            c++;
        return tv_int(c);
    }
    ptrdiff_t f;
    if (mode == 1) { /* rfind: the first match in the reversed strings */
        f = tpl_find(tpl_reversed(A, s.u.s.p, s.u.s.n), s.u.s.n,
                     tpl_reversed(A, sub.u.s.p, sub.u.s.n), sub.u.s.n, 0);
        if (f >= 0)
            f = (ptrdiff_t)(s.u.s.n - sub.u.s.n) - f;
    } else
        f = tpl_find(s.u.s.p, s.u.s.n, sub.u.s.p, sub.u.s.n, 0);
    return tv_int(f < 0 ? -1 : (int64_t)tpl_utf8_len(s.u.s.p, (size_t)f));
}

static tv char_class(tv s, const char *name)
{
    if (!s.u.s.n)
        return tv_bool(0);
    for (size_t pos = 0; pos < s.u.s.n;) {
        int32_t c = tpl_utf8_next(s.u.s.p, s.u.s.n, &pos);
        int ok = !strcmp(name, "isdigit") ? tpl_is_digit(c)
               : !strcmp(name, "isalpha") ? tpl_is_alpha(c)
               : !strcmp(name, "isalnum") ? tpl_is_alnum(c) : tpl_is_space(c);
        if (!ok)
            return tv_bool(0);
    }
    return tv_bool(1);
}

static tv str_method(tpl_render *r, const tpl_node *at, tv s, const char *name, tpl_args *args)
{
    if (!strcmp(name, "startswith")) return starts_ends(r, at, s, args, 0);
    if (!strcmp(name, "endswith")) return starts_ends(r, at, s, args, 1);
    if (!strcmp(name, "split")) return split(r, at, s, args, 0);
    if (!strcmp(name, "rsplit")) return split(r, at, s, args, 1);
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        tv chars = str_arg(r, at, args, 0, "chars");
        int mode = name[0] == 'l' ? 1 : name[0] == 'r' ? 2 : 3;
        return chars.kind == TV_STR ? tpl_strip(s, chars.u.s.p, chars.u.s.n, mode) : tpl_strip(s, NULL, 0, mode);
    }
    if (!strcmp(name, "upper")) return tpl_case(A, s, TPL_CASE_UPPER);
    if (!strcmp(name, "lower")) return tpl_case(A, s, TPL_CASE_LOWER);
    if (!strcmp(name, "title")) return tpl_case(A, s, TPL_CASE_TITLE);
    if (!strcmp(name, "capitalize")) return tpl_case(A, s, TPL_CASE_CAPITALIZE);
    if (!strcmp(name, "replace")) return replace(r, at, s, args);
    if (!strcmp(name, "find")) return find(r, at, s, args, 0);
    if (!strcmp(name, "rfind")) return find(r, at, s, args, 1);
    if (!strcmp(name, "count")) return find(r, at, s, args, 2);
    if (!strcmp(name, "index")) {
        tv f = find(r, at, s, args, 0);
        if (f.u.i < 0)
            tpl_fail(r, at, "substring not found");
        return f;
    }
    if (!strcmp(name, "isupper") || !strcmp(name, "islower")) {
        tpl_test_fn t = tpl_test_find(name + 2);
        return tv_bool(t(r, at, s, args));
    }
    if (!strcmp(name, "splitlines")) {
        tpl_args nl = {.n = 1, .pos = (tv[]){tv_cstr("\n")}};
        tv parts = split(r, at, s, &nl, 0);
        if (parts.u.l->n && !parts.u.l->items[parts.u.l->n - 1].u.s.n)
            parts.u.l->n--;
        return parts;
    }
    if (!strcmp(name, "join")) {
        tpl_list *items = tpl_iterate(r, at, tpl_arg(args, 0, NULL, tv_list(A, 0)));
        tpl_buf b = {0};
        for (size_t i = 0; i < items->n; i++) {
            if (items->items[i].kind != TV_STR)
                tpl_fail(r, at, "sequence item %zu: expected str instance, %s found", i,
                         tv_type_name(items->items[i]));
            if (i)
                tpl_buf_put(A, &b, s.u.s.p, s.u.s.n);
            tpl_buf_put(A, &b, items->items[i].u.s.p, items->items[i].u.s.n);
        }
        return tpl_buf_value(&b);
    }
    if (!strcmp(name, "format"))
        return tpl_str_format(r, at, s, args);
    return char_class(s, name);
}

static tv dict_method(tpl_render *r, const tpl_node *at, tv d, const char *name, tpl_args *args)
{
    if (!strcmp(name, "get")) {
        tv *v = tpl_dict_get(d.u.d, tpl_arg(args, 0, "key", tv_none()));
        return v ? *v : tpl_arg(args, 1, "default", tv_none());
    }
    if (!strcmp(name, "copy")) {
        tv c = tv_dict(A, d.u.d->n);
        for (size_t i = 0; i < d.u.d->n; i++)
            tpl_dict_set(A, c.u.d, d.u.d->keys[i], d.u.d->vals[i]);
        return c;
    }
    int which = !strcmp(name, "items") ? 0 : !strcmp(name, "keys") ? 1 : !strcmp(name, "values") ? 2 : -1;
    if (which < 0)
        tpl_fail(r, at, "access to attribute '%s' of 'dict' object is unsafe.", name);
    tv l = tv_list(A, d.u.d->n);
    for (size_t i = 0; i < d.u.d->n; i++) {
        tv x = which == 1 ? d.u.d->keys[i] : d.u.d->vals[i];
        if (which == 0) {
            x = tv_list(A, 2);
            x.is_tuple = 1;
            tpl_list_push(A, x.u.l, d.u.d->keys[i]);
            tpl_list_push(A, x.u.l, d.u.d->vals[i]);
        }
        tpl_list_push(A, l.u.l, x);
    }
    return l;
}

static tv list_method(tpl_render *r, const tpl_node *at, tv l, const char *name, tpl_args *args)
{
    tv x = tpl_arg(args, 0, NULL, tv_none());
    if (!strcmp(name, "count") || !strcmp(name, "index")) {
        int64_t count = 0;
        for (size_t i = 0; i < l.u.l->n; i++)
            if (tv_equal(l.u.l->items[i], x)) {
                if (name[0] == 'i')
                    return tv_int((int64_t)i);
                count++;
            }
        if (name[0] == 'i')
            tpl_fail(r, at, "value is not in list");
        return tv_int(count);
    }
    if (!strcmp(name, "copy")) {
        tv c = tv_list(A, l.u.l->n);
        for (size_t i = 0; i < l.u.l->n; i++)
            tpl_list_push(A, c.u.l, l.u.l->items[i]);
        return c;
    }
    tpl_fail(r, at, "access to attribute '%s' of '%s' object is unsafe.", name, tv_type_name(l));
}

/* loop.cycle(a, b, ...) and loop.changed(x, ...) */
static tv loop_method(tpl_render *r, const tpl_node *at, tpl_loop *L, const char *name, tpl_args *args)
{
    if (!strcmp(name, "cycle")) {
        if (!args->n)
            tpl_fail(r, at, "no items for cycling given");
        return args->pos[L->index0 % args->n];
    }
    tv now = tv_list(A, args->n);
    now.is_tuple = 1;
    for (size_t i = 0; i < args->n; i++)
        tpl_list_push(A, now.u.l, args->pos[i]);
    int changed = !L->has_last || !tv_equal(L->last, now);
    L->last = now;
    L->has_last = 1;
    return tv_bool(changed);
}

tv tpl_method_call(tpl_render *r, const tpl_node *at, const tpl_method *m, tpl_args *args)
{
    switch (m->self.kind) {
    case TV_STR: return str_method(r, at, m->self, m->name, args);
    case TV_DICT: return dict_method(r, at, m->self, m->name, args);
    case TV_LIST: return list_method(r, at, m->self, m->name, args);
    case TV_LOOP:
        return loop_method(r, at, m->self.u.loop, m->name, args);
    default:
        tpl_fail(r, at, "'%s' has no method '%s'", tv_type_name(m->self), m->name);
    }
}
