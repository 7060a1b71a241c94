/*
 * tool_calls.c — reading tool calls out of generated text, in the syntax the
 * checkpoint's chat template writes them (tool_calls.h). The syntax is not guessed
 * from the model's name: the template itself renders a probe call at start-up, so
 * a checkpoint whose template writes calls one of the three known ways gets function
 * calling with no configuration. Parsing is lenient about whitespace and strict
 * about structure: a call that does not parse leaves the whole text as content,
 * never half a call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool_calls.h"

static const char *const MARKERS[] = {NULL, "<tool_call>", "<tool_call>", "<TOOLCALL>"};
static const char *const NAMES[] = {"none", "xml", "json_tag", "json_list"};

const char *tool_syntax_name(tool_syntax s)
{
    return NAMES[s];
}

tool_syntax tool_syntax_detect(const strata_template *tmpl)
{
    static const char *const probe =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"probe\"},{\"role\":\"assistant\",\"content\":\"\","
        "\"tool_calls\":[{\"id\":\"call_probe\",\"type\":\"function\",\"function\":{\"name\":\"probe_fn\","
        "\"arguments\":{\"probe_arg\":\"probe_value\"}}}]}],\"tools\":[{\"type\":\"function\",\"function\":{"
        "\"name\":\"probe_fn\",\"description\":\"probe\",\"parameters\":{\"type\":\"object\",\"properties\":{"
        "\"probe_arg\":{\"type\":\"string\"}}}}}],\"add_generation_prompt\":false}";
    char *out = NULL;
    if (!tmpl || strata_template_render(tmpl, probe, "2025-01-01T00:00:00", &out, NULL, NULL) != STRATA_OK)
        return TOOL_SYNTAX_NONE;
    tool_syntax s = TOOL_SYNTAX_NONE;
    const char *tag = strstr(out, "<tool_call>");
    if (strstr(out, "<function=probe_fn>"))
        s = TOOL_SYNTAX_XML;
    else if (strstr(out, "<TOOLCALL>") && strstr(strstr(out, "<TOOLCALL>"), "probe_fn"))
        s = TOOL_SYNTAX_JSON_LIST;
    else if (tag && strstr(tag, "probe_fn"))
        s = TOOL_SYNTAX_JSON_TAG;
    free(out);
    return s;
}

size_t tool_content_limit(tool_syntax s, const char *text, size_t len)
{
    const char *m = MARKERS[s];
    if (!m)
        return len;
    const char *at = memmem(text, len, m, strlen(m));
    if (at)
        return (size_t)(at - text);
    for (size_t k = strlen(m) - 1; k > 0; k--)       /* the longest tail that starts the marker */
        if (k <= len && !memcmp(text + len - k, m, k))
            return len - k;
    return len;
}

/* ---------------------------------------------------------------- parsing */

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\t' || *c->p == '\r'))
        c->p++;
}

/* Take lit (after whitespace) or fail. */
static int take(cursor *c, const char *lit)
{
    skip_ws(c);
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n))
        return 0;
    c->p += n;
    return 1;
}

/* The text up to lit (lit consumed), or NULL. */
static const char *until(cursor *c, const char *lit, size_t *n)
{
    const char *at = memmem(c->p, (size_t)(c->end - c->p), lit, strlen(lit));
    if (!at)
        return NULL;
    const char *start = c->p;
    *n = (size_t)(at - start);
    c->p = at + strlen(lit);
    return start;
}

/* Whether a tool's parameter holds text: declared "string", or an enum whose first
 * value is a string; undeclared parameters are text too. */
static int param_is_text(const json_t *tools, const char *fn, size_t fn_len, const char *param)
{
    size_t i;
    json_t *t;
    json_array_foreach((json_t *)tools, i, t) {
        json_t *f = json_object_get(t, "function");
        const char *name = json_string_value(json_object_get(f, "name"));
        if (!name || strlen(name) != fn_len || memcmp(name, fn, fn_len))
            continue;
        json_t *schema = json_object_get(json_object_get(json_object_get(f, "parameters"), "properties"), param);
        json_t *type = json_object_get(schema, "type"), *first = json_array_get(json_object_get(schema, "enum"), 0);
        if (json_is_string(type))
            return !strcmp(json_string_value(type), "string");
        return !schema || !first || json_is_string(first);
    }
    return 1;
}

/* One XML parameter's value: its text for a text parameter, else its JSON. */
static json_t *xml_value(const char *v, size_t n, int text)
{
    if (n && v[0] == '\n')
        v++, n--;
    if (n && v[n - 1] == '\n')
        n--;
    json_t *j = text ? NULL : json_loadb(v, n, JSON_DECODE_ANY, NULL);
    return j ? j : json_stringn(v, n);
}

/* <function=NAME> (<parameter=P> V </parameter>)* </function> into {name, arguments}. */
static json_t *xml_call(cursor *c, const json_t *tools)
{
    size_t n;
    const char *name;
    if (!take(c, "<function=") || !(name = until(c, ">", &n)) || !n)
        return NULL;
    json_t *args = json_object();
    while (take(c, "<parameter=")) {
        size_t pn, vn;
        const char *pname = until(c, ">", &pn), *v = pname ? until(c, "</parameter>", &vn) : NULL;
        char key[256];
        if (!v || !pn || pn >= sizeof key) {
            json_decref(args);
            return NULL;
        }
        memcpy(key, pname, pn);
        key[pn] = '\0';
        json_object_set_new(args, key, xml_value(v, vn, param_is_text(tools, name, n, key)));
    }
    if (!take(c, "</function>")) {
        json_decref(args);
        return NULL;
    }
    return json_pack("{s:s%,s:o}", "name", name, n, "arguments", args);
}

/* One JSON value at c (a call object, or a list of them). */
static json_t *json_at(cursor *c)
{
    skip_ws(c);
    json_error_t e;
    json_t *j = json_loadb(c->p, (size_t)(c->end - c->p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &e);
    if (j)
        c->p += e.position;
    return j;
}

/* {"name", "arguments" | "parameters"} as OpenAI's call, or NULL. */
static json_t *openai_call(const json_t *call, const char *id_stem, size_t index)
{
    const json_t *name = json_object_get(call, "name"), *args = json_object_get(call, "arguments");
    if (!args)
        args = json_object_get(call, "parameters");
    if (!json_is_string(name) || (args && !json_is_object(args) && !json_is_string(args)))
        return NULL;
    char *text = json_is_string(args) ? strdup(json_string_value(args))
                                      : json_dumps(args ? args : json_object(), JSON_COMPACT);
    char id[96];
    snprintf(id, sizeof id, "call_%s_%zu", id_stem, index);
    json_t *out = json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", id, "type", "function", "function", "name", name,
                            "arguments", text ? text : "{}");
    free(text);
    return out;
}

/* Every call from the first marker on into calls (raw {name, arguments} objects).
 * Text after the last call is dropped (the templates ask for none), unless it holds
 * another marker: a call that did not parse. */
static int read_calls(tool_syntax s, const json_t *tools, cursor *c, json_t *calls)
{
    while (take(c, MARKERS[s])) {
        json_t *one = s == TOOL_SYNTAX_XML ? xml_call(c, tools) : json_at(c);
        int list = s == TOOL_SYNTAX_JSON_LIST;
        if (!one || (list && !json_is_array(one)) || (!list && !json_is_object(one))) {
            json_decref(one);
            return 0;
        }
        if (list)
            json_array_extend(calls, one);
        else
            json_array_append(calls, one);
        json_decref(one);
        const char *close = s == TOOL_SYNTAX_JSON_LIST ? "</TOOLCALL>" : "</tool_call>";
        if (!take(c, close) && (skip_ws(c), c->p < c->end))
            return 0;                                   /* only the text's end may leave one open */
    }
    const char *m = MARKERS[s];
    return json_array_size(calls) > 0 && !memmem(c->p, (size_t)(c->end - c->p), m, strlen(m));
}

json_t *tool_calls_parse(tool_syntax s, const json_t *tools, const char *text, size_t len, const char *id_stem,
                         size_t *content_len)
{
    const char *m = MARKERS[s];
    const char *at = m ? memmem(text, len, m, strlen(m)) : NULL;
    if (!at)
        return NULL;
    cursor c = {at, text + len};
    json_t *raw = json_array(), *calls = NULL;
    if (read_calls(s, tools, &c, raw)) {
        calls = json_array();
        size_t i;
        json_t *one;
        json_array_foreach(raw, i, one) {
            json_t *call = openai_call(one, id_stem, i);
            if (!call) {
                json_decref(calls);
                calls = NULL;
                break;
            }
            json_array_append_new(calls, call);
        }
    }
    json_decref(raw);
    if (calls) {
        size_t n = (size_t)(at - text);
        while (n && (text[n - 1] == ' ' || text[n - 1] == '\n' || text[n - 1] == '\t' || text[n - 1] == '\r'))
            n--;
        *content_len = n;
    }
    return calls;
}
