/*
 * utf8.c — UTF-8 as Rust sees it: strict validation, lossy repair by maximal
 * subparts (String::from_utf8_lossy), char::is_whitespace, regex \w, and GPT-2's
 * byte <-> char map used by the ByteLevel pre-tokenizer and decoder.
 */
#include <utf8proc.h>

#include "tokenizer/util.h"

/* Bytes of the valid char at s[0..n), or 0 when s starts an invalid or incomplete
 * sequence; *consumed is set to the length of the maximal subpart either way. */
static size_t utf8_char(const unsigned char *s, size_t n, size_t *consumed)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    *consumed = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned char lower = i == 1 ? lo : 0x80, upper = i == 1 ? hi : 0xBF;
        if (s[i] < lower || s[i] > upper)
            return 0;
        *consumed = i + 1;
    }
    return need;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, consumed;
    while (i < n) {
        if (u[i] < 0x80) {
            uint64_t w;
            while (i + 8 <= n && (memcpy(&w, u + i, 8), !(w & 0x8080808080808080ULL)))
                i += 8;
            while (i < n && u[i] < 0x80)
                i++;
            continue;
        }
        if (u[i] >= 0xC2 && u[i] <= 0xDF && i + 1 < n && (u[i + 1] & 0xC0) == 0x80) {
            i += 2;             /* the common two-byte char, e.g. GPT-2's Ġ */
            continue;
        }
        size_t k = utf8_char(u + i, n - i, &consumed);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

int tk_utf8_append_lossy(tk_buf *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t good = tk_utf8_valid_prefix(s + i, n - i);
        if (tk_buf_append(b, s + i, good))
            return -1;
        i += good;
        if (i < n) {
            size_t consumed;
            utf8_char((const unsigned char *)s + i, n - i, &consumed);
            if (tk_buf_append(b, "\xEF\xBF\xBD", 3))
                return -1;
            i += consumed;
        }
    }
    return 0;
}

int tk_utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int tk_is_whitespace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* GPT-2's map: printable Latin-1 bytes stand for themselves; the other 68 bytes
 * (0..32, 127..160, 173) take 256, 257, ... in byte order. */
uint32_t tk_byte_to_char(unsigned char b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return (uint32_t)b + 162u;
    if (b == 173)
        return 323;
    return b;
}

int tk_char_to_byte(uint32_t cp)
{
    if (cp >= 256 && cp <= 288)
        return (int)(cp - 256);
    if (cp >= 289 && cp <= 322)
        return (int)(cp - 162);
    if (cp == 323)
        return 173;
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 255 && cp != 173))
        return (int)cp;
    return -1;
}

int tk_is_word_char(uint32_t cp)
{
    if (cp == '_')
        return 1;
    if (cp == 0x200C || cp == 0x200D)       /* Join_Control */
        return 1;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}
