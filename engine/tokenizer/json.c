/*
 * json.c — the in-place JSON reader behind tokenizer.json loading (see json.h).
 * Values being built sit on a growable stack; when an array or object closes, its
 * items move into the arena as one contiguous run.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json.h"
#include "tokenizer/util.h"

#define TJ_MAX_DEPTH 256
#define TJ_BLOCK_VALUES ((size_t)1 << 17)   /* 2 MB: one huge page where allowed */

typedef struct block {
    struct block *next;
    size_t used, cap;
    tj_value values[];
} block;

typedef struct parser {
    char *p, *start, *end;
    tj_value *stack;
    size_t sp, cap;
    block *blocks;
    int depth;
    strata_error *err;
} parser;

static strata_status syntax(parser *ps, const char *what)
{
    if (ps->p >= ps->end)
        return strata_fail(ps->err, STRATA_E_FORMAT,
                           "unexpected end of JSON at byte %zu (truncated file?)",
                           (size_t)(ps->end - ps->start));
    return strata_fail(ps->err, STRATA_E_FORMAT, "JSON syntax error at byte %zu: %s",
                       (size_t)(ps->p - ps->start), what);
}

static tj_value *arena_take(parser *ps, size_t n)
{
    block *b = ps->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > TJ_BLOCK_VALUES ? n : TJ_BLOCK_VALUES;
        b = tk_big_alloc(sizeof *b + cap * sizeof(tj_value));
        if (!b)
            return NULL;
        b->next = ps->blocks;
        b->used = 0;
        b->cap = cap;
        ps->blocks = b;
    }
    tj_value *v = b->values + b->used;
    b->used += n;
    return v;
}

static tj_value *push(parser *ps)
{
    if (ps->sp == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 1024;
        tj_value *s = realloc(ps->stack, cap * sizeof *s);
        if (!s)
            return NULL;
        ps->stack = s;
        ps->cap = cap;
    }
    tj_value *v = &ps->stack[ps->sp++];
    memset(v, 0, sizeof *v);
    return v;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static char *put_utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | (cp >> 6));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | (cp >> 12));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | (cp >> 18));
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/* \uXXXX (and a following low surrogate) at ps->p, which points past the 'u'. */
static strata_status unicode_escape(parser *ps, char **w)
{
    unsigned cp, lo;
    if (ps->end - ps->p < 4 || !hex4(ps->p, &cp))
        return syntax(ps, "bad \\u escape");
    ps->p += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return syntax(ps, "lone low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || !hex4(ps->p + 2, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
            return syntax(ps, "lone high surrogate in \\u escape");
        ps->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    *w = put_utf8(*w, cp);
    return STRATA_OK;
}

/* Bytes a string holds as they are: printable ASCII other than '"' and '\\'. */
static inline int plain(unsigned char c)
{
    return (unsigned char)(c - 0x20) < 0x60 && c != '"' && c != '\\';
}

/* The string at ps->p (on its opening quote), decoded in place. */
static strata_status parse_string(parser *ps, tj_value *v)
{
    char *s = ++ps->p, *w = s;
    for (;;) {
        char *r = ps->p;
        for (;;) {
            while (r < ps->end && plain((unsigned char)*r))
                r++;
            if (r >= ps->end || (unsigned char)*r < 0x80)
                break;
            /* a run of non-ASCII bytes must be whole UTF-8 chars */
            char *run = r;
            while (r < ps->end && (unsigned char)*r >= 0x80)
                r++;
            size_t good = tk_utf8_valid_prefix(run, (size_t)(r - run));
            if (good != (size_t)(r - run)) {
                ps->p = run + good;
                return syntax(ps, "invalid UTF-8 in string");
            }
        }
        size_t run = (size_t)(r - ps->p);
        if (w != ps->p)
            memmove(w, ps->p, run);
        w += run;
        ps->p = r;
        if (r >= ps->end)
            return syntax(ps, "unterminated string");
        if (*r == '"')
            break;
        if ((unsigned char)*r < 0x20)
            return syntax(ps, "control character in string");
        if (++ps->p >= ps->end)
            return syntax(ps, "unterminated escape");
        char c = *ps->p++;
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': STRATA_TRY(unicode_escape(ps, &w)); break;
        default: ps->p--; return syntax(ps, "bad escape");
        }
    }
    ps->p++;                    /* closing quote */
    *w = '\0';                  /* safe: w <= position of the closing quote */
    if ((size_t)(w - s) > UINT32_MAX)
        return syntax(ps, "string too long");
    v->kind = TJ_STRING;
    v->n = (uint32_t)(w - s);
    v->u.str = s;
    return STRATA_OK;
}

static strata_status parse_number(parser *ps, tj_value *v)
{
    char *q = ps->p;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9')
        return syntax(ps, "unexpected character");
    /* fast path for the small non-negative integers that ids are */
    uint64_t u = 0;
    char *d = ps->p;
    while (d < ps->end && d - ps->p < 15 && *d >= '0' && *d <= '9')
        u = u * 10 + (uint64_t)(*d++ - '0');
    if (d > ps->p && d < ps->end && *d != '.' && *d != 'e' && *d != 'E' && (*d < '0' || *d > '9') &&
        !(ps->p[0] == '0' && d - ps->p > 1)) {
        v->kind = TJ_NUMBER;
        v->u.num = (double)u;
        ps->p = d;
        return STRATA_OK;
    }
    char *endp;
    v->u.num = strtod(ps->p, &endp);
    if (endp == ps->p || endp > ps->end)
        return syntax(ps, "bad number");
    v->kind = TJ_NUMBER;
    ps->p = endp;
    return STRATA_OK;
}

static strata_status parse_literal(parser *ps, tj_value *v, const char *word, tj_kind kind)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
        return syntax(ps, "unexpected character");
    ps->p += n;
    v->kind = kind;
    return STRATA_OK;
}

static strata_status parse_value(parser *ps);

/* Move the top n stack values into the arena as the items of container c. */
static strata_status close_container(parser *ps, size_t base, tj_kind kind)
{
    size_t n = ps->sp - base;
    tj_value *items = NULL;
    if (n) {
        items = arena_take(ps, n);
        if (!items)
            return strata_fail(ps->err, STRATA_E_NOMEM, "out of memory reading JSON");
        memcpy(items, ps->stack + base, n * sizeof *items);
    }
    ps->sp = base;
    tj_value *c = &ps->stack[base - 1];
    c->kind = kind;
    c->n = (uint32_t)(kind == TJ_OBJECT ? n / 2 : n);
    c->u.items = items;
    return STRATA_OK;
}

static strata_status parse_container(parser *ps, int is_object)
{
    char close = is_object ? '}' : ']';
    if (++ps->depth > TJ_MAX_DEPTH)
        return syntax(ps, "nesting too deep");
    ps->p++;
    size_t base = ps->sp;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
    } else {
        for (;;) {
            if (is_object) {
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != '"')
                    return syntax(ps, "expected a string key");
                tj_value *k = push(ps);
                if (!k)
                    return strata_fail(ps->err, STRATA_E_NOMEM, "out of memory reading JSON");
                STRATA_TRY(parse_string(ps, k));
                skip_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':')
                    return syntax(ps, "expected ':'");
                ps->p++;
            }
            STRATA_TRY(parse_value(ps));
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ',') {
                ps->p++;
                continue;
            }
            if (ps->p < ps->end && *ps->p == close) {
                ps->p++;
                break;
            }
            return syntax(ps, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if ((ps->sp - base) / (is_object ? 2 : 1) > UINT32_MAX)
        return syntax(ps, "container too large");
    ps->depth--;
    return close_container(ps, base, is_object ? TJ_OBJECT : TJ_ARRAY);
}

static strata_status parse_value(parser *ps)
{
    skip_ws(ps);
    tj_value *v = push(ps);
    if (!v)
        return strata_fail(ps->err, STRATA_E_NOMEM, "out of memory reading JSON");
    if (ps->p >= ps->end)
        return syntax(ps, "expected a value");
    switch (*ps->p) {
    case '{': return parse_container(ps, 1);
    case '[': return parse_container(ps, 0);
    case '"': return parse_string(ps, v);
    case 't': return parse_literal(ps, v, "true", TJ_TRUE);
    case 'f': return parse_literal(ps, v, "false", TJ_FALSE);
    case 'n': return parse_literal(ps, v, "null", TJ_NULL);
    default: return parse_number(ps, v);
    }
}

static void free_blocks(block *b)
{
    while (b) {
        block *next = b->next;
        tk_big_free(b, sizeof *b + b->cap * sizeof(tj_value));
        b = next;
    }
}

strata_status tj_parse(char *text, size_t len, tj_doc *doc, strata_error *err)
{
    parser ps = {.p = text, .start = text, .end = text + len, .err = err};
    memset(doc, 0, sizeof *doc);
    strata_status s = parse_value(&ps);
    if (s == STRATA_OK) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            s = syntax(&ps, "trailing characters after the JSON value");
    }
    if (s == STRATA_OK)
        doc->root = ps.stack[0];
    free(ps.stack);
    if (s != STRATA_OK) {
        free_blocks(ps.blocks);
        return s;
    }
    doc->blocks = ps.blocks;
    return STRATA_OK;
}

void tj_doc_free(tj_doc *doc)
{
    if (doc) {
        free_blocks(doc->blocks);
        doc->blocks = NULL;
    }
}

const tj_value *tj_get(const tj_value *obj, const char *key)
{
    if (!obj || obj->kind != TJ_OBJECT)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < obj->n; i++) {
        const tj_value *k = &obj->u.items[2 * i];
        if (k->n == klen && !memcmp(k->u.str, key, klen))
            return &obj->u.items[2 * i + 1];
    }
    return NULL;
}

const char *tj_str(const tj_value *v)
{
    return v && v->kind == TJ_STRING ? v->u.str : NULL;
}

int tj_bool(const tj_value *v, int def)
{
    if (!v || v->kind == TJ_NULL || v->kind == TJ_FALSE)
        return v ? 0 : def;
    return v->kind == TJ_TRUE ? 1 : def;
}

const char *tj_kind_name(const tj_value *v)
{
    static const char *names[] = {"null", "false", "true", "number", "string", "array", "object"};
    return v ? names[v->kind] : "missing";
}
