/*
 * test_chat_template.c — the chat-template interpreter against the shared fixtures
 * (every case rendered by Jinja2 as transformers does, byte for byte; every
 * raise_exception case with its exact message), the real templates and checkpoint
 * directories, the Jinja semantics templates depend on, and bad or runaway input.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "strata.h"
#include "util.h"

static char *path_of(const char *rel)
{
    char *p = strdup(shared_path(rel));
    cr_assert(p);
    return p;
}

/* Render template text with vars (JSON text); returns status, fills *out/err. */
static strata_status render_text(const char *src, const char *vars, char **out, strata_error *err)
{
    strata_template *t = NULL;
    *out = NULL;
    strata_status s = strata_template_parse(src, strlen(src), &t, err);
    if (s == STRATA_OK)
        s = strata_template_render(t, vars, "2025-06-15T12:00:00", out, NULL, err);
    strata_template_free(t);
    return s;
}

static void expect_render(const char *src, const char *vars, const char *want)
{
    strata_error err = {0};
    char *out = NULL;
    strata_status s = render_text(src, vars, &out, &err);
    cr_expect_eq(s, STRATA_OK, "%s: %s", src, err.message);
    if (s == STRATA_OK)
        cr_expect_str_eq(out, want, "template: %s", src);
    free(out);
}

static void expect_fail(const char *src, const char *vars, strata_status want, const char *msg_part)
{
    strata_error err = {0};
    char *out = NULL;
    strata_status s = render_text(src, vars, &out, &err);
    cr_expect_eq(s, want, "%s: got status %s (%s)", src, strata_status_name(s), err.message);
    cr_expect(strstr(err.message, msg_part) != NULL, "%s: message '%s' lacks '%s'", src, err.message, msg_part);
    cr_expect_null(out);
    free(out);
}

/* The variables of one fixture case, as the fixture README says they were passed. */
static char *case_vars(json_t *c)
{
    json_t *v = json_object();
    json_object_set(v, "messages", json_object_get(c, "messages"));
    json_object_set(v, "add_generation_prompt", json_object_get(c, "add_generation_prompt"));
    json_object_set(v, "bos_token", json_object_get(c, "bos_token"));
    json_object_set(v, "eos_token", json_object_get(c, "eos_token"));
    json_object_update(v, json_object_get(c, "kwargs"));
    char *text = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    return text;
}

/* Run every line of NAME.cases.jsonl (or .error_cases.jsonl); returns the count. */
static int run_cases(const char *name, int errors)
{
    char rel[256];
    snprintf(rel, sizeof rel, "fixtures/chat_templates/%s.jinja", name);
    char *tpath = path_of(rel);
    snprintf(rel, sizeof rel, "fixtures/chat_templates/%s.%s.jsonl", name, errors ? "error_cases" : "cases");
    char *cpath = path_of(rel);
    strata_error err = {0};
    strata_template *t = NULL;
    cr_assert_eq(strata_template_load(tpath, &t, &err), STRATA_OK, "%s", err.message);
    FILE *f = fopen(cpath, "r");
    cr_assert_not_null(f, "cannot open %s", cpath);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *c = json_loads(line, 0, &je);
        cr_assert_not_null(c, "%s: bad JSON line", cpath);
        const char *tag = json_string_value(json_object_get(c, "tag"));
        char *vars = case_vars(c), *out = NULL;
        size_t out_len = 0;
        strata_status s = strata_template_render(t, vars, json_string_value(json_object_get(c, "now")),
                                                 &out, &out_len, &err);
        if (errors) {
            cr_expect_eq(s, STRATA_E_TEMPLATE, "%s/%s: expected a template error", name, tag);
            cr_expect_str_eq(err.message, json_string_value(json_object_get(c, "error")), "%s/%s", name, tag);
        } else {
            const char *want = json_string_value(json_object_get(c, "expected"));
            cr_expect_eq(s, STRATA_OK, "%s/%s: %s", name, tag, err.message);
            if (s == STRATA_OK) {
                cr_expect_eq(out_len, strlen(want), "%s/%s: length", name, tag);
                cr_expect_str_eq(out, want, "%s/%s", name, tag);
            }
        }
        free(out);
        free(vars);
        json_decref(c);
        n++;
    }
    free(line);
    fclose(f);
    strata_template_free(t);
    free(tpath);
    free(cpath);
    return n;
}

Test(chat_template, fixtures_nemotron3) { cr_expect_eq(run_cases("nemotron3", 0), 29); }
Test(chat_template, fixtures_llama3) { cr_expect_eq(run_cases("llama3", 0), 24); }
Test(chat_template, fixtures_qwen3) { cr_expect_eq(run_cases("qwen3", 0), 28); }
Test(chat_template, fixtures_gemma3) { cr_expect_eq(run_cases("gemma3", 0), 24); }
Test(chat_template, fixtures_gemma3_errors) { cr_expect_eq(run_cases("gemma3", 1), 7); }

static const char *CONVERSATION =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"},"
    " {\"role\": \"user\", \"content\": \"2+2?\"}], \"add_generation_prompt\": true,"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";

static char *render_path(const char *rel, const char *vars)
{
    char *p = path_of(rel), *out = NULL;
    strata_error err = {0};
    strata_template *t = NULL;
    cr_assert_eq(strata_template_load(p, &t, &err), STRATA_OK, "%s: %s", rel, err.message);
    cr_assert_eq(strata_template_render(t, vars, "2025-06-15T12:00:00", &out, NULL, &err), STRATA_OK,
                 "%s: %s", rel, err.message);
    strata_template_free(t);
    free(p);
    return out;
}

Test(chat_template, real_gpt_oss)
{
    char *out = render_path("fixtures/real/gpt-oss", CONVERSATION);
    cr_expect(strstr(out, "Current date: 2025-06-15\n") != NULL, "%s", out);
    cr_expect(strstr(out, "<|start|>user<|message|>2+2?<|end|><|start|>assistant") != NULL, "%s", out);
    free(out);
    const char *with_tools =
        "{\"messages\": [{\"role\": \"user\", \"content\": \"Weather?\"}], \"add_generation_prompt\": true,"
        " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get it\","
        " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"},"
        " \"unit\": {\"type\": \"string\", \"enum\": [\"c\", \"f\"]}}, \"required\": [\"city\"]}}}]}";
    out = render_path("fixtures/real/gpt-oss/chat_template.jinja", with_tools);
    cr_expect(strstr(out, "type get_weather = (_: {\ncity: string,\nunit?: \"c\" | \"f\",\n}) => any;") != NULL,
              "%s", out);
    free(out);
}

Test(chat_template, real_llama2_chat)
{
    char *out = render_path("fixtures/real/llama-2-chat/chat_template.jinja", CONVERSATION);
    cr_expect_str_eq(out, "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]");
    free(out);
}

Test(chat_template, real_nemotron_vl_directory)
{
    /* chat_template.json wins over tokenizer_config.json */
    char *out = render_path("fixtures/real/nemotron-3-nano-vl", CONVERSATION);
    cr_expect(strstr(out, "<|im_start|>system\nBe brief.<|im_end|>\n") != NULL, "%s", out);
    cr_expect(strstr(out, "<|im_start|>assistant\n<think>\n") != NULL, "%s", out);
    free(out);
    const char *parts = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"},"
                        " {\"type\": \"text\", \"text\": \"What is this?\"}]}], \"add_generation_prompt\": true}";
    out = render_path("fixtures/real/nemotron-3-nano-vl", parts);
    cr_expect(strstr(out, "<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>") != NULL, "%s", out);
    free(out);
}

/* The model directories carry the Nemotron 3 template in tokenizer_config.json. */
static void expect_same_as_nemotron3(const char *dir)
{
    char *a = render_path(dir, CONVERSATION);
    char *b = render_path("fixtures/chat_templates/nemotron3.jinja", CONVERSATION);
    cr_expect_str_eq(a, b, "%s", dir);
    free(a);
    free(b);
}

Test(chat_template, loader_model_directories)
{
    expect_same_as_nemotron3("models/strata-demo");
    expect_same_as_nemotron3("fixtures/models/hybrid-small");
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(chat_template, loader_named_templates_and_added_tokens)
{
    char dir[] = "/tmp/strata-tpl-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\","
               " \"additional_special_tokens\": [\"<x>\", {\"content\": \"<y>\"}],"
               " \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"tools\"},"
               " {\"name\": \"default\", \"template\": \"{{ bos_token }}{{ messages[0].content }}{{ eos_token }}\"}]}");
    strata_template *t = NULL;
    strata_error err = {0};
    char *out = NULL;
    cr_assert_eq(strata_template_load(dir, &t, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_template_render(t, "{\"messages\": [{\"content\": \"x\"}]}", NULL, &out, NULL, &err),
                 STRATA_OK, "%s", err.message);
    cr_expect_str_eq(out, "<B>x<E>");
    free(out);
    /* variables given at render time override the config's */
    cr_assert_eq(strata_template_render(t, "{\"messages\": [{\"content\": \"x\"}], \"eos_token\": \"!\"}",
                                        NULL, &out, NULL, &err), STRATA_OK);
    cr_expect_str_eq(out, "<B>x!");
    free(out);
    strata_template_free(t);
    /* chat_template.jinja takes precedence */
    write_file(dir, "chat_template.jinja", "J{{ eos_token }}{{ additional_special_tokens|join }}\n");
    cr_assert_eq(strata_template_load(dir, &t, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_template_render(t, NULL, NULL, &out, NULL, &err), STRATA_OK, "%s", err.message);
    cr_expect_str_eq(out, "J<E><x><y>");
    free(out);
    strata_template_free(t);
    char path[512];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    unlink(path);
    cr_expect_eq(strata_template_load(dir, &t, &err), STRATA_E_CONFIG);
    cr_expect_null(t);
    rmdir(dir);
    cr_expect_eq(strata_template_load("/nonexistent/dir", &t, &err), STRATA_E_IO);
}

Test(chat_template, python_values_print_as_python)
{
    expect_render("{{ 1.0 }} {{ 1 }} {{ 1/2 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 2.5e-3 }} {{ 10**15 * 1.0 }}",
                  NULL, "1.0 1 0.5 0.30000000000000004 1e+20 1e-05 0.0025 1000000000000000.0");
    expect_render("{{ none }} {{ true }} {{ False }} {{ x }}|", NULL, "None True False |");
    expect_render("{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'it\\'s', 'n': {}} }} {{ (1,) }} {{ (1, 2) }}", NULL,
                  "[1, 'a', None, True, 1.5] {'k': \"it's\", 'n': {}} (1,) (1, 2)");
    expect_render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }}",
                  NULL, "3 -4 2 -2 1024 0.5 3.0");
    expect_render("{{ 'a' ~ 1 ~ none ~ 2.0 }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 2 }} {{ 1 == 1.0 }} {{ true == 1 }}",
                  NULL, "a1None2.0 ab [1, 2] abab True True");
    expect_render("{{ m.content }}", "{\"m\": {\"content\": null}}", "None");
}

Test(chat_template, whitespace_control)
{
    expect_render("a  {%- if true %} b {% endif -%}  c", NULL, "a b c");
    expect_render("{% if true %}\n  x\n{% endif %}\n", NULL, "  x\n");
    expect_render("  {% if true %}y{% endif %}\n{{ 'z' }}  \n", NULL, "yz  ");
    expect_render("{#- comment -#}\n  {{- 'a' -}}  \n {{ 'b' }}{# c #}\n", NULL, "ab");
    expect_render("x\n\n", NULL, "x\n");
    expect_render("  {%+ if true %}k{% endif %}", NULL, "  k");
    expect_render("{{ 'a' }}\n{{ 'b' }}", NULL, "a\nb");
}

Test(chat_template, loops_and_scoping)
{
    expect_render("{% for x in [1, 2, 3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
                  "{{ loop.length }}{{ loop.revindex }}{{ loop.previtem }}{{ loop.nextitem }}|{% endfor %}",
                  NULL, "10TrueFalse332|21FalseFalse3213|32FalseTrue312|");
    expect_render("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}"
                  "{% endif %}{{ i }}{% endfor %}", NULL, "0134");
    expect_render("{% for x in [] %}no{% else %}empty{% endfor %}", NULL, "empty");
    expect_render("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}", NULL, "2242");
    expect_render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", NULL, "a=1;b=2;");
    expect_render("{% for k, v in {'a': 1}|items %}{{ k }}{{ v }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}",
                  NULL, "a1[h][é]");
    /* set inside a loop is scoped to the iteration; namespaces carry state out */
    expect_render("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 5 %}{{ x }}{% endfor %}{{ x }}", NULL, "15151");
    expect_render("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}"
                  "{{ ns.n }}", NULL, "6");
    expect_render("{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}", NULL, "aba");
    expect_render("{% for x in [1, 1, 2, 2, 1] %}{% if loop.changed(x) %}[{{ x }}]{% endif %}{% endfor %}", NULL,
                  "[1][2][1]");
    expect_render("{% set a, b = 1, 2 %}{{ a }}{{ b }}", NULL, "12");
    expect_render("{% set x %}hello {{ 1 + 1 }}{% endset %}[{{ x }}]", NULL, "[hello 2]");
    expect_render("{% generation %}gen{% endgeneration %}", NULL, "gen");
    expect_render("{% set a = 1 %}{% with a = 2, b = a %}{{ a }}{{ b }}{% endwith %}{{ a }}", NULL, "211");
    expect_render("{% filter upper|replace('A', '4') %}abc{% endfilter %} {% set x | trim | upper %}  hi  {% endset %}[{{ x }}]",
                  NULL, "4BC [HI]");
}

Test(chat_template, macros)
{
    expect_render("{% macro f(a, b=2, c='z') %}{{ a }}-{{ b }}-{{ c }}{% endmacro %}{{ f(1) }} {{ f(1, c=3) }} "
                  "{{ f(a=5, b=6) }} {{ f() }}", NULL, "1-2-z 1-2-3 5-6-z -2-z");
    expect_render("{% macro g() %}{{ top }}{% set top = 'local' %}{{ top }}{% endmacro %}{% set top = 'global' %}"
                  "{{ g() }}{{ top }}", NULL, "globallocalglobal");
    expect_render("{% macro t(n) %}{% if n > 0 %}{{ n }}{{ t(n - 1) }}{% endif %}{% endmacro %}{{ t(3) }}", NULL, "321");
    expect_fail("{% macro f(a) %}{% endmacro %}{{ f(b=1) }}", NULL, STRATA_E_TEMPLATE, "no keyword argument 'b'");
    expect_fail("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", NULL, STRATA_E_TEMPLATE, "takes not more than 1");
    expect_render("{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, x=4) }}", NULL,
                  "1(2, 3){'x': 4}");
    expect_render("{% macro w(t) %}<{{ caller(t) }}>{% endmacro %}{% for i in [1, 2] %}{% call(v) w('T') %}"
                  "{{ v }}{{ i }}{% endcall %}{% endfor %}", NULL, "<T1><T2>");
}

Test(chat_template, expressions)
{
    expect_render("{{ 'abcdef'[::-1] }} {{ 'abcdef'[1:3] }} {{ [1, 2, 3, 4][-2:] }} {{ [1, 2, 3, 4][::2] }} "
                  "{{ 'héllo'[1] }} {{ [1, 2][5] is defined }} {{ [1, 2, 3][-1] }}", NULL,
                  "fedcba bc [3, 4] [1, 3] é False 3");
    expect_render("{{ 'yes' if 1 < 2 < 3 else 'no' }} {{ 'x' if false }}| {{ not 1 in [1] }} {{ 2 not in [1] }} "
                  "{{ 1 and 'b' }} {{ 0 or 'c' }} {{ -2 | abs }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }}", NULL,
                  "yes | False True b c 2 9 64");
    expect_render("{{ 'a' in 'cat' }} {{ 'k' in {'k': 1} }} {{ {'a': 1}['a'] }} {{ d.a.b }} {{ d['a']['b'] }} "
                  "{{ d.missing is defined }} {{ d.missing.deeper is defined }}",
                  "{\"d\": {\"a\": {\"b\": 7}}}", "True True 1 7 7 False False");
    expect_render("{{ d['items'] is defined }} {{ d.items()|list }} {{ d.get('x', 3) }} {{ d.keys()|list }} "
                  "{{ d.values()|list }}", "{\"d\": {\"a\": 1}}", "True [('a', 1)] 3 ['a'] [1]");
    expect_render("{{ dict(a=1, b='x') }} {{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }}",
                  NULL, "{'a': 1, 'b': 'x'} [0, 1, 2] [1, 3, 5] [3, 2, 1]");
    expect_render("{{ 'a\\tb\\n\\u00e9\\x41' }}|{{ \"q\\\"\" }}|{{ 'ab' 'cd' }}", NULL, "a\tb\né\x41|q\"|abcd");
    expect_render("{{ strftime_now('%Y-%m-%d %A %B %H:%M') }}", NULL, "2025-06-15 Sunday June 12:00");
    expect_render("{{ '%s=%d %05.2f|%-3s|%r %%' % ('a', 3.9, 3.14159, 'x', 'q') }} {{ 'hi %s' % 'bob' }} "
                  "{{ '%s'|format([1]) }} {{ '%(a)s-%(b)03d'|format(a=1, b=7) }}", NULL,
                  "a=3 03.14|x  |'q' % hi bob [1] 1-007");
    expect_fail("{{ '%s %s' % (1,) }}", NULL, STRATA_E_TEMPLATE, "not enough arguments");
    expect_render("{{ '{0}-{1}-{x}|{2:>5}|{2:05d}|{3:.2f}|{4:.1%}|{5!r}|{{}}'.format('a', 'b', 42, 3.14159, 0.256, 'q', "
                  "x=3) }} {{ '{}{}'.format(1, 2) }}", NULL, "a-b-3|   42|00042|3.14|25.6%|'q'|{} 12");
    expect_fail("{{ '{}{0}'.format(1) }}", NULL, STRATA_E_TEMPLATE, "field numbering");
    expect_render("a {% raw %}{{ x }} {% if %}{% endraw %} b\n  {%- raw -%}  c  {%- endraw %}\nd", NULL,
                  "a {{ x }} {% if %} bcd");
}

Test(chat_template, string_methods)
{
    expect_render("{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} "
                  "{{ 'a b c'.rsplit(' ', 1) }} {{ 'a<t>b<t>c'.split('<t>')[-1] }}", NULL,
                  "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a b', 'c'] c");
    expect_render("[{{ '  x \\n'.strip() }}] [{{ 'xxhixx'.strip('x') }}] [{{ '\\nhi\\n'.lstrip('\\n') }}] "
                  "[{{ ' hi '.rstrip() }}]", NULL, "[x] [hi] [hi\n] [ hi]");
    expect_render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'Hello'.upper() }} "
                  "{{ 'Hello'.lower() }} {{ 'hello world'.title() }} {{ 'aXb'.replace('X', '-') }} "
                  "{{ 'abcabc'.find('c') }} {{ 'abcabc'.count('bc') }} {{ ', '.join(['a', 'b']) }}", NULL,
                  "True True HELLO hello Hello World a-b 2 2 a, b");
}

Test(chat_template, filters)
{
    expect_render("{{ 'Hello World'|lower }} {{ 'hello wORLD'|title }} {{ 'hELLO'|capitalize }} {{ 'x'|upper }} "
                  "[{{ '  t  '|trim }}] {{ 'abc'|length }} {{ [1, 2]|count }} {{ 'é😀'|length }}", NULL,
                  "hello world Hello World Hello X [t] 3 2 2");
    expect_render("{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} "
                  "{{ [1, 2, 2, 3, 1]|unique|list }} {{ {'b': 1, 'a': 2}|dictsort }} {{ [1, 2, 3]|join(', ') }} "
                  "{{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ [1, 2, 3]|reverse|list }} {{ 'ab'|list }}",
                  NULL, "[1, 2, 3] ['A', 'b', 'c'] [3, 2, 1] [1, 2, 3] [('a', 2), ('b', 1)] 1, 2, 3 1 3 [3, 2, 1] ['a', 'b']");
    expect_render("{{ none|default('d') }} {{ x|default('u') }} {{ ''|default('e', true) }} {{ x|d('dd') }}", NULL,
                  "None u e dd");
    expect_render("{{ l|selectattr('a', 'defined')|map(attribute='a')|list }} {{ l|rejectattr('a')|list }} "
                  "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('even')|list }} "
                  "{{ l|selectattr('a', 'equalto', 2)|list }} {{ ['a', 'B']|map('upper')|list }}",
                  "{\"l\": [{\"a\": 1}, {\"a\": 2}, {\"b\": 3}]}",
                  "[1, 2] [{'b': 3}] [1, 3] [1, 3] [{'a': 2}] ['A', 'B']");
    expect_render("{{ '3'|int + 1 }} {{ 'x'|int }} {{ 2.7|int }} {{ '2.5'|float }} {{ 3|float }} {{ -3|abs }} "
                  "{{ 2.567|round(2) }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.1|round(0, 'ceil') }} {{ 5|string }}",
                  NULL, "4 0 2 2.5 3.0 3 2.57 2.0 4.0 3.0 5");
    expect_render("{{ 'a b  c'|wordcount }} {{ [1, 2, 3, 4, 5]|batch(2)|list }} {{ [1, 2, 3]|sum }} "
                  "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ '<a href=\"x\">&\\''|e }} {{ '<b>'|safe }}", NULL,
                  "3 [[1, 2], [3, 4], [5]] 6 1 3 &lt;a href=&#34;x&#34;&gt;&amp;&#39; <b>");
    expect_render("{{ 'foo bar baz qux'|truncate(9) }}|{{ 'foo bar baz qux'|truncate(9, true) }}|{{ 'short'|truncate(3) }}|"
                  "{{ d|attr('a') is defined }}|{{ d|attr('items') is defined }}", "{\"d\": {\"a\": 1}}",
                  "foo...|foo ba...|short|False|True");
    expect_render("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, first=true) }}", NULL, "a\n  b\n\n  c|  a\n  b");
}

/* Dicts past the hashing threshold keep insertion order, updates and lookups. */
Test(chat_template, large_dicts)
{
    char vars[8192] = "{\"d\": {";
    for (int i = 0; i < 200; i++)
        snprintf(vars + strlen(vars), sizeof vars - strlen(vars), "%s\"k%d\": %d", i ? ", " : "", i, i);
    strcat(vars, "}}");
    expect_render("{{ d.k0 }} {{ d['k199'] }} {{ d.k57 }} {{ 'k150' in d }} {{ 'k200' in d }} {{ d|length }} "
                  "{{ (d|list)[:3] }} {{ (d|list)[-1] }} {{ d.get('k3') }} {{ d.missing is defined }}",
                  vars, "0 199 57 True False 200 ['k0', 'k1', 'k2'] k199 3 False");
    expect_render("{% set ns = namespace() %}{% for i in range(40) %}{% set ns.a = i %}"
                  "{% endfor %}{{ ns.a }} {% set d = dict(a1=1, a2=2, a3=3, a4=4, a5=5, a6=6, a7=7, a8=8, a9=9, "
                  "b1=1, b2=2, b3=3, b4=4, b5=5, b6=6, b7=7, b8=8, b9=9, c1=1, c2=2) %}{{ d.c2 }} {{ d|length }} "
                  "{{ {1: 'i', 'x': 's', 2.0: 'f', 'a': 1, 'b': 2, 'c': 3, 'd': 4, 'e': 5, 'f': 6, 'g': 7, 'h': 8, "
                  "'i': 9, 'j': 10, 'k': 11, 'l': 12, 'm': 13, 'n': 14}[2] }}",
                  NULL, "39 2 20 f");
}

Test(chat_template, tojson_is_python_json_dumps)
{
    expect_render("{{ d|tojson }}", "{\"d\": {\"b\": [1, 2.5, true, null], \"a\": \"é<&>'\\\"\\n\\u0001\"}}",
                  "{\"b\": [1, 2.5, true, null], \"a\": \"é<&>'\\\"\\n\\u0001\"}");
    expect_render("{{ d|tojson(sort_keys=true) }}", "{\"d\": {\"b\": 1, \"a\": 2}}", "{\"a\": 2, \"b\": 1}");
    expect_render("{{ [1, {'x': []}, {}]|tojson(indent=2) }}", NULL, "[\n  1,\n  {\n    \"x\": []\n  },\n  {}\n]");
    expect_render("{{ {'a': [1, 2]}|tojson(separators=(',', ':')) }}", NULL, "{\"a\":[1,2]}");
    expect_render("{{ 'é😀'|tojson(ensure_ascii=true) }}", NULL, "\"\\u00e9\\ud83d\\ude00\"");
    expect_render("{{ 1.0|tojson }} {{ none|tojson }} {{ (1, 2)|tojson }}", NULL, "1.0 null [1, 2]");
    expect_fail("{{ x|tojson }}", NULL, STRATA_E_TEMPLATE, "not JSON serializable");
}

Test(chat_template, tests)
{
    expect_render("{{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.5 is float }} {{ {} is sequence }} "
                  "{{ x is iterable }} {{ none is iterable }} {{ none is none }} {{ 'a' is string }} {{ {} is mapping }} "
                  "{{ [] is mapping }} {{ 3 is divisibleby 3 }} {{ 3 is odd }} {{ 1 is eq 1 }} {{ x is undefined }} "
                  "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ true is boolean }} {{ 2 is in [1, 2] }}",
                  NULL, "True True False True True True False True True True False True True True True True False "
                        "True True True");
    expect_render("{{ tools is defined }} {{ tools is none }} {{ documents is none }} {{ add_generation_prompt }}",
                  NULL, "True True True False");
}

Test(chat_template, raise_exception_message_is_exact)
{
    expect_fail("{{ raise_exception('Roles must alternate: ' ~ 2) }}", NULL, STRATA_E_TEMPLATE, "Roles must alternate: 2");
    strata_error err = {0};
    char *out = NULL;
    render_text("x{{ raise_exception('exact') }}", NULL, &out, &err);
    cr_expect_str_eq(err.message, "exact");
}

Test(chat_template, syntax_errors_name_the_line)
{
    strata_template *t = NULL;
    strata_error err = {0};
    const char *src = "line 1\n{% if x %}\n{{ 1 + }}\n{% endif %}";
    cr_expect_eq(strata_template_parse(src, strlen(src), &t, &err), STRATA_E_TEMPLATE);
    cr_expect_null(t);
    cr_expect(strstr(err.message, "chat template line 3:") != NULL, "%s", err.message);
    const struct { const char *src, *msg; } bad[] = {
        {"{% for x in y %}", "line 1: unexpected end of template, expected 'endfor'"},
        {"a\n\n{{ x|xmlattr }}", "chat template line 3: filter 'xmlattr' is not supported"},
        {"{{ x is prime }}", "test 'prime' is not supported"},
        {"{% include 'x' %}", "tag 'include' is not supported"},
        {"{% frobnicate %}", "unknown tag 'frobnicate'"},
        {"{% endif %}", "unexpected 'endif'"},
        {"{% break %}", "'break' outside of a loop"},
        {"{{ 'abc }}", "unterminated string"},
        {"{{ x ", "expected '}}'"},
        {"{# never closed", "unterminated comment"},
        {"{{ (((1 }}", "expected"},
        {"{{ a.b( }}", "unexpected"},
        {"{% set %}", "a name"},
        {"{{ x | }}", "a name"},
        {"{% macro m(a=1, b) %}{% endmacro %}", "non-default argument"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = NULL;
        cr_expect_eq(strata_template_parse(bad[i].src, strlen(bad[i].src), &t, &err), STRATA_E_TEMPLATE, "%s",
                     bad[i].src);
        cr_expect(strstr(err.message, bad[i].msg) != NULL, "%s: '%s' lacks '%s'", bad[i].src, err.message, bad[i].msg);
        strata_template_free(t);
    }
    char deep[2100] = "{{ ";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 1000; i++)
        strcat(deep, ")");
    strcat(deep, " }}");
    cr_expect_eq(strata_template_parse(deep, strlen(deep), &t, &err), STRATA_E_TEMPLATE);
    cr_expect(strstr(err.message, "nesting") != NULL, "%s", err.message);
    cr_expect_eq(strata_template_parse(NULL, 0, &t, &err), STRATA_OK);
    strata_template_free(t);
    strata_template_free(NULL);
}

Test(chat_template, runtime_errors)
{
    expect_fail("{{ x + 1 }}", NULL, STRATA_E_TEMPLATE, "'x' is undefined");
    expect_fail("{{ m.role + 'x' }}", "{\"m\": {}}", STRATA_E_TEMPLATE, "'dict object' has no attribute 'role'");
    expect_fail("{{ l[5] + 1 }}", "{\"l\": [1]}", STRATA_E_TEMPLATE, "list object has no element 5");
    expect_fail("{{ x.y.z + 1 }}", NULL, STRATA_E_TEMPLATE, "'x' is undefined");
    expect_fail("{{ 1 + 'a' }}", NULL, STRATA_E_TEMPLATE, "unsupported operand");
    expect_fail("{{ 'a' + 1 }}", NULL, STRATA_E_TEMPLATE, "can only concatenate str");
    expect_fail("{{ 1 / 0 }}", NULL, STRATA_E_TEMPLATE, "division by zero");
    expect_fail("{% for x in 5 %}{% endfor %}", NULL, STRATA_E_TEMPLATE, "not iterable");
    expect_fail("{{ 1 < 'a' }}", NULL, STRATA_E_TEMPLATE, "not supported between");
    expect_fail("{{ [].append(1) }}", NULL, STRATA_E_TEMPLATE, "unsafe");
    expect_fail("{{ 5() }}", NULL, STRATA_E_TEMPLATE, "not callable");
    expect_fail("{{ 2 ** 64 }}", NULL, STRATA_E_LIMIT, "integer overflow");
    expect_fail("{{ x }}", "[1, 2]", STRATA_E_INVALID, "expected a JSON object");
    expect_fail("{{ x }}", "{bad json", STRATA_E_INVALID, "invalid JSON");
    strata_template *t = NULL;
    strata_error err = {0};
    char *out = NULL;
    cr_assert_eq(strata_template_parse("x", 1, &t, &err), STRATA_OK);
    cr_expect_eq(strata_template_render(t, NULL, "not a time", &out, NULL, &err), STRATA_E_INVALID);
    strata_template_free(t);
}

Test(chat_template, runaway_templates_are_bounded)
{
    expect_fail("{% for i in range(10**9) %}x{% endfor %}", NULL, STRATA_E_LIMIT, "range too big");
    expect_fail("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", NULL,
                STRATA_E_LIMIT, "step limit");
    expect_fail("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}", NULL, STRATA_E_LIMIT,
                "runaway recursion");
    expect_fail("{% set ns = namespace(s='xx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                NULL, STRATA_E_LIMIT, "string longer than");
    expect_fail("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, STRATA_E_LIMIT, "output limit");
}

/* The CLI: stdin variables, "now", exact output, raise_exception on stderr. */
Test(chat_template, cli)
{
    const char *cli = getenv("STRATA_CLI");
    if (!cli)
        cr_skip_test("STRATA_CLI not set");
    char *tpl = path_of("fixtures/real/gpt-oss");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "echo '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"now\": \"2024-02-29T08:00:00\","
             " \"add_generation_prompt\": true}' | %s chat-template %s", cli, tpl);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_expect_eq(pclose(p), 0);
    cr_expect(strstr(buf, "Current date: 2024-02-29\n") != NULL, "%s", buf);
    cr_expect(n > 0 && strcmp(buf + n - strlen("<|start|>assistant"), "<|start|>assistant") == 0, "%s", buf);
    free(tpl);
    tpl = path_of("fixtures/chat_templates/gemma3.jinja");
    snprintf(cmd, sizeof cmd,
             "echo '{\"messages\": [{\"role\": \"assistant\", \"content\": \"Hi\"}]}' | %s chat-template %s 2>&1",
             cli, tpl);
    p = popen(cmd, "r");
    cr_assert_not_null(p);
    n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_expect_neq(pclose(p), 0);
    cr_expect(strstr(buf, "Conversation roles must alternate user/assistant/user/assistant/...") != NULL, "%s", buf);
    free(tpl);
}

/* tokenizer_config.json as HF ships it: model_max_length = 1e30 as an integer too
 * big for 64 bits, which must not stop the template from loading (nor such an
 * integer in the variables, e.g. a tool schema's example). */
Test(chat_template, loader_takes_huge_integers_as_python_writes_them)
{
    char *dir = make_temp_dir(), path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    cr_assert_eq(copy_file(shared_path("fixtures/tokenizers/nemotron_h_proxy/tokenizer_config.json"), path), 0);
    write_file(dir, "chat_template.jinja", "{{ bos_token }} {{ x > 1 }}");
    strata_template *t = NULL;
    strata_error err = {0};
    char *out = NULL;
    cr_assert_eq(strata_template_load(dir, &t, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_template_render(t, "{\"x\": 123456789012345678901234567890}", NULL, &out, NULL, &err),
                 STRATA_OK, "%s", err.message);
    cr_expect_str_eq(out, "<s> True");
    free(out);
    strata_template_free(t);
    remove_tree(dir);
    free(dir);
}
