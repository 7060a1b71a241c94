/*
 * template_internal.h — the types shared by the chat-template interpreter's files:
 * the arena every parse and render allocates from, the value model (Python/Jinja
 * semantics), the syntax tree, and the render state. Not part of the public API.
 *
 * Failure unwinds with longjmp to the one entry point (parse or render) that owns
 * all the memory involved: every allocation comes from an arena the entry point
 * frees, so no path needs its own cleanup and deep recursion stays simple.
 */
#ifndef STRATA_TEMPLATE_INTERNAL_H
#define STRATA_TEMPLATE_INTERNAL_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/error.h"

/* ---- limits: a runaway template ends with STRATA_E_LIMIT, never a hang or crash */
#define TPL_MAX_STEPS 5000000ull          /* statements + expressions evaluated */
#define TPL_MAX_OUTPUT (16u << 20)        /* bytes of rendered text, and of any one string */
#define TPL_MAX_MEMORY (256u << 20)       /* bytes of values one render may allocate */
#define TPL_MAX_CALL_DEPTH 100            /* nested macro calls */
#define TPL_MAX_NESTING 200               /* nested expressions / blocks when parsing */
#define TPL_MAX_EVAL_DEPTH 1000           /* nested evaluations: ~0.5 MB of C stack at most */
#define TPL_MAX_RANGE 100000              /* as Jinja's sandbox (MAX_RANGE) */

/* ---- arena with unwinding (template_arena.c) */
typedef struct tpl_chunk tpl_chunk;
typedef struct tpl_arena {
    tpl_chunk *head;
    size_t total, cap;        /* bytes allocated, bound (0: none) */
    jmp_buf *jump;            /* where tpl_throw unwinds to */
    strata_error *err;        /* never NULL while jump is set */
} tpl_arena;

void *tpl_alloc(tpl_arena *a, size_t n);              /* zeroed; throws on failure */
char *tpl_strndup(tpl_arena *a, const char *s, size_t n);
void tpl_arena_free(tpl_arena *a);
_Noreturn void tpl_throw(tpl_arena *a, strata_status status, const char *fmt, ...)
    STRATA_PRINTF(3, 4);

/* ---- values (template_value.c) */
typedef enum tpl_kind {
    TV_UNDEF, TV_NONE, TV_BOOL, TV_INT, TV_FLOAT, TV_STR, TV_LIST, TV_DICT,
    TV_NS, TV_MACRO, TV_FUNC, TV_METHOD, TV_LOOP
} tpl_kind;

typedef struct tv tv;
typedef struct tpl_list { size_t n, cap; tv *items; } tpl_list;
/* Insertion-ordered; past a few keys, string keys are also hashed (slots holds
 * index + 1, 0 for empty) so that lookups in large input objects stay O(1). */
typedef struct tpl_dict { size_t n, cap, nslots; tv *keys, *vals; size_t *slots; } tpl_dict;
typedef struct tpl_method tpl_method;
typedef struct tpl_loop tpl_loop;
typedef struct tpl_macro tpl_macro;
struct tpl_node;

struct tv {
    tpl_kind kind;
    unsigned is_tuple : 1;                        /* lists only: prints as (a, b) */
    unsigned described : 1;                       /* undefined only: u.s is why, in full */
    union {
        int b;
        int64_t i;
        double f;
        struct { const char *p; size_t n; } s;    /* strings; undefined: its name */
        tpl_list *l;
        tpl_dict *d;                              /* dicts and namespaces */
        const tpl_macro *macro;
        int func;                                 /* a global function, TPL_FN_* */
        tpl_method *m;
        tpl_loop *loop;
    } u;
};

struct tpl_method { tv self; const char *name; };

/* A macro with the scope it was defined in (a call block's caller sees its
 * surroundings; a top-level macro, the globals). */
struct tpl_scope;
struct tpl_macro { const struct tpl_node *node; struct tpl_scope *scope; };

struct tpl_loop {
    const tpl_list *items;
    size_t index0;
    tv last;          /* loop.changed(): the arguments of its previous call */
    int has_last;
};

enum { TPL_FN_RANGE, TPL_FN_NAMESPACE, TPL_FN_DICT, TPL_FN_RAISE, TPL_FN_STRFTIME };

tv tv_undef(const char *name);                  /* "'name' is undefined" */
/* An undefined value that says why, as Jinja's hints ("'dict object' has no attribute 'x'"). */
tv tv_undef_why(tpl_arena *a, const char *fmt, ...) STRATA_PRINTF(2, 3);
/* The error for using an undefined value: its reason, or "'name' is undefined". */
const char *tv_undef_message(tv u, char *buf, size_t size);
tv tv_none(void);
tv tv_bool(int b);
tv tv_int(int64_t i);
tv tv_float(double f);
tv tv_str(const char *p, size_t n);
tv tv_cstr(const char *p);
tv tv_list(tpl_arena *a, size_t cap);
tv tv_dict(tpl_arena *a, size_t cap);
void tpl_list_push(tpl_arena *a, tpl_list *l, tv v);
void tpl_dict_set(tpl_arena *a, tpl_dict *d, tv key, tv val);
void tpl_dict_append(tpl_arena *a, tpl_dict *d, tv key, tv val);  /* key known to be new */
tv *tpl_dict_get(const tpl_dict *d, tv key);            /* NULL when absent */
tv *tpl_dict_get_str(const tpl_dict *d, const char *key);

int tv_truthy(tv v);
int tv_is_num(tv v);                       /* bool, int or float (Python Number) */
double tv_num(tv v);
int tv_equal(tv a, tv b);
/* Python ordering: -1/0/1, or 2 when the types cannot be ordered. */
int tv_compare(tv a, tv b);
const char *tv_type_name(tv v);            /* Python's type name, for messages */

/* ---- text (template_text.c): growable buffers, str()/repr(), float repr */
typedef struct tpl_buf { char *p; size_t n, cap, limit; } tpl_buf; /* limit 0: TPL_MAX_OUTPUT */
void tpl_buf_put(tpl_arena *a, tpl_buf *b, const char *s, size_t n);
void tpl_buf_putc(tpl_arena *a, tpl_buf *b, char c);
void tpl_buf_printf(tpl_arena *a, tpl_buf *b, const char *fmt, ...) STRATA_PRINTF(3, 4);
tv tpl_buf_value(tpl_buf *b);
void tpl_put_str(tpl_arena *a, tpl_buf *b, tv v);      /* Python str(v) */
void tpl_put_repr(tpl_arena *a, tpl_buf *b, tv v);     /* Python repr(v) */
void tpl_put_float(tpl_arena *a, tpl_buf *b, double f);
tv tv_to_str(tpl_arena *a, tv v);                      /* str(v) as a string value */

/* ---- unicode string helpers (template_unicode.c) */
size_t tpl_utf8_len(const char *s, size_t n);           /* code points */
size_t tpl_utf8_offset(const char *s, size_t n, size_t cp);   /* byte offset of cp */
int32_t tpl_utf8_next(const char *s, size_t n, size_t *pos);
int tpl_is_space(int32_t c);                            /* Python str.isspace */
int tpl_is_alnum(int32_t c);                            /* Python str.isalnum */
int tpl_is_alpha(int32_t c);                            /* Python str.isalpha */
int tpl_is_digit(int32_t c);                            /* Python str.isdigit */
/* strip chars (NULL: whitespace) from the left (mode 1), right (2) or both (3) */
tv tpl_strip(tv s, const char *chars, size_t nchars, int mode);
tv tpl_case(tpl_arena *a, tv s, int how);               /* how: TPL_CASE_* */
enum { TPL_CASE_LOWER, TPL_CASE_UPPER, TPL_CASE_TITLE, TPL_CASE_CAPITALIZE, TPL_CASE_JTITLE };
/* Full case mapping of c when it is not one code point (how: LOWER, TITLE or UPPER). */
const char *tpl_special_case(int32_t c, int how);
int tpl_is_other_cased(int32_t c);
ptrdiff_t tpl_find(const char *h, size_t hn, const char *nd, size_t nn, size_t from);
char *tpl_reversed(tpl_arena *a, const char *s, size_t n);

/* ---- JSON in and out (template_json.c) */
/* Parse a JSON object's text into a dict value; throws STRATA_E_INVALID. */
tv tpl_json_parse(tpl_arena *a, const char *text, const char *what);
typedef struct tpl_json_opts {
    int ensure_ascii, sort_keys;
    const char *indent; size_t indent_n; int has_indent;
    const char *item_sep, *key_sep;
} tpl_json_opts;
/* Python json.dumps; returns 0, or -1 with *bad set to a value it cannot encode. */
int tpl_json_dump(tpl_arena *a, tpl_buf *b, tv v, const tpl_json_opts *o, tv *bad);

/* ---- syntax tree (template_parser.c) */
typedef enum tpl_nkind {
    /* statements */
    N_BODY, N_TEXT, N_OUTPUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE,
    N_WITH, N_FILTERBLOCK, N_CALLBLOCK,
    /* expressions */
    E_CONST, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS,
    E_NOT, E_AND, E_OR, E_BINOP, E_CMP, E_COND, E_LIST, E_TUPLE, E_DICT
} tpl_nkind;

/* N_MACRO op: which special names its body uses */
enum { MACRO_VARARGS = 1, MACRO_KWARGS = 2, MACRO_CALLER = 4 };

/* operators of E_BINOP and E_CMP */
enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

typedef struct tpl_render tpl_render;
typedef struct tpl_args {
    size_t n, nkw;
    tv *pos, *kw;
    const char **kwnames;
} tpl_args;
typedef tv (*tpl_filter_fn)(tpl_render *r, const struct tpl_node *at, tv v, tpl_args *args);
typedef int (*tpl_test_fn)(tpl_render *r, const struct tpl_node *at, tv v, tpl_args *args);

typedef struct tpl_node {
    tpl_nkind kind;
    int line, op;
    const char *name;               /* name, attribute, filter, test, set target, macro */
    tv value;                       /* E_CONST; N_TEXT text */
    struct tpl_node *a, *b, *c, *d; /* children, by kind (see template_parser.c) */
    struct tpl_node **items;        /* body statements, list items, positional args */
    size_t n;
    const char **names;             /* for/set targets, macro params */
    size_t nnames;
    const char **kwnames;           /* call keyword names; dict: keys are items[2i] */
    struct tpl_node **kwvals;
    size_t nkw;
    int *ops;                       /* E_CMP operators, one per items[] operand */
    tpl_filter_fn filter;
    tpl_test_fn test;
} tpl_node;

/* ---- lexer (template_lexer.c) */
typedef enum tpl_tok_kind {
    T_TEXT, T_BLOCK_BEGIN, T_BLOCK_END, T_VAR_BEGIN, T_VAR_END,
    T_NAME, T_INT, T_FLOAT, T_STRING, T_OP, T_EOF
} tpl_tok_kind;

typedef struct tpl_token {
    tpl_tok_kind kind;
    int line;
    const char *p;     /* text, name, operator or decoded string (NUL-terminated) */
    size_t n;
    int64_t i;
    double f;
} tpl_token;

/* Tokenize src (already a NUL-terminated arena copy); throws STRATA_E_TEMPLATE. */
tpl_token *tpl_lex(tpl_arena *a, const char *src, size_t len, size_t *ntok);

/* Parse a whole template into an N_BODY tree. */
tpl_node *tpl_parse(tpl_arena *a, const char *src, size_t len);

/* ---- filters, tests, methods, globals */
tpl_filter_fn tpl_filter_find(const char *name);
tpl_test_fn tpl_test_find(const char *name);
/* Call a bound method (receiver.name(args)). */
tv tpl_method_call(tpl_render *r, const tpl_node *at, const tpl_method *m, tpl_args *args);
int tpl_has_method(tv self, const char *name);
int tpl_global_find(const char *name);          /* TPL_FN_* or -1 */
tv tpl_global_call(tpl_render *r, const tpl_node *at, int fn, tpl_args *args);

/* ---- evaluation (template_eval.c) */
typedef struct tpl_scope tpl_scope;
struct tpl_render {
    tpl_arena *arena;
    tpl_scope *globals, *scope;
    tpl_buf *out;
    uint64_t steps;
    int depth, calls;
    struct tm now;
    int have_now;
};

_Noreturn void tpl_fail(tpl_render *r, const tpl_node *at, const char *fmt, ...)
    STRATA_PRINTF(3, 4);
void tpl_render_body(tpl_render *r, const tpl_node *body);
void tpl_step(tpl_render *r);                    /* count one step; throws at the bound */
tv tpl_eval(tpl_render *r, const tpl_node *e);
tv tpl_getattr(tpl_render *r, tv obj, const char *name);
tv tpl_getitem(tpl_render *r, const tpl_node *at, tv obj, tv key);
tv tpl_call(tpl_render *r, const tpl_node *at, tv fn, tpl_args *args);
/* Iterate like Python's iter(): lists as is, dicts by key, strings by character. */
tpl_list *tpl_iterate(tpl_render *r, const tpl_node *at, tv v);
tv tpl_binop(tpl_render *r, const tpl_node *at, int op, tv a, tv b);
/* Python's fmt % args (template_format.c). */
tv tpl_percent_format(tpl_render *r, const tpl_node *at, tv fmt, tv args);
/* Python's fmt.format(*args, **kwargs) (template_format.c). */
tv tpl_str_format(tpl_render *r, const tpl_node *at, tv fmt, tpl_args *args);
/* Positional argument i, or keyword name, or dflt. */
tv tpl_arg(const tpl_args *args, size_t i, const char *name, tv dflt);
void tpl_scope_set_global(tpl_render *r, const char *name, tv v);

#endif
