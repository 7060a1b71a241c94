/*
 * template_ops.c — the binary operators with Python's semantics: int arithmetic
 * stays int (overflow is an error, not wraparound), / is true division, // and %
 * floor toward minus infinity, + and * work on strings and lists, ~ joins str()s.
 */
#include <math.h>
#include <string.h>

#include "tokenizer/template_internal.h"

static const char *const op_sym[] = {"+", "-", "*", "/", "//", "%", "**", "~"};

static _Noreturn void bad_operands(tpl_render *r, const tpl_node *at, int op, tv a, tv b)
{
    tv u = a.kind == TV_UNDEF ? a : b;
    if (u.kind == TV_UNDEF) {
        char why[600];
        tpl_fail(r, at, "%s", tv_undef_message(u, why, sizeof why));
    }
    if (op == OP_ADD && a.kind == TV_STR)
        tpl_fail(r, at, "can only concatenate str (not \"%s\") to str", tv_type_name(b));
    tpl_fail(r, at, "unsupported operand type(s) for %s: '%s' and '%s'", op_sym[op],
             tv_type_name(a), tv_type_name(b));
}

static int64_t as_int(tv v) { return v.kind == TV_INT ? v.u.i : v.u.b; }

/* seq * times for a string or list; the size is checked before any work. */
static tv repeat(tpl_render *r, const tpl_node *at, tv seq, int64_t times)
{
    size_t n = seq.kind == TV_STR ? seq.u.s.n : seq.u.l->n;
    if (times <= 0 || n == 0)
        return seq.kind == TV_STR ? tv_str("", 0) : (tv){.kind = TV_LIST, .is_tuple = seq.is_tuple,
                                                          .u.l = tv_list(r->arena, 0).u.l};
    if ((uint64_t)times > TPL_MAX_OUTPUT / n)
        tpl_throw(r->arena, STRATA_E_LIMIT, "chat template line %d: repetition longer than %u items",
                  at->line, TPL_MAX_OUTPUT);
    if (seq.kind == TV_STR) {
        tpl_buf b = {0};
        for (int64_t i = 0; i < times; i++)
            tpl_buf_put(r->arena, &b, seq.u.s.p, n);
        return tpl_buf_value(&b);
    }
    tv l = tv_list(r->arena, n * (size_t)times);
    l.is_tuple = seq.is_tuple;
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < n; k++)
            tpl_list_push(r->arena, l.u.l, seq.u.l->items[k]);
    return l;
}

static tv int_op(tpl_render *r, const tpl_node *at, int op, int64_t x, int64_t y)
{
    int64_t z = 0;
    int over = 0;
    switch (op) {
    case OP_ADD: over = __builtin_add_overflow(x, y, &z); break;
    case OP_SUB: over = __builtin_sub_overflow(x, y, &z); break;
    case OP_MUL: over = __builtin_mul_overflow(x, y, &z); break;
    case OP_DIV:
        if (!y)
            tpl_fail(r, at, "division by zero");
        return tv_float((double)x / (double)y);
    case OP_FLOORDIV: case OP_MOD:
        if (!y)
            tpl_fail(r, at, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1)
            tpl_fail(r, at, "integer overflow");
        z = op == OP_MOD ? x % y : x / y;
        if (op == OP_MOD && z && ((z < 0) != (y < 0)))
            z += y;
        else if (op == OP_FLOORDIV && (x % y) && ((x < 0) != (y < 0)))
            z -= 1;
        break;
    case OP_POW:
        if (y < 0)
            return tv_float(pow((double)x, (double)y));
        z = 1;
        for (int64_t i = 0; i < y && !over; i++) {
            over = __builtin_mul_overflow(z, x, &z);
            if (z == 0 || z == 1 || (z == -1 && x == -1 && (y - i - 1) % 2 == 0))
                break;
        }
        if (!over && z == -1 && x == -1)
            z = (y % 2) ? -1 : 1;
        break;
    }
    if (over)
        tpl_throw(r->arena, STRATA_E_LIMIT, "chat template line %d: integer overflow in '%s'",
                  at->line, op_sym[op]);
    return tv_int(z);
}

static tv float_op(tpl_render *r, const tpl_node *at, int op, double x, double y)
{
    switch (op) {
    case OP_ADD: return tv_float(x + y);
    case OP_SUB: return tv_float(x - y);
    case OP_MUL: return tv_float(x * y);
    case OP_POW: return tv_float(pow(x, y));
    }
    if (y == 0)
        tpl_fail(r, at, "float division by zero");
    if (op == OP_DIV)
        return tv_float(x / y);
    double m = fmod(x, y);
    if (m && ((m < 0) != (y < 0)))
        m += y;
    if (op == OP_MOD)
        return tv_float(m);
    return tv_float(floor(x / y));
}

static tv concat_seq(tpl_render *r, const tpl_node *at, tv a, tv b)
{
    if (a.kind == TV_STR) {
        if (a.u.s.n + b.u.s.n > TPL_MAX_OUTPUT)
            tpl_throw(r->arena, STRATA_E_LIMIT, "chat template line %d: string longer than %u bytes",
                      at->line, TPL_MAX_OUTPUT);
        char *p = tpl_alloc(r->arena, a.u.s.n + b.u.s.n + 1);
        memcpy(p, a.u.s.p, a.u.s.n);
        memcpy(p + a.u.s.n, b.u.s.p, b.u.s.n);
        return tv_str(p, a.u.s.n + b.u.s.n);
    }
    tv l = tv_list(r->arena, a.u.l->n + b.u.l->n);
    l.is_tuple = a.is_tuple;
    for (size_t i = 0; i < a.u.l->n; i++)
        tpl_list_push(r->arena, l.u.l, a.u.l->items[i]);
    for (size_t i = 0; i < b.u.l->n; i++)
        tpl_list_push(r->arena, l.u.l, b.u.l->items[i]);
    return l;
}

tv tpl_binop(tpl_render *r, const tpl_node *at, int op, tv a, tv b)
{
    if (op == OP_CONCAT) {
        tv x = tv_to_str(r->arena, a), y = tv_to_str(r->arena, b);
        return concat_seq(r, at, x, y);
    }
    if (tv_is_num(a) && tv_is_num(b)) {
        if (a.kind != TV_FLOAT && b.kind != TV_FLOAT)
            return int_op(r, at, op, as_int(a), as_int(b));
        return float_op(r, at, op, tv_num(a), tv_num(b));
    }
    if (op == OP_ADD && a.kind == b.kind && (a.kind == TV_STR || (a.kind == TV_LIST && a.is_tuple == b.is_tuple)))
        return concat_seq(r, at, a, b);
    if (op == OP_MOD && a.kind == TV_STR)
        return tpl_percent_format(r, at, a, b);
    if (op == OP_MUL) {
        if ((a.kind == TV_STR || a.kind == TV_LIST) && (b.kind == TV_INT || b.kind == TV_BOOL))
            return repeat(r, at, a, as_int(b));
        if ((b.kind == TV_STR || b.kind == TV_LIST) && (a.kind == TV_INT || a.kind == TV_BOOL))
            return repeat(r, at, b, as_int(a));
    }
    bad_operands(r, at, op, a, b);
}
