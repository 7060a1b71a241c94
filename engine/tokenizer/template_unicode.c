/*
 * template_unicode.c — Python str semantics over UTF-8: lengths and indexes count
 * code points, whitespace is str.isspace's set, and case mapping is per code point
 * (utf8proc). Templates trim, slice and measure user text, which is often not ASCII.
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
           cat == UTF8PROC_CATEGORY_LT;
}

static int jinja_word_break(int32_t c)
{
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || tpl_is_space(c);
}

tv tpl_case(tpl_arena *a, tv s, int how)
{
    tpl_buf b = {0};
    int prev_cased = 0, first = 1, word_start = 1;
    for (size_t pos = 0; pos < s.u.s.n;) {
        int32_t c = tpl_utf8_next(s.u.s.p, s.u.s.n, &pos), m = c;
        switch (how) {
        case TPL_CASE_LOWER: m = utf8proc_tolower(c); break;
        case TPL_CASE_UPPER: m = utf8proc_toupper(c); break;
        case TPL_CASE_TITLE:
            m = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
            prev_cased = is_cased(c);
            break;
        case TPL_CASE_CAPITALIZE:
            m = first ? utf8proc_totitle(c) : utf8proc_tolower(c);
            break;
        case TPL_CASE_JTITLE:
            if (jinja_word_break(c))
                word_start = 1;
            else {
                m = word_start ? utf8proc_toupper(c) : utf8proc_tolower(c);
                word_start = 0;
            }
            break;
        }
        first = 0;
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t k = utf8proc_encode_char(m, enc);
        tpl_buf_put(a, &b, (const char *)enc, (size_t)k);
    }
    return tv_str(b.p, b.n);
}

ptrdiff_t tpl_find(const char *h, size_t hn, const char *nd, size_t nn, size_t from)
{
    if (nn == 0)
        return from <= hn ? (ptrdiff_t)from : -1;
    for (size_t i = from; i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn))
            return (ptrdiff_t)i;
    return -1;
}
