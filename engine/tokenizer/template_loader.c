/*
 * template_loader.c — where a Hugging Face checkpoint keeps its chat template
 * (three places, newest convention first) and which special-token strings
 * transformers passes to it (each may be a string or an AddedToken object).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "tokenizer/template_loader.h"
#include "core/error.h"

static strata_status read_file(const char *path, char **out, size_t *len, strata_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return strata_fail(err, STRATA_E_IO, "%s: cannot open", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *p = realloc(buf, cap);
            if (!p) {
                free(buf);
                fclose(f);
                return strata_fail(err, STRATA_E_NOMEM, "%s: out of memory", path);
            }
            buf = p;
        }
        size_t k = fread(buf + n, 1, cap - n - 1, f);
        n += k;
        if (k == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return strata_fail(err, STRATA_E_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return STRATA_OK;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static strata_status load_json(const char *path, json_t **out, strata_error *err)
{
    STRATA_TRY(json_load_python(path, out, err));   /* as Python wrote it: 1e30-sized ints, NaN */
    if (!json_is_object(*out)) {
        json_decref(*out);
        return strata_fail(err, STRATA_E_FORMAT, "%s: expected a JSON object", path);
    }
    return STRATA_OK;
}

/* The "chat_template" value: a string, or a list of {name, template} (take "default"). */
static const char *template_of(json_t *cfg, size_t *len)
{
    json_t *t = json_object_get(cfg, "chat_template");
    if (json_is_array(t)) {
        size_t i;
        json_t *e, *found = NULL;
        json_array_foreach(t, i, e)
            if (json_is_string(json_object_get(e, "name")) &&
                !strcmp(json_string_value(json_object_get(e, "name")), "default"))
                found = json_object_get(e, "template");
        t = found;
    }
    if (!json_is_string(t))
        return NULL;
    *len = json_string_length(t);
    return json_string_value(t);
}

static strata_status template_from_json(const char *path, json_t *cfg, char **src, size_t *len,
                                        strata_error *err)
{
    const char *t = template_of(cfg, len);
    if (!t)
        return strata_fail(err, STRATA_E_CONFIG, "%s: no usable \"chat_template\"", path);
    *src = malloc(*len + 1);
    if (!*src)
        return strata_fail(err, STRATA_E_NOMEM, "%s: out of memory", path);
    memcpy(*src, t, *len + 1);
    return STRATA_OK;
}

/* A special token's text: a string, or an AddedToken object's "content". */
static json_t *token_text(json_t *v)
{
    if (json_is_object(v))
        v = json_object_get(v, "content");
    return json_is_string(v) ? v : NULL;
}

static char *special_tokens(json_t *cfg)
{
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                       "sep_token", "cls_token", "mask_token"};
    json_t *vars = json_object();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = token_text(json_object_get(cfg, keys[i]));
        if (v)
            json_object_set(vars, keys[i], v);
    }
    json_t *extra = json_object_get(cfg, "additional_special_tokens"), *e;
    size_t i;
    if (json_is_array(extra)) { /* part of transformers' special_tokens_map too */
        json_t *list = json_array();
        json_array_foreach(extra, i, e)
            if (token_text(e))
                json_array_append(list, token_text(e));
        json_object_set_new(vars, "additional_special_tokens", list);
    }
    char *text = json_dumps(vars, JSON_COMPACT);
    json_decref(vars);
    return text;
}

strata_status tpl_load_source(const char *path, char **src, size_t *len, char **defaults_json,
                              strata_error *err)
{
    struct stat st;
    *src = NULL;
    *defaults_json = NULL;
    if (stat(path, &st) != 0)
        return strata_fail(err, STRATA_E_IO, "%s: no such file or directory", path);
    if (!S_ISDIR(st.st_mode))
        return read_file(path, src, len, err);
    char file[4096];
    json_t *cfg = NULL;
    snprintf(file, sizeof file, "%s/tokenizer_config.json", path);
    if (exists(file)) {
        STRATA_TRY(load_json(file, &cfg, err));
        *defaults_json = special_tokens(cfg);
    }
    strata_status s;
    snprintf(file, sizeof file, "%s/chat_template.jinja", path);
    if (exists(file))
        s = read_file(file, src, len, err);
    else {
        snprintf(file, sizeof file, "%s/chat_template.json", path);
        if (exists(file)) {
            json_t *ct;
            s = load_json(file, &ct, err);
            if (s == STRATA_OK) {
                s = template_from_json(file, ct, src, len, err);
                json_decref(ct);
            }
        } else if (cfg) {
            snprintf(file, sizeof file, "%s/tokenizer_config.json", path);
            s = template_from_json(file, cfg, src, len, err);
        } else
            s = strata_fail(err, STRATA_E_CONFIG,
                            "%s: no chat template (looked for chat_template.jinja, "
                            "chat_template.json, tokenizer_config.json)", path);
    }
    json_decref(cfg);
    if (s != STRATA_OK) {
        free(*defaults_json);
        *defaults_json = NULL;
    }
    return s;
}
