/*
 * template_lexer.c — splits template text into tokens the way Jinja's lexer does
 * with the environment transformers uses: trim_blocks (drop the newline after a
 * block or comment tag), lstrip_blocks (drop indentation before one), whitespace
 * control with - and +, comments dropped, and one trailing newline removed
 * (keep_trailing_newline=False). Byte-exact output depends on these rules.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/template_internal.h"

typedef struct lexer {
    tpl_arena *a;
    const char *s;
    size_t n, pos;
    int line;
    int line_starting;     /* the last tag consumed ended with a newline */
    tpl_token *toks;
    size_t ntok, cap;
} lexer;

static _Noreturn void lex_fail(lexer *L, const char *what)
{
    tpl_throw(L->a, STRATA_E_TEMPLATE, "chat template line %d: %s", L->line, what);
}

static tpl_token *emit(lexer *L, tpl_tok_kind kind, const char *p, size_t n)
{
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        tpl_token *t = tpl_alloc(L->a, cap * sizeof *t);
        if (L->ntok)
            memcpy(t, L->toks, L->ntok * sizeof *t);
        L->toks = t;
        L->cap = cap;
    }
    tpl_token *t = &L->toks[L->ntok++];
    t->kind = kind;
    t->line = L->line;
    t->p = p ? tpl_strndup(L->a, p, n) : "";
    t->n = n;
    return t;
}

static void count_lines(lexer *L, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        L->line += L->s[i] == '\n';
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* The text before a tag, after whitespace control and lstrip_blocks. */
static void emit_text(lexer *L, size_t start, size_t end, char kind, char mod)
{
    const char *s = L->s;
    size_t stop = end;
    if (mod == '-') {
        stop = start + tpl_strip(tv_str(s + start, stop - start), NULL, 0, 2).u.s.n; /* rstrip() */
    } else if (mod != '+' && kind != '{') { /* lstrip_blocks: blocks and comments only */
        size_t l = stop;
        while (l > start && s[l - 1] != '\n')
            l--;
        int only_blank = 1;
        for (size_t i = l; i < stop; i++)
            if (s[i] != ' ' && s[i] != '\t')
                only_blank = 0;
        if (only_blank && (l > start || L->line_starting))
            stop = l;
    }
    if (stop > start)
        emit(L, T_TEXT, s + start, stop - start);
    count_lines(L, start, end);
}

/* After a tag's end: '-' strips all whitespace, trim_blocks one newline. */
static void after_tag_end(lexer *L, char mod, int trim_newline)
{
    if (mod == '-') { /* \s*, which is Unicode whitespace in Python's re */
        size_t rest = tpl_strip(tv_str(L->s + L->pos, L->n - L->pos), NULL, 0, 1).u.s.p - L->s;
        count_lines(L, L->pos, rest);
        L->pos = rest;
    } else if (mod != '+' && trim_newline && L->pos < L->n && L->s[L->pos] == '\n') {
        L->pos++;
        L->line++;
    }
    L->line_starting = L->pos > 0 && L->s[L->pos - 1] == '\n';
}

static void lex_comment(lexer *L)
{
    const char *end = strstr(L->s + L->pos, "#}");
    if (!end)
        lex_fail(L, "unterminated comment");
    size_t e = (size_t)(end - L->s);
    char mod = e > L->pos && (L->s[e - 1] == '-' || L->s[e - 1] == '+') ? L->s[e - 1] : 0;
    count_lines(L, L->pos, e);
    L->pos = e + 2;
    after_tag_end(L, mod, 1);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(tpl_arena *a, tpl_buf *b, uint32_t c)
{
    char e[4];
    size_t n;
    if (c < 0x80) { e[0] = (char)c; n = 1; }
    else if (c < 0x800) { e[0] = (char)(0xC0 | c >> 6); e[1] = (char)(0x80 | (c & 63)); n = 2; }
    else if (c < 0x10000) {
        e[0] = (char)(0xE0 | c >> 12); e[1] = (char)(0x80 | (c >> 6 & 63));
        e[2] = (char)(0x80 | (c & 63)); n = 3;
    } else {
        e[0] = (char)(0xF0 | c >> 18); e[1] = (char)(0x80 | (c >> 12 & 63));
        e[2] = (char)(0x80 | (c >> 6 & 63)); e[3] = (char)(0x80 | (c & 63)); n = 4;
    }
    tpl_buf_put(a, b, e, n);
}

/* A string literal, decoded as Python's unicode-escape does. */
static void lex_string(lexer *L)
{
    char q = L->s[L->pos];
    size_t i = L->pos + 1;
    int line = L->line;
    tpl_buf b = {0};
    for (;;) {
        if (i >= L->n)
            lex_fail(L, "unterminated string literal");
        char c = L->s[i];
        if (c == q)
            break;
        if (c != '\\' || i + 1 >= L->n) {
            L->line += c == '\n';
            tpl_buf_putc(L->a, &b, c);
            i++;
            continue;
        }
        char e = L->s[i + 1];
        i += 2;
        const char *simple = strchr("n\nt\tr\r\\\\''\"\"a\ab\bf\fv\v", e);
        if (e && simple && (simple - "n\nt\tr\r\\\\''\"\"a\ab\bf\fv\v") % 2 == 0) {
            tpl_buf_putc(L->a, &b, simple[1]);
        } else if (e == '\n') {
            L->line++; /* line continuation */
        } else if (e == 'x' || e == 'u' || e == 'U') {
            int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0;
            for (int k = 0; k < digits; k++) {
                int h = i < L->n ? hexval(L->s[i]) : -1;
                if (h < 0)
                    lex_fail(L, "invalid escape in string literal");
                v = v * 16 + (uint32_t)h;
                i++;
            }
            if (v > 0x10FFFF)
                lex_fail(L, "invalid escape in string literal");
            put_utf8(L->a, &b, v);
        } else if (e >= '0' && e <= '7') {
            uint32_t v = (uint32_t)(e - '0');
            for (int k = 0; k < 2 && i < L->n && L->s[i] >= '0' && L->s[i] <= '7'; k++)
                v = v * 8 + (uint32_t)(L->s[i++] - '0');
            put_utf8(L->a, &b, v);
        } else { /* unknown escapes keep their backslash */
            tpl_buf_putc(L->a, &b, '\\');
            i--;
        }
    }
    tpl_token *t = emit(L, T_STRING, b.p, b.n);
    t->line = line;
    L->pos = i + 1;
}

static void lex_number(lexer *L)
{
    const char *s = L->s;
    size_t i = L->pos;
    int is_float = 0;
    char digits[128];
    size_t nd = 0;
    for (;;) {
        while (i < L->n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) {
            if (s[i] != '_' && nd < sizeof digits - 1)
                digits[nd++] = s[i];
            i++;
        }
        if (!is_float && i + 1 < L->n && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
            is_float = 1;
            digits[nd++] = s[i++];
            continue;
        }
        break;
    }
    if (i < L->n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < L->n && s[j] >= '0' && s[j] <= '9') {
            is_float = 1;
            while (i < j && nd < sizeof digits - 1)
                digits[nd++] = s[i++];
            while (i < L->n && s[i] >= '0' && s[i] <= '9' && nd < sizeof digits - 1)
                digits[nd++] = s[i++];
        }
    }
    digits[nd] = '\0';
    tpl_token *t = emit(L, is_float ? T_FLOAT : T_INT, s + L->pos, i - L->pos);
    if (is_float)
        t->f = strtod(digits, NULL);
    else {
        errno = 0;
        t->i = strtoll(digits, NULL, 10);
        if (errno == ERANGE)
            lex_fail(L, "integer literal too large");
    }
    L->pos = i;
}

static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};

static void lex_operator(lexer *L, int *depth)
{
    const char *s = L->s + L->pos;
    for (size_t k = 0; k < sizeof ops2 / sizeof ops2[0]; k++)
        if (L->pos + 1 < L->n && s[0] == ops2[k][0] && s[1] == ops2[k][1]) {
            emit(L, T_OP, s, 2);
            L->pos += 2;
            return;
        }
    if (!strchr("+-*/%~<>=()[]{},.:|", s[0]) || !s[0]) {
        char msg[64];
        snprintf(msg, sizeof msg, "unexpected character '%c'", s[0]);
        lex_fail(L, msg);
    }
    if (strchr("([{", s[0]))
        ++*depth;
    else if (strchr(")]}", s[0]) && *depth > 0)
        --*depth;
    emit(L, T_OP, s, 1);
    L->pos++;
}

/* Tokens inside {% %} or {{ }}, up to and including the closing delimiter. */
static void lex_tag(lexer *L, int is_block)
{
    const char *close = is_block ? "%}" : "}}";
    int depth = 0;
    for (;;) {
        while (L->pos < L->n && is_ws(L->s[L->pos]))
            L->line += L->s[L->pos++] == '\n';
        if (L->pos >= L->n)
            lex_fail(L, is_block ? "unexpected end of template, expected '%}'"
                                 : "unexpected end of template, expected '}}'");
        const char *s = L->s + L->pos;
        if (depth == 0) {
            char mod = (s[0] == '-' || (s[0] == '+' && is_block)) ? s[0] : 0;
            if (!strncmp(s + (mod != 0), close, 2)) {
                emit(L, is_block ? T_BLOCK_END : T_VAR_END, NULL, 0);
                L->pos += 2 + (mod != 0);
                after_tag_end(L, mod, is_block);
                return;
            }
        }
        char c = s[0];
        if (c == '\'' || c == '"')
            lex_string(L);
        else if (c >= '0' && c <= '9')
            lex_number(L);
        else if (c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t i = L->pos;
            while (i < L->n && (L->s[i] == '_' || (L->s[i] >= 'a' && L->s[i] <= 'z') ||
                                (L->s[i] >= 'A' && L->s[i] <= 'Z') || (L->s[i] >= '0' && L->s[i] <= '9')))
                i++;
            emit(L, T_NAME, s, i - L->pos);
            L->pos = i;
        } else
            lex_operator(L, &depth);
    }
}

/* Match "\s*word\s*[-+]?%}" at pos; returns the position after it (0: no match)
 * and the modifier before "%}". */
static size_t match_tag_word(lexer *L, size_t pos, const char *word, char *mod)
{
    size_t n = strlen(word);
    while (pos < L->n && is_ws(L->s[pos]))
        pos++;
    if (pos + n > L->n || strncmp(L->s + pos, word, n))
        return 0;
    pos += n;
    while (pos < L->n && is_ws(L->s[pos]))
        pos++;
    *mod = pos < L->n && (L->s[pos] == '-' || L->s[pos] == '+') ? L->s[pos++] : 0;
    return pos + 1 < L->n && L->s[pos] == '%' && L->s[pos + 1] == '}' ? pos + 2 : 0;
}

/* {% raw %}...{% endraw %}: the body is text, tags in it are not interpreted. */
static int lex_raw(lexer *L)
{
    char mod;
    size_t body = match_tag_word(L, L->pos, "raw", &mod);
    if (!body)
        return 0;
    count_lines(L, L->pos, body);
    L->pos = body;
    after_tag_end(L, mod == '-' ? '-' : '+', 0);
    for (size_t i = L->pos; i + 1 < L->n; i++) {
        if (L->s[i] != '{' || L->s[i + 1] != '%')
            continue;
        char begin_mod = i + 2 < L->n && (L->s[i + 2] == '-' || L->s[i + 2] == '+') ? L->s[i + 2] : 0;
        size_t after = match_tag_word(L, i + 2 + (begin_mod != 0), "endraw", &mod);
        if (!after)
            continue;
        emit_text(L, L->pos, i, '%', begin_mod); /* lstrip_blocks applies to endraw */
        count_lines(L, i, after);
        L->pos = after;
        after_tag_end(L, mod, 1);
        return 1;
    }
    lex_fail(L, "unexpected end of template, expected 'endraw'");
}

tpl_token *tpl_lex(tpl_arena *a, const char *src, size_t len, size_t *ntok)
{
    lexer L = {.a = a, .s = src, .n = len, .line = 1, .line_starting = 1};
    while (L.pos < L.n) {
        size_t tag;
        const char *p = src + L.pos;
        for (;;) {
            p = memchr(p, '{', (size_t)(src + len - p));
            if (!p || p + 1 >= src + len || p[1] == '{' || p[1] == '%' || p[1] == '#')
                break;
            p++;
        }
        if (!p || p + 1 >= src + len) {
            emit_text(&L, L.pos, len, '{', 0);
            break;
        }
        tag = (size_t)(p - src);
        char kind = p[1];
        char mod = tag + 2 < len && (p[2] == '-' || (p[2] == '+' && kind != '{')) ? p[2] : 0;
        emit_text(&L, L.pos, tag, kind, mod);
        L.pos = tag + 2 + (mod != 0);
        L.line_starting = 0;
        if (kind == '#')
            lex_comment(&L);
        else if (kind == '%' && lex_raw(&L))
            continue;
        else {
            emit(&L, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, NULL, 0);
            lex_tag(&L, kind == '%');
        }
    }
    emit(&L, T_EOF, NULL, 0);
    *ntok = L.ntok;
    return L.toks;
}
