/*
 * tokenizer.c — loading tokenizer.json into a strata_tokenizer: reading the file,
 * parsing it with the in-place JSON reader, building each pipeline stage in
 * dependency order (the normalizer before the added tokens, which are matched in
 * normalized form), the id -> token table, and the accessors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tokenizer/internal.h"

/* The file's bytes plus a NUL, in *out. */
static strata_status read_file(const char *path, char **out, size_t *len, strata_error *err)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f)
        return strata_fail(err, STRATA_E_IO, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > TK_MAX_FILE_BYTES) {
        fclose(f);
        return strata_fail(err, STRATA_E_IO, "%s: not a regular file of at most 1 GiB", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return tk_nomem(err);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return strata_fail(err, STRATA_E_IO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return STRATA_OK;
}

strata_status tk_tokenizer_normalize(const strata_tokenizer *tok, tk_scratch *sc, tk_buf *buf,
                                     strata_error *err)
{
    return tok->normalizer ? tk_normalize(tok->normalizer, sc, buf, err) : STRATA_OK;
}

/* Parse an optional component (null or absent: none) with its parse function. */
#define PARSE_OPTIONAL(root, key, field, parse)                                          \
    do {                                                                                \
        const tj_value *v_ = tj_get(root, key);                                         \
        if (v_ && v_->kind != TJ_NULL) {                                                \
            if (!(field = calloc(1, sizeof *field)))                                    \
                return tk_nomem(err);                                                      \
            STRATA_TRY(parse(v_, field, err));                                          \
        }                                                                               \
    } while (0)

static strata_status build_id_table(strata_tokenizer *tok, strata_error *err)
{
    int32_t max_id = tok->bpe.max_id;
    for (size_t i = 0; i < tok->added.n; i++)
        if (tok->added.tokens[i].id > max_id)
            max_id = tok->added.tokens[i].id;
    tok->n_ids = max_id + 1;
    size_t n = (size_t)tok->n_ids + 1;
    tok->tok_str = calloc(n, sizeof *tok->tok_str);
    tok->tok_len = calloc(n, sizeof *tok->tok_len);
    tok->tok_special = calloc(n, 1);
    if (!tok->tok_str || !tok->tok_len || !tok->tok_special || tk_strmap_init(&tok->added_map, tok->added.n))
        return tk_nomem(err);
    const tj_value *vocab = tj_get(tj_get(&tok->doc.root, "model"), "vocab");   /* checked by tk_bpe_parse */
    for (uint32_t i = 0; i < vocab->n; i++) {
        const tj_value *key = &vocab->u.items[2 * i];
        int32_t id = (int32_t)vocab->u.items[2 * i + 1].u.num;
        tok->tok_str[id] = key->u.str;
        tok->tok_len[id] = key->n;
    }
    for (size_t i = 0; i < tok->added.n; i++) {
        const tk_added_token *t = &tok->added.tokens[i];
        tok->tok_str[t->id] = t->content;
        tok->tok_len[t->id] = (uint32_t)t->len;
        tok->tok_special[t->id] = t->special;
        if (tk_strmap_put(&tok->added_map, t->content, t->len, t->id))
            return tk_nomem(err);
    }
    return STRATA_OK;
}

static strata_status reject_if_set(const tj_value *root, const char *key, strata_error *err)
{
    const tj_value *v = tj_get(root, key);
    if (v && v->kind != TJ_NULL)
        return strata_fail(err, STRATA_E_UNSUPPORTED, "tokenizer.json: \"%s\" is not supported (must be null)", key);
    return STRATA_OK;
}

static strata_status build(strata_tokenizer *tok, strata_error *err)
{
    const tj_value *root = &tok->doc.root;
    if (root->kind != TJ_OBJECT)
        return strata_fail(err, STRATA_E_FORMAT, "tokenizer.json: the top level is not an object");
    STRATA_TRY(reject_if_set(root, "truncation", err));
    STRATA_TRY(reject_if_set(root, "padding", err));
    PARSE_OPTIONAL(root, "normalizer", tok->normalizer, tk_normalizer_parse);
    PARSE_OPTIONAL(root, "pre_tokenizer", tok->pretok, tk_pretok_parse);
    PARSE_OPTIONAL(root, "decoder", tok->decoder, tk_decoder_parse);
    STRATA_TRY(tk_bpe_parse(tj_get(root, "model"), &tok->bpe, err));
    STRATA_TRY(tk_added_parse(tok, tj_get(root, "added_tokens"), err));
    STRATA_TRY(build_id_table(tok, err));
    return tk_post_parse(tj_get(root, "post_processor"), tok, &tok->post, err);
}

/* Takes ownership of json (len bytes + NUL). */
static strata_status load_owned(char *json, size_t len, const char *name, strata_tokenizer **out,
                                strata_error *err)
{
    *out = NULL;
    strata_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        free(json);
        return tk_nomem(err);
    }
    tok->json = json;
    strata_status s = tj_parse(json, len, &tok->doc, err);
    if (s != STRATA_OK)
        strata_fail_prefix(err, s, "%s: ", name);
    else
        s = build(tok, err);
    if (s != STRATA_OK) {
        strata_tokenizer_free(tok);
        return s;
    }
    tj_doc_free(&tok->doc);     /* the built stages keep only strings, which live in json */
    *out = tok;
    return STRATA_OK;
}

strata_status strata_tokenizer_load_json(const char *json, size_t len, strata_tokenizer **out,
                                         strata_error *err)
{
    if (!out || (!json && len))
        return strata_fail(err, STRATA_E_INVALID, "strata_tokenizer_load_json: NULL argument");
    *out = NULL;
    if (len > TK_MAX_FILE_BYTES)
        return strata_fail(err, STRATA_E_LIMIT, "tokenizer.json: larger than 1 GiB");
    char *copy = malloc(len + 1);
    if (!copy)
        return tk_nomem(err);
    if (len)
        memcpy(copy, json, len);
    copy[len] = '\0';
    return load_owned(copy, len, "tokenizer.json", out, err);
}

strata_status strata_tokenizer_load(const char *path, strata_tokenizer **out, strata_error *err)
{
    if (!path || !out)
        return strata_fail(err, STRATA_E_INVALID, "strata_tokenizer_load: NULL argument");
    *out = NULL;
    struct stat st;
    char file[4096];
    if (!stat(path, &st) && S_ISDIR(st.st_mode)) {
        if ((size_t)snprintf(file, sizeof file, "%s/tokenizer.json", path) >= sizeof file)
            return strata_fail(err, STRATA_E_INVALID, "%s: path too long", path);
    } else if ((size_t)snprintf(file, sizeof file, "%s", path) >= sizeof file) {
        return strata_fail(err, STRATA_E_INVALID, "%s: path too long", path);
    }
    char *json = NULL;
    size_t len = 0;
    STRATA_TRY(read_file(file, &json, &len, err));
    return load_owned(json, len, file, out, err);
}

void strata_tokenizer_free(strata_tokenizer *tok)
{
    if (!tok)
        return;
    tk_normalizer_free(tok->normalizer);
    free(tok->normalizer);
    tk_pretok_free(tok->pretok);
    free(tok->pretok);
    tk_decoder_free(tok->decoder);
    free(tok->decoder);
    tk_post_free(&tok->post);
    tk_bpe_free(&tok->bpe);
    tk_added_free(&tok->added);
    tk_strmap_free(&tok->added_map);
    free(tok->tok_str);
    free(tok->tok_len);
    free(tok->tok_special);
    tj_doc_free(&tok->doc);
    free(tok->json);
    free(tok);
}

int32_t strata_tokenizer_vocab_size(const strata_tokenizer *tok)
{
    return tok ? tok->n_ids : 0;
}

const char *strata_tokenizer_id_to_token(const strata_tokenizer *tok, int32_t id, size_t *len)
{
    if (!tok || id < 0 || id >= tok->n_ids || !tok->tok_str[id])
        return NULL;
    if (len)
        *len = tok->tok_len[id];
    return tok->tok_str[id];
}

int32_t strata_tokenizer_token_to_id(const strata_tokenizer *tok, const char *token, size_t len)
{
    if (!tok || (!token && len))
        return -1;
    int32_t id = tk_strmap_get(&tok->added_map, token ? token : "", len);
    return id >= 0 ? id : tk_strmap_get(&tok->bpe.vocab, token ? token : "", len);
}

int strata_tokenizer_is_special(const strata_tokenizer *tok, int32_t id)
{
    return tok && id >= 0 && id < tok->n_ids && tok->tok_special[id];
}
