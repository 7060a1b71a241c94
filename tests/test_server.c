/*
 * test_server.c — the real strata-server on 127.0.0.1, spoken to over HTTP: every
 * route, greedy output equal to the fixtures, streaming equal to non-streaming, stop
 * strings, seeds, logprobs, structured output, concurrency equal to solo runs,
 * cancellation on disconnect, malformed requests, API keys and graceful shutdown.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "util.h"

static test_server S;

static const char *demo_dir(void)
{
    static char path[4096];
    const char *root = getenv("STRATA_ROOT");
    snprintf(path, sizeof path, "%s/models/strata-demo", root ? root : ".");
    return path;
}

static void start_demo(void)
{
    cr_assert_eq(server_start(&S, demo_dir(), NULL), 0, "strata-server did not start");
}

static void stop_server(void)
{
    cr_assert_eq(server_stop(&S), 0, "strata-server exits 0 on SIGTERM");
}

static json_t *call(const char *method, const char *path, const char *body, int want_status)
{
    http_response r;
    cr_assert_eq(http_do(S.port, method, path, body, body ? strlen(body) : 0, NULL, &r), 0, "%s %s", method, path);
    cr_assert_eq(r.status, want_status, "%s %s %s -> %d: %s", method, path, body ? body : "", r.status, r.body);
    json_t *j = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    http_response_free(&r);
    return j;
}

static const char *text_of(json_t *resp, int choice)
{
    json_t *c = json_array_get(json_object_get(resp, "choices"), (size_t)choice);
    json_t *msg = json_object_get(c, "message");
    return json_string_value(json_object_get(msg ? msg : c, msg ? "content" : "text"));
}

static int cached_of(json_t *resp)
{
    return (int)json_integer_value(
        json_object_get(json_object_get(json_object_get(resp, "usage"), "prompt_tokens_details"), "cached_tokens"));
}

static char *expected_greedy_text(const char *dir_in_shared, const char *model_dir, int32_t **prompt, int *n_prompt)
{
    strata_error err;
    st_file *exp;
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.safetensors", shared_path(dir_in_shared));
    cr_assert_eq(st_open(path, &exp, &err), STRATA_OK, "%s", err.message);
    const st_tensor *out = st_find(exp, "greedy.output_ids"), *in = st_find(exp, "greedy.prompt_ids");
    strata_tokenizer *tok;
    cr_assert_eq(strata_tokenizer_load(model_dir, &tok, &err), STRATA_OK, "%s", err.message);
    char *text;
    size_t len;
    cr_assert_eq(strata_tokenizer_decode(tok, out->data, (size_t)out->numel, 1, &text, &len, &err), STRATA_OK);
    *n_prompt = (int)in->numel;
    *prompt = malloc(sizeof(int32_t) * (size_t)in->numel);
    memcpy(*prompt, in->data, sizeof(int32_t) * (size_t)in->numel);
    strata_tokenizer_free(tok);
    st_close(exp);
    return text;
}

TestSuite(server, .init = start_demo, .fini = stop_server, .timeout = 120);

Test(server, service_routes)
{
    json_t *j = call("GET", "/health", NULL, 200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);
    j = call("GET", "/v1/models", NULL, 200);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(m, "id")), "strata-demo");
    json_t *meta = json_object_get(m, "meta");
    cr_assert_eq(json_array_size(json_object_get(meta, "layers_block_type")), 12);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(meta, "layers_block_type"), 1)), "moe");
    cr_assert_gt(json_integer_value(json_object_get(meta, "state_bytes_fixed")), 0);
    cr_assert(json_is_true(json_object_get(meta, "response_format")));
    cr_assert_str_eq(json_string_value(json_object_get(meta, "tool_calls")), "xml", "the demo template's syntax");
    json_decref(j);
    j = call("GET", "/v1/models/strata-demo", NULL, 200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "model");
    json_decref(j);
    j = call("GET", "/v1/models/gpt-4", NULL, 404);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "model_not_found");
    json_decref(j);
    j = call("POST", "/tokenize", "{\"content\":\"In the beginning\",\"add_special\":true}", 200);
    json_t *t = json_object_get(j, "tokens");
    int want[] = {1, 1165, 276, 2102};
    cr_assert_eq(json_array_size(t), 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(json_integer_value(json_array_get(t, (size_t)i)), want[i]);
    json_decref(j);
    /* llama.cpp's defaults and pieces: special tokens parsed unless parse_special is
     * false; a piece is its token's text, or its bytes where they are part of a
     * character (é is 0xC3 0xA9 in two byte tokens here) */
    j = call("POST", "/tokenize", "{\"content\":\"<s>In\",\"with_pieces\":true}", 200);
    t = json_object_get(j, "tokens");
    cr_assert_eq(json_array_size(t), 2, "<s> parsed as the special token");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(t, 0), "piece")), "<s>");
    json_decref(j);
    j = call("POST", "/tokenize", "{\"content\":\"<s>In\",\"parse_special\":false}", 200);
    cr_assert_gt(json_array_size(json_object_get(j, "tokens")), 2, "special tokens are text when parse_special is off");
    json_decref(j);
    j = call("POST", "/tokenize", "{\"content\":\"\u00e9\",\"with_pieces\":true}", 200);
    t = json_object_get(j, "tokens");
    cr_assert_eq(json_array_size(t), 2);
    for (int i = 0; i < 2; i++) {
        json_t *piece = json_object_get(json_array_get(t, (size_t)i), "piece");
        cr_assert(json_is_array(piece) && json_array_size(piece) == 1, "piece %d is its byte", i);
        cr_assert_eq(json_integer_value(json_array_get(piece, 0)), i ? 0xa9 : 0xc3);
    }
    json_decref(j);
    json_decref(call("POST", "/tokenize", "{\"content\":\"a\",\"add_special\":\"yes\"}", 400));
    j = call("POST", "/detokenize", "{\"tokens\":[1165,276,2102]}", 200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "content")), "In the beginning");
    json_decref(j);
    http_response r;
    cr_assert_eq(http_do(S.port, "GET", "/metrics", NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "strata_requests_total") && strstr(r.body, "strata_queue_depth") &&
              strstr(r.body, "strata_decode_tokens_per_second"), "%s", r.body);
    http_response_free(&r);
}

Test(server, greedy_completion_equals_the_fixture_streamed_or_not)
{
    int32_t *prompt;
    int n;
    char *want = expected_greedy_text("models/strata-demo", demo_dir(), &prompt, &n);
    json_t *j = call("POST", "/v1/completions",
                     "{\"model\":\"strata-demo\",\"prompt\":\"In the beginning\",\"max_tokens\":32,\"temperature\":0}", 200);
    cr_assert_str_eq(text_of(j, 0), want);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason")), "length");
    json_t *usage = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "prompt_tokens")), 4);
    cr_assert_eq(json_integer_value(json_object_get(usage, "completion_tokens")), 32);
    cr_assert(json_is_integer(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens")));
    json_decref(j);
    /* streamed: chunks reassemble to the same text, then usage, then [DONE] */
    http_response r;
    const char *body = "{\"prompt\":\"In the beginning\",\"max_tokens\":32,\"temperature\":0,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true}}";
    cr_assert_eq(http_do(S.port, "POST", "/v1/completions", body, strlen(body), NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strcasestr(r.headers, "text/event-stream"));
    char text[4096] = "";
    int chunks = 0, usage_seen = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) || !strcmp(line, "data: [DONE]"))
            continue;
        json_t *c = json_loads(line + 6, 0, NULL);
        cr_assert(c, "chunk is JSON: %s", line);
        json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
        if (choice)
            strcat(text, json_string_value(json_object_get(choice, "text")));
        json_t *u = json_object_get(c, "usage");   /* as OpenAI: null on every chunk but the last */
        cr_assert(u && (json_is_null(u) || !choice), "%s", line);
        usage_seen += json_is_object(u);
        chunks++;
        json_decref(c);
    }
    cr_assert(strstr(strrchr(r.headers, '\n') ? r.body : r.body, "") != NULL);
    cr_assert_str_eq(text, want);
    cr_assert_gt(chunks, 10);
    cr_assert_eq(usage_seen, 1);
    http_response_free(&r);
    free(want);
    free(prompt);
}

Test(server, token_prompts_stop_strings_seeds_and_logprobs)
{
    /* token-array prompt = the string prompt */
    json_t *a = call("POST", "/v1/completions", "{\"prompt\":[1,1165,276,2102],\"max_tokens\":12,\"temperature\":0}", 200);
    json_t *b = call("POST", "/v1/completions", "{\"prompt\":\"In the beginning\",\"max_tokens\":12,\"temperature\":0}", 200);
    cr_assert_str_eq(text_of(a, 0), text_of(b, 0));
    /* a stop string inside the greedy text cuts it there, and is not emitted */
    const char *full = text_of(b, 0), *lord = strstr(full, " LORD");
    cr_assert(lord, "greedy text mentions the LORD: %s", full);
    json_t *s = call("POST", "/v1/completions",
                     "{\"prompt\":\"In the beginning\",\"max_tokens\":12,\"temperature\":0,\"stop\":[\"zzz\",\" LORD\"]}", 200);
    cr_assert_eq(strlen(text_of(s, 0)), (size_t)(lord - full));
    cr_assert_eq(strncmp(text_of(s, 0), full, (size_t)(lord - full)), 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(s, "choices"), 0), "finish_reason")), "stop");
    /* seeds: same seed, same text; n choices are numbered */
    const char *seeded = "{\"prompt\":\"And\",\"max_tokens\":16,\"temperature\":1.0,\"seed\":42,\"n\":2}";
    json_t *x = call("POST", "/v1/completions", seeded, 200), *y = call("POST", "/v1/completions", seeded, 200);
    cr_assert_str_eq(text_of(x, 0), text_of(y, 0));
    cr_assert_str_eq(text_of(x, 1), text_of(y, 1));
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(x, "choices"), 1), "index")), 1);
    /* logprobs: one entry per token, <= 0, top alternatives sorted with total mass <= 1 */
    json_t *l = call("POST", "/v1/completions", "{\"prompt\":\"In the\",\"max_tokens\":6,\"temperature\":0,\"logprobs\":5}", 200);
    json_t *lp = json_object_get(json_array_get(json_object_get(l, "choices"), 0), "logprobs");
    json_t *vals = json_object_get(lp, "token_logprobs"), *tops = json_object_get(lp, "top_logprobs");
    cr_assert_eq(json_array_size(vals), 6);
    cr_assert_eq(json_array_size(json_object_get(lp, "tokens")), 6);
    for (size_t i = 0; i < 6; i++) {
        double v = json_real_value(json_array_get(vals, i)) + (double)json_integer_value(json_array_get(vals, i));
        cr_assert_leq(v, 1e-6);
        json_t *top = json_array_get(tops, i);
        cr_assert_eq(json_object_size(top), 5);
        double mass = 0, best = -INFINITY;
        const char *k;
        json_t *val;
        json_object_foreach(top, k, val) {
            double t = json_number_value(val);
            mass += exp(t);
            best = t > best ? t : best;
        }
        cr_assert_leq(mass, 1.0 + 1e-4);
        cr_assert_float_eq(best, v, 1e-4, "greedy picks the most likely token");
    }
    json_decref(a);
    json_decref(b);
    json_decref(s);
    json_decref(x);
    json_decref(y);
    json_decref(l);
}

Test(server, chat_completions_json_and_stream)
{
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a scribe.\"},"
                       "{\"role\":\"user\",\"content\":\"Who is the LORD?\"}],\"max_tokens\":10,\"temperature\":0}";
    json_t *j = call("POST", "/v1/chat/completions", body, 200);
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    cr_assert_str_eq(json_string_value(json_object_get(msg, "role")), "assistant");
    cr_assert_gt(strlen(json_string_value(json_object_get(msg, "content"))), 0);
    http_response r;
    const char *sbody = "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a scribe.\"},"
                        "{\"role\":\"user\",\"content\":\"Who is the LORD?\"}],\"max_tokens\":10,\"temperature\":0,\"stream\":true}";
    cr_assert_eq(http_do(S.port, "POST", "/v1/chat/completions", sbody, strlen(sbody), NULL, &r), 0);
    char text[4096] = "";
    int first = 1, finish_seen = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) || !strcmp(line, "data: [DONE]"))
            continue;
        json_t *c = json_loads(line + 6, 0, NULL);
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        json_t *delta = json_object_get(ch, "delta");
        if (first)
            cr_assert_str_eq(json_string_value(json_object_get(delta, "role")), "assistant", "role delta comes first");
        first = 0;
        if (json_is_string(json_object_get(delta, "content")))
            strcat(text, json_string_value(json_object_get(delta, "content")));
        finish_seen |= json_is_string(json_object_get(ch, "finish_reason"));
        json_decref(c);
    }
    cr_assert_str_eq(text, json_string_value(json_object_get(msg, "content")));
    cr_assert(finish_seen);
    cr_assert(strstr(r.headers, "200"));
    http_response_free(&r);
    json_decref(j);
}

static const char *PERSON_FORMAT =
    "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"person\",\"strict\":true,\"schema\":{\"type\":\"object\","
    "\"additionalProperties\":false,\"required\":[\"name\",\"age\"],\"properties\":{\"name\":{\"type\":\"string\","
    "\"maxLength\":20},\"age\":{\"type\":\"integer\"}}}}}";

/* A finished choice's content is a person as the schema says. */
static void assert_person(const char *content)
{
    json_error_t je;
    json_t *o = json_loads(content, 0, &je);
    cr_assert(json_is_object(o), "not a JSON object (%s): %s", je.text, content);
    cr_assert_eq(json_object_size(o), 2, "exactly name and age: %s", content);
    json_t *name = json_object_get(o, "name"), *age = json_object_get(o, "age");
    cr_assert(json_is_string(name) && json_is_integer(age), "types: %s", content);
    cr_assert_leq(json_string_length(name), 20 * 4, "maxLength: %s", content);
    json_decref(o);
}

/* The demo model knows nothing of JSON; with response_format every choice that
 * ends is a valid object of the schema (the rest are cut by max_tokens, still a
 * prefix of one), streamed as sent whole. */
Test(server, response_format_json_schema_holds_every_choice_to_the_schema)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"A person as JSON.\"}],"
             "\"max_tokens\":300,\"n\":4,\"seed\":5,\"response_format\":%s}", PERSON_FORMAT);
    json_t *j = call("POST", "/v1/chat/completions", body, 200);
    int stopped = 0;
    for (int c = 0; c < 4; c++) {
        json_t *ch = json_array_get(json_object_get(j, "choices"), (size_t)c);
        const char *finish = json_string_value(json_object_get(ch, "finish_reason"));
        if (!strcmp(finish, "stop")) {
            assert_person(text_of(j, c));
            stopped++;
        } else {
            cr_assert_str_eq(finish, "length");
            cr_assert_eq(text_of(j, c)[strspn(text_of(j, c), " \t\r\n")], '{', "%s", text_of(j, c));
        }
    }
    cr_assert_geq(stopped, 1, "some choice of four finishes its object within 300 tokens");
    json_decref(j);
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"A person as JSON.\"}],"
             "\"max_tokens\":300,\"temperature\":0,\"response_format\":%s}", PERSON_FORMAT);
    json_t *g = call("POST", "/v1/chat/completions", body, 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(g, "choices"), 0),
                                                       "finish_reason")), "stop");
    assert_person(text_of(g, 0));
    json_decref(g);
}

Test(server, response_format_json_object_gives_objects_and_text_gives_free_text)
{
    const char *body = "{\"prompt\":\"The LORD said\",\"max_tokens\":200,\"n\":4,\"seed\":5,"
                       "\"response_format\":{\"type\":\"json_object\"}}";
    json_t *j = call("POST", "/v1/completions", body, 200);
    int stopped = 0;
    for (int c = 0; c < 4; c++) {
        json_t *ch = json_array_get(json_object_get(j, "choices"), (size_t)c);
        if (strcmp(json_string_value(json_object_get(ch, "finish_reason")), "stop"))
            continue;
        json_t *o = json_loads(text_of(j, c), 0, NULL);
        cr_assert(json_is_object(o), "choice %d: %s", c, text_of(j, c));
        json_decref(o);
        stopped++;
    }
    cr_assert_geq(stopped, 1);
    json_decref(j);
    json_t *free_text = call("POST", "/v1/completions", "{\"prompt\":\"The LORD said\",\"max_tokens\":8,"
                             "\"temperature\":0,\"response_format\":{\"type\":\"text\"}}", 200);
    json_t *plain = call("POST", "/v1/completions", "{\"prompt\":\"The LORD said\",\"max_tokens\":8,\"temperature\":0}", 200);
    cr_assert_str_eq(text_of(free_text, 0), text_of(plain, 0));
    cr_assert_neq(text_of(plain, 0)[strspn(text_of(plain, 0), " \n")], '{', "the free text is not JSON by chance");
    json_decref(free_text);
    json_decref(plain);
}

static const char *WEATHER_TOOLS =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"The weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":\"integer\"}},"
    "\"required\":[\"city\"]}}}]";

/* The streamed content of a chat answer, and whether a delta carried tool_calls. */
/* A streamed chat answer: its content deltas concatenated (returned), and optionally
 * its reasoning deltas concatenated, the number of tool-call deltas, the finish reason. */
static char *streamed_content(const char *body, char **reasoning, int *tool_deltas, char *finish, size_t finish_len)
{
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", "/v1/chat/completions", body, strlen(body), NULL, &r), 0);
    cr_assert_eq(r.status, 200, "%s", r.body);
    char *text = calloc(1, r.body_len + 1);
    if (reasoning)
        *reasoning = calloc(1, r.body_len + 1);
    if (tool_deltas)
        *tool_deltas = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *c = strncmp(line, "data: {", 7) ? NULL : json_loads(line + 6, 0, NULL);
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0), *delta = json_object_get(ch, "delta");
        if (json_is_string(json_object_get(delta, "content")))
            strcat(text, json_string_value(json_object_get(delta, "content")));
        if (reasoning && json_is_string(json_object_get(delta, "reasoning_content")))
            strcat(*reasoning, json_string_value(json_object_get(delta, "reasoning_content")));
        if (tool_deltas)
            *tool_deltas += json_object_get(delta, "tool_calls") != NULL;
        if (finish && json_is_string(json_object_get(ch, "finish_reason")))
            snprintf(finish, finish_len, "%s", json_string_value(json_object_get(ch, "finish_reason")));
        json_decref(c);
    }
    http_response_free(&r);
    return text;
}

static json_t *chat_message(int max_tokens, const char *extra)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}],"
             "\"max_tokens\":%d,\"temperature\":0%s}", max_tokens, extra);
    json_t *j = call("POST", "/v1/chat/completions", body, 200);
    json_t *m = json_deep_copy(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"));
    json_decref(j);
    return m;
}

/* reasoning_format "deepseek": the answer's <think> block (opened by the template's
 * generation prompt when thinking is on) comes apart in reasoning_content, the rest
 * is the content; the same answer as with "none", only split, and streamed the same.
 * With thinking off there is no block; by default nothing changes. */
Test(server, reasoning_format_deepseek_puts_the_think_block_apart)
{
    json_t *none = chat_message(40, ""), *split = chat_message(40, ",\"reasoning_format\":\"deepseek\"");
    cr_assert_null(json_object_get(none, "reasoning_content"), "by default the text stays whole");
    const char *whole = json_string_value(json_object_get(none, "content"));
    const char *reasoning = json_string_value(json_object_get(split, "reasoning_content"));
    const char *content = json_string_value(json_object_get(split, "content"));
    cr_assert(reasoning && content);
    const char *close = strstr(whole, "</think>");
    if (close) {
        cr_assert_eq(strlen(reasoning), (size_t)(close - whole));
        cr_assert_eq(strncmp(whole, reasoning, strlen(reasoning)), 0);
        cr_assert_str_eq(content, close + 8 + strspn(close + 8, " \n\r\t"));
    } else {
        cr_assert_str_eq(reasoning, whole, "the block never closed: all of it is reasoning");
        cr_assert_str_eq(content, "");
    }
    char *sr, *sc = streamed_content("{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}],\"max_tokens\":40,"
                   "\"temperature\":0,\"reasoning_format\":\"deepseek\",\"stream\":true}", &sr, NULL, NULL, 0);
    cr_assert_str_eq(sr, reasoning, "the streamed reasoning");
    cr_assert_str_eq(sc, content, "the streamed content");
    free(sc);
    free(sr);
    /* the block closed at once (</think>, id 13, made certain): no reasoning, the rest is content */
    json_t *closed = chat_message(3, ",\"reasoning_format\":\"deepseek\",\"logit_bias\":{\"13\":100}");
    cr_assert(json_is_null(json_object_get(closed, "reasoning_content")));
    cr_assert_str_eq(json_string_value(json_object_get(closed, "content")), "</think></think>");
    sc = streamed_content("{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}],\"max_tokens\":3,"
                   "\"temperature\":0,\"reasoning_format\":\"deepseek\",\"logit_bias\":{\"13\":100},\"stream\":true}",
                          &sr, NULL, NULL, 0);
    cr_assert_str_eq(sc, "</think></think>");
    cr_assert_str_eq(sr, "");
    free(sc);
    free(sr);
    json_decref(closed);
    json_t *off = chat_message(40, ",\"reasoning_format\":\"deepseek\",\"chat_template_kwargs\":{\"enable_thinking\":false}");
    json_t *off_none = chat_message(40, ",\"chat_template_kwargs\":{\"enable_thinking\":false}");
    cr_assert(json_is_null(json_object_get(off, "reasoning_content")), "thinking off: no block");
    cr_assert_str_eq(json_string_value(json_object_get(off, "content")),
                     json_string_value(json_object_get(off_none, "content")));
    json_t *e = call("POST", "/v1/chat/completions",
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":\"auto\"}", 400);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "error"), "param")), "reasoning_format");
    json_decref(e);
    json_decref(none);
    json_decref(split);
    json_decref(off);
    json_decref(off_none);
}

/* A multi-turn tool conversation as the openai SDKs send it (arguments as JSON
 * text, a tool message) renders through the checkpoint's template; an answer with
 * no call is plain content, streamed the same; a bad tool_choice is a 400. */
Test(server, tool_conversations_render_and_answers_without_calls_stay_content)
{
    char body[2048];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
             "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\", \\\"days\\\": 2}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"}],%s,\"max_tokens\":12,"
             "\"temperature\":0%%s}", WEATHER_TOOLS);
    char plain[2100], streamed[2100];
    snprintf(plain, sizeof plain, body, "");
    snprintf(streamed, sizeof streamed, body, ",\"stream\":true");
    json_t *j = call("POST", "/v1/chat/completions", plain, 200);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0), *msg = json_object_get(ch, "message");
    cr_assert(json_is_string(json_object_get(msg, "content")));
    cr_assert_null(json_object_get(msg, "tool_calls"));
    cr_assert_str_neq(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    json_t *without = call("POST", "/v1/chat/completions",
                           "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],\"max_tokens\":1}", 200);
    cr_assert_gt(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")),
                 json_integer_value(json_object_get(json_object_get(without, "usage"), "prompt_tokens")) + 40,
                 "the tools, the call and its result are in the prompt");
    int tool_deltas;
    char finish[32] = "";
    char *text = streamed_content(streamed, NULL, &tool_deltas, finish, sizeof finish);
    cr_assert_str_eq(text, json_string_value(json_object_get(msg, "content")));
    cr_assert_eq(tool_deltas, 0);
    cr_assert_str_eq(finish, json_string_value(json_object_get(ch, "finish_reason")));
    free(text);
    json_decref(j);
    json_decref(without);
    char bad[1024];
    const char *choices[] = {"5", "\"always\"", "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}",
                             "{\"type\":\"function\",\"function\":{}}"};
    for (int i = 0; i < 4; i++) {
        snprintf(bad, sizeof bad, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s,\"tool_choice\":%s}",
                 WEATHER_TOOLS, choices[i]);
        json_t *e = call("POST", "/v1/chat/completions", bad, 400);
        cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "error"), "param")), "tool_choice");
        json_decref(e);
    }
    json_t *e = call("POST", "/v1/chat/completions",
                     "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"retrieval\"}]}", 400);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "error"), "param")), "tools");
    json_decref(e);
}

/* tool_choice naming a function, or "required" (any of them): the demo model, which
 * never saw a tool, writes a call of the template's syntax whose arguments satisfy
 * that function's parameters; the answer reports it as tool_calls, streamed as one
 * delta, and the call renders back into the next turn's prompt. */
Test(server, a_forced_tool_call_is_written_in_the_templates_syntax_and_reported)
{
    const char *tools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{"
                        "\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"city\"],\"properties\":{"
                        "\"city\":{\"type\":\"string\",\"maxLength\":20},\"days\":{\"type\":\"integer\"},"
                        "\"unit\":{\"enum\":[\"C\",\"F\"]}}}}},{\"type\":\"function\",\"function\":{\"name\":"
                        "\"get_time\",\"parameters\":{\"type\":\"object\",\"additionalProperties\":false,"
                        "\"required\":[\"tz\"],\"properties\":{\"tz\":{\"enum\":[\"UTC\",\"CET\"]}}}}}]";
    const char *choices[] = {"{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", "\"required\""};
    int names_seen[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        char body[2048];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,"
                 "\"tool_choice\":%s,\"max_tokens\":300,\"n\":2,\"seed\":%d}", tools, choices[k], 11 + k);
        json_t *j = call("POST", "/v1/chat/completions", body, 200);
        for (int c = 0; c < 2; c++) {
            json_t *ch = json_array_get(json_object_get(j, "choices"), (size_t)c), *msg = json_object_get(ch, "message");
            cr_assert_str_eq(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls", "%s",
                             json_dumps(ch, 0));
            cr_assert(json_is_null(json_object_get(msg, "content")));
            json_t *calls = json_object_get(msg, "tool_calls"), *f = json_object_get(json_array_get(calls, 0), "function");
            cr_assert_eq(json_array_size(calls), 1);
            const char *name = json_string_value(json_object_get(f, "name"));
            json_t *args = json_loads(json_string_value(json_object_get(f, "arguments")), 0, NULL);
            if (!strcmp(name, "get_time")) {
                cr_assert_eq(k, 1, "only \"required\" may choose get_time");
                const char *tz = json_string_value(json_object_get(args, "tz"));
                cr_assert(tz && (!strcmp(tz, "UTC") || !strcmp(tz, "CET")) && json_object_size(args) == 1);
                names_seen[1]++;
                json_decref(args);
                continue;
            }
            cr_assert_str_eq(name, "get_weather");
            names_seen[0]++;
            json_t *city = json_object_get(args, "city"), *days = json_object_get(args, "days");
            json_t *unit = json_object_get(args, "unit");
            cr_assert(json_is_string(city), "%s", json_string_value(json_object_get(f, "arguments")));
            cr_assert_leq(json_string_length(city), 20 * 4);
            cr_assert(!days || json_is_integer(days));
            cr_assert(!unit || !strcmp(json_string_value(unit), "C") || !strcmp(json_string_value(unit), "F"));
            size_t allowed = 1 + (days != NULL) + (unit != NULL);
            cr_assert_eq(json_object_size(args), allowed, "no other keys");
            json_decref(args);
        }
        json_decref(j);
    }
    cr_assert_gt(names_seen[0], 0);
    /* greedy, streamed and not; then the call goes back into the conversation */
    char body[2048], streamed[2100];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}],%s,"
             "\"tool_choice\":\"required\",\"max_tokens\":300,\"temperature\":0%%s}", tools);
    char plain[2100];
    snprintf(plain, sizeof plain, body, "");
    snprintf(streamed, sizeof streamed, body, ",\"stream\":true");
    json_t *j = call("POST", "/v1/chat/completions", plain, 200);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    int tool_deltas;
    char finish[32] = "";
    char *text = streamed_content(streamed, NULL, &tool_deltas, finish, sizeof finish);
    cr_assert_str_eq(text, "", "no content streams before the call");
    cr_assert_eq(tool_deltas, 1);
    cr_assert_str_eq(finish, "tool_calls");
    free(text);
    char *call_json = json_dumps(json_object_get(msg, "tool_calls"), JSON_COMPACT);
    char next[4096];
    snprintf(next, sizeof next, "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"},"
             "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":%s},{\"role\":\"tool\",\"tool_call_id\":\"x\","
             "\"content\":\"sunny\"}],%s,\"max_tokens\":4}", call_json, tools);
    json_decref(call("POST", "/v1/chat/completions", next, 200));
    free(call_json);
    json_decref(j);
    cr_log_info("forced calls: get_weather %d, get_time %d", names_seen[0], names_seen[1]);
    json_t *e = call("POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                     "\"tool_choice\":\"required\"}", 400);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "error"), "param")), "tool_choice");
    json_decref(e);
}

typedef struct concurrent_arg {
    int index;
    char text[4096];
} concurrent_arg;

static void *stream_one(void *p)
{
    concurrent_arg *a = p;
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":[1,%d,%d],\"max_tokens\":12,\"temperature\":0,\"stream\":true}",
             100 + a->index * 7, 200 + a->index);
    http_response r;
    if (http_do(S.port, "POST", "/v1/completions", body, strlen(body), NULL, &r) != 0)
        return NULL;
    char *save = NULL;
    for (char *line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *c = strncmp(line, "data: {", 7) ? NULL : json_loads(line + 6, 0, NULL);
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        if (ch)
            strcat(a->text, json_string_value(json_object_get(ch, "text")));
        json_decref(c);
    }
    http_response_free(&r);
    return NULL;
}

Test(server, sixteen_concurrent_streams_equal_solo_runs)
{
    enum { N = 16 };
    concurrent_arg args[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        args[i] = (concurrent_arg){.index = i};
        pthread_create(&th[i], NULL, stream_one, &args[i]);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"prompt\":[1,%d,%d],\"max_tokens\":12,\"temperature\":0}", 100 + i * 7, 200 + i);
        json_t *j = call("POST", "/v1/completions", body, 200);
        cr_assert_str_eq(args[i].text, text_of(j, 0), "stream %d: [%s] vs [%s]", i, args[i].text, text_of(j, 0));
        json_decref(j);
    }
}

static long metric(const char *name)
{
    return (long)server_metric(S.port, name);
}

/* A streamed completion of `body`, read up to its first token: admitted and running
 * (its headers alone come before admission). The open connection. */
static int stream_until_first_token(const char *body)
{
    int fd = http_send_only(S.port, "POST", "/v1/completions", body);
    cr_assert_geq(fd, 0);
    char buf[4096];
    size_t got = 0;
    while (got < sizeof buf - 1 && !memmem(buf, got, "data:", 5)) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        cr_assert_gt(n, 0, "the stream started");
        got += (size_t)n;
    }
    return fd;
}

Test(server, a_client_that_disconnects_is_cancelled)
{
    int fd = stream_until_first_token("{\"prompt\":\"And\",\"max_tokens\":4000,\"ignore_eos\":true,\"stream\":true}");
    cr_assert_eq(metric("strata_running_requests"), 1);
    close(fd);
    for (int i = 0; i < 100 && metric("strata_running_requests") != 0; i++)
        usleep(50000);
    cr_assert_eq(metric("strata_running_requests"), 0, "the slot was freed");
    cr_assert_geq(metric("strata_requests_cancelled_total"), 1);
    /* the same for a non-streaming request */
    fd = http_send_only(S.port, "POST", "/v1/completions", "{\"prompt\":\"And\",\"max_tokens\":4000,\"ignore_eos\":true}");
    usleep(300000);
    close(fd);
    for (int i = 0; i < 100 && metric("strata_running_requests") != 0; i++)
        usleep(50000);
    cr_assert_eq(metric("strata_running_requests"), 0);
    json_t *j = call("GET", "/health", NULL, 200);
    json_decref(j);
    /* a client going away is routine: no libmicrohttpd complaint at the default level,
     * and every line of the log is the server's own (time, level, message) */
    char log[1 << 16];
    ssize_t n = pread(S.log_fd, log, sizeof log - 1, 0);
    log[n > 0 ? n : 0] = '\0';
    cr_assert_null(strstr(log, "Failed to send"), "%s", log);
    for (char *line = log; *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : line + strlen(line))
        cr_assert(!strncmp(line, "20", 2) && line[4] == '-' && line[10] == 'T', "a line not in the log's format: %.120s",
                  line);
}

Test(server, malformed_requests_get_4xx_and_the_server_keeps_serving)
{
    static const struct { const char *path, *body; int status; const char *param; } cases[] = {
        {"/v1/completions", "{", 400, NULL},
        {"/v1/completions", "[]", 400, NULL},
        {"/v1/completions", "", 400, NULL},
        {"/v1/completions", "null", 400, NULL},
        {"/v1/completions", "{}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":5}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":[]}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":[1,-3]}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":[1,4096]}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":[[1],[2,\"x\"]]}", 400, "prompt"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":-1}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1e9}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":99999999999}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":\"5\"}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":2.5}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"max_tokens\":1e9}", 400, "max_tokens"},
        {"/v1/completions", "{\"prompt\":\"x\",\"temperature\":-1}", 400, "temperature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"temperature\":\"hot\"}", 400, "temperature"},
        {"/v1/completions", "{\"prompt\":\"x\",\"top_p\":0}", 400, "top_p"},
        {"/v1/completions", "{\"prompt\":\"x\",\"top_p\":1.5}", 400, "top_p"},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":0}", 400, "n"},
        {"/v1/completions", "{\"prompt\":\"x\",\"n\":1000}", 400, "n"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":5}", 400, "stop"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stop\":[\"\"]}", 400, "stop"},
        {"/v1/completions", "{\"prompt\":\"x\",\"seed\":\"s\"}", 400, "seed"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logprobs\":9}", 400, "logprobs"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"-1\":5}}", 400, "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"5\":500}}", 400, "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\" 5\":1}}", 400, "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"logit_bias\":{\"05\":1}}", 400, "logit_bias"},
        {"/v1/completions", "{\"prompt\":\"x\",\"presence_penalty\":3}", 400, "presence_penalty"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream"},
        {"/v1/completions", "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options"},
        {"/v1/completions", "{\"prompt\":\"x\",\"model\":\"gpt-4\"}", 404, "model"},
        {"/v1/completions", "{\"prompt\":\"x\",\"model\":7}", 400, "model"},
        {"/v1/completions", "{\"prompt\":\"x\",\"prompt\":\"y\"}", 400, NULL},
        {"/v1/chat/completions", "{\"messages\":[]}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":{}}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", 400, "top_logprobs"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":-4}", 400, "max_completion_tokens"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":\"json\"}", 400, "response_format"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"xml\"}}", 400, "response_format"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format"},
        {"/v1/completions", "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s\",\"schema\":{\"type\":\"string\",\"pattern\":\"a\"}}}}", 400, "response_format"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"parallel_tool_calls\":\"no\"}", 400, "parallel_tool_calls"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}", 400, "max_completion_tokens"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":null}]}", 400, "messages"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"assistant\",\"content\":null}]}", 400, "messages"},
        {"/v1/completions", "{\"prompt\":\"x\",\"user\":5}", 400, "user"},
        {"/v1/completions", "{\"prompt\":\"x\",\"model\":\"strata-demo\\u0000\"}", 400, "model"},
        {"/tokenize", "{\"content\":5}", 400, "content"},
        {"/detokenize", "{\"tokens\":[999999]}", 400, "tokens"},
        {"/detokenize", "{\"tokens\":\"abc\"}", 400, "tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http_response r;
        cr_assert_eq(http_do(S.port, "POST", cases[i].path, cases[i].body, strlen(cases[i].body), NULL, &r), 0);
        cr_assert_eq(r.status, cases[i].status, "case %zu %s: got %d %s", i, cases[i].body, r.status, r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        json_t *e = json_object_get(j, "error");
        cr_assert(json_is_string(json_object_get(e, "message")) && json_is_string(json_object_get(e, "type")) &&
                  json_is_string(json_object_get(e, "code")) && json_object_get(e, "param"), "case %zu: %s", i, r.body);
        if (cases[i].param)
            cr_assert_str_eq(json_string_value(json_object_get(e, "param")), cases[i].param, "case %zu", i);
        json_decref(j);
        http_response_free(&r);
    }
    /* invalid UTF-8, an oversized body, unknown routes and methods */
    const char bad_utf8[] = "{\"prompt\":\"\xff\xfe\"}";
    http_response r;
    cr_assert_eq(http_do(S.port, "POST", "/v1/completions", bad_utf8, strlen(bad_utf8), NULL, &r), 0);
    cr_assert_eq(r.status, 400);
    http_response_free(&r);
    size_t big = 9u << 20;
    char *huge = malloc(big);
    memset(huge, 'a', big);
    cr_assert_eq(http_do(S.port, "POST", "/v1/completions", huge, big, NULL, &r), 0);
    cr_assert_eq(r.status, 413);
    http_response_free(&r);
    free(huge);
    json_decref(call("GET", "/v2/nothing", NULL, 404));
    /* a 405 says what the route takes (Allow); HEAD is GET without the body */
    cr_assert_eq(http_do(S.port, "DELETE", "/v1/completions", NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 405);
    cr_assert(strstr(r.headers, "Allow: POST\r\n"), "%s", r.headers);
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "PUT", "/v1/sessions/none", NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 404, "an unknown session first");
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "HEAD", "/health", NULL, 0, NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, 0);
    http_response_free(&r);
    json_decref(call("GET", "/health", NULL, 200));
    json_t *ok = call("POST", "/v1/completions", "{\"prompt\":[1,1165.0],\"max_tokens\":2.0,\"seed\":7.0,"
                      "\"logprobs\":1.0}", 200);  /* 2.0 is 2, wherever an integer goes */
    cr_assert_eq(json_array_size(json_object_get(ok, "choices")), 1);
    json_decref(ok);
}

Test(server, many_prompts_echo_and_prompt_logprobs)
{
    json_t *j = call("POST", "/v1/completions",
                     "{\"prompt\":[\"In the\",\"And the\"],\"max_tokens\":3,\"temperature\":0,\"echo\":true,\"n\":2,"
                     "\"logprobs\":1}", 200);
    json_t *choices = json_object_get(j, "choices");
    cr_assert_eq(json_array_size(choices), 4);
    cr_assert_eq(strncmp(text_of(j, 0), "In the", 6), 0);
    cr_assert_eq(strncmp(text_of(j, 3), "And the", 7), 0);
    json_t *lp = json_object_get(json_array_get(choices, 0), "logprobs");
    json_t *vals = json_object_get(lp, "token_logprobs");
    cr_assert_eq(json_array_size(vals), 3 + 3, "prompt <s> In the + 3 generated");
    cr_assert(json_is_null(json_array_get(vals, 0)), "the first prompt token has no logprob");
    cr_assert_eq(json_array_size(json_object_get(lp, "text_offset")), 6);
    json_t *usage = json_object_get(j, "usage");
    cr_assert_eq(json_integer_value(json_object_get(usage, "completion_tokens")), 12);
    json_decref(j);
}

static json_t *logprobs_of(json_t *resp, int choice)
{
    return json_object_get(json_array_get(json_object_get(resp, "choices"), (size_t)choice), "logprobs");
}

/* A one-token greedy completion of prompt (token ids, JSON) with top alternatives. */
static json_t *generate_one(const char *prompt, int top)
{
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":1,\"temperature\":0,\"logprobs\":%d}", prompt, top);
    return call("POST", "/v1/completions", body, 200);
}

/* An echoed prompt token's top_logprobs `got`: the alternatives of generation at
 * that position (`want`, its chosen token the best), key for key and value for
 * value, plus the prompt token itself where it is not among them (OpenAI's
 * logprobs + 1). */
static void assert_top_of_generation(json_t *got, json_t *want, const char *token, double token_lp)
{
    const char *key;
    json_t *v;
    double best = -INFINITY;
    json_object_foreach(want, key, v) {
        cr_assert(json_equal(json_object_get(got, key), v), "'%s': echo %s, generation %s", key, json_dumps(got, 0),
                  json_dumps(want, 0));
        best = json_real_value(v) > best ? json_real_value(v) : best;
    }
    cr_assert_leq(token_lp, best + 1e-6, "'%s' is not likelier than the best", token);
    if (json_object_get(want, token))
        cr_assert_eq(json_object_size(got), json_object_size(want));
    else {
        cr_assert_eq(json_object_size(got), json_object_size(want) + 1, "'%s' is added: %s", token, json_dumps(got, 0));
        cr_assert_float_eq(json_real_value(json_object_get(got, token)), token_lp, 1e-9);
    }
}

/* Echo scores each prompt token on the logits generation would draw from there:
 * its top alternatives are those a one-token completion of the prompt's prefix
 * reports, key for key and value for value. */
Test(server, echo_reports_the_prompts_top_alternatives_as_generation_would)
{
    json_t *echo = call("POST", "/v1/completions",
                        "{\"prompt\":[1,1165,276,2102],\"max_tokens\":0,\"echo\":true,\"logprobs\":3}", 200);
    json_t *lp = logprobs_of(echo, 0), *tops = json_object_get(lp, "top_logprobs");
    json_t *vals = json_object_get(lp, "token_logprobs");
    cr_assert_eq(json_array_size(tops), 4);
    cr_assert(json_is_null(json_array_get(tops, 0)));
    const char *prefixes[] = {"[1]", "[1,1165]", "[1,1165,276]"};
    for (int pos = 1; pos <= 3; pos++) {
        json_t *gen = generate_one(prefixes[pos - 1], 3);
        json_t *want = json_array_get(json_object_get(logprobs_of(gen, 0), "top_logprobs"), 0);
        assert_top_of_generation(json_array_get(tops, (size_t)pos), want,
                                 json_string_value(json_array_get(json_object_get(lp, "tokens"), (size_t)pos)),
                                 json_real_value(json_array_get(vals, (size_t)pos)));
        json_decref(gen);
    }
    json_decref(echo);
}

/* A prompt whose prefix the prefix cache holds is still scored from its first token
 * (a snapshot has no logits), each entry at its own position; on a session, which
 * has processed part of the prompt already, echo with logprobs is refused. */
Test(server, echo_with_logprobs_scores_a_cached_prefix_too)
{
    /* the second prompt snapshots where it leaves the first, the third finds it */
    json_decref(call("POST", "/v1/completions", "{\"prompt\":[1,1165,276,2102,290,300],\"max_tokens\":1}", 200));
    json_decref(call("POST", "/v1/completions", "{\"prompt\":[1,1165,276,2102,500,600],\"max_tokens\":1}", 200));
    json_t *hit = call("POST", "/v1/completions", "{\"prompt\":[1,1165,276,2102,400,401],\"max_tokens\":1}", 200);
    json_t *details = json_object_get(json_object_get(hit, "usage"), "prompt_tokens_details");
    cr_assert_eq(json_integer_value(json_object_get(details, "cached_tokens")), 4, "the prefix is cached");
    json_decref(hit);
    json_t *echo = call("POST", "/v1/completions",
                        "{\"prompt\":[1,1165,276,2102,700,800],\"max_tokens\":1,\"echo\":true,\"logprobs\":2}", 200);
    json_t *lp = logprobs_of(echo, 0), *tops = json_object_get(lp, "top_logprobs");
    cr_assert_eq(json_array_size(tops), 6 + 1);
    json_t *gen = generate_one("[1,1165]", 2);
    assert_top_of_generation(json_array_get(tops, 2), json_array_get(json_object_get(logprobs_of(gen, 0), "top_logprobs"), 0),
                             json_string_value(json_array_get(json_object_get(lp, "tokens"), 2)),
                             json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 2)));
    json_decref(gen);
    json_decref(echo);
    json_t *sess = call("POST", "/v1/sessions", "{}", 201);
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":[1,1165],\"max_tokens\":1,\"echo\":true,\"logprobs\":1,\"session\":\"%s\"}",
             json_string_value(json_object_get(sess, "id")));
    json_t *err = call("POST", "/v1/completions", body, 400);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(err, "error"), "param")), "echo");
    json_decref(err);
    json_decref(sess);
}

/* Sampled tokens, however unlikely, are always among their top_logprobs (OpenAI's
 * "up to logprobs + 1 elements"), with the same logprob. */
Test(server, a_sampled_token_is_always_among_its_top_logprobs)
{
    json_t *j = call("POST", "/v1/completions",
                     "{\"prompt\":\"And\",\"max_tokens\":24,\"temperature\":2,\"seed\":5,\"logprobs\":1}", 200);
    json_t *lp = logprobs_of(j, 0), *toks = json_object_get(lp, "tokens"), *tops = json_object_get(lp, "top_logprobs");
    int outside = 0;
    for (size_t i = 0; i < json_array_size(toks); i++) {
        json_t *top = json_array_get(tops, i);
        const char *tok = json_string_value(json_array_get(toks, i));
        double v = json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), i));
        cr_assert(json_object_get(top, tok), "token %zu '%s' in %s", i, tok, json_dumps(top, 0));
        cr_assert_float_eq(json_real_value(json_object_get(top, tok)), v, 1e-9);
        cr_assert_leq(json_object_size(top), 2);
        outside += json_object_size(top) == 2;
    }
    cr_assert_gt(outside, 0, "at temperature 2 some draws are not the most likely token");
    json_decref(j);
}

/* text_offset indexes the returned text: a text prompt's added <s> stands for no
 * bytes of it, and the generated tokens follow the echoed prompt. */
Test(server, echo_text_offsets_index_the_returned_text)
{
    json_t *j = call("POST", "/v1/completions",
                     "{\"prompt\":\"The cat sat\",\"max_tokens\":3,\"temperature\":0,\"echo\":true,\"logprobs\":0}", 200);
    const char *text = text_of(j, 0);
    json_t *lp = logprobs_of(j, 0), *toks = json_object_get(lp, "tokens"), *offs = json_object_get(lp, "text_offset");
    cr_assert_eq(json_array_size(toks), json_array_size(offs));
    cr_assert_str_eq(json_string_value(json_array_get(toks, 0)), "<s>");
    cr_assert_eq(json_integer_value(json_array_get(offs, 0)), 0);
    for (size_t i = 1; i < json_array_size(toks); i++) {
        const char *tok = json_string_value(json_array_get(toks, i));
        size_t at = (size_t)json_integer_value(json_array_get(offs, i));
        cr_assert_leq(at + strlen(tok), strlen(text), "token %zu", i);
        cr_assert_eq(strncmp(text + at, tok, strlen(tok)), 0, "token %zu '%s' at %zu of '%s'", i, tok, at, text);
    }
    cr_assert_eq(json_integer_value(json_array_get(offs, json_array_size(offs) - 3)), strlen("The cat sat"));
    json_decref(j);
}

/* Streamed with echo, a choice opens with its prompt (and the prompt's logprobs),
 * and the chunks reassemble to the text and entries of the same request unstreamed. */
Test(server, streamed_echo_opens_with_the_prompt)
{
    const char *plain = "{\"prompt\":\"The cat sat\",\"max_tokens\":4,\"temperature\":0,\"echo\":true,\"logprobs\":2}";
    json_t *j = call("POST", "/v1/completions", plain, 200);
    json_t *want = json_object_get(logprobs_of(j, 0), "tokens");
    http_response r;
    const char *body = "{\"prompt\":\"The cat sat\",\"max_tokens\":4,\"temperature\":0,\"echo\":true,\"logprobs\":2,"
                       "\"stream\":true}";
    cr_assert_eq(http_do(S.port, "POST", "/v1/completions", body, strlen(body), NULL, &r), 0);
    cr_assert_eq(r.status, 200);
    char text[1024] = "";
    json_t *tokens = json_array();
    int chunks = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6) || !strcmp(line, "data: [DONE]"))
            continue;
        json_t *c = json_loads(line + 6, 0, NULL), *choice = json_array_get(json_object_get(c, "choices"), 0);
        if (chunks++ == 0)
            cr_assert_str_eq(json_string_value(json_object_get(choice, "text")), "The cat sat");
        strcat(text, json_string_value(json_object_get(choice, "text")));
        json_t *lp = json_object_get(choice, "logprobs");
        if (json_is_object(lp))
            json_array_extend(tokens, json_object_get(lp, "tokens"));
        json_decref(c);
    }
    cr_assert_str_eq(text, text_of(j, 0));
    cr_assert(json_equal(tokens, want), "streamed %s, unstreamed %s", json_dumps(tokens, 0), json_dumps(want, 0));
    json_decref(tokens);
    http_response_free(&r);
    json_decref(j);
}

Test(api_keys, keys_guard_everything_but_health, .timeout = 60)
{
    char *dir = make_temp_dir(), path[4200];
    snprintf(path, sizeof path, "%s/keys", dir);
    FILE *f = fopen(path, "w");
    fputs("# keys\nsecret-one\nsecret-two\n  secret-three \t\r\n", f);     /* blanks around a key are not part of it */
    fclose(f);
    const char *args[] = {"--api-key-file", path, NULL};
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    json_decref(call("GET", "/health", NULL, 200));
    json_t *j = call("GET", "/v1/models", NULL, 401);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "invalid_api_key");
    json_decref(j);
    http_response r;
    cr_assert_eq(http_do(S.port, "GET", "/v1/models", NULL, 0, NULL, &r), 0);
    cr_assert(strstr(r.headers, "WWW-Authenticate: Bearer\r\n"), "%s", r.headers);
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "GET", "/v1/models", NULL, 0, "Authorization: Bearer secret-three\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "GET", "/v1/models", NULL, 0, "Authorization: Bearer secret-two\r\n", &r), 0);
    cr_assert_eq(r.status, 200);
    http_response_free(&r);
    cr_assert_eq(http_do(S.port, "GET", "/v1/models", NULL, 0, "Authorization: Bearer secret-on\r\n", &r), 0);
    cr_assert_eq(r.status, 401);
    http_response_free(&r);
    char log[65536];
    ssize_t n = pread(S.log_fd, log, sizeof log - 1, 0);
    log[n > 0 ? n : 0] = '\0';
    cr_assert_null(strstr(log, "secret-one"), "keys are never logged");
    cr_assert_eq(server_stop(&S), 0);
    remove_tree(dir);
    free(dir);
}

typedef struct inflight { const char *body; int status; char text[8192]; } inflight;

/* POST a->body (default: 40 greedy tokens) to /v1/completions; the status and the
 * end of the response body land in a. */
static void *one_request(void *p)
{
    inflight *a = p;
    const char *body = a->body ? a->body : "{\"prompt\":\"And\",\"max_tokens\":40,\"temperature\":0,\"ignore_eos\":true}";
    http_response r;
    if (http_do(S.port, "POST", "/v1/completions", body, strlen(body), NULL, &r) == 0) {
        a->status = r.status;
        size_t keep = r.body_len < sizeof a->text ? r.body_len : sizeof a->text - 1;
        memcpy(a->text, r.body + r.body_len - keep, keep);     /* the end: where a stream's last events are */
        a->text[keep] = '\0';
        http_response_free(&r);
    }
    return NULL;
}

static const char *const LONG_RUN = "{\"prompt\":\"And\",\"max_tokens\":4000,\"n\":4,\"ignore_eos\":true}";
static const char *const LONG_STREAM = "{\"prompt\":\"And\",\"max_tokens\":4000,\"n\":4,\"ignore_eos\":true,\"stream\":true,"
                                       "\"stream_options\":{\"include_usage\":true}}";

/* A request the server cut is an error naming why: a 503 object, or in a stream an
 * error event then [DONE] with no finish_reason "length" (the cut is not a finish). */
static void assert_cut(const inflight *a, int stream, const char *code)
{
    char want[64];
    snprintf(want, sizeof want, "\"code\":\"%s\"", code);
    cr_assert_eq(a->status, stream ? 200 : 503, "%s", a->text);
    cr_assert(strstr(a->text, "{\"error\":{\"message\":"), "%s", a->text);
    cr_assert(strstr(a->text, want), "%s", a->text);
    cr_assert_null(strstr(a->text, "\"length\""), "a cut is not a finish by length: %s", a->text);
    if (stream)
        cr_assert(strstr(a->text, "}\n\ndata: [DONE]\n\n"), "%s", a->text);
}

/* --request-timeout cuts a running request and one still queued behind it (one
 * runs at a time); both answer with the error, and the server goes on serving. */
Test(timeouts, a_request_cut_by_the_timeout_is_an_error_not_an_answer, .timeout = 60)
{
    const char *args[] = {"--request-timeout", "1", "--max-running", "1", NULL};
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    inflight a[2] = {{.body = LONG_RUN}, {.body = LONG_STREAM}};
    pthread_t th[2];
    pthread_create(&th[0], NULL, one_request, &a[0]);
    for (int i = 0; i < 200 && metric("strata_running_requests") < 1; i++)   /* running, so the stream queues */
        usleep(10000);
    pthread_create(&th[1], NULL, one_request, &a[1]);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_cut(&a[0], 0, "timeout");
    assert_cut(&a[1], 1, "timeout");
    json_t *j = call("POST", "/v1/completions", "{\"prompt\":\"And\",\"max_tokens\":4}", 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
                                                       "finish_reason")), "length");
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
}

/* A request still running when SIGTERM's grace period ends is cut with 503
 * "shutting_down", and the server still exits 0. */
Test(shutdown, a_request_cut_at_the_end_of_the_grace_period_is_an_error, .timeout = 60)
{
    const char *args[] = {"--grace-period", "1", NULL};
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    inflight a[2] = {{.body = LONG_RUN}, {.body = LONG_STREAM}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, one_request, &a[i]);
    usleep(300000);
    cr_assert_eq(server_stop(&S), 0, "exit status 0");
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_cut(&a[0], 0, "shutting_down");
    assert_cut(&a[1], 1, "shutting_down");
}

Test(shutdown, sigterm_lets_in_flight_requests_finish, .timeout = 60)
{
    cr_assert_eq(server_start(&S, demo_dir(), NULL), 0);
    inflight a[3] = {{0}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, one_request, &a[i]);
    usleep(150000);
    cr_assert_eq(server_stop(&S), 0, "exit status 0");
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(a[i].status, 200, "request %d finished during the grace period", i);
    }
}

/* Every fixture model served: greedy completions of greedy.prompt_ids give the text
 * of greedy.output_ids (EOS does not stop, as the fixtures define). */
Test(fixture_servers, greedy_completions_equal_the_fixtures, .timeout = 120)
{
    for (int i = 0; fixture_models[i]; i++) {
        if (!strcmp(fixture_models[i], "models/strata-demo"))
            continue;
        const char *dir = shared_path(fixture_models[i]);
        int32_t *prompt;
        int n;
        char *want = expected_greedy_text(fixture_models[i], dir, &prompt, &n);
        cr_assert_eq(server_start(&S, dir, NULL), 0, "%s", dir);

        char body[1024];
        int o = snprintf(body, sizeof body, "{\"prompt\":[");
        for (int k = 0; k < n; k++)
            o += snprintf(body + o, sizeof body - (size_t)o, k ? ",%d" : "%d", prompt[k]);
        snprintf(body + o, sizeof body - (size_t)o, "],\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true}");
        json_t *j = call("POST", "/v1/completions", body, 200);
        cr_assert_str_eq(text_of(j, 0), want, "%s", dir);
        json_decref(j);
        cr_assert_eq(server_stop(&S), 0);
        free(want);
        free(prompt);
    }
}

Test(config, file_settings_and_flags, .timeout = 60)
{
    char *dir = make_temp_dir(), path[4200];
    snprintf(path, sizeof path, "%s/strata.conf", dir);
    FILE *f = fopen(path, "w");
    fputs("# test\nmodel_name = kjv\nmax-n = 2\nport = 1\nreasoning-format = deepseek\n", f);
    fclose(f);
    const char *args[] = {"--config", path, "--port", "0", NULL}; /* the flag overrides the file */
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    json_t *j = call("GET", "/v1/models", NULL, 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")), "kjv");
    json_decref(j);
    json_decref(call("POST", "/v1/completions", "{\"prompt\":\"x\",\"n\":3}", 400));
    /* the server's reasoning_format is the default a request may override */
    for (int none = 0; none < 2; none++) {
        j = call("POST", "/v1/chat/completions", none ? "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"max_tokens\":2,\"reasoning_format\":\"none\"}" : "{\"messages\":[{\"role\":\"user\","
                 "\"content\":\"x\"}],\"max_tokens\":2}", 200);
        json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
        cr_assert_eq(json_object_get(m, "reasoning_content") != NULL, !none);
        json_decref(j);
    }
    cr_assert_eq(server_stop(&S), 0);
    f = fopen(path, "w");
    fputs("no_such_setting = 1\n", f);
    fclose(f);
    char cmd[8400], *out;
    snprintf(cmd, sizeof cmd, "%s --config %s 2>&1", getenv("STRATA_SERVER"), path);
    cr_assert_eq(run_capture(cmd, &out), 2);
    cr_assert(strstr(out, "unknown setting 'no_such_setting'"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s --help", getenv("STRATA_SERVER"));
    cr_assert_eq(run_capture(cmd, &out), 0);
    const char *flags[] = {"--model", "--host", "--port", "--config", "--threads", "--api-key-file", "--state-dir"};
    for (int i = 0; i < 7; i++)
        cr_assert(strstr(out, flags[i]), "--help lists %s", flags[i]);
    free(out);
    remove_tree(dir);
    free(dir);
}

/* The 8 greedy tokens after "And God said" and their logprobs, from a server
 * started with args, whose /v1/models reports the compute mode `compute`. */
static void greedy_logprobs(const char *const *args, const char *compute, char tokens[8][64], double *lps)
{
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    json_t *j = call("GET", "/v1/models", NULL, 200);
    json_t *meta = json_object_get(json_array_get(json_object_get(j, "data"), 0), "meta");
    cr_assert_str_eq(json_string_value(json_object_get(meta, "compute")), compute);
    cr_assert_str_eq(json_string_value(json_object_get(meta, "weights")), "native");
    cr_assert_gt(json_integer_value(json_object_get(meta, "weight_bytes")), 1000000);
    json_decref(j);
    j = call("POST", "/v1/completions",
                     "{\"prompt\":\"And God said\",\"max_tokens\":8,\"temperature\":0,\"ignore_eos\":true,"
                     "\"logprobs\":0}", 200);
    json_t *lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
    json_t *vals = json_object_get(lp, "token_logprobs"), *toks = json_object_get(lp, "tokens");
    cr_assert_eq(json_array_size(vals), 8);
    for (int i = 0; i < 8; i++) {
        lps[i] = json_number_value(json_array_get(vals, (size_t)i));
        snprintf(tokens[i], 64, "%s", json_string_value(json_array_get(toks, (size_t)i)));
    }
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
}

/* --compute bf16 is in effect (log probabilities move, /v1/models says so) and close
 * to fp32 (the demo model's greedy text is unchanged); an unknown mode stops the
 * start-up. */
Test(config, compute_mode_flag, .timeout = 60)
{
    char t32[8][64], t16[8][64];
    double lp32[8], lp16[8], moved = 0;
    const char *fp32[] = {"--compute", "fp32", NULL}, *bf16[] = {"--compute", "bf16", NULL};
    greedy_logprobs(fp32, "fp32", t32, lp32);
    greedy_logprobs(bf16, "bf16", t16, lp16);
    for (int i = 0; i < 8; i++) {
        cr_assert_str_eq(t16[i], t32[i], "token %d differs under bf16 compute", i);
        moved = fmax(moved, fabs(lp16[i] - lp32[i]));
    }
    cr_assert(moved > 0 && moved < 0.05, "bf16 compute moved the logprobs by %g", moved);
    char cmd[4400], *out;
    snprintf(cmd, sizeof cmd, "%s --model %s --port 0 --compute fp16 2>&1", getenv("STRATA_SERVER"), demo_dir());
    cr_assert_eq(run_capture(cmd, &out), 1);
    cr_assert(strstr(out, "compute mode 'fp16' is not one of: fp32, bf16, int8"), "%s", out);
    free(out);
}

/* Requests without a session share a system prompt through the prefix cache. */
Test(server, a_repeated_system_prompt_is_processed_once)
{
    const char *questions[] = {"Who made the heaven?", "Who made the sea?", "Who is David?"};
    int cached[3];
    char *texts[3];
    for (int i = 0; i < 3; i++) {
        char body[1024];
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"system\",\"content\":\"Thou art a scribe of Israel, and "
                 "thou answerest in the words of the book.\"},{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":6,"
                 "\"temperature\":0}", questions[i]);
        json_t *j = call("POST", "/v1/chat/completions", body, 200);
        cached[i] = cached_of(j);
        texts[i] = strdup(text_of(j, 0));
        json_decref(j);
    }
    cr_assert_eq(cached[0], 0);
    cr_assert_gt(cached[1], 20, "the second request reuses the system prompt");
    cr_assert_gt(cached[2], 20, "and so does the third");
    /* the same request again is answered from its own snapshot, with the same text */
    char body[1024];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"system\",\"content\":\"Thou art a scribe of Israel, and "
             "thou answerest in the words of the book.\"},{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":6,"
             "\"temperature\":0}", questions[2]);
    json_t *j = call("POST", "/v1/chat/completions", body, 200);
    cr_assert_str_eq(text_of(j, 0), texts[2]);
    cr_assert_eq(cached_of(j), json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")),
                 "all of it");
    json_decref(j);
    cr_assert_gt(metric("strata_prefix_cache_hits_total"), 1);
    cr_assert_gt(metric("strata_prefix_cache_bytes"), 0);
    for (int i = 0; i < 3; i++)
        free(texts[i]);
}

/* A prompt continued from a prefix-cache snapshot samples as a cold run of it: the
 * repetition penalty counts the cached tokens too. */
Test(server, a_prefix_cache_hit_samples_as_a_cold_run)
{
    const char *head = "Now the serpent was more subtil than any beast of the field which the LORD God had made. "
                       "And he said unto the woman, Yea, hath God said";
    char body[1024];
    char *text[2];
    int cached[2];
    for (int i = 0; i < 3; i++) {   /* head + tail cold, the head alone, head + tail again */
        snprintf(body, sizeof body, "{\"prompt\":\"%s%s\",\"max_tokens\":16,\"temperature\":0,"
                 "\"repetition_penalty\":1.6}", head, i == 1 ? "" : ", Ye shall not eat of every tree");
        json_t *j = call("POST", "/v1/completions", body, 200);
        if (i != 1) {
            text[i / 2] = strdup(text_of(j, 0));
            cached[i / 2] = cached_of(j);
        }
        json_decref(j);
    }
    cr_assert_eq(cached[0], 0);
    cr_assert_geq(cached[1], 25, "the head came from the prefix cache");
    cr_assert_str_eq(text[1], text[0]);
    free(text[0]);
    free(text[1]);
}

/* The same prompt again is served whole from the prefix cache: its snapshot keeps the
 * logits after the prompt, so no prompt token is processed, and every choice draws
 * what a cold run draws (seeded, with a repetition penalty, n = 2, streamed too). */
Test(server, the_same_prompt_again_needs_no_prefill)
{
    const char *body = "{\"prompt\":\"And the LORD God planted a garden eastward in Eden; and there he put the man\","
                       "\"max_tokens\":10,\"temperature\":0.9,\"seed\":11,\"n\":2,\"repetition_penalty\":1.3}";
    json_t *cold = call("POST", "/v1/completions", body, 200);
    cr_assert_eq(cached_of(cold), 0);
    long prompt_tokens = metric("strata_prompt_tokens_total"), asked = metric("strata_request_prompt_tokens_total");
    json_t *again = call("POST", "/v1/completions", body, 200);
    json_t *usage = json_object_get(again, "usage");
    cr_assert_eq(cached_of(again), json_integer_value(json_object_get(usage, "prompt_tokens")), "all of it");
    cr_assert_eq(metric("strata_prompt_tokens_total"), prompt_tokens, "no prompt token went through the engine");
    cr_assert_eq(metric("strata_request_prompt_tokens_total"),
                 asked + json_integer_value(json_object_get(usage, "prompt_tokens")), "but the request's count");
    for (int i = 0; i < 2; i++)
        cr_assert_str_eq(text_of(again, i), text_of(cold, i), "choice %d", i);
    json_decref(cold);
    json_decref(again);
    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"Who planted the garden?\"}],\"max_tokens\":8,"
                       "\"temperature\":0.9,\"seed\":3}";
    const char *chat_streamed = "{\"messages\":[{\"role\":\"user\",\"content\":\"Who planted the garden?\"}],"
                                "\"max_tokens\":8,\"temperature\":0.9,\"seed\":3,\"stream\":true}";
    cold = call("POST", "/v1/chat/completions", chat, 200);
    prompt_tokens = metric("strata_prompt_tokens_total");
    char finish[16];
    char *streamed = streamed_content(chat_streamed, NULL, NULL, finish, sizeof finish);
    cr_assert_str_eq(streamed, text_of(cold, 0), "streamed from the cache as sent cold");
    cr_assert_str_eq(finish, "length");
    cr_assert_eq(metric("strata_prompt_tokens_total"), prompt_tokens);
    free(streamed);
    json_decref(cold);
}

Test(queue, a_full_queue_answers_429_with_retry_after, .timeout = 60)
{
    const char *args[] = {"--max-running", "1", "--max-queued", "0", NULL};
    cr_assert_eq(server_start(&S, demo_dir(), args), 0);
    int fd = stream_until_first_token("{\"prompt\":\"And\",\"max_tokens\":3000,\"ignore_eos\":true,\"stream\":true}");
    http_response r;
    const char *body = "{\"prompt\":\"In\",\"max_tokens\":2}";
    cr_assert_eq(http_do(S.port, "POST", "/v1/completions", body, strlen(body), NULL, &r), 0);
    cr_assert_eq(r.status, 429, "%s", r.body);
    cr_assert(strcasestr(r.headers, "Retry-After:"), "%s", r.headers);
    http_response_free(&r);
    close(fd);
    for (int i = 0; i < 100 && (metric("strata_running_requests") != 0 || metric("strata_queue_depth") != 0); i++)
        usleep(50000);
    json_t *j = call("POST", "/v1/completions", body, 200);
    json_decref(j);
    cr_assert_eq(server_stop(&S), 0);
}

/* Chat logprobs as OpenAI gives them: each entry's `bytes` are its token's own, so
 * joined they spell the content (also across a character split over byte tokens,
 * whose token text can only be U+FFFD), and the EOS that ends the answer has no
 * entry. */
Test(server, chat_logprobs_bytes_spell_the_content_and_skip_the_eos)
{
    const char *bodies[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Who made the heaven?\"}],\"max_tokens\":200,"
        "\"temperature\":0,\"logprobs\":true,\"top_logprobs\":2}",
        /* 0xC3 0xA9 (é) forced as two byte tokens */
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2,\"temperature\":0,"
        "\"logit_bias\":{\"213\":100},\"logprobs\":true}",
        /* <|im_end|> (11) at once */
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":2,\"temperature\":0,"
        "\"logit_bias\":{\"11\":100},\"logprobs\":true}"};
    for (int k = 0; k < 3; k++) {
        json_t *j = call("POST", "/v1/chat/completions", bodies[k], 200);
        json_t *c = json_array_get(json_object_get(j, "choices"), 0);
        const char *content = json_string_value(json_object_get(json_object_get(c, "message"), "content"));
        if (k == 2)
            cr_assert_str_eq(json_string_value(json_object_get(c, "finish_reason")), "stop", "ends at EOS");
        char joined[8192];
        size_t n = 0, i, b;
        json_t *entry, *byte;
        json_array_foreach(json_object_get(json_object_get(c, "logprobs"), "content"), i, entry) {
            cr_assert(strcmp(json_string_value(json_object_get(entry, "token")), "<|im_end|>"), "no EOS entry");
            json_array_foreach(json_object_get(entry, "bytes"), b, byte)
                joined[n++] = (char)json_integer_value(byte);
        }
        joined[n] = '\0';
        if (k == 1)
            cr_assert_str_eq(joined, "\xc3\xc3", "the raw bytes, where the content has U+FFFD for each");
        else
            cr_assert_str_eq(joined, content);
        json_decref(j);
    }
}

/* U+0000 is valid JSON text and kept as the tokenizer keeps it (the CLI and the
 * fixtures' corpus do): /tokenize, prompts (completions, activations, sessions) and
 * chat content take it, and a NUL in
 * chat content does not hide a special token's text from the guard that keeps it
 * text. A stop string cannot hold one (stops are matched as C strings). */
Test(server, u0000_is_text_like_any_other)
{
    json_t *j = call("POST", "/tokenize", "{\"content\":\"a\\u0000b\"}", 200);
    json_t *t = json_object_get(j, "tokens");
    cr_assert_eq(json_array_size(t), 3);
    char body[256];
    snprintf(body, sizeof body, "{\"tokens\":[%lld]}", (long long)json_integer_value(json_array_get(t, 1)));
    json_decref(j);
    j = call("POST", "/detokenize", body, 200);
    json_t *content = json_object_get(j, "content");
    cr_assert(json_string_length(content) == 1 && json_string_value(content)[0] == '\0', "the NUL token");
    json_decref(j);
    j = call("POST", "/v1/completions", "{\"prompt\":\"a\\u0000b\",\"max_tokens\":1}", 200);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 4, "<s> a NUL b");
    json_decref(j);
    int counts[2];
    const char *contents[2] = {"a<|im_start|>b", "a\\u0000<|im_start|>b"};
    for (int k = 0; k < 2; k++) {
        snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}],\"max_tokens\":1}",
                 contents[k]);
        j = call("POST", "/v1/chat/completions", body, 200);
        counts[k] = (int)json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens"));
        json_decref(j);
    }
    cr_assert_eq(counts[1], counts[0] + 1, "the same text plus the NUL: <|im_start|> stays text in both");
    json_decref(call("POST", "/v1/completions", "{\"prompt\":\"ab\",\"stop\":[\"a\\u0000\"]}", 400));
    /* the same on /v1/activations and a session's prompt */
    j = call("POST", "/v1/activations", "{\"prompt\":\"a\\u0000b\",\"hooks\":[\"logits\"],\"positions\":\"last\"}", 200);
    cr_assert_eq(json_array_size(json_object_get(json_object_get(j, "tokens"), "ids")), 4, "<s> a NUL b");
    json_decref(j);
    j = call("POST", "/v1/sessions", "{\"prompt\":\"a\\u0000b\"}", 201);
    cr_assert_eq(json_integer_value(json_object_get(j, "n_tokens")), 4);
    json_decref(j);
    json_decref(call("POST", "/v1/activations", "{\"prompt\":\"a\",\"hooks\":[\"logits\\u0000x\"]}", 400));
}

/* The token budget of a chat: max_completion_tokens (OpenAI's current name) wins
 * over the deprecated max_tokens, errors name the field that was sent, and a prompt
 * that fills the context alone is refused on "messages". */
Test(server, chat_token_budget_fields)
{
    json_t *j = call("POST", "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                     "\"max_completion_tokens\":3,\"max_tokens\":99999,\"ignore_eos\":true}", 200);  /* not read */
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 3);
    json_decref(j);
    size_t cap = 64 * 1024;
    char *body = malloc(cap);
    int n = snprintf(body, cap, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (int i = 0; i < 1500; i++)
        n += snprintf(body + n, cap - (size_t)n, "And God said ");
    snprintf(body + n, cap - (size_t)n, "\"}]}");
    j = call("POST", "/v1/chat/completions", body, 400);
    json_t *e = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "param")), "messages");
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "context_length_exceeded");
    json_decref(j);
    free(body);
}
