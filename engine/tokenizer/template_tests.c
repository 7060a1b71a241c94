/*
 * template_tests.c — the Jinja tests (`x is defined`, `x is string`, ...), each as
 * Jinja 3.1 defines it in Python terms: a dict is a sequence (it has len and
 * getitem), an undefined value is iterable, a bool is a number but no integer.
 */
#include <string.h>

#include "tokenizer/template_internal.h"

#define TEST(name) static int t_##name(tpl_render *r, const tpl_node *at, tv v, tpl_args *args)
#define UNUSED (void)r, (void)at, (void)args

TEST(defined) { UNUSED; return v.kind != TV_UNDEF; }
TEST(undefined) { UNUSED; return v.kind == TV_UNDEF; }
TEST(none) { UNUSED; return v.kind == TV_NONE; }
TEST(string) { UNUSED; return v.kind == TV_STR; }
TEST(number) { UNUSED; return tv_is_num(v); }
TEST(integer) { UNUSED; return v.kind == TV_INT; }
TEST(float) { UNUSED; return v.kind == TV_FLOAT; }
TEST(boolean) { UNUSED; return v.kind == TV_BOOL; }
TEST(mapping) { UNUSED; return v.kind == TV_DICT; }
/* Undefined counts: it has __len__ and __getitem__ (which raises when called). */
TEST(sequence)
{
    UNUSED;
    return v.kind == TV_STR || v.kind == TV_LIST || v.kind == TV_DICT || v.kind == TV_UNDEF;
}
TEST(iterable)
{
    UNUSED;
    return v.kind == TV_STR || v.kind == TV_LIST || v.kind == TV_DICT || v.kind == TV_UNDEF;
}
TEST(true) { UNUSED; return v.kind == TV_BOOL && v.u.b; }
TEST(false) { UNUSED; return v.kind == TV_BOOL && !v.u.b; }
TEST(callable) { UNUSED; return v.kind == TV_MACRO || v.kind == TV_FUNC || v.kind == TV_METHOD; }

static tv other(tpl_render *r, const tpl_node *at, tpl_args *args)
{
    if (args->n < 1)
        tpl_fail(r, at, "test needs an argument");
    return args->pos[0];
}

static int cmp(tpl_render *r, const tpl_node *at, tv v, tpl_args *args, int op)
{
    tv o = other(r, at, args);
    int c = tv_compare(v, o);
    if (c == 2)
        tpl_fail(r, at, "values of type '%s' and '%s' cannot be compared", tv_type_name(v), tv_type_name(o));
    switch (op) {
    case OP_LT: return c == -1;
    case OP_LE: return c == -1 || c == 0;
    case OP_GT: return c == 1;
    default: return c == 0 || c == 1;
    }
}

TEST(eq) { return tv_equal(v, other(r, at, args)); }
TEST(ne) { return !tv_equal(v, other(r, at, args)); }
TEST(lt) { return cmp(r, at, v, args, OP_LT); }
TEST(le) { return cmp(r, at, v, args, OP_LE); }
TEST(gt) { return cmp(r, at, v, args, OP_GT); }
TEST(ge) { return cmp(r, at, v, args, OP_GE); }

TEST(sameas)
{
    tv o = other(r, at, args);
    if (v.kind != o.kind)
        return 0;
    if (v.kind == TV_NONE || v.kind == TV_UNDEF)
        return 1;
    if (v.kind == TV_BOOL)
        return v.u.b == o.u.b;
    if (v.kind == TV_LIST)
        return v.u.l == o.u.l;
    if (v.kind == TV_DICT || v.kind == TV_NS)
        return v.u.d == o.u.d;
    return tv_equal(v, o);
}

TEST(in)
{
    tv hay = other(r, at, args);
    tpl_list *items;
    if (hay.kind == TV_STR) {
        if (v.kind != TV_STR)
            tpl_fail(r, at, "'in <string>' requires string as left operand");
        return tpl_find(hay.u.s.p, hay.u.s.n, v.u.s.p, v.u.s.n, 0) >= 0;
    }
    if (hay.kind == TV_DICT)
        return tpl_dict_get(hay.u.d, v) != NULL;
    items = tpl_iterate(r, at, hay);
    for (size_t i = 0; i < items->n; i++)
        if (tv_equal(items->items[i], v))
            return 1;
    return 0;
}

static int64_t need_int(tpl_render *r, const tpl_node *at, tv v)
{
    if (v.kind == TV_INT) return v.u.i;
    if (v.kind == TV_BOOL) return v.u.b;
    tpl_fail(r, at, "expected an integer, not '%s'", tv_type_name(v));
}

TEST(odd) { UNUSED; return need_int(r, at, v) % 2 != 0; }
TEST(even) { UNUSED; return need_int(r, at, v) % 2 == 0; }

TEST(divisibleby)
{
    int64_t d = need_int(r, at, other(r, at, args));
    if (!d)
        tpl_fail(r, at, "integer division or modulo by zero");
    return need_int(r, at, v) % d == 0;
}

static int all_cased(tpl_render *r, tv v, int how)
{
    tv s = tv_to_str(r->arena, v);
    tv mapped = tpl_case(r->arena, s, how);
    tv other_case = tpl_case(r->arena, s, how == TPL_CASE_LOWER ? TPL_CASE_UPPER : TPL_CASE_LOWER);
    return tv_equal(s, mapped) && !tv_equal(s, other_case);
}

TEST(lower) { UNUSED; return all_cased(r, v, TPL_CASE_LOWER); }
TEST(upper) { UNUSED; return all_cased(r, v, TPL_CASE_UPPER); }

static const struct { const char *name; tpl_test_fn fn; } tests[] = {
    {"<", t_lt}, {"<=", t_le}, {"==", t_eq}, {"!=", t_ne}, {">", t_gt}, {">=", t_ge},
    {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined},
    {"divisibleby", t_divisibleby}, {"eq", t_eq}, {"equalto", t_eq}, {"even", t_even},
    {"false", t_false}, {"float", t_float}, {"ge", t_ge}, {"greaterthan", t_gt}, {"gt", t_gt},
    {"in", t_in}, {"integer", t_integer}, {"iterable", t_iterable}, {"le", t_le},
    {"lessthan", t_lt}, {"lower", t_lower}, {"lt", t_lt}, {"mapping", t_mapping}, {"ne", t_ne},
    {"none", t_none}, {"number", t_number}, {"odd", t_odd}, {"sameas", t_sameas},
    {"sequence", t_sequence}, {"string", t_string}, {"true", t_true}, {"undefined", t_undefined},
    {"upper", t_upper},
};

tpl_test_fn tpl_test_find(const char *name)
{
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!strcmp(tests[i].name, name))
            return tests[i].fn;
    return NULL;
}
