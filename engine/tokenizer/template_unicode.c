/*
 * template_unicode.c — Python str semantics over UTF-8: lengths and indexes count
 * code points, whitespace is str.isspace's set, case mapping is Python's full mapping
 * (utf8proc plus template_casing.c), substring search is linear (memmem). Templates trim, slice and measure user text, which is often not ASCII.
 */
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/template_internal.h"

int32_t tpl_utf8_next(const char *s, size_t n, size_t *pos)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + *pos,
                                          (utf8proc_ssize_t)(n - *pos), &c);
    if (k <= 0) { /* invalid UTF-8: take the byte as it is */
        c = (unsigned char)s[*pos];
        k = 1;
    }
    *pos += (size_t)k;
    return c;
}

size_t tpl_utf8_len(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t pos = 0; pos < n; count++)
        tpl_utf8_next(s, n, &pos);
    return count;
}

size_t tpl_utf8_offset(const char *s, size_t n, size_t cp)
{
    size_t pos = 0;
    while (cp-- && pos < n)
        tpl_utf8_next(s, n, &pos);
    return pos;
}

int tpl_is_space(int32_t c)
{
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

int tpl_is_alnum(int32_t c)
{
    if (c < 128)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    int cat = utf8proc_category(c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

/* Digits that are not Nd (superscripts, circled digits, ...): Numeric_Type=Digit. */
static const int32_t other_digits[][2] = {
    {0x00B2, 0x00B3},
    {0x00B9, 0x00B9},
    {0x1369, 0x1371},
    {0x19DA, 0x19DA},
    {0x2070, 0x2070},
    {0x2074, 0x2079},
    {0x2080, 0x2089},
    {0x2460, 0x2468},
    {0x2474, 0x247C},
    {0x2488, 0x2490},
    {0x24EA, 0x24EA},
    {0x24F5, 0x24FD},
    {0x24FF, 0x24FF},
    {0x2776, 0x277E},
    {0x2780, 0x2788},
    {0x278A, 0x2792},
    {0x10A40, 0x10A43},
    {0x10E60, 0x10E68},
    {0x11052, 0x1105A},
    {0x1F100, 0x1F10A},
};

int tpl_is_digit(int32_t c)
{
    if (utf8proc_category(c) == UTF8PROC_CATEGORY_ND)
        return 1;
    for (size_t i = 0; i < sizeof other_digits / sizeof other_digits[0]; i++)
        if (c >= other_digits[i][0] && c <= other_digits[i][1])
            return 1;
    return 0;
}

int tpl_is_alpha(int32_t c)
{
    int cat = utf8proc_category(c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

static int in_set(int32_t c, const char *chars, size_t nchars)
{
    if (!chars)
        return tpl_is_space(c);
    for (size_t pos = 0; pos < nchars;)
        if (tpl_utf8_next(chars, nchars, &pos) == c)
            return 1;
    return 0;
}

/* Start of the code point that ends at byte end. */
static size_t prev_start(const char *s, size_t end)
{
    size_t p = end - 1;
    while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80 && end - p < 4)
        p--;
    return p;
}

tv tpl_strip(tv s, const char *chars, size_t nchars, int mode)
{
    const char *p = s.u.s.p;
    size_t begin = 0, end = s.u.s.n;
    if (mode & 1)
        while (begin < end) {
            size_t next = begin;
            if (!in_set(tpl_utf8_next(p, end, &next), chars, nchars))
                break;
            begin = next;
        }
    if (mode & 2)
        while (end > begin) {
            size_t start = prev_start(p, end), q = start;
            if (!in_set(tpl_utf8_next(p, end, &q), chars, nchars))
                break;
            end = start;
        }
    return tv_str(p + begin, end - begin);
}

static int is_cased(int32_t c)
{
    int cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
           cat == UTF8PROC_CATEGORY_LT || tpl_is_other_cased(c);
}

static int jinja_word_break(int32_t c)
{
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || tpl_is_space(c);
}

/* Append c mapped to lower, title or upper case, with Python's full mappings. */
static void put_cased(tpl_arena *a, tpl_buf *b, int32_t c, int how)
{
    const char *special = tpl_special_case(c, how);
    if (special) {
        tpl_buf_put(a, b, special, strlen(special));
        return;
    }
    int32_t m = how == TPL_CASE_LOWER ? utf8proc_tolower(c)
              : how == TPL_CASE_TITLE ? utf8proc_totitle(c) : utf8proc_toupper(c);
    utf8proc_uint8_t enc[4];
    utf8proc_ssize_t k = utf8proc_encode_char(m, enc);
    tpl_buf_put(a, b, (const char *)enc, (size_t)k);
}

tv tpl_case(tpl_arena *a, tv s, int how)
{
    tpl_buf b = {0};
    int prev_cased = 0, first = 1, word_start = 1;
    for (size_t pos = 0; pos < s.u.s.n;) {
        size_t start = pos;
        int32_t c = tpl_utf8_next(s.u.s.p, s.u.s.n, &pos), to = TPL_CASE_LOWER;
        switch (how) {
        case TPL_CASE_UPPER: to = TPL_CASE_UPPER; break;
        case TPL_CASE_TITLE: /* str.title: upper after an uncased character */
            to = prev_cased ? TPL_CASE_LOWER : TPL_CASE_TITLE;
            prev_cased = is_cased(c);
            break;
        case TPL_CASE_CAPITALIZE: to = first ? TPL_CASE_TITLE : TPL_CASE_LOWER; break;
        case TPL_CASE_JTITLE: /* Jinja's |title: upper at each word start */
            if (jinja_word_break(c)) {
                word_start = 1;
                tpl_buf_put(a, &b, s.u.s.p + start, pos - start);
                continue;
            }
            to = word_start ? TPL_CASE_UPPER : TPL_CASE_LOWER;
            word_start = 0;
            break;
        }
        first = 0;
        put_cased(a, &b, c, to);
    }
    return tv_str(b.p, b.n);
}

ptrdiff_t tpl_find(const char *h, size_t hn, const char *nd, size_t nn, size_t from)
{
    if (from > hn)
        return -1;
    const char *f = memmem(h + from, hn - from, nd, nn); /* linear time in glibc */
    return f ? f - h : -1;
}

/* The byte-reversed copy of s: searching it forward searches s from the end. */
char *tpl_reversed(tpl_arena *a, const char *s, size_t n)
{
    char *r = tpl_alloc(a, n + 1);
    for (size_t i = 0; i < n; i++)
        r[i] = s[n - 1 - i];
    return r;
}
