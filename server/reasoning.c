/*
 * reasoning.c — see reasoning.h. The answer's text is split from scratch on every
 * streamed token (it is short next to a decode step), so the split needs no state
 * but the prompt's: whether the block opened before the answer began.
 */
#include <string.h>

#include "reasoning.h"

#define OPEN "<think>"
#define CLOSE "</think>"

static const char *find(const char *s, size_t len, const char *what)
{
    return memmem(s, len, what, strlen(what));
}

int reasoning_format_parse(const char *name)
{
    return !name ? -1 : !strcmp(name, "none") ? 0 : !strcmp(name, "deepseek") ? 1 : -1;
}

int reasoning_opens(const char *prompt, size_t len)
{
    const char *last = NULL;
    for (const char *p = prompt; (p = find(p, len - (size_t)(p - prompt), OPEN)); p += strlen(OPEN))
        last = p;
    return last && !find(last, len - (size_t)(last - prompt), CLOSE);
}

static int space(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* The longest tail of text that is a proper prefix of tag (it may grow into it). */
static size_t partial_tail(const char *text, size_t len, const char *tag)
{
    size_t n = strlen(tag);
    for (size_t k = n - 1 < len ? n - 1 : len; k > 0; k--)
        if (!memcmp(text + len - k, tag, k))
            return k;
    return 0;
}

void reasoning_split_text(const char *text, size_t len, int opened, int final, reasoning_split *out)
{
    size_t at = 0;
    if (!opened) {
        while (at < len && space(text[at]))
            at++;
        size_t n = strlen(OPEN), rest = len - at;
        if (rest >= n && !memcmp(text + at, OPEN, n)) {
            at += n;
        } else if (!final && rest < n && !memcmp(text + at, OPEN, rest)) {
            *out = (reasoning_split){len, len, len};     /* may still become <think>: wait */
            return;
        } else {
            *out = (reasoning_split){0, 0, 0};           /* no reasoning: all content */
            return;
        }
    }
    const char *close = find(text + at, len - at, CLOSE);
    if (!close) {
        size_t end = final ? len : len - partial_tail(text + at, len - at, CLOSE);
        *out = (reasoning_split){at, end, len};
        return;
    }
    size_t c = (size_t)(close - text) + strlen(CLOSE);
    while (c < len && space(text[c]))
        c++;
    *out = (reasoning_split){at, (size_t)(close - text), c};
}
