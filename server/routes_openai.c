/*
 * routes_openai.c — POST /v1/completions and /v1/chat/completions: parse and
 * validate every field OpenAI's reference lists (plus top_k, min_p,
 * repetition_penalty, ignore_eos), turn prompts or chat messages into token ids,
 * turn response_format and a forced tool_choice into a constraint the sampler
 * follows, and hand the job to jobs.c. Every invalid field is a 400 naming it.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "jobs.h"
#include "parse.h"
#include "reasoning.h"
#include "sessions.h"
#include "tool_calls.h"

#define BAD(param, ...) api_fail(e, 400, param, "invalid_value", __VA_ARGS__)
#define MAX_FORCED_TOOLS 64  /* calls one forced tool_choice may choose among (the constraint's bound) */

/* A number field within [lo, hi]; absent or null keeps *out. */
static int get_number(json_t *body, const char *key, double lo, double hi, float *out, api_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_number(v))
        return BAD(key, "%s must be a number", key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return BAD(key, "%s must be between %g and %g, got %g", key, lo, hi, x);
    *out = (float)x;
    return 1;
}

static int get_int(json_t *body, const char *key, long lo, long hi, int *out, api_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return 1;
    long long x;
    if (!api_integer(v, &x))
        return BAD(key, "%s must be an integer", key);
    if (x < lo || x > hi)
        return BAD(key, "%s must be between %ld and %ld, got %lld", key, lo, hi, x);
    *out = (int)x;
    return 1;
}

static int get_bool(json_t *body, const char *key, int *out, api_error *e)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_boolean(v))
        return BAD(key, "%s must be true or false", key);
    *out = json_is_true(v);
    return 1;
}

static int parse_stop(json_t *body, gen_params *p, api_error *e)
{
    json_t *v = json_object_get(body, "stop");
    if (!v || json_is_null(v))
        return 1;
    json_t *one = json_is_string(v) ? v : NULL;
    if (!one && !json_is_array(v))
        return BAD("stop", "stop must be a string or an array of strings");
    size_t n = one ? 1 : json_array_size(v);
    if (n > MAX_STOP)
        return BAD("stop", "at most %d stop sequences", MAX_STOP);
    for (size_t i = 0; i < n; i++) {
        json_t *s = one ? one : json_array_get(v, i);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 256)
            return BAD("stop", "each stop sequence must be a non-empty string of at most 256 bytes");
        p->stop[p->n_stop++] = strdup(json_string_value(s));
    }
    return 1;
}

static int parse_logit_bias(json_t *body, gen_params *p, int vocab, api_error *e)
{
    json_t *v = json_object_get(body, "logit_bias");
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_object(v) || json_object_size(v) > 1024)
        return BAD("logit_bias", "logit_bias must be an object of at most 1024 token ids");
    size_t n = json_object_size(v);
    p->bias_ids = malloc(sizeof(int32_t) * (n + 1));
    p->bias_values = malloc(sizeof(float) * (n + 1));
    if (!p->bias_ids || !p->bias_values)
        return api_fail(e, 500, NULL, "internal_error", "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        char *end;
        long id = strtol(key, &end, 10);     /* the id as written: digits, no sign, blank or leading zero */
        if (!*key || *end || id < 0 || id >= vocab || *key < '0' || *key > '9' || (*key == '0' && key[1]))
            return BAD("logit_bias", "logit_bias key '%s' is not a token id in [0, %d)", key, vocab);
        if (!json_is_number(val) || !(json_number_value(val) >= -100 && json_number_value(val) <= 100))
            return BAD("logit_bias", "logit_bias values must be numbers in [-100, 100]");
        p->bias_ids[p->sampling.n_bias] = (int32_t)id;
        p->bias_values[p->sampling.n_bias++] = (float)json_number_value(val);
    }
    p->sampling.bias_ids = p->bias_ids;
    p->sampling.bias_values = p->bias_values;
    return 1;
}

static int parse_sampling(json_t *body, gen_params *p, const server *srv, api_error *e)
{
    strata_sampling *s = &p->sampling;
    strata_sampling_default(s);
    json_t *seed = json_object_get(body, "seed");
    if (seed && !json_is_null(seed)) {
        long long x;
        if (!api_integer(seed, &x))
            return BAD("seed", "seed must be an integer");
        s->seed = (uint64_t)x * 0x9e3779b97f4a7c15ULL + 1;
    }
    float top_k = 0;
    int ok = get_number(body, "temperature", 0, 2, &s->temperature, e) &&
             get_number(body, "top_p", 1e-9, 1, &s->top_p, e) && get_number(body, "top_k", -1, 1e9, &top_k, e) &&
             get_number(body, "min_p", 0, 1, &s->min_p, e) &&
             get_number(body, "presence_penalty", -2, 2, &s->presence_penalty, e) &&
             get_number(body, "frequency_penalty", -2, 2, &s->frequency_penalty, e) &&
             get_number(body, "repetition_penalty", 1e-3, 10, &s->repetition_penalty, e) &&
             get_int(body, "n", 1, srv->cfg.max_n, &p->n, e) && get_bool(body, "ignore_eos", &p->ignore_eos, e) &&
             parse_stop(body, p, e) && parse_logit_bias(body, p, strata_model_get_info(srv->model)->vocab_size, e);
    if (ok && top_k != floorf(top_k))
        return BAD("top_k", "top_k must be an integer");
    s->top_k = top_k > 0 ? (int)top_k : 0;
    return ok;
}

/* response_format: text (free), json_object (any JSON object) or json_schema
 * ({"json_schema": {"name", "schema", "strict"}}): a constraint every choice's
 * sampler follows (engine/constraint/). A schema the engine cannot enforce is a 400
 * naming the keyword, never a silent pass. */
static int parse_response_format(json_t *body, const server *srv, gen_params *p, api_error *e)
{
    json_t *rf = json_object_get(body, "response_format");
    if (!rf || json_is_null(rf))
        return 1;
    if (p->constraint)
        return BAD("response_format", "response_format and a forced tool call (tool_choice) exclude each other");
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!json_is_object(rf) || !type)
        return BAD("response_format", "response_format must be an object with a type");
    if (!strcmp(type, "text"))
        return 1;
    int with_schema = !strcmp(type, "json_schema");
    if (!with_schema && strcmp(type, "json_object"))
        return BAD("response_format", "response_format type must be text, json_object or json_schema, not '%s'", type);
    json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (with_schema && !json_is_object(schema))
        return BAD("response_format", "json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
    if (!srv->vocab || !srv->n_eos)
        return BAD("response_format", "structured output needs the model's tokenizer and an end-of-sequence token");
    char *text = with_schema ? json_dumps(schema, JSON_COMPACT) : NULL;
    strata_error err;
    strata_status st = with_schema && !text ? STRATA_E_NOMEM
                                            : strata_constraint_new_json(srv->vocab, text, text ? strlen(text) : 0,
                                                                         srv->eos_ids, srv->n_eos, &p->constraint, &err);
    free(text);
    if (st != STRATA_OK)
        return st == STRATA_E_NOMEM ? api_fail(e, 500, NULL, "internal_error", "out of memory")
                                    : BAD("response_format", "%s", err.message);
    p->sampling.constraint = p->constraint;
    return 1;
}

static int parse_stream(json_t *body, gen_params *p, api_error *e)
{
    if (!get_bool(body, "stream", &p->stream, e))
        return 0;
    json_t *so = json_object_get(body, "stream_options");
    if (!so || json_is_null(so))
        return 1;
    if (!json_is_object(so))
        return BAD("stream_options", "stream_options must be an object");
    if (!p->stream)
        return BAD("stream_options", "stream_options is only allowed when stream is true");
    json_t *iu = json_object_get(so, "include_usage");
    if (iu && !json_is_boolean(iu))
        return BAD("stream_options.include_usage", "include_usage must be true or false");
    p->include_usage = json_is_true(iu);
    return 1;
}

/* ---------------------------------------------------------------- prompts */

static int add_prompt(gen_params *p, int32_t *ids, int n, char *text, api_error *e)
{
    if (p->n_prompts >= MAX_PROMPTS) {
        free(ids);
        free(text);
        return BAD("prompt", "at most %d prompts per request", MAX_PROMPTS);
    }
    p->prompts[p->n_prompts] = ids;
    p->prompt_len[p->n_prompts] = n;
    p->prompt_text[p->n_prompts++] = text;
    if (n == 0)
        return BAD("prompt", "the prompt is empty");
    return 1;
}

static int prompt_from_ids(json_t *arr, gen_params *p, int vocab, api_error *e)
{
    int32_t *ids;
    if (!api_token_ids(arr, vocab, "prompt", &ids, e))
        return 0;
    return add_prompt(p, ids, (int)json_array_size(arr), NULL, e);
}

static int prompt_from_text(const server *srv, const char *text, size_t len, unsigned flags, gen_params *p,
                            api_error *e, int keep_text)
{
    if (!srv->tok)
        return BAD("prompt", "this model has no tokenizer.json: send prompts as token ids");
    int32_t *ids;
    size_t n;
    strata_error err;
    if (strata_tokenizer_encode(srv->tok, text, len, flags, &ids, &n, &err) != STRATA_OK)
        return BAD("prompt", "%s", err.message);
    char *copy = keep_text ? strndup(text, len) : NULL;
    return add_prompt(p, ids, (int)n, copy, e);
}

static int parse_prompt(json_t *body, const server *srv, gen_params *p, api_error *e)
{
    json_t *v = json_object_get(body, "prompt");
    int vocab = strata_model_get_info(srv->model)->vocab_size;
    unsigned flags = STRATA_TOKENIZE_ADD_SPECIAL | STRATA_TOKENIZE_PARSE_SPECIAL;
    if (!v)
        return BAD("prompt", "prompt is required");
    if (json_is_string(v))
        return prompt_from_text(srv, json_string_value(v), json_string_length(v), flags, p, e, 1);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return BAD("prompt", "prompt must be a string, an array of strings, or token ids");
    json_t *first = json_array_get(v, 0);
    if (json_is_integer(first))
        return prompt_from_ids(v, p, vocab, e);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        int ok = json_is_string(item) ? prompt_from_text(srv, json_string_value(item), json_string_length(item), flags, p, e, 1)
                 : json_is_array(item) && json_array_size(item) ? prompt_from_ids(item, p, vocab, e)
                 : BAD("prompt", "prompt[%zu] must be a string or a non-empty array of token ids", i);
        if (!ok)
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- chat */

static int check_messages(json_t *msgs, api_error *e)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return BAD("messages", "messages must be a non-empty array");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        int known = 0;
        for (size_t k = 0; json_is_string(role) && k < 5; k++)
            known |= !strcmp(json_string_value(role), roles[k]);
        if (!json_is_object(m) || !known)
            return BAD("messages", "messages[%zu] needs a role of system, developer, user, assistant or tool", i);
        int assistant = !strcmp(json_string_value(role), "assistant");
        if (content && !json_is_string(content) && !json_is_array(content) && !json_is_null(content))
            return BAD("messages", "messages[%zu].content must be a string, an array of parts or null", i);
        if ((!content || json_is_null(content)) && !(assistant && json_object_get(m, "tool_calls")))
            return BAD("messages", "messages[%zu] has no content (only an assistant turn with tool_calls may omit it)",
                       i);
    }
    return 1;
}

/* An assistant turn's tool_calls carry their arguments as JSON text (OpenAI); chat
 * templates iterate them as a mapping (`arguments|items`), so the text becomes the
 * object it holds. Text that is not a JSON object stays as it is. */
static void arguments_as_objects(json_t *msg)
{
    size_t i;
    json_t *call;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call) {
        json_t *f = json_object_get(call, "function");
        json_t *args = json_object_get(f, "arguments");
        json_t *obj = json_is_string(args) ? json_loads(json_string_value(args), 0, NULL) : NULL;
        if (json_is_object(obj))
            json_object_set(f, "arguments", obj);
        json_decref(obj);
    }
}

/* Flatten list-of-parts content to text (what these text-only models can use), and
 * tool calls' arguments to objects. */
static json_t *messages_for_template(json_t *msgs, api_error *e)
{
    json_t *copy = json_deep_copy(msgs);
    size_t i;
    json_t *m;
    json_array_foreach(copy, i, m) {
        arguments_as_objects(m);
        json_t *content = json_object_get(m, "content");
        if (!json_is_array(content))
            continue;
        strbuf text = {0};
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
            json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
            if (!json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(t)) {
                sb_free(&text);
                json_decref(copy);
                BAD("messages", "messages[%zu].content[%zu]: only text parts are supported", i, k);
                return NULL;
            }
            sb_append(&text, json_string_value(t), json_string_length(t));
        }
        json_object_set_new(m, "content", json_stringn(text.data ? text.data : "", text.len));
        sb_free(&text);
    }
    return copy;
}

/* Whether some user-supplied content contains a special token's text (content may
 * hold U+0000: lengths, never C-string ends). */
static int content_has_special(const server *srv, json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *content = json_object_get(m, "content");
        const char *c = json_string_value(content);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!c || !role || !strcmp(role, "assistant"))
            continue;
        for (int k = 0; k < srv->n_specials; k++)
            if (memmem(c, json_string_length(content), srv->specials[k], strlen(srv->specials[k])))
                return 1;
    }
    return 0;
}

/* Tokenize a rendered chat prompt: template text with special tokens parsed, user
 * content without, so a user cannot type control tokens. When no content contains a
 * special token's text this is one encode of the whole prompt, as transformers does. */
static int encode_chat(const server *srv, const char *text, size_t len, json_t *msgs, gen_params *p, api_error *e)
{
    if (!content_has_special(srv, msgs))
        return prompt_from_text(srv, text, len, STRATA_TOKENIZE_PARSE_SPECIAL, p, e, 0);
    strbuf ids = {0};
    size_t pos = 0, i;
    json_t *m;
    int ok = 1;
    json_array_foreach(msgs, i, m) {
        json_t *content = json_object_get(m, "content");
        const char *c = json_string_value(content);
        size_t clen = json_string_length(content);
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *at = c && clen && strcmp(role, "assistant") ? memmem(text + pos, len - pos, c, clen) : NULL;
        if (!at)
            continue;
        for (int trusted = 1; trusted >= 0 && ok; trusted--) {
            size_t from = trusted ? pos : (size_t)(at - text), to = trusted ? (size_t)(at - text) : from + clen;
            int32_t *part;
            size_t n;
            ok = strata_tokenizer_encode(srv->tok, text + from, to - from, trusted ? STRATA_TOKENIZE_PARSE_SPECIAL : 0,
                                         &part, &n, NULL) == STRATA_OK;
            if (ok)
                sb_append(&ids, (const char *)part, n * sizeof(int32_t));
            if (ok)
                free(part);
        }
        pos = (size_t)(at - text) + clen;
    }
    int32_t *tail;
    size_t n;
    if (ok && strata_tokenizer_encode(srv->tok, text + pos, len - pos, STRATA_TOKENIZE_PARSE_SPECIAL, &tail, &n, NULL) == STRATA_OK) {
        sb_append(&ids, (const char *)tail, n * sizeof(int32_t));
        free(tail);
    } else {
        ok = 0;
    }
    if (!ok || ids.failed) {
        sb_free(&ids);
        return BAD("messages", "the conversation could not be tokenized");
    }
    return add_prompt(p, (int32_t *)ids.data, (int)(ids.len / sizeof(int32_t)), NULL, e);
}

static strata_status render(const server *srv, json_t *vars, int add_generation_prompt, char **out, size_t *len,
                            strata_error *err)
{
    json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt));
    char *text = json_dumps(vars, JSON_COMPACT);
    if (!text) {
        if (err)
            snprintf(err->message, sizeof err->message, "out of memory");
        return STRATA_E_NOMEM;
    }
    strata_status st = strata_template_render(srv->chat, text, NULL, out, len, err);
    free(text);
    return st;
}

/* Where the generation prompt starts: the token length of the conversation rendered
 * without it, when that is a prefix of the prompt (else 0: no such checkpoint). A
 * template that re-renders history differently on the next turn diverges after
 * this point, so a session checkpoint here is what the next turn restores. */
static int history_length(const server *srv, json_t *vars, const gen_params *p, int drop_last)
{
    json_t *msgs = json_object_get(vars, "messages"), *all = json_incref(msgs);
    if (drop_last) {
        json_t *fewer = json_array();
        for (size_t i = 0; i + 1 < json_array_size(msgs); i++)
            json_array_append(fewer, json_array_get(msgs, i));
        json_object_set_new(vars, "messages", fewer);
    }
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n = 0;
    int at = 0;
    if (render(srv, vars, 0, &text, &len, NULL) == STRATA_OK &&
        strata_tokenizer_encode(srv->tok, text, len, STRATA_TOKENIZE_PARSE_SPECIAL, &ids, &n, NULL) == STRATA_OK &&
        (int)n < p->prompt_len[0] && !memcmp(ids, p->prompts[0], n * sizeof *ids))
        at = (int)n;
    json_object_set_new(vars, "messages", all);
    free(text);
    free(ids);
    return at;
}

/* The tools tool_choice forces: the named one, or with "required" any of them. */
static int forced_tools(json_t *tools, json_t *choice, json_t **out, int *n, api_error *e)
{
    const char *want = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
    size_t i;
    json_t *t;
    *n = 0;
    if (json_is_object(choice) && !want)
        return BAD("tool_choice", "tool_choice {\"type\": \"function\"} needs function.name");
    json_array_foreach(tools, i, t) {
        const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (*n < MAX_FORCED_TOOLS && (!want || !strcmp(name, want)))
            out[(*n)++] = t;
    }
    if (!want && json_array_size(tools) > MAX_FORCED_TOOLS)
        return BAD("tool_choice", "tool_choice \"required\" takes at most %d tools", MAX_FORCED_TOOLS);
    return *n ? 1 : BAD("tool_choice", "tool_choice names a function that is not in tools");
}

/* How each syntax writes a call around its name and arguments (tool_calls.h). */
static const struct { const char *prefix, *mid, *suffix; } CALL_TEXT[] = {
    [TOOL_SYNTAX_XML] = {"<tool_call>\n<function=", ">\n", "\n</tool_call>"},
    [TOOL_SYNTAX_JSON_TAG] = {"<tool_call>\n{\"name\": \"", "\", \"arguments\": ", "}\n</tool_call>"},
    [TOOL_SYNTAX_JSON_LIST] = {"<TOOLCALL>[{\"name\": \"", "\", \"arguments\": ", "}]</TOOLCALL>"}};

/* A forced call of one of tools[0..n) as a constraint, written as the template
 * writes calls, with arguments that satisfy the function's parameters. */
static int force_call(const server *srv, json_t **tools, int n, gen_params *p, api_error *e)
{
    if (!srv->vocab || !srv->n_eos || srv->tool_syntax == TOOL_SYNTAX_NONE)
        return BAD("tool_choice", "this model's chat template writes no tool calls, so none can be forced");
    strata_call_schema calls[MAX_FORCED_TOOLS];
    char *texts[MAX_FORCED_TOOLS] = {0};
    for (int i = 0; i < n; i++) {
        json_t *f = json_object_get(tools[i], "function"), *params = json_object_get(f, "parameters");
        texts[i] = json_is_object(params) ? json_dumps(params, JSON_COMPACT) : NULL;
        calls[i] = (strata_call_schema){json_string_value(json_object_get(f, "name")), texts[i],
                                        texts[i] ? strlen(texts[i]) : 0};
    }
    strata_error err;
    tool_syntax s = srv->tool_syntax;
    strata_status st = strata_constraint_new_call(srv->vocab, calls, n, s == TOOL_SYNTAX_XML, CALL_TEXT[s].prefix,
                                                  CALL_TEXT[s].mid, CALL_TEXT[s].suffix, srv->eos_ids, srv->n_eos,
                                                  &p->constraint, &err);
    for (int i = 0; i < n; i++)
        free(texts[i]);
    if (st != STRATA_OK)
        return st == STRATA_E_NOMEM ? api_fail(e, 500, NULL, "internal_error", "out of memory")
                                    : BAD("tools", "the call cannot be enforced: %s", err.message);
    p->sampling.constraint = p->constraint;
    return 1;
}

/* tools (functions only) and tool_choice: with "auto" (the default) and a template
 * that writes calls, the answer reports the calls the model makes (tool_calls.c);
 * "required" (a call of any tool) or a named function forces a call, written in the
 * template's syntax and its parameters' schema (engine/constraint/); "none" renders
 * the tools and reports no calls. */
static int parse_tools(json_t *body, const server *srv, gen_params *p, api_error *e)
{
    json_t *tools = json_object_get(body, "tools"), *choice = json_object_get(body, "tool_choice");
    size_t i;
    json_t *t;
    if (tools && !json_is_null(tools) && !json_is_array(tools))
        return BAD("tools", "tools must be an array");
    json_array_foreach(tools, i, t) {
        json_t *f = json_object_get(t, "function");
        if (!json_is_object(t) || !json_is_string(json_object_get(t, "type")) ||
            strcmp(json_string_value(json_object_get(t, "type")), "function") ||
            !json_is_string(json_object_get(f, "name")))
            return BAD("tools", "tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\": ...}}", i);
    }
    const char *how = json_is_string(choice) ? json_string_value(choice) : NULL;
    const char *type = json_string_value(json_object_get(choice, "type"));
    int named = json_is_object(choice) && type && !strcmp(type, "function");
    int forced = named || (how && !strcmp(how, "required"));
    if (choice && !json_is_null(choice) && !forced && (!how || (strcmp(how, "auto") && strcmp(how, "none"))))
        return BAD("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    if (forced && !json_array_size(tools))
        return BAD("tool_choice", "tool_choice forces a call, but there are no tools");
    json_t *chosen[MAX_FORCED_TOOLS];
    int n_chosen;
    if (forced && (!forced_tools(tools, choice, chosen, &n_chosen, e) || !force_call(srv, chosen, n_chosen, p, e)))
        return 0;
    if (json_array_size(tools) && (!how || strcmp(how, "none")) && srv->tool_syntax != TOOL_SYNTAX_NONE)
        p->tools = json_incref(tools);
    int parallel = 1;
    if (!get_bool(body, "parallel_tool_calls", &parallel, e))
        return 0;
    p->one_call = !parallel;
    return 1;
}

/* reasoning_format: "none" (thinking stays in the content) or "deepseek" (apart, in
 * reasoning_content); the server's --reasoning-format by default. An answer under a
 * response_format or a forced call is that JSON or call alone: nothing to split. */
static int parse_reasoning(json_t *body, const server *srv, gen_params *p, api_error *e)
{
    json_t *v = json_object_get(body, "reasoning_format");
    p->reasoning = reasoning_format_parse(!v || json_is_null(v) ? srv->cfg.reasoning_format : json_string_value(v));
    return p->reasoning >= 0 ? 1 : BAD("reasoning_format", "reasoning_format must be \"none\" or \"deepseek\"");
}

static int parse_chat(json_t *body, const server *srv, gen_params *p, api_error *e)
{
    json_t *msgs = json_object_get(body, "messages");
    if (!srv->chat || !srv->tok)
        return api_fail(e, 400, "messages", "no_chat_template", "this model has no chat template");
    if (!check_messages(msgs, e) || !parse_tools(body, srv, p, e) || !parse_reasoning(body, srv, p, e))
        return 0;
    json_t *flat = messages_for_template(msgs, e);
    if (!flat)
        return 0;
    json_t *vars = json_object();
    json_t *kwargs = json_object_get(body, "chat_template_kwargs");
    if (json_is_object(kwargs))
        json_object_update(vars, kwargs);
    if (p->constraint && !json_object_get(vars, "enable_thinking"))
        json_object_set_new(vars, "enable_thinking", json_false()); /* a forced call comes first, as history shows */
    json_object_set(vars, "messages", flat);
    json_t *tools = json_object_get(body, "tools");
    if (json_is_array(tools))
        json_object_set(vars, "tools", tools);
    json_t *agp = json_object_get(body, "add_generation_prompt");
    char *out = NULL;
    size_t len = 0;
    strata_error err;
    int ok = render(srv, vars, !agp || json_is_true(agp), &out, &len, &err) == STRATA_OK
                 ? encode_chat(srv, out, len, flat, p, e)
                 : api_fail(e, 400, "messages", "invalid_messages", "chat template: %s", err.message);
    p->think_open = ok && p->reasoning && reasoning_opens(out, len);
    free(out);
    if (ok && (*p->session_id || srv->prefix)) {
        p->checkpoint_at = history_length(srv, vars, p, 0);
        p->checkpoint_at2 = json_array_size(flat) > 1 ? history_length(srv, vars, p, 1) : 0;
    }
    json_decref(vars);
    json_decref(flat);
    return ok;
}

/* ---------------------------------------------------------------- the route */

int completions_parse(server *srv, const char *data, size_t len, int chat, gen_params *p, api_error *e)
{
    json_error_t jerr;
    json_t *body = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return api_fail(e, 400, NULL, "invalid_json", "the body must be a JSON object: %s",
                    body ? "got another JSON value" : jerr.text);
    }
    json_t *model = json_object_get(body, "model");
    json_t *user = json_object_get(body, "user");
    int ok = api_nul_only_in(body, "prompt", "messages", "content", e);
    if (ok && model && !json_is_string(model))
        ok = BAD("model", "model must be a string");
    else if (ok && user && !json_is_string(user) && !json_is_null(user))
        ok = BAD("user", "user must be a string");
    else if (ok && model && strcmp(json_string_value(model), srv->cfg.model_name))
        ok = api_fail(e, 404, "model", "model_not_found", "the model '%s' does not exist; this server serves '%s'",
                  json_string_value(model), srv->cfg.model_name);
    json_t *sess = json_object_get(body, "session");
    if (ok && sess && !json_is_null(sess)) {
        if (!json_is_string(sess) || !session_id_valid(json_string_value(sess)))
            ok = BAD("session", "session must be a session id");
        else
            snprintf(p->session_id, sizeof p->session_id, "%s", json_string_value(sess));
    }
    const char *max_field = "max_tokens";     /* the field max_tokens came from */
    p->chat = chat;
    p->n = 1;
    p->logprobs = -1;
    p->max_tokens = chat ? -1 : 16;
    ok = ok && parse_sampling(body, p, srv, e) && parse_stream(body, p, e);
    if (ok && chat) {
        int lp = 0, top = 0;
        /* max_completion_tokens replaces the deprecated max_tokens: it wins when both come */
        json_t *mct = json_object_get(body, "max_completion_tokens");
        if (mct && !json_is_null(mct))     /* then max_tokens, deprecated, is not read at all */
            max_field = "max_completion_tokens";
        ok = get_bool(body, "logprobs", &lp, e) && get_int(body, "top_logprobs", 0, 20, &top, e) &&
             get_int(body, max_field, 0, srv->cfg.max_tokens_limit, &p->max_tokens, e) && parse_chat(body, srv, p, e);
        if (ok && top && !lp)
            ok = BAD("top_logprobs", "top_logprobs needs logprobs: true");
        p->logprobs = lp ? top : -1;
    } else if (ok) {
        json_t *lp = json_object_get(body, "logprobs");
        long long x = -1;
        if (lp && !json_is_null(lp) && (!api_integer(lp, &x) || x < 0 || x > 5))
            ok = BAD("logprobs", "logprobs must be an integer between 0 and 5");
        else if (lp && !json_is_null(lp))
            p->logprobs = (int)x;
        ok = ok && get_bool(body, "echo", &p->echo, e) &&
             get_int(body, "max_tokens", 0, srv->cfg.max_tokens_limit, &p->max_tokens, e) && parse_prompt(body, srv, p, e);
    }
    if (ok) { /* structured output; steering and captures (routes_activations.c) */
        if (!parse_response_format(body, srv, p, e) ||
            !generation_hooks_parse(srv, body, p->prompt_len, p->n_prompts, p->n, p->iv, &p->capture, e))
            ok = 0;
        else if (*p->session_id && (p->iv[0] || p->capture))
            ok = BAD("session", "interventions and activations on a session are not supported yet");
        else if (*p->session_id && p->echo && p->logprobs >= 0)
            ok = BAD("echo", "echo with logprobs scores the whole prompt, which a session has partly processed "
                             "already; ask without session");
        if (p->constraint)  /* the answer is that JSON or call alone */
            p->reasoning = p->think_open = 0;
    }
    json_decref(body);
    if (!ok)
        return 0;
    p->sampling.top_logprobs = p->logprobs > 0 ? p->logprobs : 0;
    p->sampling.skip_logprob = p->logprobs < 0;
    int longest = 0;
    for (int i = 0; i < p->n_prompts; i++)
        longest = p->prompt_len[i] > longest ? p->prompt_len[i] : longest;
    const char *prompt_field = chat ? "messages" : "prompt";
    if (longest > srv->context_limit || (longest == srv->context_limit && p->max_tokens != 0))
        return api_fail(e, 400, prompt_field, "context_length_exceeded",
                        "this model's context is %d tokens and the prompt alone has %d, leaving none to generate",
                        srv->context_limit, longest);
    if (p->max_tokens < 0) {
        int room = srv->context_limit - longest;
        p->max_tokens = room < srv->cfg.max_tokens_limit ? room : srv->cfg.max_tokens_limit;
    }
    if (p->max_tokens == 0 && !p->echo)
        return BAD(max_field, "%s must be at least 1 (0 only with echo, to score the prompt)", max_field);
    if (longest + p->max_tokens > srv->context_limit)
        return api_fail(e, 400, max_field, "context_length_exceeded",
                    "this model's context is %d tokens; the prompt has %d and %s asks for %d more",
                    srv->context_limit, longest, max_field, p->max_tokens);
    return !p->capture || generation_capture_fits(srv, p->capture, longest + p->max_tokens, p->max_tokens, e);
}

enum MHD_Result route_completions(http_req *r, int chat)
{
    gen_params p = {0};
    api_error e = {0};
    if (!completions_parse(r->srv, r->body.data, r->body.len, chat, &p, &e)) {        gen_params_free(&p);
        return http_send_api_error(r, &e);
    }
    return job_start(r, &p);
}
