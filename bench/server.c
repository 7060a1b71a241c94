/*
 * server.c (bench) — strata-server measured against the engine it drives, in one run:
 *   1. the engine's own single-stream decode tokens/s (libstrata directly);
 *   2. the same through HTTP + SSE (one stream), and the ratio to (1): 7 rounds of
 *      (1) then (2); the ratio of the medians and the median of each round's ratio;
 *   3. aggregate decode tokens/s with 8 concurrent streams vs 1, greedy and
 *      sampling (temperature 1, top_p 0.9: the sampler's costliest common setting);
 *   4. time to first token of turn 10 of a chat, with a session vs with no reuse;
 *   5. the prefix cache's hit rate on 50 requests sharing 5 system prompts;
 *   6. one token for a 1024-token prompt, cold and then the very same prompt again
 *      (served whole by the prefix cache: no prefill step);
 *   7. one token each for 16 concurrent requests sharing a 512-token start, with 16
 *      tokens of their own: the wall time and the prompt tokens the engine processed.
 * Model for 1-3 and 6-7: $STRATA_BENCH_MODEL, else build/models/470m when `make bench` has
 * generated it (the performance issue's reference shape), else the built-in
 * models/strata-demo; 4-5 need a chat template and run on models/strata-demo.
 * Streams ask for logprobs so that every token is a chunk, with or without a
 * tokenizer.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "strata.h"

#define GEN 128
#define ROUNDS 7

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define DEMO "models/strata-demo"

static const char *model_dir(void)
{
    const char *m = getenv("STRATA_BENCH_MODEL");
    if (m)
        return m;
    return access("build/models/470m/model.safetensors", R_OK) == 0 ? "build/models/470m" : DEMO;
}

typedef struct engine {
    strata_model *m;
    strata_runner *r;
    float *logits;          /* (vocab) */
} engine;

static void engine_open(engine *e)
{
    strata_error err;
    if (strata_model_load(model_dir(), &e->m, &err) != STRATA_OK || strata_runner_new(e->m, &e->r, &err) != STRATA_OK) {
        fprintf(stderr, "%s\n", err.message);
        exit(1);
    }
    e->logits = malloc(sizeof(float) * (size_t)strata_model_get_info(e->m)->vocab_size);
}

static void engine_close(engine *e)
{
    free(e->logits);
    strata_runner_free(e->r);
    strata_model_free(e->m);
}

/* 1. prefill the streams' 8 prompt tokens, then GEN greedy single-token steps */
static double engine_decode_tok_s(engine *e)
{
    strata_error err;
    strata_cache *c;
    strata_cache_new(e->m, &c, &err);
    int V = strata_model_get_info(e->m)->vocab_size;
    int32_t prompt[8] = {1, 1165, 276, 2102, 276, 2102, 276, 2102}, t = 276;
    strata_seq s = {.cache = c, .tokens = prompt, .n_tokens = 8, .logits = e->logits};
    strata_runner_step(e->r, &s, 1, &err);
    double t0 = now();
    for (int i = 0; i < GEN; i++) {
        s = (strata_seq){.cache = c, .tokens = &t, .n_tokens = 1, .logits = e->logits};
        strata_runner_step(e->r, &s, 1, &err);
        int best = 0;
        for (int v = 1; v < V; v++)
            best = e->logits[v] > e->logits[best] ? v : best;
        t = best;
    }
    double rate = GEN / (now() - t0);
    strata_cache_free(c);
    return rate;
}

typedef struct stream_result {
    int port;
    const char *sampling;   /* the request's sampling fields, as JSON members */
    double first, last;     /* arrival of the first and last token chunks */
    int chunks;
} stream_result;

/* One streamed completion of GEN tokens; chunk arrival times. */
static void *stream(void *arg)
{
    stream_result *sr = arg;
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":[1,1165,276,2102,276,2102,276,2102],\"max_tokens\":%d,"
                                "\"ignore_eos\":true,%s,\"stream\":true,\"logprobs\":0}", GEN, sr->sampling);
    int fd = http_send_only(sr->port, "POST", "/v1/completions", body);
    char buf[65536];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0) {
        int k = 0;
        for (char *p = buf; (p = memmem(p, (size_t)(buf + n - p), "\"token_logprobs\"", 16)); p += 16)
            k++;
        if (k && !sr->chunks)
            sr->first = now();
        if (k)
            sr->last = now();
        sr->chunks += k;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

#define GREEDY "\"temperature\":0"

static double aggregate(int port, int streams, const char *sampling, double *per_stream)
{
    stream_result r[16];
    pthread_t th[16];
    for (int i = 0; i < streams; i++) {
        r[i] = (stream_result){.port = port, .sampling = sampling};
        pthread_create(&th[i], NULL, stream, &r[i]);
    }
    double first = 1e300, last = 0, sum = 0;
    for (int i = 0; i < streams; i++) {
        pthread_join(th[i], NULL);
        first = r[i].first < first ? r[i].first : first;
        last = r[i].last > last ? r[i].last : last;
        sum += (r[i].chunks - 1) / (r[i].last - r[i].first);
    }
    *per_stream = sum / streams;
    return streams * (GEN - 1) / (last - first);
}

static json_t *post(int port, const char *path, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    http_response r;
    json_t *j = NULL;
    if (http_do(port, "POST", path, text, strlen(text), NULL, &r) == 0) {
        j = json_loads(r.body, 0, NULL);
        http_response_free(&r);
    }
    free(text);
    return j;
}

/* Seconds from sending a streamed chat request until its first content delta
 * arrives (then the rest of the stream is read). */
static double first_content_seconds(int port, json_t *body)
{
    json_object_set_new(body, "stream", json_true());
    char *text = json_dumps(body, JSON_COMPACT);
    double t0 = now(), t = -1;
    int fd = http_send_only(port, "POST", "/v1/chat/completions", text);
    const char *content = "\"delta\":{\"content\"";
    char buf[65536];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0)
        if (t < 0 && memmem(buf, (size_t)n, content, strlen(content)))
            t = now() - t0;
    if (fd >= 0)
        close(fd);
    free(text);
    return t;
}

/* 4. ten chat turns; the tenth streamed: the time to its first token */
static double turn10_ttft(int port, int with_session)
{
    char sid[80] = "";
    if (with_session) {
        json_t *s = post(port, "/v1/sessions", json_object());
        snprintf(sid, sizeof sid, "%s", json_string_value(json_object_get(s, "id")));
        json_decref(s);
    }
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content",
                                          "Thou art a scribe. Answer in the words of the book of the law, and speak "
                                          "of the kings and the prophets and the people of Israel."));
    double t = 0;
    for (int turn = 1; turn <= 10; turn++) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content",
                                              "Tell me of the house of David, and of the temple, and of the city."));
        json_t *body = json_pack("{s:O,s:i,s:f}", "messages", msgs, "max_tokens", turn == 10 ? 8 : 48, "temperature", 0.0);
        if (with_session)
            json_object_set_new(body, "session", json_string(sid));
        if (turn == 10) {
            t = first_content_seconds(port, body);
            json_decref(body);
            break;
        }
        json_t *j = post(port, "/v1/chat/completions", body);
        const char *reply = json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", reply ? reply : ""));
        json_decref(j);
        json_decref(body);
    }
    json_decref(msgs);
    return t;
}

/* The value of the server's metric `name` (/metrics), or -1. */
static double metric(int port, const char *name)
{
    http_response r;
    double v = -1;
    if (http_do(port, "GET", "/metrics", NULL, 0, NULL, &r) == 0) {
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        char *at = strstr(r.body, key);
        v = at ? atof(at + strlen(key)) : -1;
        http_response_free(&r);
    }
    return v;
}

static double prefix_hit_rate(int port)
{
    const char *systems[5] = {"Thou art a scribe of Israel.", "Thou art a prophet in the land of Judah.",
                              "Thou art a priest of the temple.", "Thou art a king upon the throne of David.",
                              "Thou art a shepherd in the fields."};
    for (int i = 0; i < 50; i++) {
        char user[64];
        snprintf(user, sizeof user, "Speak to me of the %d days.", i);
        json_t *body = json_pack("{s:[{s:s,s:s},{s:s,s:s}],s:i}", "messages", "role", "system", "content",
                                 systems[i % 5], "role", "user", "content", user, "max_tokens", 1);
        json_decref(post(port, "/v1/chat/completions", body));
        json_decref(body);
    }
    double rate = metric(port, "strata_prefix_cache_hit_rate");
    return rate < 0 ? 0 : rate;
}

/* A greedy one-token completion of the token ids (the reference is taken); its
 * response. Ids stay under 4005: every vocabulary of 4096 or more has them. */
static json_t *one_token(int port, json_t *ids)
{
    json_t *body = json_pack("{s:o,s:i,s:f}", "prompt", ids, "max_tokens", 1, "temperature", 0.0);
    json_t *j = post(port, "/v1/completions", body);
    json_decref(body);
    return j;
}

/* 6. seconds for one token of a PROMPT_6-token prompt; *cached = the prompt tokens
 * the server reused */
#define PROMPT_6 1024
static double one_token_seconds(int port, int *cached)
{
    json_t *ids = json_array();
    for (int i = 0; i < PROMPT_6; i++)
        json_array_append_new(ids, json_integer((i * 7919) % 4000 + 5));
    double t0 = now();
    json_t *j = one_token(port, ids);
    double t = now() - t0;
    *cached = (int)json_integer_value(
        json_object_get(json_object_get(json_object_get(j, "usage"), "prompt_tokens_details"), "cached_tokens"));
    json_decref(j);
    return t;
}

/* 7. one of 16 requests: SHARED_START ids they all share, then 16 of its own */
#define SHARED_START 512
typedef struct shared_req {
    int port, index;
} shared_req;

static void *shared_one(void *arg)
{
    const shared_req *q = arg;
    json_t *ids = json_array();
    for (int i = 0; i < SHARED_START + 16; i++)
        json_array_append_new(ids, json_integer(i < SHARED_START ? (i * 6007 + 17) % 4000 + 5
                                                                 : (i * 31 + q->index * 977) % 4000 + 5));
    json_decref(one_token(q->port, ids));
    return NULL;
}

/* Seconds for all 16; *tokens = prompt tokens the engine processed for them. */
static double shared_start_seconds(int port, long *tokens)
{
    shared_req q[16];
    pthread_t th[16];
    double before = metric(port, "strata_prompt_tokens_total");
    double t0 = now();
    for (int i = 0; i < 16; i++) {
        q[i] = (shared_req){port, i};
        pthread_create(&th[i], NULL, shared_one, &q[i]);
    }
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    double t = now() - t0;
    *tokens = (long)(metric(port, "strata_prompt_tokens_total") - before);
    return t;
}

static void start(test_server *s, const char *model, const char *const *args)
{
    if (!getenv("STRATA_SERVER"))
        setenv("STRATA_SERVER", "build/strata-server", 0);
    if (server_start(s, model, args) != 0) {
        fprintf(stderr, "bench: strata-server did not start\n");
        exit(1);
    }
}

int main(void)
{
    printf("== strata-server benchmark (model %s, %d generated tokens per stream)\n", model_dir(), GEN);
    test_server s;
    char *dir = strdup("/tmp/strata-bench-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    const char *args[] = {"--state-dir", dir, "--max-running", "16", NULL};
    start(&s, model_dir(), args);
    engine e;
    engine_open(&e);
    double per1, per8, engine_rates[ROUNDS], http_rates[ROUNDS], ratios[ROUNDS];
    aggregate(s.port, 1, GREEDY, &per1); /* warm up both */
    engine_decode_tok_s(&e);
    for (int i = 0; i < ROUNDS; i++) {  /* interleaved, so drifts of a shared machine hit both alike */
        engine_rates[i] = engine_decode_tok_s(&e);
        http_rates[i] = aggregate(s.port, 1, GREEDY, &per1);
        ratios[i] = http_rates[i] / engine_rates[i];
        printf("  round %d: engine %.1f, HTTP+SSE %.1f tokens/s (%.0f%%)\n", i + 1, engine_rates[i], http_rates[i],
               100 * ratios[i]);
    }
    engine_close(&e);
    double engine = median(engine_rates, ROUNDS), one = median(http_rates, ROUNDS);
    printf("engine decode, 1 stream:            %8.1f tokens/s (median of %d)\n", engine, ROUNDS);
    printf("HTTP+SSE decode, 1 stream:          %8.1f tokens/s  (%.0f%% of the engine's; median of the rounds' "
           "ratios %.0f%%)\n", one, 100 * one / engine, 100 * median(ratios, ROUNDS));
    double eight = aggregate(s.port, 8, GREEDY, &per8);
    printf("HTTP+SSE decode, 8 streams:         %8.1f tokens/s total, %.1f per stream (%.2fx one stream)\n", eight,
           per8, eight / one);
    double sampled = aggregate(s.port, 8, "\"temperature\":1,\"top_p\":0.9,\"seed\":7", &per8);
    printf("HTTP+SSE decode, 8 streams sampling: %7.1f tokens/s total with temperature 1, top_p 0.9 (%.2f of "
           "greedy's)\n", sampled, sampled / eight);
    int cold_cached, again_cached;
    double cold = one_token_seconds(s.port, &cold_cached), again = one_token_seconds(s.port, &again_cached);
    printf("prefix cache, the same %d-token prompt again: %.1f ms for one token cold (%d cached), %.1f ms again (%d "
           "cached; %.0fx)\n", PROMPT_6, cold * 1e3, cold_cached, again * 1e3, again_cached, cold / again);
    long shared_tokens;
    double shared = shared_start_seconds(s.port, &shared_tokens);
    printf("16 concurrent requests sharing a %d-token start (+16 own tokens), one token each: %.2f s, %ld prompt "
           "tokens through the engine (of %d)\n", SHARED_START, shared, shared_tokens, 16 * (SHARED_START + 16));
    server_stop(&s);
    start(&s, DEMO, args);
    double with = turn10_ttft(s.port, 1);
    server_stop(&s);
    const char *no_reuse[] = {"--prefix-cache-bytes", "0", NULL};
    start(&s, DEMO, no_reuse);
    double without = turn10_ttft(s.port, 0);
    server_stop(&s);
    printf("chat turn 10 (strata-demo), time to first token: %.1f ms with a session, %.1f ms without reuse (%.1fx)\n", with * 1e3,
           without * 1e3, without / with);
    start(&s, DEMO, NULL);
    double rate = prefix_hit_rate(s.port);
    server_stop(&s);
    printf("prefix cache (strata-demo), 50 requests / 5 system prompts: hit rate %.0f%%\n", rate * 100);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    free(dir);
    return 0;
}
