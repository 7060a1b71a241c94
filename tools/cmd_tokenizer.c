/*
 * cmd_tokenizer.c — `strata tokenize PATH [--add-special] [--parse-special]` (raw text
 * on stdin -> JSON array of ids on stdout) and `strata detokenize PATH
 * [--skip-special]` (JSON array of ids on stdin -> the exact text on stdout).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_STDIN ((size_t)1 << 30)

/* All of stdin; NULL when it exceeds MAX_STDIN or memory runs out. */
static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *b = cap >= MAX_STDIN ? NULL : realloc(buf, 2 * cap + 1);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

/* Parse "PATH [flags...]"; returns the path or NULL after reporting the error. */
static const char *parse_args(const char *cmd, int argc, char **argv, const char *const *flags, int *set, int n_flags)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        int known = 0;
        for (int f = 0; f < n_flags; f++)
            if (!strcmp(argv[i], flags[f]))
                set[f] = known = 1;
        if (known)
            continue;
        if (argv[i][0] == '-' || path) {
            cli_fail(cmd, "unexpected argument '%s'", argv[i]);
            return NULL;
        }
        path = argv[i];
    }
    if (!path)
        cli_fail(cmd, "missing PATH (a tokenizer.json or a directory holding one)");
    return path;
}

int cli_tokenize(int argc, char **argv)
{
    static const char *const flags[] = {"--add-special", "--parse-special"};
    int set[2] = {0, 0};
    const char *path = parse_args("tokenize", argc, argv, flags, set, 2);
    if (!path)
        return 2;
    strata_error err = {0};
    strata_tokenizer *tok;
    if (strata_tokenizer_load(path, &tok, &err))
        return cli_fail_err("tokenize", &err);
    size_t len, n_ids;
    char *text = read_stdin(&len);
    int32_t *ids = NULL;
    int rc = 0;
    unsigned fl = (set[0] ? STRATA_TOKENIZE_ADD_SPECIAL : 0) | (set[1] ? STRATA_TOKENIZE_PARSE_SPECIAL : 0);
    if (!text)
        rc = cli_fail("tokenize", "cannot read stdin (at most 1 GiB)");
    else if (strata_tokenizer_encode(tok, text, len, fl, &ids, &n_ids, &err))
        rc = cli_fail_err("tokenize", &err);
    else {
        putchar('[');
        for (size_t i = 0; i < n_ids; i++)
            printf(i ? ",%d" : "%d", ids[i]);
        puts("]");
    }
    free(ids);
    free(text);
    strata_tokenizer_free(tok);
    return rc;
}

/* The ids of a JSON array of integers. */
static int parse_ids(const char *text, size_t len, int32_t **ids, size_t *n)
{
    json_error_t jerr;
    json_t *arr = json_loadb(text, len, 0, &jerr);
    if (!json_is_array(arr)) {
        json_decref(arr);
        return cli_fail("detokenize", "stdin is not a JSON array of ids");
    }
    *n = json_array_size(arr);
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    for (size_t i = 0; *ids && i < *n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX) {
            json_decref(arr);
            return cli_fail("detokenize", "element %zu is not a token id", i);
        }
        (*ids)[i] = (int32_t)json_integer_value(v);
    }
    json_decref(arr);
    return *ids ? 0 : cli_fail("detokenize", "out of memory");
}

int cli_detokenize(int argc, char **argv)
{
    static const char *const flags[] = {"--skip-special"};
    int set[1] = {0};
    const char *path = parse_args("detokenize", argc, argv, flags, set, 1);
    if (!path)
        return 2;
    strata_error err = {0};
    strata_tokenizer *tok;
    if (strata_tokenizer_load(path, &tok, &err))
        return cli_fail_err("detokenize", &err);
    size_t len, n_ids = 0, out_len;
    char *input = read_stdin(&len), *text = NULL;
    int32_t *ids = NULL;
    int rc = input ? parse_ids(input, len, &ids, &n_ids) : cli_fail("detokenize", "cannot read stdin");
    if (!rc && strata_tokenizer_decode(tok, ids, n_ids, set[0], &text, &out_len, &err))
        rc = cli_fail_err("detokenize", &err);
    else if (!rc)
        fwrite(text, 1, out_len, stdout);
    free(text);
    free(ids);
    free(input);
    strata_tokenizer_free(tok);
    return rc;
}
