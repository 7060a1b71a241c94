/*
 * template_eval.c — executes the syntax tree: statements write to the current
 * output buffer, expressions produce values. Scoping follows Jinja: {% set %} at
 * top level writes the template's globals, inside a for loop it lives for one
 * iteration, inside a macro for one call; a macro sees the scope it was defined in
 * (the globals for a top-level one), never its caller's. {% with %} opens a scope.
 * Every statement, expression and loop iteration costs a step, so runaway
 * templates stop.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/template_internal.h"

struct tpl_scope {
    tpl_scope *parent;
    size_t n, cap;
    const char **names;
    tv *vals;
};

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

_Noreturn void tpl_fail(tpl_render *r, const tpl_node *at, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tpl_throw(r->arena, STRATA_E_TEMPLATE, "chat template line %d: %s", at ? at->line : 0, msg);
}

void tpl_step(tpl_render *r)
{
    if (++r->steps > TPL_MAX_STEPS)
        tpl_throw(r->arena, STRATA_E_LIMIT,
                  "chat template: step limit of %llu reached (runaway loop?)",
                  (unsigned long long)TPL_MAX_STEPS);
}

static void enter(tpl_render *r, const tpl_node *at)
{
    if (++r->depth > TPL_MAX_EVAL_DEPTH)
        tpl_throw(r->arena, STRATA_E_LIMIT, "chat template line %d: evaluation nested too deeply",
                  at->line);
}

/* ---- scopes */

static tpl_scope *scope_new(tpl_render *r, tpl_scope *parent)
{
    tpl_scope *s = tpl_alloc(r->arena, sizeof *s);
    s->parent = parent;
    return s;
}

static tv *scope_slot(tpl_scope *s, const char *name)
{
    for (size_t i = s->n; i-- > 0;)
        if (!strcmp(s->names[i], name))
            return &s->vals[i];
    return NULL;
}

static void scope_set(tpl_render *r, tpl_scope *s, const char *name, tv v)
{
    tv *slot = scope_slot(s, name);
    if (slot) {
        *slot = v;
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        const char **names = tpl_alloc(r->arena, cap * sizeof *names);
        tv *vals = tpl_alloc(r->arena, cap * sizeof *vals);
        if (s->n) {
            memcpy(names, s->names, s->n * sizeof *names);
            memcpy(vals, s->vals, s->n * sizeof *vals);
        }
        s->names = names;
        s->vals = vals;
        s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}

static tv lookup(tpl_render *r, const char *name)
{
    for (tpl_scope *s = r->scope; s; s = s->parent) {
        tv *v = scope_slot(s, name);
        if (v)
            return *v;
    }
    int fn = tpl_global_find(name);
    if (fn >= 0)
        return (tv){.kind = TV_FUNC, .u.func = fn};
    return tv_undef(name);
}

/* ---- iteration, attributes, items */

tpl_list *tpl_iterate(tpl_render *r, const tpl_node *at, tv v)
{
    switch (v.kind) {
    case TV_LIST: return v.u.l;
    case TV_UNDEF: return tv_list(r->arena, 0).u.l;
    case TV_DICT: {
        tv l = tv_list(r->arena, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            tpl_list_push(r->arena, l.u.l, v.u.d->keys[i]);
        return l.u.l;
    }
    case TV_STR: {
        tv l = tv_list(r->arena, v.u.s.n);
        for (size_t pos = 0; pos < v.u.s.n;) {
            size_t start = pos;
            tpl_utf8_next(v.u.s.p, v.u.s.n, &pos);
            tpl_list_push(r->arena, l.u.l, tv_str(v.u.s.p + start, pos - start));
        }
        return l.u.l;
    }
    default:
        tpl_fail(r, at, "'%s' object is not iterable", tv_type_name(v));
    }
}

static tv method(tpl_render *r, tv self, const char *name)
{
    tpl_method *m = tpl_alloc(r->arena, sizeof *m);
    m->self = self;
    m->name = name;
    return (tv){.kind = TV_METHOD, .u.m = m};
}

static tv loop_attr(tpl_render *r, const tpl_loop *L, tv self, const char *name)
{
    size_t n = L->items->n, i = L->index0;
    if (!strcmp(name, "index")) return tv_int((int64_t)i + 1);
    if (!strcmp(name, "index0")) return tv_int((int64_t)i);
    if (!strcmp(name, "revindex")) return tv_int((int64_t)(n - i));
    if (!strcmp(name, "revindex0")) return tv_int((int64_t)(n - i - 1));
    if (!strcmp(name, "first")) return tv_bool(i == 0);
    if (!strcmp(name, "last")) return tv_bool(i + 1 == n);
    if (!strcmp(name, "length")) return tv_int((int64_t)n);
    if (!strcmp(name, "depth")) return tv_int(1);
    if (!strcmp(name, "depth0")) return tv_int(0);
    if (!strcmp(name, "previtem"))
        return i > 0 ? L->items->items[i - 1] : tv_undef_why(r->arena, "there is no previous item");
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? L->items->items[i + 1] : tv_undef_why(r->arena, "there is no next item");
    if (!strcmp(name, "cycle") || !strcmp(name, "changed")) return method(r, self, name);
    return tv_undef(name);
}

/* Jinja's object_type_repr: "dict object", "None", ... */
static const char *object_type(tv v)
{
    switch (v.kind) {
    case TV_NONE: return "None";
    case TV_BOOL: return "bool object";
    case TV_INT: return "int object";
    case TV_FLOAT: return "float object";
    case TV_STR: return "str object";
    case TV_LIST: return v.is_tuple ? "tuple object" : "list object";
    case TV_DICT: return "dict object";
    case TV_NS: return "jinja2.utils.Namespace object";
    default: return "object";
    }
}

tv tpl_getattr(tpl_render *r, tv obj, const char *name)
{
    if (obj.kind == TV_LOOP)
        return loop_attr(r, obj.u.loop, obj, name);
    if (tpl_has_method(obj, name))
        return method(r, obj, name);
    if (obj.kind == TV_DICT || obj.kind == TV_NS) {
        tv *v = tpl_dict_get_str(obj.u.d, name);
        if (v)
            return *v;
    }
    if (obj.kind == TV_UNDEF) /* lenient: the first miss explains the chain */
        return obj;
    return tv_undef_why(r->arena, "'%s' has no attribute '%s'", object_type(obj), name);
}

static int64_t norm_index(int64_t i, size_t n) { return i < 0 ? i + (int64_t)n : i; }

tv tpl_getitem(tpl_render *r, const tpl_node *at, tv obj, tv key)
{
    (void)at;
    if (obj.kind == TV_DICT) {
        tv *v = tpl_dict_get(obj.u.d, key);
        if (v)
            return *v;
    } else if ((obj.kind == TV_LIST || obj.kind == TV_STR) && (key.kind == TV_INT || key.kind == TV_BOOL)) {
        int64_t raw = key.kind == TV_INT ? key.u.i : key.u.b;
        if (obj.kind == TV_LIST) {
            int64_t i = norm_index(raw, obj.u.l->n);
            if (i >= 0 && i < (int64_t)obj.u.l->n)
                return obj.u.l->items[i];
        } else {
            int64_t i = norm_index(raw, tpl_utf8_len(obj.u.s.p, obj.u.s.n));
            if (i >= 0) {
                size_t off = tpl_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)i), end = off;
                if (off < obj.u.s.n) {
                    tpl_utf8_next(obj.u.s.p, obj.u.s.n, &end);
                    return tv_str(obj.u.s.p + off, end - off);
                }
            }
        }
        return tv_undef_why(r->arena, "%s has no element %lld", object_type(obj), (long long)raw);
    }
    if (obj.kind == TV_UNDEF)
        return obj;
    /* as Jinja: a string key that is no item may still name an attribute */
    if (key.kind == TV_STR) {
        char *name = tpl_strndup(r->arena, key.u.s.p, key.u.s.n);
        return tpl_getattr(r, obj, name);
    }
    tpl_buf b = {0};
    tpl_put_repr(r->arena, &b, key);
    return tv_undef_why(r->arena, "%s has no element %.*s", object_type(obj), (int)b.n, b.p ? b.p : "");
}

/* Python slice indices for a sequence of n items. */
static void slice_bounds(tpl_render *r, const tpl_node *e, size_t n, int64_t *start, int64_t *stop,
                         int64_t *stepv)
{
    tv sv[3] = {tv_none(), tv_none(), tv_none()};
    const tpl_node *parts[3] = {e->b, e->c, e->d};
    for (int k = 0; k < 3; k++) {
        if (parts[k])
            sv[k] = tpl_eval(r, parts[k]);
        if (sv[k].kind != TV_NONE && sv[k].kind != TV_INT && sv[k].kind != TV_BOOL)
            tpl_fail(r, e, "slice indices must be integers or None");
    }
    int64_t st = sv[2].kind == TV_NONE ? 1 : sv[2].kind == TV_INT ? sv[2].u.i : sv[2].u.b;
    if (st == 0)
        tpl_fail(r, e, "slice step cannot be zero");
    int64_t len = (int64_t)n, lo = st < 0 ? -1 : 0, hi = st < 0 ? len - 1 : len;
    int64_t b[2];
    for (int k = 0; k < 2; k++) {
        if (sv[k].kind == TV_NONE) {
            b[k] = (k == 0) == (st > 0) ? lo : hi;
            continue;
        }
        int64_t v = sv[k].kind == TV_INT ? sv[k].u.i : sv[k].u.b;
        if (v < 0) {
            v += len;
            if (v < lo)
                v = lo;
        } else if (v > hi)
            v = hi;
        b[k] = v;
    }
    *start = b[0];
    *stop = b[1];
    *stepv = st;
}

static tv eval_slice(tpl_render *r, const tpl_node *e)
{
    tv obj = tpl_eval(r, e->a);
    if (obj.kind != TV_LIST && obj.kind != TV_STR)
        tpl_fail(r, e, "'%s' object is not subscriptable", tv_type_name(obj));
    size_t n = obj.kind == TV_LIST ? obj.u.l->n : tpl_utf8_len(obj.u.s.p, obj.u.s.n);
    int64_t start, stop, st;
    slice_bounds(r, e, n, &start, &stop, &st);
    /* count first: stepping past the end could overflow int64 */
    int64_t count = st > 0 ? (stop > start ? (stop - start - 1) / st + 1 : 0)
                           : (start > stop ? (start - stop - 1) / -st + 1 : 0);
    if (obj.kind == TV_LIST) {
        tv out = tv_list(r->arena, (size_t)count);
        out.is_tuple = obj.is_tuple;
        for (int64_t k = 0; k < count; k++)
            tpl_list_push(r->arena, out.u.l, obj.u.l->items[start + k * st]);
        return out;
    }
    if (st == 1) {
        size_t a = tpl_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)start);
        size_t b = stop > start ? tpl_utf8_offset(obj.u.s.p, obj.u.s.n, (size_t)stop) : a;
        return tv_str(obj.u.s.p + a, b - a);
    }
    tpl_list *chars = tpl_iterate(r, e, obj);
    tpl_buf b = {0};
    for (int64_t k = 0; k < count; k++)
        tpl_buf_put(r->arena, &b, chars->items[start + k * st].u.s.p, chars->items[start + k * st].u.s.n);
    return tpl_buf_value(&b);
}

/* ---- calls */

tv tpl_arg(const tpl_args *args, size_t i, const char *name, tv dflt)
{
    if (i < args->n)
        return args->pos[i];
    for (size_t k = 0; name && k < args->nkw; k++)
        if (!strcmp(args->kwnames[k], name))
            return args->kw[k];
    return dflt;
}

static void eval_args(tpl_render *r, const tpl_node *e, tpl_args *args)
{
    args->n = e->n;
    args->nkw = e->nkw;
    args->pos = e->n ? tpl_alloc(r->arena, e->n * sizeof(tv)) : NULL;
    args->kw = e->nkw ? tpl_alloc(r->arena, e->nkw * sizeof(tv)) : NULL;
    args->kwnames = e->kwnames;
    for (size_t i = 0; i < e->n; i++)
        args->pos[i] = tpl_eval(r, e->items[i]);
    for (size_t i = 0; i < e->nkw; i++)
        args->kw[i] = tpl_eval(r, e->kwvals[i]);
}

static int exec_body(tpl_render *r, const tpl_node *body);

/* Bind a macro's parameters from args in scope s; extra arguments go to varargs and
 * kwargs when the body uses them, and are errors otherwise (as in Jinja). */
static void bind_macro_args(tpl_render *r, const tpl_node *at, const tpl_node *m, tpl_args *args,
                            tpl_scope *s)
{
    if (args->n > m->nnames && !(m->op & MACRO_VARARGS))
        tpl_fail(r, at, "macro '%s' takes not more than %zu argument(s)", m->name, m->nnames);
    tv varargs = tv_list(r->arena, 0), kwargs = tv_dict(r->arena, 0), caller = tv_undef("caller");
    varargs.is_tuple = 1;
    for (size_t i = m->nnames; i < args->n; i++)
        tpl_list_push(r->arena, varargs.u.l, args->pos[i]);
    for (size_t k = 0; k < args->nkw; k++) {
        size_t p = 0;
        while (p < m->nnames && strcmp(m->names[p], args->kwnames[k]))
            p++;
        if (p < m->nnames)
            continue;
        if (!strcmp(args->kwnames[k], "caller") && (m->op & MACRO_CALLER))
            caller = args->kw[k];
        else if (m->op & MACRO_KWARGS)
            tpl_dict_set(r->arena, kwargs.u.d, tv_cstr(args->kwnames[k]), args->kw[k]);
        else
            tpl_fail(r, at, "macro '%s' takes no keyword argument '%s'", m->name, args->kwnames[k]);
    }
    for (size_t p = 0; p < m->nnames; p++) {
        tv missing = {.kind = TV_UNDEF, .u.s = {NULL, SIZE_MAX}};
        tv v = tpl_arg(args, p, m->names[p], missing);
        if (v.kind == TV_UNDEF && v.u.s.n == SIZE_MAX) /* defaults see earlier parameters */
            v = m->items[p] ? tpl_eval(r, m->items[p])
                            : tv_undef_why(r->arena, "parameter '%s' was not provided", m->names[p]);
        scope_set(r, s, m->names[p], v);
    }
    if (m->op & MACRO_VARARGS) scope_set(r, s, "varargs", varargs);
    if (m->op & MACRO_KWARGS) scope_set(r, s, "kwargs", kwargs);
    if (m->op & MACRO_CALLER) scope_set(r, s, "caller", caller);
}

static tv call_macro(tpl_render *r, const tpl_node *at, const tpl_macro *macro, tpl_args *args)
{
    if (++r->calls > TPL_MAX_CALL_DEPTH)
        tpl_throw(r->arena, STRATA_E_LIMIT,
                  "chat template line %d: macro calls nested deeper than %d (runaway recursion?)",
                  at->line, TPL_MAX_CALL_DEPTH);
    tpl_scope *saved = r->scope;
    tpl_buf *saved_out = r->out, buf = {.limit = TPL_MAX_OUTPUT};
    r->scope = scope_new(r, macro->scope ? macro->scope : r->globals);
    bind_macro_args(r, at, macro->node, args, r->scope);
    r->out = &buf;
    exec_body(r, macro->node->b);
    r->out = saved_out;
    r->scope = saved;
    r->calls--;
    return tpl_buf_value(&buf);
}

static tv macro_value(tpl_render *r, const tpl_node *n)
{
    tpl_macro *m = tpl_alloc(r->arena, sizeof *m);
    m->node = n;
    m->scope = r->scope;
    return (tv){.kind = TV_MACRO, .u.macro = m};
}

/* {% call %}: the called macro gets the block as caller=, seeing the block's scope. */
static void exec_callblock(tpl_render *r, const tpl_node *n)
{
    const tpl_node *call = n->a;
    tv fn = tpl_eval(r, call->a);
    tpl_args args;
    eval_args(r, call, &args);
    const char **names = tpl_alloc(r->arena, (args.nkw + 1) * sizeof *names);
    tv *vals = tpl_alloc(r->arena, (args.nkw + 1) * sizeof *vals);
    for (size_t i = 0; i < args.nkw; i++) {
        names[i] = args.kwnames[i];
        vals[i] = args.kw[i];
    }
    names[args.nkw] = "caller";
    vals[args.nkw] = macro_value(r, n->b);
    args.kwnames = names;
    args.kw = vals;
    args.nkw++;
    tpl_put_str(r->arena, r->out, tpl_call(r, n, fn, &args));
}

tv tpl_call(tpl_render *r, const tpl_node *at, tv fn, tpl_args *args)
{
    switch (fn.kind) {
    case TV_MACRO: return call_macro(r, at, fn.u.macro, args);
    case TV_FUNC: return tpl_global_call(r, at, fn.u.func, args);
    case TV_METHOD: return tpl_method_call(r, at, fn.u.m, args);
    case TV_UNDEF: {
        char why[600];
        tpl_fail(r, at, "%s", tv_undef_message(fn, why, sizeof why));
    }
    default:
        tpl_fail(r, at, "'%s' object is not callable", tv_type_name(fn));
    }
}

/* ---- expressions */

static int contains(tpl_render *r, const tpl_node *at, tv hay, tv needle)
{
    switch (hay.kind) {
    case TV_STR:
        if (needle.kind != TV_STR)
            tpl_fail(r, at, "'in <string>' requires string as left operand, not %s", tv_type_name(needle));
        return tpl_find(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n, 0) >= 0;
    case TV_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (tv_equal(hay.u.l->items[i], needle))
                return 1;
        return 0;
    case TV_DICT:
        if ((needle.kind == TV_LIST && !needle.is_tuple) || needle.kind == TV_DICT)
            tpl_fail(r, at, "unhashable type: '%s'", tv_type_name(needle));
        return tpl_dict_get(hay.u.d, needle) != NULL;
    case TV_UNDEF: return 0;
    default:
        tpl_fail(r, at, "argument of type '%s' is not iterable", tv_type_name(hay));
    }
}

static int compare(tpl_render *r, const tpl_node *at, int op, tv a, tv b)
{
    static const char *const sym[] = {"==", "!=", "<", "<=", ">", ">="};
    switch (op) {
    case OP_EQ: return tv_equal(a, b);
    case OP_NE: return !tv_equal(a, b);
    case OP_IN: return contains(r, at, b, a);
    case OP_NOTIN: return !contains(r, at, b, a);
    }
    int c = tv_compare(a, b);
    if (c == 2)
        tpl_fail(r, at, "'%s' not supported between instances of '%s' and '%s'", sym[op - OP_EQ],
                 tv_type_name(a), tv_type_name(b));
    if (c == 3)
        return 0;
    switch (op) {
    case OP_LT: return c < 0;
    case OP_LE: return c <= 0;
    case OP_GT: return c > 0;
    default: return c >= 0;
    }
}

static tv eval_cmp(tpl_render *r, const tpl_node *e)
{
    tv left = tpl_eval(r, e->a);
    for (size_t i = 0; i < e->n; i++) {
        tv right = tpl_eval(r, e->items[i]);
        if (!compare(r, e->items[i], e->ops[i], left, right))
            return tv_bool(0);
        left = right;
    }
    return tv_bool(1);
}

static tv eval_seq(tpl_render *r, const tpl_node *e)
{
    if (e->kind == E_DICT) {
        tv d = tv_dict(r->arena, e->n / 2);
        for (size_t i = 0; i + 1 < e->n; i += 2) {
            tv k = tpl_eval(r, e->items[i]);
            if (k.kind == TV_LIST && !k.is_tuple)
                tpl_fail(r, e, "unhashable type: 'list'");
            if (k.kind == TV_DICT)
                tpl_fail(r, e, "unhashable type: 'dict'");
            tpl_dict_set(r->arena, d.u.d, k, tpl_eval(r, e->items[i + 1]));
        }
        return d;
    }
    tv l = tv_list(r->arena, e->n);
    l.is_tuple = e->kind == E_TUPLE;
    for (size_t i = 0; i < e->n; i++)
        tpl_list_push(r->arena, l.u.l, tpl_eval(r, e->items[i]));
    return l;
}

static tv eval_call(tpl_render *r, const tpl_node *e)
{
    tv fn = tpl_eval(r, e->a);
    tpl_args args;
    eval_args(r, e, &args);
    return tpl_call(r, e, fn, &args);
}

static tv eval_filter(tpl_render *r, const tpl_node *e)
{
    tv v = tpl_eval(r, e->a);
    tpl_args args;
    eval_args(r, e, &args);
    if (e->kind == E_FILTER)
        return e->filter(r, e, v, &args);
    return tv_bool(e->test(r, e, v, &args) != e->op);
}

static tv eval_unary(tpl_render *r, const tpl_node *e)
{
    tv v = tpl_eval(r, e->a);
    if (e->kind == E_NOT)
        return tv_bool(!tv_truthy(v));
    if (v.kind == TV_BOOL)
        v = tv_int(v.u.b);
    if (v.kind == TV_INT) {
        if (e->kind == E_NEG && v.u.i == INT64_MIN)
            tpl_throw(r->arena, STRATA_E_LIMIT, "chat template line %d: integer overflow", e->line);
        return e->kind == E_NEG ? tv_int(-v.u.i) : v;
    }
    if (v.kind == TV_FLOAT)
        return e->kind == E_NEG ? tv_float(-v.u.f) : v;
    if (v.kind == TV_UNDEF) {
        char why[600];
        tpl_fail(r, e, "%s", tv_undef_message(v, why, sizeof why));
    }
    tpl_fail(r, e, "bad operand type for unary %c: '%s'", e->kind == E_NEG ? '-' : '+', tv_type_name(v));
}

static tv eval_inner(tpl_render *r, const tpl_node *e)
{
    switch (e->kind) {
    case E_CONST: return e->value;
    case E_NAME: return lookup(r, e->name);
    case E_ATTR: return tpl_getattr(r, tpl_eval(r, e->a), e->name);
    case E_ITEM: {
        tv obj = tpl_eval(r, e->a);
        return tpl_getitem(r, e, obj, tpl_eval(r, e->b));
    }
    case E_SLICE: return eval_slice(r, e);
    case E_CALL: return eval_call(r, e);
    case E_FILTER: case E_TEST: return eval_filter(r, e);
    case E_NEG: case E_POS: case E_NOT: return eval_unary(r, e);
    case E_AND: {
        tv a = tpl_eval(r, e->a);
        return tv_truthy(a) ? tpl_eval(r, e->b) : a;
    }
    case E_OR: {
        tv a = tpl_eval(r, e->a);
        return tv_truthy(a) ? a : tpl_eval(r, e->b);
    }
    case E_BINOP: {
        tv a = tpl_eval(r, e->a);
        return tpl_binop(r, e, e->op, a, tpl_eval(r, e->b));
    }
    case E_CMP: return eval_cmp(r, e);
    case E_COND:
        if (tv_truthy(tpl_eval(r, e->a)))
            return tpl_eval(r, e->b);
        return e->c ? tpl_eval(r, e->c)
                    : tv_undef_why(r->arena, "the inline if-expression on line %d evaluated to false and "
                                             "no else section was defined.", e->line);
    case E_LIST: case E_TUPLE: case E_DICT: return eval_seq(r, e);
    default: tpl_fail(r, e, "internal error: not an expression");
    }
}

tv tpl_eval(tpl_render *r, const tpl_node *e)
{
    tpl_step(r);
    enter(r, e);
    tv v = eval_inner(r, e);
    r->depth--;
    return v;
}

/* ---- statements */

static void bind_targets(tpl_render *r, const tpl_node *n, tpl_scope *s, tv v)
{
    if (n->nnames == 1) {
        scope_set(r, s, n->names[0], v);
        return;
    }
    tpl_list *items = tpl_iterate(r, n, v);
    if (items->n != n->nnames)
        tpl_fail(r, n, "%s values to unpack (expected %zu, got %zu)",
                 items->n > n->nnames ? "too many" : "not enough", n->nnames, items->n);
    for (size_t i = 0; i < n->nnames; i++)
        scope_set(r, s, n->names[i], items->items[i]);
}

static tpl_list *loop_items(tpl_render *r, const tpl_node *n, tpl_scope *s)
{
    tpl_list *all = tpl_iterate(r, n, tpl_eval(r, n->a));
    if (!n->b)
        return all;
    tpl_list *kept = tv_list(r->arena, 0).u.l;
    for (size_t i = 0; i < all->n; i++) {
        s->n = 0;
        bind_targets(r, n, s, all->items[i]);
        if (tv_truthy(tpl_eval(r, n->b)))
            tpl_list_push(r->arena, kept, all->items[i]);
    }
    return kept;
}

static int exec_for(tpl_render *r, const tpl_node *n)
{
    tpl_scope *saved = r->scope, *s = scope_new(r, saved);
    r->scope = s;
    tpl_list *items = loop_items(r, n, s);
    if (!items->n) {
        s->n = 0;
        if (n->d)
            exec_body(r, n->d);
        r->scope = saved;
        return FLOW_NORMAL;
    }
    tpl_loop *L = tpl_alloc(r->arena, sizeof *L);
    L->items = items;
    for (size_t i = 0; i < items->n; i++) {
        tpl_step(r);
        s->n = 0; /* each iteration starts afresh, as in Jinja */
        L->index0 = i;
        bind_targets(r, n, s, items->items[i]);
        scope_set(r, s, "loop", (tv){.kind = TV_LOOP, .u.loop = L});
        if (exec_body(r, n->c) == FLOW_BREAK)
            break;
    }
    r->scope = saved;
    return FLOW_NORMAL;
}

static void exec_set(tpl_render *r, const tpl_node *n)
{
    tv v = tpl_eval(r, n->b);
    if (n->a) {
        tv ns = tpl_eval(r, n->a);
        if (ns.kind != TV_NS)
            tpl_fail(r, n, "can only set attributes of a namespace, not of '%s'", tv_type_name(ns));
        tpl_dict_set(r->arena, ns.u.d, tv_cstr(n->name), v);
        return;
    }
    bind_targets(r, n, r->scope, v);
}

/* Apply a filter chain (innermost operand NULL) to v. */
static tv apply_filters(tpl_render *r, const tpl_node *chain, tv v)
{
    if (chain->a)
        v = apply_filters(r, chain->a, v);
    tpl_args args;
    eval_args(r, chain, &args);
    return chain->filter(r, chain, v, &args);
}

/* The text a body renders, through the node's filters (c) if any. */
static tv capture(tpl_render *r, const tpl_node *n)
{
    tpl_buf *saved = r->out, buf = {.limit = TPL_MAX_OUTPUT};
    r->out = &buf;
    exec_body(r, n->b);
    r->out = saved;
    tv text = tpl_buf_value(&buf);
    return n->c ? apply_filters(r, n->c, text) : text;
}

static int exec_with(tpl_render *r, const tpl_node *n)
{
    tpl_scope *saved = r->scope, *s = scope_new(r, saved);
    for (size_t i = 0; i < n->nnames; i++)
        scope_set(r, s, n->names[i], tpl_eval(r, n->items[i]));
    r->scope = s;
    int flow = exec_body(r, n->b);
    r->scope = saved;
    return flow;
}

static int exec(tpl_render *r, const tpl_node *n)
{
    tpl_step(r);
    switch (n->kind) {
    case N_BODY: return exec_body(r, n);
    case N_TEXT: tpl_buf_put(r->arena, r->out, n->value.u.s.p, n->value.u.s.n); return FLOW_NORMAL;
    case N_OUTPUT: tpl_put_str(r->arena, r->out, tpl_eval(r, n->a)); return FLOW_NORMAL;
    case N_IF:
        if (tv_truthy(tpl_eval(r, n->a)))
            return exec_body(r, n->b);
        return n->c ? exec_body(r, n->c) : FLOW_NORMAL;
    case N_FOR: return exec_for(r, n);
    case N_SET: exec_set(r, n); return FLOW_NORMAL;
    case N_SETBLOCK: scope_set(r, r->scope, n->names[0], capture(r, n)); return FLOW_NORMAL;
    case N_FILTERBLOCK: tpl_put_str(r->arena, r->out, capture(r, n)); return FLOW_NORMAL;
    case N_WITH: return exec_with(r, n);
    case N_MACRO: scope_set(r, r->scope, n->name, macro_value(r, n)); return FLOW_NORMAL;
    case N_CALLBLOCK: exec_callblock(r, n); return FLOW_NORMAL;
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    default: tpl_fail(r, n, "internal error: not a statement");
    }
}

static int exec_body(tpl_render *r, const tpl_node *body)
{
    enter(r, body);
    for (size_t i = 0; i < body->n; i++) {
        int flow = exec(r, body->items[i]);
        if (flow != FLOW_NORMAL) {
            r->depth--;
            return flow;
        }
    }
    r->depth--;
    return FLOW_NORMAL;
}

void tpl_render_body(tpl_render *r, const tpl_node *body)
{
    r->scope = r->globals;
    exec_body(r, body);
}

void tpl_scope_set_global(tpl_render *r, const char *name, tv v)
{
    if (!r->globals)
        r->globals = scope_new(r, NULL);
    scope_set(r, r->globals, name, v);
}
