/*
 * targets.c — what each fuzz target does with its bytes. Everything that needs the
 * demo model (encode, request bodies, session import) loads it once, from
 * $STRATA_MODEL or models/strata-demo under $STRATA_ROOT (default: the current
 * directory), as strata-server would, with sessions kept in memory only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "constraint/internal.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "parse.h"
#include "reasoning.h"
#include "targets.h"
#include "tool_calls.h"

static const char *model_dir(void)
{
    static char path[4096];
    if (getenv("STRATA_MODEL"))
        return getenv("STRATA_MODEL");
    snprintf(path, sizeof path, "%s/models/strata-demo", getenv("STRATA_ROOT") ? getenv("STRATA_ROOT") : ".");
    return path;
}

static void die(const char *what, const strata_error *err)
{
    fprintf(stderr, "fuzz: %s: %s\n", what, err->message);
    abort();
}

/* The server state the request parsers see: default settings, the demo model. */
static server *fuzz_server(void)
{
    static server srv;
    if (srv.model)
        return &srv;
    char *argv[] = {"fuzz", NULL};
    if (settings_load(&srv.cfg, 1, argv) != 0)
        abort();
    snprintf(srv.cfg.log_level, sizeof srv.cfg.log_level, "error");
    strata_error err;
    char path[4200];
    if (strata_model_load(model_dir(), &srv.model, &err) != STRATA_OK)
        die(model_dir(), &err);
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir());
    if (strata_tokenizer_load(path, &srv.tok, &err) != STRATA_OK)
        die(path, &err);
    if (strata_template_load(model_dir(), &srv.chat, &err) != STRATA_OK)
        srv.chat = NULL;
    srv.tool_syntax = tool_syntax_detect(srv.chat);
    static int32_t eos[1];
    eos[0] = strata_model_get_info(srv.model)->eos_token_id;
    srv.eos_ids = eos;
    srv.n_eos = 1;
    if (strata_vocab_new(srv.tok, strata_model_get_info(srv.model)->vocab_size, &srv.vocab, &err) != STRATA_OK)
        die("token bytes", &err);
    srv.context_limit = strata_model_get_info(srv.model)->max_position_embeddings;
    return &srv;
}

/* ---------------------------------------------------------------- files */

static int safetensors_header(const uint8_t *data, size_t size)
{
    st_file *f;
    strata_error err;
    if (st_open_buffer(data, size, "fuzz", &f, &err) != STRATA_OK)
        return 0;
    for (int i = 0; i < f->n_tensors; i++) /* every tensor must lie inside the buffer */
        if (f->tensors[i].nbytes && ((const uint8_t *)f->tensors[i].data < data ||
                                     (const uint8_t *)f->tensors[i].data + f->tensors[i].nbytes > data + size))
            abort();
    st_close(f);
    return 0;
}

/* config_load reads a path: the bytes go into a memfd, named through /proc. */
static int config_json(const uint8_t *data, size_t size)
{
    int fd = memfd_create("config.json", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        model_config cfg;
        strata_error err;
        config_load(path, &cfg, &err);
    }
    close(fd);
    return 0;
}

static int tokenizer_json(const uint8_t *data, size_t size)
{
    strata_tokenizer *tok;
    strata_error err;
    if (strata_tokenizer_load_json((const char *)data, size, &tok, &err) != STRATA_OK)
        return 0;
    int32_t *ids;
    size_t n;
    if (strata_tokenizer_encode(tok, "In the beginning <s> 123 ü", 27, STRATA_TOKENIZE_ADD_SPECIAL, &ids, &n, &err) ==
        STRATA_OK) {
        char *text;
        size_t len;
        if (strata_tokenizer_decode(tok, ids, n, 0, &text, &len, &err) == STRATA_OK)
            free(text);
        free(ids);
    }
    strata_tokenizer_free(tok);
    return 0;
}

/* Encode with both flag sets, and decode the ids back (streamed and whole). */
static int encode(const uint8_t *data, size_t size)
{
    const strata_tokenizer *tok = fuzz_server()->tok;
    strata_error err;
    for (unsigned flags = 0; flags < 4; flags += 3) {
        int32_t *ids;
        size_t n;
        if (strata_tokenizer_encode(tok, (const char *)data, size, flags, &ids, &n, &err) != STRATA_OK)
            continue;
        char *text;
        size_t len;
        if (strata_tokenizer_decode(tok, ids, n, 0, &text, &len, &err) == STRATA_OK)
            free(text);
        strata_detok *d;
        if (strata_detok_new(tok, 1, &d, &err) == STRATA_OK) {
            const char *piece;
            for (size_t i = 0; i < n; i++)
                strata_detok_push(d, ids[i], &piece, &len, &err);
            strata_detok_flush(d, &piece, &len, &err);
            strata_detok_free(d);
        }
        free(ids);
    }
    return 0;
}

/* A template, a NUL byte, then the variables' JSON (default: a short chat). */
static int chat_template(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *vars = NULL;
    if (nul) {
        vars = strndup((const char *)nul + 1, size - tlen - 1);
        if (!vars)
            return 0;
    }
    strata_template *t;
    strata_error err;
    if (strata_template_parse((const char *)data, tlen, &t, &err) == STRATA_OK) {
        char *out;
        static const char *chat = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                                  "\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello\"}],"
                                  "\"add_generation_prompt\":true,\"bos_token\":\"<s>\"}";
        if (strata_template_render(t, vars ? vars : chat, "2025-06-15T12:00:00", &out, NULL, &err) == STRATA_OK)
            free(out);
        strata_template_free(t);
    }
    free(vars);
    return 0;
}

static int session_import(const uint8_t *data, size_t size)
{
    strata_session *s;
    strata_error err;
    if (strata_session_deserialize(fuzz_server()->model, data, size, &s, &err) != STRATA_OK)
        return 0;
    void *bytes;
    size_t len;
    if (strata_session_serialize(s, &bytes, &len, &err) == STRATA_OK) /* what export would do */
        free(bytes);
    strata_session_free(s);
    return 0;
}

/* ---------------------------------------------------------------- request bodies */

static int body(const uint8_t *data, size_t size, int chat)
{
    gen_params p = {0};
    api_error e = {0};
    completions_parse(fuzz_server(), (const char *)data, size, chat, &p, &e);
    gen_params_free(&p);
    return 0;
}

static int completions_body(const uint8_t *data, size_t size) { return body(data, size, 0); }
static int chat_body(const uint8_t *data, size_t size) { return body(data, size, 1); }

static int activations_body(const uint8_t *data, size_t size)
{
    api_error e = {0};
    activations_parse(fuzz_server(), (const char *)data, size, NULL, &e);
    return 0;
}

/* Create / rewind bodies: the object, its "prompt" and "position". */
static int sessions_body(const uint8_t *data, size_t size)
{
    int bad;
    json_t *b = session_body_object((const char *)data, size, &bad);
    if (!b)
        return 0;
    json_t *prompt = json_object_get(b, "prompt");
    int32_t *ids = NULL;
    int n = 0;
    api_error e = {0};
    if (prompt && session_prompt_parse(fuzz_server(), prompt, &ids, &n, &e))
        free(ids);
    json_decref(b);
    return 0;
}

/* ---------------------------------------------------------------- structured output */

/* A JSON schema (empty: json_object; after "XML:", the parameters of an XML call of
 * function f), a NUL byte, then text: each byte of it the constraint allows is
 * taken as its single-byte token, others skipped; every 16 bytes the whole
 * vocabulary is masked. */
static int json_schema(const uint8_t *data, size_t size)
{
    server *srv = fuzz_server();
    static int32_t byte_token[256];
    static float *logits;
    const strata_vocab *v = srv->vocab;
    if (!logits) {
        logits = malloc(sizeof(float) * (size_t)v->n);
        for (int id = 0; id < v->n; id++)
            if (v->off[id + 1] - v->off[id] == 1)
                byte_token[(unsigned char)v->blob[v->off[id]]] = id;
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t slen = nul ? (size_t)(nul - data) : size;
    strata_constraint *c;
    cons_cursor *k;
    strata_error err;
    int xml = slen >= 4 && !memcmp(data, "XML:", 4);
    const char *schema = (const char *)data + (xml ? 4 : 0);
    size_t schema_len = slen - (xml ? 4 : 0);
    strata_call_schema call = {"f", schema, schema_len};
    strata_status st = xml ? strata_constraint_new_call(v, &call, 1, 1, "<tool_call>\n<function=", ">\n", "\n</tool_call>",
                                                        srv->eos_ids, srv->n_eos, &c, &err)
                           : strata_constraint_new_json(v, slen ? schema : NULL, schema_len, srv->eos_ids, srv->n_eos,
                                                        &c, &err);
    if (st != STRATA_OK)
        return 0;
    if (cons_cursor_new(c, &k, &err) != STRATA_OK)
        die("cursor", &err);
    for (size_t i = slen + 1; i < size; i++) {
        int32_t t = byte_token[data[i]];
        if (cons_allows(k, t))
            cons_advance(k, t);
        if (i % 16 == 0) {
            for (int id = 0; id < v->n; id++)
                logits[id] = 0.0f;
            cons_mask(k, logits);
        }
    }
    cons_allows(k, srv->eos_ids[0]);
    cons_cursor_free(k);
    strata_constraint_free(c);
    return 0;
}

/* A chat answer's reasoning split (server/reasoning.c), checked against its own
 * promise: byte 0's low bit says whether the block opened in the prompt, the rest is
 * the answer; every prefix's split stays within the final one and never shrinks. */
static int reasoning(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    int opened = data[0] & 1;
    reasoning_split fin, prev = {0, 0, 0}, s;
    reasoning_split_text(text, n, opened, 1, &fin);
    if (fin.r_begin > fin.r_end || fin.r_end > fin.c_begin || fin.c_begin > n)
        abort();
    for (size_t len = 0; len <= n; len++) {
        reasoning_split_text(text, len, opened, 0, &s);
        size_t r = s.r_end - s.r_begin, c = len - s.c_begin;
        if (s.r_begin > s.r_end || s.c_begin > len || r > fin.r_end - fin.r_begin || r < prev.r_end - prev.r_begin ||
            (r && s.r_begin != fin.r_begin) || (c && s.c_begin != fin.c_begin))
            abort();
        prev = s;
    }
    return 0;
}

const fuzz_target fuzz_targets[] = {
    {"safetensors", safetensors_header},   {"config", config_json},
    {"tokenizer_json", tokenizer_json},    {"encode", encode},
    {"chat_template", chat_template},      {"completions", completions_body},
    {"chat", chat_body},                   {"activations", activations_body},
    {"sessions", sessions_body},           {"session_import", session_import},
    {"json_schema", json_schema},         {"reasoning", reasoning},
};
const int fuzz_n_targets = (int)(sizeof fuzz_targets / sizeof fuzz_targets[0]);

const fuzz_target *fuzz_target_find(const char *name)
{
    for (int i = 0; i < fuzz_n_targets; i++)
        if (!strcmp(fuzz_targets[i].name, name))
            return &fuzz_targets[i];
    return NULL;
}
