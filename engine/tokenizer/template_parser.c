/*
 * template_parser.c — builds the syntax tree from tokens, following the grammar
 * and operator precedence of Jinja's parser (parser.py) so that expressions group
 * exactly as there: condexpr < or < and < not < compare < + - < ~ < * / // % < **
 * < unary < filters/tests/calls. Anything outside the supported subset (a tag, a
 * filter, a test) fails here, at parse time, naming the construct and its line.
 *
 * Node fields by kind: N_BODY items; N_TEXT value; N_OUTPUT a; N_IF a=test b=body
 * c=else; N_FOR names=targets a=iter b=filter c=body d=else; N_SET names=targets
 * b=value, or a=namespace name=attribute b=value; N_SETBLOCK names b=body c=filters;
 * N_WITH names items=values b=body; N_FILTERBLOCK b=body c=filters (a chain of
 * E_FILTER whose innermost operand a is NULL: the body's text); N_MACRO op=MACRO_*
 * flags; N_CALLBLOCK a=the call, b=the caller (an N_MACRO);
 * N_MACRO name names=params items=defaults b=body; E_ATTR a.name; E_ITEM a[b];
 * E_SLICE a[b:c:d]; E_CALL a(items, kw); E_FILTER/E_TEST a|name(items, kw), op=negated;
 * E_CMP a (ops[i] items[i])*; E_COND b if a else c; E_DICT items = k0 v0 k1 v1 ...
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/template_internal.h"

typedef struct parser {
    tpl_arena *a;
    tpl_token *t;
    size_t pos, n;
    int nesting, loops;
} parser;

typedef struct nodevec { tpl_node **p; size_t n, cap; } nodevec;

static _Noreturn void fail_at(parser *P, int line, const char *fmt, ...) STRATA_PRINTF(3, 4);
static _Noreturn void fail_at(parser *P, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tpl_throw(P->a, STRATA_E_TEMPLATE, "chat template line %d: %s", line, msg);
}

static tpl_token *cur(parser *P) { return &P->t[P->pos]; }
static tpl_token *advance(parser *P) { tpl_token *t = cur(P); if (t->kind != T_EOF) P->pos++; return t; }
static int is_op(parser *P, const char *op) { return cur(P)->kind == T_OP && !strcmp(cur(P)->p, op); }
static int is_name(parser *P, const char *name) { return cur(P)->kind == T_NAME && !strcmp(cur(P)->p, name); }

static const char *describe(tpl_token *t)
{
    switch (t->kind) {
    case T_EOF: return "end of template";
    case T_BLOCK_END: return "'%}'";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_VAR_BEGIN: return "'{{'";
    case T_TEXT: return "text";
    case T_STRING: return "string";
    default: return t->p;
    }
}

static _Noreturn void unexpected(parser *P, const char *expected)
{
    tpl_token *t = cur(P);
    if (expected)
        fail_at(P, t->line, "unexpected %s%s%s, expected %s", t->kind == T_NAME || t->kind == T_OP ? "'" : "",
                describe(t), t->kind == T_NAME || t->kind == T_OP ? "'" : "", expected);
    fail_at(P, t->line, "unexpected %s%s%s", t->kind == T_NAME || t->kind == T_OP ? "'" : "",
            describe(t), t->kind == T_NAME || t->kind == T_OP ? "'" : "");
}

static int accept_op(parser *P, const char *op) { if (is_op(P, op)) { advance(P); return 1; } return 0; }
static int accept_name(parser *P, const char *n) { if (is_name(P, n)) { advance(P); return 1; } return 0; }

static void expect_op(parser *P, const char *op)
{
    if (!accept_op(P, op)) {
        char e[16];
        snprintf(e, sizeof e, "'%s'", op);
        unexpected(P, e);
    }
}

static void expect_kind(parser *P, tpl_tok_kind k)
{
    if (cur(P)->kind != k)
        unexpected(P, k == T_BLOCK_END ? "'%}'" : k == T_VAR_END ? "'}}'" : "a name");
    advance(P);
}

static const char *expect_name(parser *P)
{
    if (cur(P)->kind != T_NAME)
        unexpected(P, "a name");
    return advance(P)->p;
}

static tpl_node *node(parser *P, tpl_nkind kind, int line)
{
    tpl_node *n = tpl_alloc(P->a, sizeof *n);
    n->kind = kind;
    n->line = line;
    return n;
}

static void vec_push(parser *P, nodevec *v, tpl_node *n)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        tpl_node **p = tpl_alloc(P->a, cap * sizeof *p);
        if (v->n)
            memcpy(p, v->p, v->n * sizeof *p);
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = n;
}

static void names_push(parser *P, const char ***names, size_t *n, const char *name)
{
    const char **p = tpl_alloc(P->a, (*n + 1) * sizeof *p);
    if (*n)
        memcpy(p, *names, *n * sizeof *p);
    p[(*n)++] = name;
    *names = p;
}

static void enter(parser *P)
{
    if (++P->nesting > TPL_MAX_NESTING)
        fail_at(P, cur(P)->line, "nesting deeper than %d", TPL_MAX_NESTING);
}

/* ---- expressions */

static tpl_node *parse_expression(parser *P);
static tpl_node *parse_or(parser *P);
static tpl_node *parse_unary(parser *P, int with_filter);
static tpl_node *parse_tuple(parser *P, int with_condexpr, const char *end_name);

static void parse_call_args(parser *P, tpl_node *n)
{
    nodevec args = {0};
    expect_op(P, "(");
    while (!is_op(P, ")")) {
        if (args.n || n->nkw)
            expect_op(P, ",");
        if (is_op(P, ")"))
            break;
        if (is_op(P, "*") || is_op(P, "**"))
            fail_at(P, cur(P)->line, "*args and **kwargs in calls are not supported");
        if (cur(P)->kind == T_NAME && P->t[P->pos + 1].kind == T_OP && !strcmp(P->t[P->pos + 1].p, "=")) {
            const char *k = advance(P)->p;
            advance(P);
            size_t nk = n->nkw;
            names_push(P, &n->kwnames, &nk, k);
            tpl_node **vals = tpl_alloc(P->a, nk * sizeof *vals);
            if (n->nkw)
                memcpy(vals, n->kwvals, n->nkw * sizeof *vals);
            vals[n->nkw] = parse_expression(P);
            n->kwvals = vals;
            n->nkw = nk;
        } else {
            if (n->nkw)
                fail_at(P, cur(P)->line, "positional argument follows keyword argument");
            vec_push(P, &args, parse_expression(P));
        }
    }
    advance(P);
    n->items = args.p;
    n->n = args.n;
}

static tpl_node *parse_filter(parser *P, tpl_node *operand)
{
    int line = cur(P)->line;
    char name[128];
    snprintf(name, sizeof name, "%s", expect_name(P));
    while (is_op(P, ".")) {
        advance(P);
        size_t l = strlen(name);
        snprintf(name + l, sizeof name - l, ".%s", expect_name(P));
    }
    tpl_node *n = node(P, E_FILTER, line);
    n->a = operand;
    n->name = tpl_strndup(P->a, name, strlen(name));
    n->filter = tpl_filter_find(name);
    if (!n->filter)
        fail_at(P, line, "filter '%s' is not supported", name);
    if (is_op(P, "("))
        parse_call_args(P, n);
    return n;
}

static tpl_node *parse_primary(parser *P);
static tpl_node *parse_postfix(parser *P, tpl_node *n);

static tpl_node *parse_test(parser *P, tpl_node *operand)
{
    int line = cur(P)->line;
    advance(P); /* is */
    tpl_node *n = node(P, E_TEST, line);
    n->a = operand;
    n->op = accept_name(P, "not");
    n->name = expect_name(P);
    n->test = tpl_test_find(n->name);
    if (!n->test)
        fail_at(P, line, "test '%s' is not supported", n->name);
    tpl_token *t = cur(P);
    if (is_op(P, "(")) {
        parse_call_args(P, n);
    } else if ((t->kind == T_NAME || t->kind == T_STRING || t->kind == T_INT || t->kind == T_FLOAT ||
                is_op(P, "[") || is_op(P, "{")) &&
               !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
        if (is_name(P, "is"))
            fail_at(P, line, "You cannot chain multiple tests with is");
        tpl_node **arg = tpl_alloc(P->a, sizeof *arg);
        arg[0] = parse_postfix(P, parse_primary(P));
        n->items = arg;
        n->n = 1;
    }
    return n;
}

static tpl_node *parse_filter_expr(parser *P, tpl_node *n)
{
    for (;;) {
        if (accept_op(P, "|"))
            n = parse_filter(P, n);
        else if (is_name(P, "is"))
            n = parse_test(P, n);
        else if (is_op(P, "(")) {
            tpl_node *c = node(P, E_CALL, cur(P)->line);
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else
            return n;
    }
}

static tpl_node *parse_subscript(parser *P, tpl_node *obj)
{
    tpl_node *n = node(P, E_ITEM, cur(P)->line), *start = NULL;
    n->a = obj;
    if (!is_op(P, ":")) {
        start = parse_expression(P);
        if (!is_op(P, ":")) {
            n->b = start;
            expect_op(P, "]");
            return n;
        }
    }
    n->kind = E_SLICE;
    n->b = start;
    advance(P); /* : */
    if (!is_op(P, "]") && !is_op(P, ":"))
        n->c = parse_expression(P);
    if (accept_op(P, ":") && !is_op(P, "]"))
        n->d = parse_expression(P);
    expect_op(P, "]");
    return n;
}

static tpl_node *parse_postfix(parser *P, tpl_node *n)
{
    for (;;) {
        int line = cur(P)->line;
        if (accept_op(P, ".")) {
            if (cur(P)->kind == T_INT) {
                tpl_node *i = node(P, E_ITEM, line), *k = node(P, E_CONST, line);
                k->value = tv_int(advance(P)->i);
                i->a = n;
                i->b = k;
                n = i;
                continue;
            }
            tpl_node *at = node(P, E_ATTR, line);
            at->a = n;
            at->name = expect_name(P);
            n = at;
        } else if (accept_op(P, "[")) {
            n = parse_subscript(P, n);
        } else if (is_op(P, "(")) {
            tpl_node *c = node(P, E_CALL, line);
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else
            return n;
    }
}

static tpl_node *parse_seq(parser *P, tpl_nkind kind, const char *close, int pairs)
{
    tpl_node *n = node(P, kind, cur(P)->line);
    nodevec items = {0};
    while (!is_op(P, close)) {
        if (items.n)
            expect_op(P, ",");
        if (is_op(P, close))
            break;
        vec_push(P, &items, parse_expression(P));
        if (pairs) {
            expect_op(P, ":");
            vec_push(P, &items, parse_expression(P));
        }
    }
    advance(P);
    n->items = items.p;
    n->n = items.n;
    return n;
}

static tpl_node *parse_primary(parser *P)
{
    tpl_token *t = cur(P);
    tpl_node *n = node(P, E_CONST, t->line);
    switch (t->kind) {
    case T_NAME:
        advance(P);
        if (!strcmp(t->p, "true") || !strcmp(t->p, "True")) n->value = tv_bool(1);
        else if (!strcmp(t->p, "false") || !strcmp(t->p, "False")) n->value = tv_bool(0);
        else if (!strcmp(t->p, "none") || !strcmp(t->p, "None")) n->value = tv_none();
        else { n->kind = E_NAME; n->name = t->p; }
        return n;
    case T_STRING: {
        tpl_buf b = {0};
        while (cur(P)->kind == T_STRING) { /* adjacent literals concatenate */
            tpl_buf_put(P->a, &b, cur(P)->p, cur(P)->n);
            advance(P);
        }
        n->value = tv_str(b.p ? b.p : "", b.n);
        return n;
    }
    case T_INT: advance(P); n->value = tv_int(t->i); return n;
    case T_FLOAT: advance(P); n->value = tv_float(t->f); return n;
    default: break;
    }
    if (accept_op(P, "(")) {
        if (accept_op(P, ")")) {
            n->kind = E_TUPLE;
            return n;
        }
        n = parse_tuple(P, 1, NULL);
        expect_op(P, ")");
        return n;
    }
    if (accept_op(P, "["))
        return parse_seq(P, E_LIST, "]", 0);
    if (accept_op(P, "{"))
        return parse_seq(P, E_DICT, "}", 1);
    unexpected(P, "an expression");
}

static tpl_node *parse_unary(parser *P, int with_filter)
{
    enter(P);
    tpl_node *n;
    int line = cur(P)->line;
    if (accept_op(P, "-") || (is_op(P, "+") && advance(P))) {
        int neg = P->t[P->pos - 1].p[0] == '-';
        n = node(P, neg ? E_NEG : E_POS, line);
        n->a = parse_unary(P, 0);
    } else
        n = parse_postfix(P, parse_primary(P));
    if (with_filter)
        n = parse_filter_expr(P, n);
    P->nesting--;
    return n;
}

static tpl_node *binop(parser *P, int op, tpl_node *l, tpl_node *r, int line)
{
    tpl_node *n = node(P, E_BINOP, line);
    n->op = op;
    n->a = l;
    n->b = r;
    return n;
}

static tpl_node *parse_pow(parser *P)
{
    tpl_node *n = parse_unary(P, 1);
    while (is_op(P, "**")) {
        int line = advance(P)->line;
        n = binop(P, OP_POW, n, parse_unary(P, 1), line);
    }
    return n;
}

static tpl_node *parse_math2(parser *P)
{
    static const char *const ops[] = {"*", "/", "//", "%"};
    static const int codes[] = {OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD};
    tpl_node *n = parse_pow(P);
    for (;;) {
        size_t k = 0;
        while (k < 4 && !is_op(P, ops[k]))
            k++;
        if (k == 4)
            return n;
        int line = advance(P)->line;
        n = binop(P, codes[k], n, parse_pow(P), line);
    }
}

static tpl_node *parse_concat(parser *P)
{
    tpl_node *n = parse_math2(P);
    while (is_op(P, "~")) {
        int line = advance(P)->line;
        n = binop(P, OP_CONCAT, n, parse_math2(P), line);
    }
    return n;
}

static tpl_node *parse_math1(parser *P)
{
    tpl_node *n = parse_concat(P);
    while (is_op(P, "+") || is_op(P, "-")) {
        tpl_token *t = advance(P);
        n = binop(P, t->p[0] == '+' ? OP_ADD : OP_SUB, n, parse_concat(P), t->line);
    }
    return n;
}

static int compare_op(parser *P)
{
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
    for (int k = 0; k < 6; k++)
        if (is_op(P, ops[k])) {
            advance(P);
            return OP_EQ + k;
        }
    if (accept_name(P, "in"))
        return OP_IN;
    if (is_name(P, "not") && P->t[P->pos + 1].kind == T_NAME && !strcmp(P->t[P->pos + 1].p, "in")) {
        P->pos += 2;
        return OP_NOTIN;
    }
    return -1;
}

static tpl_node *parse_compare(parser *P)
{
    int line = cur(P)->line;
    tpl_node *first = parse_math1(P), *n = NULL;
    int op;
    nodevec operands = {0};
    int *ops = NULL;
    while ((op = compare_op(P)) >= 0) {
        vec_push(P, &operands, parse_math1(P));
        int *o = tpl_alloc(P->a, operands.n * sizeof *o);
        if (ops)
            memcpy(o, ops, (operands.n - 1) * sizeof *o);
        o[operands.n - 1] = op;
        ops = o;
    }
    if (!operands.n)
        return first;
    n = node(P, E_CMP, line);
    n->a = first;
    n->items = operands.p;
    n->n = operands.n;
    n->ops = ops;
    return n;
}

static tpl_node *parse_not(parser *P)
{
    if (is_name(P, "not")) {
        tpl_node *n = node(P, E_NOT, advance(P)->line);
        enter(P);
        n->a = parse_not(P);
        P->nesting--;
        return n;
    }
    return parse_compare(P);
}

static tpl_node *parse_and(parser *P)
{
    tpl_node *n = parse_not(P);
    while (is_name(P, "and")) {
        tpl_node *x = node(P, E_AND, advance(P)->line);
        x->a = n;
        x->b = parse_not(P);
        n = x;
    }
    return n;
}

static tpl_node *parse_or(parser *P)
{
    tpl_node *n = parse_and(P);
    while (is_name(P, "or")) {
        tpl_node *x = node(P, E_OR, advance(P)->line);
        x->a = n;
        x->b = parse_and(P);
        n = x;
    }
    return n;
}

static tpl_node *parse_condexpr(parser *P)
{
    enter(P);
    tpl_node *n = parse_or(P);
    while (is_name(P, "if")) {
        tpl_node *c = node(P, E_COND, advance(P)->line);
        c->b = n;
        c->a = parse_or(P);
        if (accept_name(P, "else"))
            c->c = parse_condexpr(P);
        n = c;
    }
    P->nesting--;
    return n;
}

static tpl_node *parse_expression(parser *P) { return parse_condexpr(P); }

static int tuple_end(parser *P, const char *end_name)
{
    tpl_tok_kind k = cur(P)->kind;
    return k == T_VAR_END || k == T_BLOCK_END || k == T_EOF || is_op(P, ")") ||
           (end_name && is_name(P, end_name));
}

/* Comma-separated expressions: one is itself, several (or a trailing comma) a tuple. */
static tpl_node *parse_tuple(parser *P, int with_condexpr, const char *end_name)
{
    int line = cur(P)->line, is_tuple = 0;
    nodevec items = {0};
    for (;;) {
        if (items.n)
            expect_op(P, ",");
        if (tuple_end(P, end_name))
            break;
        vec_push(P, &items, with_condexpr ? parse_expression(P) : parse_or(P));
        if (is_op(P, ","))
            is_tuple = 1;
        else
            break;
    }
    if (!is_tuple) {
        if (!items.n)
            unexpected(P, "an expression");
        return items.p[0];
    }
    tpl_node *n = node(P, E_TUPLE, line);
    n->items = items.p;
    n->n = items.n;
    return n;
}

/* ---- statements */

static tpl_node *parse_body(parser *P, const char *const *ends, const char **which);

static int in_list(const char *name, const char *const *list)
{
    for (; list && *list; list++)
        if (!strcmp(name, *list))
            return 1;
    return 0;
}

static tpl_node *parse_if(parser *P, int line)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    tpl_node *n = node(P, N_IF, line);
    n->a = parse_tuple(P, 0, NULL);
    expect_kind(P, T_BLOCK_END);
    const char *which;
    n->b = parse_body(P, ends, &which);
    if (!strcmp(which, "elif")) {
        tpl_node *body = node(P, N_BODY, cur(P)->line);
        body->items = tpl_alloc(P->a, sizeof *body->items);
        body->items[0] = parse_if(P, cur(P)->line);
        body->n = 1;
        n->c = body;
        return n;
    }
    if (!strcmp(which, "else")) {
        static const char *const endif[] = {"endif", NULL};
        expect_kind(P, T_BLOCK_END);
        n->c = parse_body(P, endif, &which);
    }
    expect_kind(P, T_BLOCK_END);
    return n;
}

static void parse_targets(parser *P, tpl_node *n)
{
    int paren = accept_op(P, "(");
    do {
        if (paren && is_op(P, ")"))
            break;
        names_push(P, &n->names, &n->nnames, expect_name(P));
    } while (accept_op(P, ","));
    if (paren)
        expect_op(P, ")");
}

static tpl_node *parse_for(parser *P, int line)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    tpl_node *n = node(P, N_FOR, line);
    parse_targets(P, n);
    if (!accept_name(P, "in"))
        unexpected(P, "'in'");
    n->a = parse_tuple(P, 0, "recursive");
    if (accept_name(P, "if"))
        n->b = parse_expression(P);
    if (is_name(P, "recursive"))
        fail_at(P, line, "recursive for loops are not supported");
    expect_kind(P, T_BLOCK_END);
    const char *which;
    P->loops++;
    n->c = parse_body(P, ends, &which);
    P->loops--;
    if (!strcmp(which, "else")) {
        static const char *const endfor[] = {"endfor", NULL};
        expect_kind(P, T_BLOCK_END);
        n->d = parse_body(P, endfor, &which);
    }
    expect_kind(P, T_BLOCK_END);
    return n;
}

/* name(args) | name(args) ...: filters applied to a block's text. */
static tpl_node *parse_filter_chain(parser *P)
{
    tpl_node *n = parse_filter(P, NULL);
    while (accept_op(P, "|"))
        n = parse_filter(P, n);
    return n;
}

static tpl_node *parse_filter_block(parser *P, int line)
{
    static const char *const ends[] = {"endfilter", NULL};
    const char *which;
    tpl_node *n = node(P, N_FILTERBLOCK, line);
    n->c = parse_filter_chain(P);
    expect_kind(P, T_BLOCK_END);
    n->b = parse_body(P, ends, &which);
    expect_kind(P, T_BLOCK_END);
    return n;
}

/* {% with a = x, b = y %} ... {% endwith %}: the values are computed outside. */
static tpl_node *parse_with(parser *P, int line)
{
    static const char *const ends[] = {"endwith", NULL};
    const char *which;
    tpl_node *n = node(P, N_WITH, line);
    nodevec values = {0};
    while (cur(P)->kind != T_BLOCK_END) {
        if (n->nnames)
            expect_op(P, ",");
        names_push(P, &n->names, &n->nnames, expect_name(P));
        expect_op(P, "=");
        vec_push(P, &values, parse_expression(P));
    }
    advance(P);
    n->items = values.p;
    n->n = values.n;
    n->b = parse_body(P, ends, &which);
    expect_kind(P, T_BLOCK_END);
    return n;
}

static tpl_node *parse_set(parser *P, int line)
{
    tpl_node *n = node(P, N_SET, line);
    if (cur(P)->kind == T_NAME && P->t[P->pos + 1].kind == T_OP && !strcmp(P->t[P->pos + 1].p, ".")) {
        tpl_node *ns = node(P, E_NAME, line);
        ns->name = advance(P)->p;
        advance(P);
        n->a = ns;
        n->name = expect_name(P);
    } else
        parse_targets(P, n);
    if (accept_op(P, "=")) {
        n->b = parse_tuple(P, 1, NULL);
        expect_kind(P, T_BLOCK_END);
        return n;
    }
    if (n->a || n->nnames != 1)
        unexpected(P, "'='");
    if (accept_op(P, "|"))
        n->c = parse_filter_chain(P);
    expect_kind(P, T_BLOCK_END);
    static const char *const ends[] = {"endset", NULL};
    const char *which;
    n->kind = N_SETBLOCK;
    n->b = parse_body(P, ends, &which);
    expect_kind(P, T_BLOCK_END);
    return n;
}

/* Does the subtree read the name (varargs, kwargs, caller)? */
static int mentions(const tpl_node *n, const char *name)
{
    if (!n)
        return 0;
    if (n->kind == E_NAME && !strcmp(n->name, name))
        return 1;
    if (mentions(n->a, name) || mentions(n->b, name) || mentions(n->c, name) || mentions(n->d, name))
        return 1;
    for (size_t i = 0; i < n->n; i++)
        if (mentions(n->items[i], name))
            return 1;
    for (size_t i = 0; i < n->nkw; i++)
        if (mentions(n->kwvals[i], name))
            return 1;
    return 0;
}

/* "(a, b=default, ...)": the parameters of a macro or a caller. */
static void parse_macro_params(parser *P, tpl_node *n)
{
    nodevec defaults = {0};
    if (accept_op(P, "(")) {
        while (!is_op(P, ")")) {
            if (n->nnames)
                expect_op(P, ",");
            if (is_op(P, ")"))
                break;
            names_push(P, &n->names, &n->nnames, expect_name(P));
            vec_push(P, &defaults, accept_op(P, "=") ? parse_expression(P) : NULL);
            if (!defaults.p[defaults.n - 1] && defaults.n > 1 && defaults.p[defaults.n - 2])
                fail_at(P, n->line, "non-default argument follows default argument");
        }
        advance(P);
    }
    n->items = defaults.p;
    n->n = defaults.n;
}

static tpl_node *parse_macro_body(parser *P, tpl_node *n, const char *end_tag)
{
    const char *const ends[] = {end_tag, NULL};
    const char *which;
    int loops = P->loops;
    P->loops = 0;
    n->b = parse_body(P, ends, &which);
    P->loops = loops;
    n->op = (mentions(n->b, "varargs") ? MACRO_VARARGS : 0) | (mentions(n->b, "kwargs") ? MACRO_KWARGS : 0) |
            (mentions(n->b, "caller") ? MACRO_CALLER : 0);
    if (cur(P)->kind == T_NAME && n->name && !strcmp(cur(P)->p, n->name))
        advance(P);
    expect_kind(P, T_BLOCK_END);
    return n;
}

static tpl_node *parse_macro(parser *P, int line)
{
    tpl_node *n = node(P, N_MACRO, line);
    n->name = expect_name(P);
    if (!is_op(P, "("))
        unexpected(P, "'('");
    parse_macro_params(P, n);
    expect_kind(P, T_BLOCK_END);
    return parse_macro_body(P, n, "endmacro");
}

/* {% call(params) macro(args) %}body{% endcall %}: body becomes the macro's caller(). */
static tpl_node *parse_call_block(parser *P, int line)
{
    tpl_node *n = node(P, N_CALLBLOCK, line), *caller = node(P, N_MACRO, line);
    caller->name = "caller";
    if (is_op(P, "("))
        parse_macro_params(P, caller);
    n->a = parse_expression(P);
    if (n->a->kind != E_CALL)
        fail_at(P, line, "{%% call %%} expects a macro call");
    expect_kind(P, T_BLOCK_END);
    caller->name = NULL;
    n->b = parse_macro_body(P, caller, "endcall");
    caller->name = "caller";
    return n;
}

static const char *const unsupported_tags[] = {
    "block", "extends", "include", "import", "from",
    "do", "autoescape", "trans", "pluralize", NULL};

static tpl_node *parse_statement(parser *P)
{
    tpl_token *t = cur(P);
    if (t->kind != T_NAME)
        unexpected(P, "a tag name");
    advance(P);
    if (!strcmp(t->p, "if")) return parse_if(P, t->line);
    if (!strcmp(t->p, "for")) return parse_for(P, t->line);
    if (!strcmp(t->p, "set")) return parse_set(P, t->line);
    if (!strcmp(t->p, "macro")) return parse_macro(P, t->line);
    if (!strcmp(t->p, "with")) return parse_with(P, t->line);
    if (!strcmp(t->p, "call")) return parse_call_block(P, t->line);
    if (!strcmp(t->p, "filter")) return parse_filter_block(P, t->line);
    if (!strcmp(t->p, "break") || !strcmp(t->p, "continue")) {
        if (!P->loops)
            fail_at(P, t->line, "'%s' outside of a loop", t->p);
        expect_kind(P, T_BLOCK_END);
        return node(P, t->p[0] == 'b' ? N_BREAK : N_CONTINUE, t->line);
    }
    if (!strcmp(t->p, "generation")) { /* transformers' pass-through marker */
        static const char *const ends[] = {"endgeneration", NULL};
        const char *which;
        expect_kind(P, T_BLOCK_END);
        tpl_node *body = parse_body(P, ends, &which);
        expect_kind(P, T_BLOCK_END);
        return body;
    }
    if (in_list(t->p, unsupported_tags))
        fail_at(P, t->line, "tag '%s' is not supported", t->p);
    fail_at(P, t->line, "unknown tag '%s'", t->p);
}

/* Statements up to one of the end tags (whose name it consumes and reports). */
static tpl_node *parse_body(parser *P, const char *const *ends, const char **which)
{
    tpl_node *body = node(P, N_BODY, cur(P)->line);
    nodevec items = {0};
    enter(P);
    for (;;) {
        tpl_token *t = cur(P);
        if (t->kind == T_EOF) {
            if (ends) {
                const char *const *last = ends;
                while (last[1])
                    last++;
                fail_at(P, t->line, "unexpected end of template, expected '%s'", *last);
            }
            break;
        }
        if (t->kind == T_TEXT) {
            tpl_node *x = node(P, N_TEXT, t->line);
            x->value = tv_str(t->p, t->n);
            vec_push(P, &items, x);
            advance(P);
        } else if (t->kind == T_VAR_BEGIN) {
            advance(P);
            tpl_node *x = node(P, N_OUTPUT, t->line);
            x->a = parse_tuple(P, 1, NULL);
            expect_kind(P, T_VAR_END);
            vec_push(P, &items, x);
        } else if (t->kind == T_BLOCK_BEGIN) {
            advance(P);
            if (cur(P)->kind == T_NAME && in_list(cur(P)->p, ends)) {
                *which = advance(P)->p;
                break;
            }
            if (cur(P)->kind == T_NAME && (!strncmp(cur(P)->p, "end", 3) || !strcmp(cur(P)->p, "else") ||
                                           !strcmp(cur(P)->p, "elif")))
                fail_at(P, cur(P)->line, "unexpected '%s'%s%s%s", cur(P)->p, ends ? ", expected '" : "",
                        ends ? ends[0] : "", ends ? "'" : "");
            vec_push(P, &items, parse_statement(P));
        } else
            unexpected(P, NULL);
    }
    P->nesting--;
    body->items = items.p;
    body->n = items.n;
    return body;
}

tpl_node *tpl_parse(tpl_arena *a, const char *src, size_t len)
{
    parser P = {.a = a};
    P.t = tpl_lex(a, src, len, &P.n);
    return parse_body(&P, NULL, NULL);
}
