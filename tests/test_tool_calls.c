/*
 * test_tool_calls.c — function calling's text side (server/tool_calls.c): each real
 * template's call syntax is found by rendering; what a template writes for a call
 * parses back to the same name and arguments; the three syntaxes parse with their
 * content, ids and types; malformed calls stay text; and streaming holds back
 * exactly the text that may start a call.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "../server/tool_calls.h"
#include "util.h"

static strata_template *load_template(const char *rel)
{
    strata_template *t;
    strata_error err;
    cr_assert_eq(strata_template_load(shared_path(rel), &t, &err), STRATA_OK, "%s", err.message);
    return t;
}

Test(tool_calls, each_templates_syntax_is_found_by_rendering_a_call)
{
    struct { const char *rel; tool_syntax want; } cases[] = {
        {"fixtures/chat_templates/nemotron3.jinja", TOOL_SYNTAX_XML},
        {"fixtures/real/nemotron-3-nano-vl", TOOL_SYNTAX_XML},
        {"fixtures/chat_templates/qwen3.jinja", TOOL_SYNTAX_JSON_TAG},
        {"fixtures/chat_templates/gemma3.jinja", TOOL_SYNTAX_NONE},
        {"fixtures/real/llama-2-chat", TOOL_SYNTAX_NONE}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        strata_template *t = load_template(cases[i].rel);
        cr_expect_eq(tool_syntax_detect(t), cases[i].want, "%s: %s", cases[i].rel, tool_syntax_name(tool_syntax_detect(t)));
        strata_template_free(t);
    }
    cr_expect_eq(tool_syntax_detect(NULL), TOOL_SYNTAX_NONE);
}

static const char *TOOLS =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\",\"properties\":{"
    "\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"},\"opts\":{\"type\":\"object\"},"
    "\"zip\":{\"type\":\"string\"}}}}}]";

/* A template renders an assistant call; the rendered text from the call on parses
 * back to the same call. */
Test(tool_calls, what_a_template_writes_parses_back_to_the_same_call)
{
    const char *rels[] = {"fixtures/chat_templates/nemotron3.jinja", "fixtures/chat_templates/qwen3.jinja"};
    const char *args = "{\"city\":\"Paris \\\"left bank\\\"\",\"days\":2,\"opts\":{\"a\":[1,2.5,null]},\"zip\":\"075\"}";
    json_t *tools = json_loads(TOOLS, 0, NULL), *want = json_loads(args, 0, NULL);
    for (size_t i = 0; i < 2; i++) {
        strata_template *t = load_template(rels[i]);
        char vars[2048], *out;
        snprintf(vars, sizeof vars, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\","
                 "\"content\":\"\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                 "\"arguments\":%s}}]}],\"tools\":%s}", args, TOOLS);
        cr_assert_eq(strata_template_render(t, vars, NULL, &out, NULL, NULL), STRATA_OK);
        tool_syntax s = tool_syntax_detect(t);
        const char *turn = strstr(out, "<|im_start|>assistant"), *call = turn ? strstr(turn, "<tool_call>") : NULL;
        const char *end = call ? strstr(call, "</tool_call>") : NULL;
        cr_assert(call && end, "%s", out);
        size_t content = 99;
        json_t *calls = tool_calls_parse(s, tools, call, (size_t)(end - call) + 12, "x", &content);
        cr_assert_eq(json_array_size(calls), 1, "%s: %s", rels[i], out);
        json_t *f = json_object_get(json_array_get(calls, 0), "function");
        cr_expect_str_eq(json_string_value(json_object_get(f, "name")), "get_weather");
        json_t *got = json_loads(json_string_value(json_object_get(f, "arguments")), 0, NULL);
        cr_expect(json_equal(got, want), "%s: arguments %s", rels[i], json_string_value(json_object_get(f, "arguments")));
        cr_expect_eq(content, 0);
        json_decref(got);
        json_decref(calls);
        free(out);
        strata_template_free(t);
    }
    json_decref(tools);
    json_decref(want);
}

static json_t *parse(tool_syntax s, const char *text, size_t *content)
{
    json_t *tools = json_loads(TOOLS, 0, NULL);
    json_t *calls = tool_calls_parse(s, tools, text, strlen(text), "abc_0", content);
    json_decref(tools);
    return calls;
}

static void expect_call(json_t *calls, size_t i, const char *name, const char *args)
{
    json_t *call = json_array_get(calls, i), *f = json_object_get(call, "function");
    char id[32];
    snprintf(id, sizeof id, "call_abc_0_%zu", i);
    cr_expect_str_eq(json_string_value(json_object_get(call, "id")), id);
    cr_expect_str_eq(json_string_value(json_object_get(call, "type")), "function");
    cr_expect_str_eq(json_string_value(json_object_get(f, "name")), name);
    cr_expect_str_eq(json_string_value(json_object_get(f, "arguments")), args);
}

Test(tool_calls, the_three_syntaxes_parse_with_content_ids_and_types)
{
    size_t content = 0;
    const char *xml = "Let me check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
                      "<parameter=days>\n3\n</parameter>\n<parameter=zip>\n10001\n</parameter>\n</function>\n</tool_call>\n"
                      "<tool_call>\n<function=get_time>\n<parameter=tz>\n{\"x\": 1}\n</parameter>\n</function>\n</tool_call>";
    json_t *calls = parse(TOOL_SYNTAX_XML, xml, &content);
    cr_assert_eq(json_array_size(calls), 2);
    expect_call(calls, 0, "get_weather", "{\"city\":\"New York\",\"days\":3,\"zip\":\"10001\"}");
    expect_call(calls, 1, "get_time", "{\"tz\":\"{\\\"x\\\": 1}\"}"); /* undeclared: text */
    cr_expect_eq(content, strlen("Let me check."));
    json_decref(calls);
    calls = parse(TOOL_SYNTAX_JSON_TAG, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1]}}\n</tool_call>\n"
                                        "<tool_call>{\"name\":\"g\",\"arguments\":\"{\\\"b\\\":2}\"}</tool_call>", &content);
    cr_assert_eq(json_array_size(calls), 2);
    expect_call(calls, 0, "f", "{\"a\":[1]}");
    expect_call(calls, 1, "g", "{\"b\":2}");
    cr_expect_eq(content, 0);
    json_decref(calls);
    calls = parse(TOOL_SYNTAX_JSON_LIST, "ok <TOOLCALL>[{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", "
                                         "\"arguments\": {\"x\": \"y\"}}]</TOOLCALL>", &content);
    cr_assert_eq(json_array_size(calls), 2);
    expect_call(calls, 0, "f", "{}");
    expect_call(calls, 1, "g", "{\"x\":\"y\"}");
    cr_expect_eq(content, 2);
    json_decref(calls);
}

Test(tool_calls, malformed_calls_leave_the_text_as_content)
{
    struct { tool_syntax s; const char *text; } bad[] = {
        {TOOL_SYNTAX_XML, "no call here"},
        {TOOL_SYNTAX_XML, "<tool_call>\n<function=f>\n<parameter=a>\nunterminated"},
        {TOOL_SYNTAX_XML, "<tool_call>\n<function=>\n</function>\n</tool_call>"},
        {TOOL_SYNTAX_XML, "<tool_call>\n<function=f>\n</function>\n</tool_call> and <tool_call> junk"},
        {TOOL_SYNTAX_JSON_TAG, "<tool_call>{\"name\": 5}</tool_call>"},
        {TOOL_SYNTAX_JSON_TAG, "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>"},
        {TOOL_SYNTAX_JSON_TAG, "<tool_call>{\"name\": \"f\"</tool_call>"},
        {TOOL_SYNTAX_JSON_LIST, "<TOOLCALL>{\"name\": \"f\"}</TOOLCALL>"},
        {TOOL_SYNTAX_NONE, "<tool_call>{\"name\": \"f\"}</tool_call>"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t content = 12345;
        json_t *calls = parse(bad[i].s, bad[i].text, &content);
        cr_expect_null(calls, "case %zu parsed: %s", i, bad[i].text);
        cr_expect_eq(content, 12345, "case %zu", i);
        json_decref(calls);
    }
    size_t content;
    json_t *open = parse(TOOL_SYNTAX_XML, "<tool_call>\n<function=f>\n</function>\n", &content);
    cr_expect_eq(json_array_size(open), 1, "the text's end may leave the last </tool_call> out");
    json_decref(open);
}

Test(tool_calls, streaming_holds_back_exactly_what_may_start_a_call)
{
    struct { tool_syntax s; const char *text; size_t limit; } cases[] = {
        {TOOL_SYNTAX_XML, "Hello", 5}, {TOOL_SYNTAX_XML, "Hello <", 6}, {TOOL_SYNTAX_XML, "Hello <tool_ca", 6},
        {TOOL_SYNTAX_XML, "Hello <tool_call>\n<function", 6}, {TOOL_SYNTAX_XML, "a <b> c", 7},
        {TOOL_SYNTAX_XML, "x <tool_cal!", 12}, {TOOL_SYNTAX_JSON_LIST, "ok <TOOL", 3}, {TOOL_SYNTAX_NONE, "<tool_", 6}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(tool_content_limit(cases[i].s, cases[i].text, strlen(cases[i].text)), cases[i].limit,
                     "case %zu: %s", i, cases[i].text);
}
