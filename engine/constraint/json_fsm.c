/*
 * json_fsm.c — the byte automaton of constrained output: a stack of frames, one per
 * value being written (object, key, array, string, number, literal), each pointing
 * at the schema node it must satisfy; for a forced tool call also the fixed texts
 * around it, the function's name and XML parameters. A byte is taken only when the
 * text stays a prefix of some valid text, so a token is allowed when all its bytes
 * are.
 *
 * Checking a token must not touch the cursor: it runs on a `sim`, a copy-on-read
 * view that copies a frame from the cursor only when the walk reaches it (a token
 * rarely pops more than two), so a mask over 131072 tokens copies a few frames per
 * token rather than the stack. Advancing is the same walk, then a commit.
 *
 * Bounds (internal.h): nesting JF_MAX_DEPTH; whitespace between JSON tokens as
 * llama.cpp's JSON grammar has it, nothing, one space, or a newline and up to
 * JF_MAX_INDENT spaces or tabs (JSON allows any run, and a weak model spends its
 * tokens on them); JF_MAX_NUMBER bytes of a
 * number, MAX_KEY bytes of a key, MAX_XML_NAME of an XML parameter's name.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "constraint/internal.h"
#include "core/error.h"

#define MAX_FRAMES (JF_MAX_DEPTH + 2)
#define MAX_KEY 1024
#define MAX_XML_NAME 255        /* bytes of an XML parameter's name (tool_calls.c reads up to 255) */

enum { F_VALUE, F_OBJ, F_KEY, F_ARR, F_STR, F_NUM, F_LIT, F_WORD, F_RAW, F_XOBJ, F_XKEY, F_XRAW, F_CALL };
enum { X_NEXT, X_LT, X_CLOSE };                         /* F_XOBJ: before a parameter, after '<', after "</" */
enum { O_OPEN, O_KEY, O_COLON, O_NEXT };                /* F_OBJ: after '{', ',', a key, a value */
enum { A_OPEN, A_VALUE, A_NEXT };                       /* F_ARR: after '[', ',', a value */
enum { S_PLAIN, S_ESC, S_HEX1, S_HEX4 = S_HEX1 + 3 };   /* F_STR / F_KEY: escapes */
enum { N_START, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
enum { R_BAD, R_CONT, R_CHAR, R_END };                  /* what a string byte was */

typedef struct frame {
    uint8_t kind, st;
    uint8_t need, lo, hi;       /* strings: UTF-8 continuation bytes due, the next one's range */
    uint8_t int_only;           /* F_NUM: no fraction or exponent */
    uint8_t unquoted;           /* F_LIT: string literals written without their quotes (XML values) */
    uint8_t negative;           /* F_NUM: a '-' was written (bounded integers) */
    int32_t node;               /* the schema node this value satisfies */
    int32_t count;              /* string: characters; array: items; key, literal, word, raw: bytes;
                                 * XML value: bytes of "\n</parameter>" matched */
    int32_t child;              /* object: node of the current value; word: which word; raw: which
                                 * text; XML value: bytes of "</parameter>" matched */
    uint64_t mask;              /* object: properties seen; key, literal, call: candidates left;
                                 * bounded integer: its magnitude so far */
} frame;

typedef struct fsm {
    int depth;                  /* frames in use; 0 with done: the text is whole */
    int done, ws;               /* ws: the whitespace run so far (take_ws) */
    frame f[MAX_FRAMES];
} fsm;

struct cons_cursor {
    const strata_constraint *c;
    fsm state;
};

/* A walk over bytes on top of a cursor's fsm: frames [lo, depth) are its own. */
typedef struct sim {
    const strata_constraint *c;
    const fsm *base;
    int depth, done, ws, lo;
    frame f[MAX_FRAMES];
} sim;

static const char *const WORDS[] = {"true", "false", "null"};

static void sim_start(sim *s, const strata_constraint *c, const fsm *base)
{
    s->c = c;
    s->base = base;
    s->depth = base->depth;
    s->done = base->done;
    s->ws = base->ws;
    s->lo = base->depth;
}

static void sim_commit(const sim *s, fsm *base)
{
    for (int i = s->lo; i < s->depth; i++)
        base->f[i] = s->f[i];
    base->depth = s->depth;
    base->done = s->done;
    base->ws = s->ws;
}

static frame *top(sim *s)
{
    int i = s->depth - 1;
    if (i < s->lo) {
        s->f[i] = s->base->f[i];
        s->lo = i;
    }
    return &s->f[i];
}

static int push(sim *s, frame f)
{
    if (s->depth == MAX_FRAMES)
        return 0;
    s->f[s->depth++] = f;
    return 1;
}

static void pop(sim *s)
{
    if (--s->depth < s->lo)
        s->lo = s->depth;
    s->done = s->depth == 0;
}

static int is_ws(unsigned char b)
{
    return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

enum { WS_NONE, WS_SPACE, WS_NEWLINE };                 /* sim.ws: the run so far (+ indent after a newline) */

/* Whitespace between JSON tokens: nothing, one space, or a newline and indentation. */
static int take_ws(sim *s, unsigned char b)
{
    if (s->ws == WS_NONE && (b == ' ' || b == '\n')) {
        s->ws = b == ' ' ? WS_SPACE : WS_NEWLINE;
        return 1;
    }
    if (s->ws >= WS_NEWLINE && (b == ' ' || b == '\t') && s->ws - WS_NEWLINE < JF_MAX_INDENT) {
        s->ws++;
        return 1;
    }
    return 0;
}

static int step(sim *s, unsigned char b);

/* ---- strings and keys */

static int is_hex(unsigned char b)
{
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
}

/* One byte inside a string: valid UTF-8, no raw control bytes, JSON escapes. */
static int string_byte(frame *f, unsigned char b)
{
    if (f->need) {
        if (b < f->lo || b > f->hi)
            return R_BAD;
        f->need--;
        f->lo = 0x80;
        f->hi = 0xBF;
        return R_CONT;
    }
    if (f->st == S_ESC) {
        f->st = b == 'u' ? S_HEX1 : S_PLAIN;
        return b == 'u' || strchr("\"\\/bfnrt", b) ? R_CONT : R_BAD;
    }
    if (f->st >= S_HEX1) {
        f->st = f->st == S_HEX4 ? S_PLAIN : f->st + 1;
        return is_hex(b) ? R_CONT : R_BAD;
    }
    if (b == '"')
        return R_END;
    if (b == '\\')
        f->st = S_ESC;
    return b < 0x20 || (b >= 0x80 && !(f->need = (uint8_t)jf_utf8_lead(b, &f->lo, &f->hi))) ? R_BAD : R_CHAR;
}

static int str_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    int r = string_byte(f, b);
    if (r == R_END && f->count >= n->min_len)
        pop(s);
    else if (r == R_CHAR && (n->max_len < 0 || f->count < n->max_len))
        f->count++;
    else
        return r == R_CONT;
    return 1;
}

/* Of the properties of n in mask (bit i: props[n->prop0 + i]), those whose name
 * is exactly the `len` bytes written... */
static uint64_t props_whole(const sim *s, const jf_node *n, uint64_t mask, int len)
{
    uint64_t whole = 0;
    for (uint64_t m = mask; m; m &= m - 1)
        whole |= s->c->props[n->prop0 + __builtin_ctzll(m)].len == len ? m & -m : 0;
    return whole;
}

/* ...and those whose name goes on with byte b at position pos. */
static uint64_t props_going_on(const sim *s, const jf_node *n, uint64_t mask, int pos, unsigned char b)
{
    uint64_t left = 0;
    for (uint64_t m = mask; m; m &= m - 1) {
        const jf_prop *p = &s->c->props[n->prop0 + __builtin_ctzll(m)];
        left |= p->len > pos && (unsigned char)p->name[pos] == b ? m & -m : 0;
    }
    return left;
}

/* The key ends: the object's current value gets its property's node (marked seen)
 * or the node of additional properties. */
static int key_end(sim *s, frame *key)
{
    const jf_node *n = &s->c->nodes[key->node];
    uint64_t whole = props_whole(s, n, key->mask, key->count);
    if (!whole && n->additional == JF_NONE)
        return 0;
    pop(s);
    frame *obj = top(s);
    obj->mask |= whole;
    obj->child = whole ? s->c->props[n->prop0 + __builtin_ctzll(whole)].node : n->additional;
    return 1;
}

static int key_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    int escaped = f->st != S_PLAIN, r = string_byte(f, b);
    if (r == R_END)
        return key_end(s, f);
    if (r == R_BAD || (r == R_CHAR && f->count >= MAX_KEY))    /* a character under way may finish */
        return 0;
    /* an escaped key is never a property's name */
    f->mask = escaped || b == '\\' ? 0 : props_going_on(s, n, f->mask, f->count, b);
    f->count++;
    return f->mask || n->additional != JF_NONE;
}

/* ---- objects and arrays */

static uint64_t all_props(const jf_node *n)
{
    return n->n_props == 64 ? ~0ull : (1ull << n->n_props) - 1;
}

static int obj_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    if (take_ws(s, b))
        return 1;
    int may_close = (f->st == O_OPEN || f->st == O_NEXT) && (n->required & ~f->mask) == 0;
    if (b == '}' && may_close) {
        pop(s);
        return 1;
    }
    if (b == '"' && (f->st == O_OPEN || f->st == O_KEY)) {
        uint64_t left = all_props(n) & ~f->mask;
        f->st = O_COLON;
        return (left || n->additional != JF_NONE) &&
               push(s, (frame){.kind = F_KEY, .node = f->node, .mask = left});
    }
    if (b == ',' && f->st == O_NEXT && ((all_props(n) & ~f->mask) || n->additional != JF_NONE)) {
        f->st = O_KEY;
        return 1;
    }
    if (b == ':' && f->st == O_COLON) {
        f->st = O_NEXT;
        return push(s, (frame){.kind = F_VALUE, .node = f->child});
    }
    return 0;
}

static int arr_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    if (take_ws(s, b))
        return 1;
    if (f->st == A_NEXT) {
        if (b == ']' && f->count >= n->min_items) {
            pop(s);
            return 1;
        }
        int more = n->max_items < 0 || f->count < n->max_items;
        f->st = A_VALUE;
        return b == ',' && more;
    }
    if (b == ']' && f->st == A_OPEN && n->min_items == 0) {
        pop(s);
        return 1;
    }
    if (n->max_items == 0)
        return 0;
    f->st = A_NEXT;
    f->count++;
    return push(s, (frame){.kind = F_VALUE, .node = n->items}) && step(s, b);
}

/* ---- numbers and literals */

/* The number state after byte b, or -1. */
static int num_next(int st, unsigned char b, int int_only)
{
    int digit = b >= '0' && b <= '9', e = (b == 'e' || b == 'E') && !int_only;
    switch (st) {
    case N_START: return b == '-' ? N_MINUS : b == '0' ? N_ZERO : digit ? N_INT : -1;
    case N_MINUS: return b == '0' ? N_ZERO : digit ? N_INT : -1;
    case N_ZERO: return b == '.' && !int_only ? N_DOT : e ? N_E : -1;
    case N_INT: return digit ? N_INT : b == '.' && !int_only ? N_DOT : e ? N_E : -1;
    case N_DOT: return digit ? N_FRAC : -1;
    case N_FRAC: return digit ? N_FRAC : e ? N_E : -1;
    case N_E: return b == '+' || b == '-' ? N_ESIGN : digit ? N_EXP : -1;
    case N_ESIGN:
    case N_EXP: return digit ? N_EXP : -1;
    }
    return -1;
}

static int num_complete(int st)
{
    return st == N_ZERO || st == N_INT || st == N_FRAC || st == N_EXP;
}

/* A number or a literal ends at the first byte it cannot take: its parent's. */
static int end_then_step(sim *s, unsigned char b)
{
    pop(s);
    return !s->done && step(s, b);
}

/* ---- integers with bounds (minimum / maximum): a prefix is taken only while some
 * integer it can still become lies within them, so none is ever stranded. Exact in
 * 64 bits: a bounded integer has at most BOUNDED_DIGITS digits. */

#define BOUNDED_DIGITS 18

static int bounded(const jf_node *n)
{
    return n->min > -INFINITY || n->max < INFINITY;
}

/* The node's bounds as integers: [*lo, *hi]. */
static void int_bounds(const jf_node *n, int64_t *lo, int64_t *hi)
{
    const double cap = 9e18;
    double a = n->min_excl ? floor(n->min) + 1 : ceil(n->min), b = n->max_excl ? ceil(n->max) - 1 : floor(n->max);
    *lo = a < -cap ? (int64_t)-cap : a > cap ? (int64_t)cap : (int64_t)a;
    *hi = b > cap ? (int64_t)cap : b < -cap ? (int64_t)-cap : (int64_t)b;
}

/* Whether some integer of [a, b], signed as f, lies within n's bounds. */
static int ints_meet(const jf_node *n, const frame *f, int64_t a, int64_t b)
{
    int64_t lo, hi;
    int_bounds(n, &lo, &hi);
    if (f->negative) {
        int64_t t = -b;
        b = -a;
        a = t;
    }
    return (a > lo ? a : lo) <= (b < hi ? b : hi);
}

/* Whether the integer written so far can still become one within n's bounds: its
 * magnitude m followed by k more digits, [m 10^k, m 10^k + 10^k - 1], for the k the
 * remaining bytes and digits allow ("-" alone: any magnitude; "0": only 0). */
static int int_reachable(const jf_node *n, const frame *f)
{
    int digits = f->st == N_MINUS ? 0 : (int)f->count - f->negative;
    int room = JF_MAX_NUMBER - (int)f->count, left = BOUNDED_DIGITS - digits;
    if (room > left)
        room = left;
    int64_t m = (int64_t)f->mask, p = 1;
    if (room < 0)
        return 0;                               /* past BOUNDED_DIGITS */
    if (f->st == N_ZERO)
        return ints_meet(n, f, 0, 0);
    if (f->st == N_MINUS) {                     /* "-0" or up to `room` digits */
        for (int k = 0; k < room; k++)
            p *= 10;
        return ints_meet(n, f, 0, p - 1);
    }
    for (int k = 0;; k++) {
        if (ints_meet(n, f, m * p, m * p + p - 1))
            return 1;
        if (k == room)
            return 0;
        p *= 10;
    }
}

/* Byte b moved f to state next: the sign and the magnitude (in mask). */
static void int_track(frame *f, int next, unsigned char b)
{
    if (next == N_MINUS)
        f->negative = 1;
    else if (next == N_INT)
        f->mask = f->mask * 10 + (uint64_t)(b - '0');
}

/* Whether the number written so far is a whole one within its bounds. */
static int num_may_end(const sim *s, const frame *f)
{
    const jf_node *n = &s->c->nodes[f->node];
    int64_t v = f->negative ? -(int64_t)f->mask : (int64_t)f->mask;
    return num_complete(f->st) && (!f->int_only || !bounded(n) || ints_meet(n, &(frame){0}, v, v));
}

static int num_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    int fenced = f->int_only && bounded(n);
    int next = num_next(f->st, b, f->int_only);
    /* within the bound, and never where the bound would leave it unfinished */
    if (next >= 0 && (f->count + 1 < JF_MAX_NUMBER || (f->count + 1 == JF_MAX_NUMBER && num_complete(next)))) {
        f->st = (uint8_t)next;
        f->count++;
        if (!fenced)
            return 1;
        int_track(f, next, b);
        return int_reachable(n, f);
    }
    return num_may_end(s, f) && end_then_step(s, b);
}

/* The candidates of literal frame f whose text is exactly what was written. */
static uint64_t lits_whole(const sim *s, const frame *f)
{
    const jf_node *n = &s->c->nodes[f->node];
    uint64_t whole = 0;
    for (uint64_t m = f->mask; m; m &= m - 1)
        whole |= s->c->lits[n->lit0 + __builtin_ctzll(m)].len - 2 * f->unquoted == f->count ? m & -m : 0;
    return whole;
}

static uint64_t lits_going_on(const sim *s, const frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    uint64_t left = 0;
    for (uint64_t m = f->mask; m; m &= m - 1) {
        const jf_lit *l = &s->c->lits[n->lit0 + __builtin_ctzll(m)];
        int q = f->unquoted;
        left |= l->len - 2 * q > f->count && (unsigned char)l->text[f->count + q] == b ? m & -m : 0;
    }
    return left;
}

static int lit_step(sim *s, frame *f, unsigned char b)
{
    uint64_t left = lits_going_on(s, f, b);
    if (left) {
        f->mask = left;
        f->count++;
        return 1;
    }
    return lits_whole(s, f) && end_then_step(s, b);
}

static int word_step(sim *s, frame *f, unsigned char b)
{
    const char *w = WORDS[f->child];
    if ((unsigned char)w[f->count] != b)
        return 0;
    if (w[++f->count] == '\0')
        pop(s);
    return 1;
}

/* ---- fixed texts and XML calls (strata_constraint_new_xml_call) */

static frame raw_frame(int which)
{
    return (frame){.kind = F_RAW, .child = which};
}

static int raw_step(sim *s, frame *f, unsigned char b)
{
    const jf_lit *t = &s->c->raws[f->child];
    if ((unsigned char)t->text[f->count] != b)
        return 0;
    if (++f->count == t->len)
        pop(s);
    return 1;
}

/* Parameters are written in any order, each once, required ones before the end:
 * '<' then 'p' ("arameter=", a name, '>') or '/' ("function>"). */
static int xobj_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    uint64_t left = all_props(n) & ~f->mask;
    switch (f->st) {
    case X_NEXT:
        f->st = X_LT;
        return b == '<';
    case X_LT:
        if (b == '/' && (n->required & ~f->mask) == 0) {
            f->st = X_CLOSE;
            return push(s, raw_frame(JF_RAW_FUNCTION));
        }
        f->st = X_NEXT;
        return b == 'p' && (left || n->additional != JF_NONE) &&
               push(s, (frame){.kind = F_XKEY, .node = f->node, .mask = left}) && push(s, raw_frame(JF_RAW_PARAM));
    }
    return end_then_step(s, b);                             /* X_CLOSE: "</function>" is written */
}

/* An enum of strings with no escapes: written raw, as the templates render strings. */
static int raw_enum(const strata_constraint *c, const jf_node *n)
{
    for (int i = 0; i < n->n_lits; i++) {
        const jf_lit *l = &c->lits[n->lit0 + i];
        if (l->text[0] != '"' || memchr(l->text, '\\', (size_t)l->len))
            return 0;
    }
    return n->n_lits > 0;
}

/* The value after <parameter=NAME>: "\n", then a string (or a value of any type,
 * which the parser reads as text) raw, an enum of strings one of them raw,
 * anything else as JSON, then "\n</parameter>\n". */
static int xml_value(sim *s, int node)
{
    const jf_node *n = &s->c->nodes[node];
    if ((n->types == JT_STR || n->types == JT_ANY) && !n->n_lits && !n->n_alts)
        return push(s, (frame){.kind = F_XRAW, .node = node}) && push(s, raw_frame(JF_RAW_NL));
    frame value = {.kind = F_VALUE, .node = node};
    if (raw_enum(s->c, n))
        value = (frame){.kind = F_LIT, .node = node, .unquoted = 1,
                        .mask = n->n_lits == 64 ? ~0ull : (1ull << n->n_lits) - 1};
    return push(s, raw_frame(JF_RAW_PARAM_END)) && push(s, value) && push(s, raw_frame(JF_RAW_NL));
}

/* A parameter's name, up to '>': one of the properties left, or another when the
 * schema allows more. */
static int xkey_step(sim *s, frame *f, unsigned char b)
{
    const jf_node *n = &s->c->nodes[f->node];
    if (b == '>') {
        uint64_t whole = props_whole(s, n, f->mask, f->count);
        if (!f->count || (!whole && n->additional == JF_NONE))
            return 0;
        int node = whole ? s->c->props[n->prop0 + __builtin_ctzll(whole)].node : n->additional;
        pop(s);
        top(s)->mask |= whole;
        return xml_value(s, node);
    }
    if (b < 0x20 || b == '<' || f->count >= MAX_XML_NAME)
        return 0;
    f->mask = props_going_on(s, n, f->mask, f->count, b);
    f->count++;
    return f->mask || (n->additional != JF_NONE && b < 0x80);  /* other names: ASCII (always UTF-8) */
}

/* A string parameter's raw text: UTF-8 of minLength..maxLength characters, ending
 * at "\n</parameter>" (then "\n"), never holding "</parameter>" otherwise (the
 * parser splits there). mask counts the characters, the end's included. */
static int xraw_step(sim *s, frame *f, unsigned char b)
{
    static const char END[] = "\n</parameter>";
    const int end_len = (int)sizeof END - 1;
    const jf_node *n = &s->c->nodes[f->node];
    if (f->need) {
        if (b < f->lo || b > f->hi)
            return 0;
        f->need--;
        f->lo = 0x80;
        f->hi = 0xBF;
    } else if ((b < 0x20 && b != '\n' && b != '\t' && b != '\r') ||
               (b >= 0x80 && !(f->need = (uint8_t)jf_utf8_lead(b, &f->lo, &f->hi)))) {
        return 0;
    } else {
        f->mask++;
    }
    f->count = (unsigned char)END[f->count] == b ? f->count + 1 : b == '\n';
    f->child = (unsigned char)END[f->child + 1] == b ? f->child + 1 : b == '<';
    if (f->count == end_len) {
        if ((int64_t)f->mask - end_len < n->min_len)
            return 0;
        *f = raw_frame(JF_RAW_NL);
        return 1;
    }
    if (n->max_len >= 0 && (int64_t)f->mask - f->count > n->max_len)
        return 0;                                           /* the text before a possible end is too long */
    return f->child < end_len - 1;                          /* "</parameter>" alone */
}

/* A call's name, one of the constraint's calls, ended by mid's first byte (which
 * no name holds); then mid and the call's arguments. */
static int call_step(sim *s, frame *f, unsigned char b)
{
    const strata_constraint *c = s->c;
    if (b == (unsigned char)c->raws[JF_RAW_MID].text[0]) {
        uint64_t whole = 0;
        for (uint64_t m = f->mask; m; m &= m - 1)
            whole |= c->calls[__builtin_ctzll(m)].len == f->count ? m & -m : 0;
        if (!whole)
            return 0;
        int node = c->calls[__builtin_ctzll(whole)].node;
        *f = c->xml ? (frame){.kind = F_XOBJ, .st = X_NEXT, .node = node} : (frame){.kind = F_VALUE, .node = node};
        return push(s, raw_frame(JF_RAW_MID)) && step(s, b);
    }
    uint64_t left = 0;
    for (uint64_t m = f->mask; m; m &= m - 1) {
        const jf_call *call = &c->calls[__builtin_ctzll(m)];
        left |= call->len > f->count && (unsigned char)call->name[f->count] == b ? m & -m : 0;
    }
    f->mask = left;
    f->count++;
    return left != 0;
}

/* ---- values */

static unsigned type_of(unsigned char b)
{
    return b == '{' ? JT_OBJ : b == '[' ? JT_ARR : b == '"' ? JT_STR : b == 't' || b == 'f' ? JT_BOOL
         : b == 'n' ? JT_NULL : b == '-' || (b >= '0' && b <= '9') ? JT_INT | JT_NUM : 0;
}

/* The first byte of a value for f's node: f becomes the value's own frame. */
static int value_step(sim *s, frame *f, unsigned char b)
{
    if (take_ws(s, b))
        return 1;
    const strata_constraint *c = s->c;
    int node = f->node;
    const jf_node *n = &c->nodes[node];
    if (n->n_lits) {
        *f = (frame){.kind = F_LIT, .node = node, .mask = n->n_lits == 64 ? ~0ull : (1ull << n->n_lits) - 1};
        return lit_step(s, f, b);
    }
    unsigned t = type_of(b) & n->types;
    if (!t)
        return 0;
    for (int i = 0; i < n->n_alts; i++)
        if (c->nodes[c->alts[n->alt0 + i]].types & t)
            node = c->alts[n->alt0 + i];
    n = &c->nodes[node];
    switch (b) {
    case '{': *f = (frame){.kind = F_OBJ, .st = O_OPEN, .node = node}; return s->depth < JF_MAX_DEPTH;
    case '[': *f = (frame){.kind = F_ARR, .st = A_OPEN, .node = node}; return s->depth < JF_MAX_DEPTH;
    case '"': *f = (frame){.kind = F_STR, .node = node}; return 1;
    case 't': case 'f': case 'n':
        *f = (frame){.kind = F_WORD, .node = node, .child = b == 't' ? 0 : b == 'f' ? 1 : 2};
        return word_step(s, f, b);
    }
    *f = (frame){.kind = F_NUM, .st = N_START, .node = node, .int_only = !(n->types & JT_NUM)};
    return num_step(s, f, b);
}

static int step(sim *s, unsigned char b)
{
    if (s->done)
        return 0;
    if (!is_ws(b))
        s->ws = 0;
    frame *f = top(s);
    switch (f->kind) {
    case F_VALUE: return value_step(s, f, b);
    case F_OBJ: return obj_step(s, f, b);
    case F_KEY: return key_step(s, f, b);
    case F_ARR: return arr_step(s, f, b);
    case F_STR: return str_step(s, f, b);
    case F_NUM: return num_step(s, f, b);
    case F_LIT: return lit_step(s, f, b);
    case F_WORD: return word_step(s, f, b);
    case F_RAW: return raw_step(s, f, b);
    case F_XOBJ: return xobj_step(s, f, b);
    case F_XKEY: return xkey_step(s, f, b);
    case F_XRAW: return xraw_step(s, f, b);
    case F_CALL: return call_step(s, f, b);
    }
    return 0;
}

/* ---- the cursor */

/* The text may end here: the root value is whole (a number or literal at the root
 * ends only with the text). */
static int can_finish(const cons_cursor *k)
{
    const fsm *m = &k->state;
    if (m->done)
        return 1;
    if (m->depth != 1)
        return 0;
    sim s;
    sim_start(&s, k->c, m);
    const frame *f = top(&s);
    return (f->kind == F_NUM && num_may_end(&s, f)) || (f->kind == F_LIT && lits_whole(&s, f));
}

static int is_end(const strata_constraint *c, int32_t token)
{
    for (int i = 0; i < c->n_end; i++)
        if (c->end_ids[i] == token)
            return 1;
    return 0;
}

/* Walk token's bytes on s; 1 when every one is taken. */
static int walk(sim *s, int32_t token)
{
    const strata_vocab *v = s->c->vocab;
    uint32_t a = v->off[token], z = v->off[token + 1];
    if (a == z)
        return 0;
    for (uint32_t i = a; i < z; i++)
        if (!step(s, (unsigned char)v->blob[i]))
            return 0;
    return 1;
}

strata_status cons_cursor_new(const strata_constraint *c, cons_cursor **out, strata_error *err)
{
    cons_cursor *k = calloc(1, sizeof *k);
    if (!k)
        return strata_fail(err, STRATA_E_NOMEM, "out of memory");
    k->c = c;
    fsm *m = &k->state;                     /* bottom up: the suffix, the value or call, the prefix */
    uint64_t all = c->n_calls == 64 ? ~0ull : (1ull << c->n_calls) - 1;
    if (c->raws[JF_RAW_SUFFIX].len)
        m->f[m->depth++] = raw_frame(JF_RAW_SUFFIX);
    m->f[m->depth++] = c->n_calls ? (frame){.kind = F_CALL, .mask = all} : (frame){.kind = F_VALUE, .node = c->root};
    if (c->raws[JF_RAW_PREFIX].len)
        m->f[m->depth++] = raw_frame(JF_RAW_PREFIX);
    *out = k;
    return STRATA_OK;
}

void cons_cursor_free(cons_cursor *k)
{
    free(k);
}

int cons_allows(const cons_cursor *k, int32_t token)
{
    if (token < 0 || token >= k->c->vocab->n)
        return 0;
    if (is_end(k->c, token))
        return can_finish(k);
    sim s;
    sim_start(&s, k->c, &k->state);
    return walk(&s, token);
}

void cons_advance(cons_cursor *k, int32_t token)
{
    if (token < 0 || token >= k->c->vocab->n || is_end(k->c, token))
        return;
    sim s;
    sim_start(&s, k->c, &k->state);
    if (walk(&s, token))
        sim_commit(&s, &k->state);
}

/* Inside a string (or a key no property can match) with no escape or character
 * under way, a plain token (vocab->plain) fits as long as its length does: how
 * many characters of a string (bytes of a key) may still come; -1: walk every token. */
static int plain_room(const cons_cursor *k, int *in_key)
{
    const fsm *m = &k->state;
    const frame *f = m->depth && !m->done ? &m->f[m->depth - 1] : NULL;
    if (!f || (f->kind != F_STR && f->kind != F_KEY) || f->st != S_PLAIN || f->need)
        return -1;
    const jf_node *n = &k->c->nodes[f->node];
    *in_key = f->kind == F_KEY;
    if (*in_key)
        return f->mask || n->additional == JF_NONE ? -1 : MAX_KEY - f->count;
    return n->max_len < 0 ? 255 : n->max_len - f->count;
}

/* Whether plain token id fits in room (plain_room). */
static int plain_fits(const strata_vocab *v, int32_t id, int room, int in_key)
{
    return (in_key ? (int)(v->off[id + 1] - v->off[id]) : v->plain[id]) <= room;
}

/* ok2[b2]: the bytes b, b2 are taken from the cursor's state. */
static void second_bytes(const cons_cursor *k, unsigned char b, uint8_t ok2[256])
{
    for (int b2 = 0; b2 < 256; b2++) {
        sim s;
        sim_start(&s, k->c, &k->state);
        ok2[b2] = step(&s, b) && step(&s, (unsigned char)b2);
    }
}

#define BIG_GROUP 1024  /* tokens of one first byte worth a table of second bytes */

int cons_mask(const cons_cursor *k, float *logits)
{
    const strata_constraint *c = k->c;
    const strata_vocab *v = c->vocab;
    int in_key = 0, room = plain_room(k, &in_key);
    float end_logit[JF_MAX_END];
    for (int i = 0; i < c->n_end; i++)
        end_logit[i] = logits[c->end_ids[i]];
    int allowed = 0;
    for (int b = 0; b < 256; b++) {
        sim s;
        sim_start(&s, c, &k->state);
        int first = step(&s, (unsigned char)b);
        int big = first && room < 0 && v->first_at[b + 1] - v->first_at[b] >= BIG_GROUP;
        uint8_t ok2[256];
        if (big)        /* e.g. the 40000 tokens " word" after a comma: most fail at their second byte */
            second_bytes(k, (unsigned char)b, ok2);
        for (int32_t i = v->first_at[b]; i < v->first_at[b + 1]; i++) {
            int32_t id = v->by_first[i];
            sim t;
            int ok;
            if (room >= 0 && v->plain[id])
                ok = plain_fits(v, id, room, in_key);
            else if ((ok = first && (!big || v->off[id + 1] - v->off[id] < 2 ||
                                     ok2[(unsigned char)v->blob[v->off[id] + 1]])))
                sim_start(&t, c, &k->state), ok = walk(&t, id);
            if (ok)
                allowed++;
            else
                logits[id] = -INFINITY;
        }
    }
    for (int i = 0; i < v->n_empty; i++)
        logits[v->empty[i]] = -INFINITY;
    int finish = can_finish(k);
    for (int i = 0; i < c->n_end; i++) {
        int32_t id = c->end_ids[i];
        allowed += finish - (logits[id] != -INFINITY);     /* an end id is allowed just when the text is whole */
        logits[id] = finish ? end_logit[i] : -INFINITY;
    }
    return allowed;
}
