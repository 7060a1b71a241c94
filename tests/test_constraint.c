/*
 * test_constraint.c — constrained JSON output: byte by byte, the automaton takes
 * exactly the prefixes of texts the schema accepts (on a vocabulary of the 256 single
 * bytes); the end id is allowed exactly when the text is whole; the mask over a real
 * 131072-token vocabulary agrees with token-by-token checks; unsupported keywords are
 * refused by name; and a constrained sampler draws from the restricted distribution.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "constraint/internal.h"
#include "strata.h"
#include "util.h"

#define END 256                 /* the end id of the byte vocabulary; ids 0..255 are the bytes */

/* A vocabulary of the 256 single bytes, then END (no bytes), then " {" and "}\n". */
static strata_vocab *byte_vocab(void)
{
    static const char *const extra[] = {" {", "}\n"};
    strata_vocab *v = calloc(1, sizeof *v);
    v->n = 259;
    v->blob = malloc(256 + 4);
    v->off = malloc(sizeof(uint32_t) * 260);
    v->by_first = malloc(sizeof(int32_t) * 259);
    v->empty = malloc(sizeof(int32_t) * 259);
    v->plain = calloc(259, 1);                  /* no shortcut: every token is walked */
    uint32_t at = 0;
    for (int id = 0; id < v->n; id++) {
        v->off[id] = at;
        if (id < 256)
            v->blob[at++] = (char)id;
        else if (id > END)
            for (const char *p = extra[id - END - 1]; *p; p++)
                v->blob[at++] = *p;
    }
    v->off[v->n] = at;
    for (int id = 0; id < v->n; id++)
        if (v->off[id + 1] == v->off[id])
            v->empty[v->n_empty++] = id;
    int k = 0;
    for (int b = 0; b < 256; b++) {
        v->first_at[b] = k;
        for (int id = 0; id < v->n; id++)
            if (v->off[id + 1] > v->off[id] && (unsigned char)v->blob[v->off[id]] == b)
                v->by_first[k++] = id;
    }
    v->first_at[256] = k;
    return v;
}

static strata_constraint *compile(const strata_vocab *v, const char *schema)
{
    strata_constraint *c = NULL;
    strata_error err = {0};
    int32_t end = END;
    cr_assert_eq(strata_constraint_new_json(v, schema, schema ? strlen(schema) : 0, &end, 1, &c, &err), STRATA_OK,
                 "%s", err.message);
    return c;
}

/* A forced call of one function (or, with name2, of either) in the XML syntax. */
static strata_status xml_call(const strata_vocab *v, const char *name, const char *schema, const char *name2,
                              int32_t end, strata_constraint **c, strata_error *err)
{
    strata_call_schema calls[2] = {{name, schema, schema ? strlen(schema) : 0}, {name2, NULL, 0}};
    return strata_constraint_new_call(v, calls, name2 ? 2 : 1, 1, "<tool_call>\n<function=", ">\n", "\n</tool_call>",
                                      &end, 1, c, err);
}

/* Feed text byte by byte: the offset of the first byte refused, strlen(text) when the
 * text is taken but may not end there, or -1 when it is taken and may end. */
static long first_refused(const strata_constraint *c, const char *text)
{
    cons_cursor *k;
    cr_assert_eq(cons_cursor_new(c, &k, NULL), STRATA_OK);
    long n = (long)strlen(text), at = 0;
    for (; at < n; at++) {
        int32_t t = (unsigned char)text[at];
        if (!cons_allows(k, t))
            break;
        cons_advance(k, t);
    }
    long r = at < n ? at : cons_allows(k, END) ? -1 : n;
    cons_cursor_free(k);
    return r;
}

static strata_vocab *V;
static void setup_vocab(void)
{
    V = byte_vocab();
}
static void free_vocab(void)
{
    strata_vocab_free(V);
}

TestSuite(constraint, .init = setup_vocab, .fini = free_vocab);

Test(constraint, json_object_takes_exactly_the_prefixes_of_json_objects)
{
    strata_constraint *c = compile(V, NULL);
    const char *whole[] = {"{}", " {\"a\": [1, -2.5e-3, 0, true, false, null, \"x\\u00e9\\n\\\"\", {}], \"b\": {\"c\": []}}",
                           "{\"é\":\"\xe2\x82\xac\xf0\x9f\x98\x80\"}", "{\n  \"k\" : 1E+5\n}"};
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++)
        cr_expect_eq(first_refused(c, whole[i]), -1, "%s", whole[i]);
    struct { const char *text; long at; } bad[] = {
        {"[1]", 0}, {"\"s\"", 0}, {"{\"a\":}", 5}, {"{\"a\" 1}", 5}, {"{,}", 1}, {"{}x", 2}, {"{} ", 2},
        {"{\"a\":01}", 6}, {"{\"a\":1.}", 7}, {"{\"a\":-}", 6}, {"{\"a\":\"\x01\"}", 6}, {"{\"a\":\"\xc0\"}", 6},
        {"{\"a\":\"\xed\xa0\x80\"}", 7}, {"{\"a\":\"\\x\"}", 7}, {"{\"a\":\"\\u12G4\"}", 10}, {"{\"a\":tru}", 8},
        {"{\"a\":[1,]}", 8}, {"{\"a\":1,}", 7}, {"{\"a\":1", 6}, {"{\"a\":[", 6}, {"{\"a\":\"x", 7}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(first_refused(c, bad[i].text), bad[i].at, "%s: refused at %ld, expected %ld", bad[i].text,
                     first_refused(c, bad[i].text), bad[i].at);
    cr_expect_eq(first_refused(c, "{\"a\":12345678901234567890123."), 28, "no fraction the number bound would cut");
    cr_expect_eq(first_refused(c, "{\"a\":1234567890123456789012.5}"), -1);
    char indent[80] = "{\n";
    memset(indent + 2, ' ', JF_MAX_INDENT + 1);
    cr_expect_eq(first_refused(c, indent), 2 + JF_MAX_INDENT, "indentation is bounded");
    struct { const char *text; long at; } ws[] = {{"{  ", 2}, {"{\n\n", 2}, {"{\t", 1}, {"{\r\n", 1}, {" \n{", 1},
                                                  {"{\n\t\t\"a\" : [\n  1,\n  2\n]}", -1}};
    for (size_t i = 0; i < sizeof ws / sizeof *ws; i++)
        cr_expect_eq(first_refused(c, ws[i].text), ws[i].at, "whitespace case %zu", i);
    strata_constraint_free(c);
}

static const char *PERSON =
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"name\",\"age\"],\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":5,\"description\":\"ignored\"},"
    "\"age\":{\"type\":\"integer\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"x\",\"yy\",1.5,null]},\"minItems\":1,\"maxItems\":2},"
    "\"nick\":{\"type\":[\"string\",\"null\"]}}}";

static const char *WEATHER =
    "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"city\"],\"properties\":{"
    "\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"},\"unit\":{\"enum\":[\"C\",\"F\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}}}";

Test(constraint, a_schema_holds_keys_types_bounds_and_enums)
{
    strata_constraint *c = compile(V, PERSON);
    const char *whole[] = {"{\"name\":\"Bob\",\"age\":42}", "{\"age\": -7, \"name\": \"Al\", \"tags\": [\"yy\", 1.5]}",
                           "{\"name\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\",\"age\":0,\"nick\":null}",
                           "{\"name\":\"a\",\"nick\":\"n\",\"age\":1,\"tags\":[null]}"};
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++)
        cr_expect_eq(first_refused(c, whole[i]), -1, "%s", whole[i]);
    struct { const char *text; long at; } bad[] = {
        {"{\"name\":\"Bob\"}", 13},             /* age is required */
        {"{\"nam\":", 5},                       /* not a property */
        {"{\"other\"", 2},                      /* no additional properties */
        {"{\"age\":4.5", 8},                    /* integer */
        {"{\"age\":\"4\"", 7},                  /* type */
        {"{\"name\":\"abcdef\"", 14},           /* maxLength */
        {"{\"name\":\"\"", 9},                  /* minLength */
        {"{\"age\":1,\"age\":", 10},            /* a key once */
        {"{\"age\":1,\"tags\":[]", 17},         /* minItems */
        {"{\"age\":1,\"tags\":[\"x\",\"x\",", 24}, /* maxItems */
        {"{\"age\":1,\"tags\":[\"z\"", 18},     /* enum */
        {"{\"age\":1,\"tags\":[1.50", 20},      /* enum, as written */
        {"{\"age\":1,\"nick\":3", 16},          /* string or null */
        {"{\"na\\u006de\"", 4}};                /* an escaped key is not a property */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(first_refused(c, bad[i].text), bad[i].at, "%s: refused at %ld, expected %ld", bad[i].text,
                     first_refused(c, bad[i].text), bad[i].at);
    strata_constraint_free(c);
}

Test(constraint, refs_recurse_and_any_of_picks_the_branch_of_the_values_type)
{
    const char *tree = "{\"$defs\":{\"Node\":{\"type\":\"object\",\"required\":[\"v\"],\"additionalProperties\":false,"
                       "\"properties\":{\"v\":{\"type\":\"number\"},\"kids\":{\"anyOf\":[{\"type\":\"array\",\"items\":"
                       "{\"$ref\":\"#/$defs/Node\"}},{\"type\":\"null\"}]}}}},\"$ref\":\"#/$defs/Node\"}";
    strata_constraint *c = compile(V, tree);
    cr_expect_eq(first_refused(c, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":null},{\"v\":3e2,\"kids\":[]}]}"), -1);
    cr_expect_eq(first_refused(c, "{\"v\":1,\"kids\":[{\"w\""), 17);
    cr_expect_eq(first_refused(c, "{\"v\":1,\"kids\":{}"), 14);
    strata_constraint_free(c);
    strata_constraint *e = compile(V, "{\"anyOf\":[{\"enum\":[\"a\",\"b\"]},{\"type\":\"null\"}]}");
    cr_expect_eq(first_refused(e, "null"), -1);
    cr_expect_eq(first_refused(e, "\"b\""), -1);
    cr_expect_eq(first_refused(e, "\"c\""), 1);
    strata_constraint_free(e);
    strata_constraint *num = compile(V, "{\"type\":\"number\"}");
    cr_expect_eq(first_refused(num, "-12.5"), -1, "a number at the root ends with the text");
    cr_expect_eq(first_refused(num, "-12."), 4);
    strata_constraint_free(num);
}

Test(constraint, unsupported_or_malformed_schemas_are_refused_by_name)
{
    struct { const char *schema, *needle; strata_status st; } cases[] = {
        {"{\"type\":\"string\",\"pattern\":\"^a\"}", "'pattern'", STRATA_E_UNSUPPORTED},
        {"{\"type\":\"number\",\"minimum\":3}", "integer", STRATA_E_UNSUPPORTED},
        {"{\"type\":\"integer\",\"multipleOf\":3}", "'multipleOf'", STRATA_E_UNSUPPORTED},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"string\",\"maxLength\":2}]}", "same type",
         STRATA_E_UNSUPPORTED},
        {"{\"$ref\":\"https://example.com/s.json\"}", "$ref", STRATA_E_UNSUPPORTED},
        {"{\"type\":\"object\",\"required\":[\"x\"]}", "required", STRATA_E_UNSUPPORTED},
        {"{\"type\":\"strin\"}", "type", STRATA_E_INVALID},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "maxItems", STRATA_E_INVALID},
        {"{\"type\":", "JSON schema", STRATA_E_INVALID},
        {"{\"$ref\":\"#\"}", "deeper", STRATA_E_LIMIT}};
    int32_t end = END;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        strata_constraint *c = NULL;
        strata_error err = {0};
        strata_status st = strata_constraint_new_json(V, cases[i].schema, strlen(cases[i].schema), &end, 1, &c, &err);
        cr_expect_eq(st, cases[i].st, "%s: status %d (%s)", cases[i].schema, st, err.message);
        cr_expect(strstr(err.message, cases[i].needle), "%s: message '%s'", cases[i].schema, err.message);
        cr_expect_null(c);
    }
}

/* The mask agrees with cons_allows token for token, at every prefix of a text, on a
 * real tokenizer's vocabulary (multi-byte tokens, partial UTF-8 characters), under a
 * schema (keys matched to properties, a bounded string), json_object (free keys
 * and strings: the mask's shortcut for plain tokens) and an XML call (raw text). */
static void check_mask_along(const strata_vocab *v, const strata_tokenizer *tok, const char *schema, const char *text,
                             const char *xml_function)
{
    strata_error err = {0};
    int32_t end = 2;
    strata_constraint *c;
    if (xml_function)
        cr_assert_eq(xml_call(v, xml_function, schema, NULL, end, &c, &err), STRATA_OK, "%s", err.message);
    else
        cr_assert_eq(strata_constraint_new_json(v, schema, schema ? strlen(schema) : 0, &end, 1, &c, &err), STRATA_OK);
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(strata_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n_ids, &err), STRATA_OK);
    cons_cursor *k;
    cons_cursor_new(c, &k, NULL);
    float *logits = malloc(sizeof(float) * (size_t)v->n);
    for (size_t i = 0; i <= n_ids; i++) {
        for (int t = 0; t < v->n; t++)
            logits[t] = 1.0f;
        int allowed = cons_mask(k, logits), count = 0;
        for (int t = 0; t < v->n; t++) {
            int ok = cons_allows(k, t);
            count += ok;
            cr_assert_eq(ok, logits[t] == 1.0f, "token %d after %zu tokens: allows %d, mask %g", t, i, ok, logits[t]);
        }
        cr_assert_eq(allowed, count);
        cr_assert_gt(count, 0, "some token always continues");
        if (i < n_ids) {
            cr_assert(cons_allows(k, ids[i]), "the text's own token %zu is allowed", i);
            cons_advance(k, ids[i]);
        }
    }
    cr_expect(cons_allows(k, end), "the whole text may end");
    free(logits);
    free(ids);
    cons_cursor_free(k);
    strata_constraint_free(c);
}

Test(constraint, the_mask_is_the_set_of_allowed_tokens)
{
    strata_tokenizer *tok;
    strata_error err = {0};
    cr_assert_eq(strata_tokenizer_load(shared_path("fixtures/tokenizers/nemotron_h_proxy"), &tok, &err), STRATA_OK,
                 "%s", err.message);
    strata_vocab *v;
    cr_assert_eq(strata_vocab_new(tok, strata_tokenizer_vocab_size(tok), &v, &err), STRATA_OK, "%s", err.message);
    check_mask_along(v, tok, PERSON, "{\"name\": \"Zoë\", \"age\": 30, \"tags\": [\"yy\"]}", NULL);
    check_mask_along(v, tok, NULL, "{\"Straße \\\"x\\\"\": [\"naïve text\\n\", -1.5e3, {\"\": null}]}", NULL);
    check_mask_along(v, tok, WEATHER, "<tool_call>\n<function=get_weather>\n<parameter=days>\n2\n</parameter>\n"
                     "<parameter=city>\nSão </p> Paulo\n</parameter>\n</function>\n</tool_call>", "get_weather");
    strata_vocab_free(v);
    strata_tokenizer_free(tok);
}

static strata_sampler *constrained(const strata_constraint *c, float temperature, float top_p, uint64_t seed)
{
    strata_sampling p;
    strata_sampling_default(&p);
    p.temperature = temperature;
    p.top_p = top_p;
    p.seed = seed;
    p.constraint = c;
    strata_sampler *s;
    strata_error err;
    cr_assert_eq(strata_sampler_new(&p, V->n, &s, &err), STRATA_OK, "%s", err.message);
    return s;
}

/* After `{"a":` the model likes 'x' best (not JSON), then '1', then '"': draws keep the
 * odds of '1' and '"' among the allowed, with or without truncation; greedy takes '1'. */
Test(constraint, a_constrained_draw_keeps_the_models_odds_among_allowed_tokens)
{
    strata_constraint *c = compile(V, NULL);
    float logits[259];
    for (int t = 0; t < 259; t++)
        logits[t] = -30.0f;
    logits['x'] = 5.0f;
    logits['1'] = 2.0f;
    logits['"'] = 1.0f;
    logits[END] = 6.0f;
    const char *prefix = "{\"a\":";
    float top_ps[] = {1.0f, 0.999f};
    for (int v = 0; v < 2; v++) {
        strata_sampler *s = constrained(c, 1.0f, top_ps[v], 7);
        for (const char *p = prefix; *p; p++)
            strata_sampler_accept(s, (unsigned char)*p, 1);
        int ones = 0, n = 3000;
        for (int i = 0; i < n; i++) {
            strata_sample out;
            cr_assert_eq(strata_sampler_sample(s, logits, &out, NULL), STRATA_OK);
            cr_assert(out.token == '1' || out.token == '"', "token %d is not allowed", out.token);
            ones += out.token == '1';
            cr_assert_float_eq(out.logprob, logits[out.token] - log(exp(6) + exp(5) + exp(2) + exp(1)), 1e-3,
                               "logprobs are the model's own");
        }
        double want = exp(2.0) / (exp(2.0) + exp(1.0));
        cr_expect(fabs((double)ones / n - want) < 0.03, "top_p %g: '1' drawn %d of %d, expected %.3f", top_ps[v],
                  ones, n, want);
        strata_sampler_free(s);
    }
    strata_sampler *g = constrained(c, 0.0f, 1.0f, 1);
    strata_sample out;
    logits['{'] = 0.5f;
    cr_assert_eq(strata_sampler_sample(g, logits, &out, NULL), STRATA_OK);
    cr_expect_eq(out.token, '{', "greedy: the best token allowed at the start");
    for (const char *p = prefix; *p; p++)
        strata_sampler_accept(g, (unsigned char)*p, 1);
    cr_assert_eq(strata_sampler_sample(g, logits, &out, NULL), STRATA_OK);
    cr_expect_eq(out.token, '1', "greedy: the best token allowed after a key");
    strata_sampler_free(g);
    strata_constraint_free(c);
}

/* The XML call syntax: parameters in any order, each once, required ones present;
 * strings raw up to "\n</parameter>", string enums raw, the rest JSON. */
Test(constraint, an_xml_call_writes_the_templates_syntax_and_the_schema)
{
    strata_constraint *c = NULL;
    int32_t end = END;
    strata_error err = {0};
    cr_assert_eq(xml_call(V, "get_weather", WEATHER, NULL, end, &c, &err), STRATA_OK, "%s", err.message);
#define OPEN "<tool_call>\n<function=get_weather>\n"
#define P(name, value) "<parameter=" name ">\n" value "\n</parameter>\n"
#define CLOSE "</function>\n</tool_call>"
    const char *whole[] = {OPEN P("city", "New York") CLOSE,
                           OPEN P("days", "3") P("city", "Zoë said \"<hi>\"\nand </para") P("unit", "F") CLOSE,
                           OPEN P("tags", "[\"a\", \"b\"]") P("city", "") CLOSE};
    for (size_t i = 0; i < sizeof whole / sizeof *whole; i++)
        cr_expect_eq(first_refused(c, whole[i]), -1, "%s", whole[i]);
    struct { const char *text; long at; } bad[] = {
        {"<tool_call>\n<function=get_time>", 26},               /* another function */
        {OPEN "</function>", 36},                               /* city is required at '/' */
        {OPEN P("city", "x") "<parameter=city>", 78},           /* once */
        {OPEN "<parameter=zip>", 46},                           /* not a parameter */
        {OPEN P("city", "a</parameter>") CLOSE, 64},             /* the text may not close it early */
        {OPEN P("days", "3.5") CLOSE, 53},                      /* integer */
        {OPEN P("unit", "K") CLOSE, 52},                        /* enum, raw */
        {OPEN P("city", "x") CLOSE "\n", 91},                   /* nothing after the call */
        {OPEN P("city", "x") "</function>", 78}};               /* not whole before </tool_call> */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(first_refused(c, bad[i].text), bad[i].at, "%s: refused at %ld, expected %ld", bad[i].text,
                     first_refused(c, bad[i].text), bad[i].at);
#undef OPEN
#undef P
#undef CLOSE
    strata_constraint_free(c);
    const char *bounded = "{\"type\":\"object\",\"properties\":{\"c\":{\"type\":\"string\",\"minLength\":2,"
                          "\"maxLength\":4}}}";
    cr_assert_eq(xml_call(V, "f", bounded, NULL, end, &c, &err), STRATA_OK);
    const char *head = "<tool_call>\n<function=f>\n<parameter=c>\n";
    char text[256];
    long h = (long)strlen(head);
    const char *values[] = {"abcd", "ab", "abcde", "a", "abc\n\n"};
    long want[] = {-1, -1, h + 4, h + 13, h + 5};  /* maxLength at 'e'; minLength at the end's '>'; "abc\n\n" is 5 */
    for (int i = 0; i < 5; i++) {
        snprintf(text, sizeof text, "%s%s\n</parameter>\n</function>\n</tool_call>", head, values[i]);
        cr_expect_eq(first_refused(c, text), want[i], "'%s': refused at %ld", values[i], first_refused(c, text));
    }
    strata_constraint_free(c);
    cr_expect_eq(xml_call(V, "a>b", NULL, NULL, end, &c, &err), STRATA_E_INVALID);
    cr_expect_eq(xml_call(V, "f", "{\"type\":\"string\"}", NULL, end, &c, &err),
                 STRATA_E_UNSUPPORTED);
}

/* A call in a JSON syntax: the name one of the functions, then that function's
 * arguments; and in XML, the second function's arguments follow its own name. */
Test(constraint, a_forced_call_takes_the_arguments_of_the_function_it_names)
{
    strata_call_schema calls[2] = {{"get_weather", WEATHER, strlen(WEATHER)}, {"get", "{\"type\":\"object\","
                                   "\"additionalProperties\":false,\"properties\":{\"n\":{\"type\":\"integer\"}},"
                                   "\"required\":[\"n\"]}", 0}};
    calls[1].len = strlen(calls[1].schema);
    strata_constraint *c = NULL;
    int32_t end = END;
    strata_error err = {0};
    cr_assert_eq(strata_constraint_new_call(V, calls, 2, 0, "<tool_call>\n{\"name\": \"", "\", \"arguments\": ",
                                            "}\n</tool_call>", &end, 1, &c, &err), STRATA_OK, "%s", err.message);
    cr_expect_eq(first_refused(c, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n"
                                  "</tool_call>"), -1);
    cr_expect_eq(first_refused(c, "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"n\": 3}}\n</tool_call>"), -1);
    cr_expect_eq(first_refused(c, "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"city\""), 43,
                 "get's arguments, not get_weather's");
    cr_expect_eq(first_refused(c, "<tool_call>\n{\"name\": \"set"), 22);
    cr_expect_eq(first_refused(c, "{"), 0);
    const char *open = "<tool_call>\n{\"name\": \"get\", \"arguments\": {\"n\": 3}}\n</tool";
    cr_expect_eq(first_refused(c, open), (long)strlen(open), "taken, but not whole yet");
    strata_constraint_free(c);
    cr_assert_eq(xml_call(V, "get_weather", WEATHER, "get", end, &c, &err), STRATA_OK, "%s", err.message);
    cr_expect_eq(first_refused(c, "<tool_call>\n<function=get>\n</function>\n</tool_call>"), -1);
    cr_expect_eq(first_refused(c, "<tool_call>\n<function=get>\n<parameter=any>\nraw text\n</parameter>\n</function>\n"
                                  "</tool_call>"), -1, "undeclared parameters are text, as the parser reads them");
    cr_expect_eq(first_refused(c, "<tool_call>\n<function=gex"), 24);
    strata_constraint_free(c);
}

/* Liveness, the invariant the sampler relies on: wherever a walk of allowed bytes
 * leads, some byte or the end is allowed. Random walks (a fixed stream) over every
 * kind of constraint, taking a random allowed byte each step. */
Test(constraint, no_walk_of_allowed_bytes_reaches_a_dead_end)
{
    strata_constraint *cs[4];
    cs[0] = compile(V, NULL);
    cs[1] = compile(V, PERSON);
    cs[2] = compile(V, "{\"type\":\"array\",\"items\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":\"string\",\"maxLength\":3},"
                       "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":-7,\"maximum\":1234},"
                       "\"maxItems\":2}]},\"minItems\":2}");
    int32_t end = END;
    strata_call_schema calls[2] = {{"get_weather", WEATHER, strlen(WEATHER)}, {"f", NULL, 0}};
    cr_assert_eq(strata_constraint_new_call(V, calls, 2, 1, "<tool_call>\n<function=", ">\n", "\n</tool_call>", &end, 1,
                                            &cs[3], NULL), STRATA_OK);
    uint64_t rng = 12345;
    for (int k = 0; k < 4; k++) {
        for (int walk = 0; walk < 200; walk++) {
            cons_cursor *cur;
            cr_assert_eq(cons_cursor_new(cs[k], &cur, NULL), STRATA_OK);
            for (int step = 0; step < 300; step++) {
                int ok[256], n = 0;
                for (int b = 0; b < 256; b++)
                    if (cons_allows(cur, b))
                        ok[n++] = b;
                cr_assert(n > 0 || cons_allows(cur, END), "constraint %d, walk %d: stuck after %d bytes", k, walk, step);
                if (!n)
                    break;
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                cons_advance(cur, ok[(rng >> 33) % (uint64_t)n]);
            }
            cons_cursor_free(cur);
        }
        strata_constraint_free(cs[k]);
    }
}

/* Integer bounds, exclusive or not, are exact and never strand a number: "1" may
 * not start a value of 25..30, "-" may not start one >= 0 (save "-0"). allOf of one
 * schema is that schema. */
Test(constraint, integer_bounds_take_only_prefixes_that_can_still_fit)
{
    strata_constraint *c = compile(V, "{\"type\":\"integer\",\"minimum\":25,\"exclusiveMaximum\":31}");
    const char *ok[] = {"25", "30", "27"};
    for (int i = 0; i < 3; i++)
        cr_expect_eq(first_refused(c, ok[i]), -1, "%s", ok[i]);
    struct { const char *text; long at; } bad[] = {{"1", 0}, {"31", 1}, {"24", 1}, {"-", 0}, {"250", 2}, {"2.5", 1},
                                                   {"3", 1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_eq(first_refused(c, bad[i].text), bad[i].at, "%s: refused at %ld", bad[i].text,
                     first_refused(c, bad[i].text));
    strata_constraint_free(c);
    c = compile(V, "{\"allOf\":[{\"type\":\"integer\",\"exclusiveMinimum\":-5,\"maximum\":0.5}],\"description\":\"d\"}");
    const char *ok2[] = {"-4", "0", "-0", "-1"};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(first_refused(c, ok2[i]), -1, "%s", ok2[i]);
    cr_expect_eq(first_refused(c, "-5"), 1, "-5 is excluded, and longer ones are smaller still");
    cr_expect_eq(first_refused(c, "1"), 0);
    cr_expect_eq(first_refused(c, "-10"), 2);
    strata_constraint_free(c);
    int32_t end = END;
    strata_constraint *none = NULL;
    strata_error err = {0};
    const char *refused[] = {"{\"type\":\"number\",\"maximum\":1}", "{\"type\":\"integer\",\"minimum\":2,\"maximum\":1.5}",
                             "{\"allOf\":[{\"type\":\"integer\"},{\"minimum\":1}]}"};
    for (int i = 0; i < 3; i++)
        cr_expect_neq(strata_constraint_new_json(V, refused[i], strlen(refused[i]), &end, 1, &none, &err), STRATA_OK,
                      "%s", refused[i]);
}
