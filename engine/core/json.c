/*
 * json.c — Python-flavoured JSON on top of jansson (see json.h), and whole-file reads.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json.h"

strata_status file_read_all(const char *path, char **out, size_t *len, strata_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strata_fail(err, STRATA_E_IO, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *bigger = realloc(buf, cap * 2 + 1);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf)
        return strata_fail(err, STRATA_E_NOMEM, "%s: out of memory reading the file", path);
    if (failed) {
        free(buf);
        return strata_fail(err, STRATA_E_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return STRATA_OK;
}

/* Digits of an integer literal at text[i] (0 if a fraction or exponent follows:
 * not an integer). */
static size_t integer_digits(const char *text, size_t len, size_t i)
{
    size_t n = 0;
    while (i + n < len && text[i + n] >= '0' && text[i + n] <= '9')
        n++;
    return i + n < len && (text[i + n] == '.' || text[i + n] == 'e' || text[i + n] == 'E') ? 0 : n;
}

/* Copy `text`, replacing Infinity / -Infinity / NaN outside strings, and making
 * integers too big for 64 bits (HF's model_max_length = 1e30 in tokenizer_config.json)
 * reals by a ".0", as jansson refuses them. The longest replacement is 24 bytes for
 * the 8-byte "Infinity", so 3x + 1 always suffices. */
static char *replace_python_literals(const char *text, size_t len, size_t *out_len)
{
    static const char big[] = "1.7976931348623157e308";
    char *out = malloc(len * 3 + 1), *o = out;
    if (!out)
        return NULL;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            *o++ = c;
            if (c == '\\' && i + 1 < len)
                *o++ = text[++i];
            else if (c == '"')
                in_string = 0;
            continue;
        }
        size_t digits = c >= '0' && c <= '9' && (i == 0 || !strchr("0123456789.eE+-", text[i - 1]))
                            ? integer_digits(text, len, i) : 0;
        if (c == '"') {
            in_string = 1;
        } else if (digits > 18) {
            memcpy(o, text + i, digits);
            memcpy(o + digits, ".0", 2);
            o += digits + 2;
            i += digits - 1;
            continue;
        } else if (len - i >= 8 && !memcmp(text + i, "Infinity", 8)) {
            memcpy(o, big, sizeof big - 1);
            o += sizeof big - 1;
            i += 7;
            continue;
        } else if (len - i >= 3 && !memcmp(text + i, "NaN", 3)) {
            memcpy(o, "null", 4);
            o += 4;
            i += 2;
            continue;
        }
        *o++ = c;
    }
    *o = '\0';
    *out_len = (size_t)(o - out);
    return out;
}

strata_status json_parse_python(const char *text, size_t len, const char *what, json_t **out,
                                strata_error *err)
{
    size_t clean_len;
    char *clean = replace_python_literals(text, len, &clean_len);
    if (!clean)
        return strata_fail(err, STRATA_E_NOMEM, "%s: out of memory", what);
    json_error_t jerr;
    json_t *root = json_loadb(clean, clean_len, JSON_ALLOW_NUL, &jerr);
    free(clean);
    if (!root)
        return strata_fail(err, STRATA_E_FORMAT, "%s: invalid JSON at line %d column %d: %s", what,
                           jerr.line, jerr.column, jerr.text);
    *out = root;
    return STRATA_OK;
}

strata_status json_load_python(const char *path, json_t **out, strata_error *err)
{
    char *text;
    size_t len;
    STRATA_TRY(file_read_all(path, &text, &len, err));
    strata_status s = json_parse_python(text, len, path, out, err);
    free(text);
    return s;
}

double json_get_real(const json_t *value)
{
    double v = json_number_value(value);
    if (v >= DBL_MAX)
        return INFINITY;
    if (v <= -DBL_MAX)
        return -INFINITY;
    return v;
}
