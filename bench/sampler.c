/*
 * bench/sampler.c — the cost of choosing one token (a benchmark, not a test) over a
 * 131072-token vocabulary, the Nemotron-H size: per sampling setting and per shape
 * of the logits — peaked (a trained model's), flat (a random checkpoint's, sd 0.64:
 * the worst case for the truncations) — in µs per token, and as passes: that time
 * over the time of one vector pass reading the logits (the kernel path's maximum,
 * as wide as the CPU allows: the cache's read rate), measured in the same run. Each
 * figure is the best of 5 rounds of 200 tokens, in CPU time. $STRATA_KERNEL picks a
 * narrower path, as for the matmuls.
 *
 * Then constrained output (response_format) on the 131072-token vocabulary of the
 * fixtures' Nemotron-H tokenizer:
 * the mask over every token, where JSON's grammar prunes most first bytes (after a
 * comma in an object) and where it prunes few (inside a string), and a constrained
 * token with and without truncation (which always masks the whole vocabulary).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "constraint/internal.h"
#include "kernels/isa.h"
#include "kernels/vocab.h"
#include "strata.h"

#define V 131072
#define TOKENS 200
#define ROUNDS 5

static double cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* A standard normal by Box-Muller from a small LCG (the same logits every run). */
static float normal(uint64_t *s)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        u[i] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

static volatile float sink;

/* µs for one pass reading the logits: the unit the settings are measured in. */
static double pass_us(const float *l)
{
    double best = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_us();
        for (int k = 0; k < TOKENS; k++)
            sink = kernel_select()->vocab->max(l, V);
        double t = (cpu_us() - t0) / TOKENS;
        best = t < best ? t : best;
    }
    return best;
}

typedef struct setting {
    const char *name;
    float temperature, top_p, min_p;
    int top_k, logprobs;    /* logprobs: 1 the token's, > 1 that many alternatives too */
} setting;

/* µs for one token of setting st over l; with a constraint c, after the bytes of
 * text (each a token of its own: a byte-level tokenizer has every byte). */
static int32_t byte_token[256]; /* the tokenizer's token of each single byte */

static double token_us(const setting *st, const float *l, const strata_constraint *c, const char *text)
{
    strata_sampling p;
    strata_sampling_default(&p);
    p.temperature = st->temperature;
    p.top_p = st->top_p;
    p.top_k = st->top_k;
    p.min_p = st->min_p;
    p.skip_logprob = !st->logprobs;
    p.top_logprobs = st->logprobs > 1 ? st->logprobs : 0;
    p.seed = 7;
    p.constraint = c;
    strata_sampler *s;
    strata_error err;
    if (strata_sampler_new(&p, V, &s, &err) != STRATA_OK) {
        fprintf(stderr, "sampler: %s\n", err.message);
        exit(1);
    }
    for (const char *t = text; t && *t; t++)
        strata_sampler_accept(s, byte_token[(unsigned char)*t], 1);
    strata_sample out;
    double best = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_us();
        for (int k = 0; k < TOKENS; k++)
            if (strata_sampler_sample(s, l, &out, &err) != STRATA_OK) {
                fprintf(stderr, "sampler: %s\n", err.message);
                exit(1);
            }
        double t = (cpu_us() - t0) / TOKENS;
        best = t < best ? t : best;
    }
    strata_sampler_free(s);
    return best;
}

/* µs for one mask of the whole vocabulary after text. */
static double mask_us(const strata_constraint *c, const char *text, float *work, int *allowed)
{
    cons_cursor *k;
    if (cons_cursor_new(c, &k, NULL) != STRATA_OK)
        exit(1);
    for (const char *t = text; *t; t++)
        cons_advance(k, byte_token[(unsigned char)*t]);
    double best = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_us();
        for (int i = 0; i < TOKENS / 10; i++)
            *allowed = cons_mask(k, work);
        double t = (cpu_us() - t0) / (TOKENS / 10);
        best = t < best ? t : best;
    }
    cons_cursor_free(k);
    return best;
}

static int constrained(const float *peaked, const float *flat, double unit)
{
    const char *shared = getenv("STRATA_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures/tokenizers/nemotron_h_proxy", shared ? shared : "../shared");
    strata_tokenizer *tok;
    strata_vocab *v;
    strata_constraint *c;
    strata_error err;
    int32_t end = 0;
    double t0 = cpu_us();
    if (strata_tokenizer_load(path, &tok, &err) != STRATA_OK || strata_vocab_new(tok, V, &v, &err) != STRATA_OK ||
        strata_constraint_new_json(v, NULL, 0, &end, 1, &c, &err) != STRATA_OK) {
        fprintf(stderr, "constrained: %s\n", err.message);
        return 1;
    }
    double build_ms = (cpu_us() - t0) / 1e3;
    for (int id = 0; id < V; id++)
        if (v->off[id + 1] - v->off[id] == 1)
            byte_token[(unsigned char)v->blob[v->off[id]]] = id;
    static float work[V];
    printf("constrained output (json_object; tokenizer loaded and token bytes built in %.0f ms):\n",
           build_ms);
    const char *where[][2] = {{"after a comma in an object", "{\"name\": \"Bob\","},
                              {"inside a string", "{\"name\": \"Bo"}};
    for (int i = 0; i < 2; i++) {
        int allowed;
        double us = mask_us(c, where[i][1], work, &allowed);
        printf("  mask %-28s %8.1f us (%5.1f passes), %d tokens allowed\n", where[i][0], us, us / unit, allowed);
    }
    const setting greedy = {"greedy", 0, 1, 0, 0, 0}, nucleus = {"temperature 0.7, top_p 0.9", 0.7f, 0.9f, 0, 0, 0};
    const char *in_string = where[1][1];
    printf("  %-33s %8.1f us (peaked logits; flat: %.1f)\n", "greedy token inside a string",
           token_us(&greedy, peaked, c, in_string), token_us(&greedy, flat, c, in_string));
    printf("  %-33s %8.1f us (peaked logits; flat: %.1f)\n", "top_p 0.9 token inside a string",
           token_us(&nucleus, peaked, c, in_string), token_us(&nucleus, flat, c, in_string));
    strata_constraint_free(c);
    strata_vocab_free(v);
    strata_tokenizer_free(tok);
    return 0;
}

int main(void)
{
    static float peaked[V], flat[V];
    uint64_t seed = 42;
    for (int v = 0; v < V; v++) {
        float z = normal(&seed);
        peaked[v] = 3.0f * z;   /* the best tokens stand out as in a trained model's logits */
        flat[v] = 0.64f * z;    /* the 470m random checkpoint's spread */
    }
    peaked[123] = 20.0f;
    const setting settings[] = {
        {"greedy", 0, 1, 0, 0, 0},
        {"greedy + logprobs", 0, 1, 0, 0, 1},
        {"greedy + 20 top_logprobs", 0, 1, 0, 0, 20},
        {"temperature 1", 1, 1, 0, 0, 0},
        {"temperature 0.7, top_p 0.9", 0.7f, 0.9f, 0, 0, 0},
        {"top_k 40", 1, 1, 0, 40, 0},
        {"top_k 50, top_p 0.95", 1, 0.95f, 0, 50, 0},
        {"min_p 0.05", 1, 1, 0.05f, 0, 0},
    };
    double unit = pass_us(flat);
    printf("sampler: one token over %d logits (%s; one read pass: %.1f us)\n", V, kernel_select()->name, unit);
    printf("  %-28s %20s %20s\n", "setting", "peaked: us (passes)", "flat: us (passes)");
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++) {
        double a = token_us(&settings[i], peaked, NULL, NULL), b = token_us(&settings[i], flat, NULL, NULL);
        printf("  %-28s %11.1f (%5.1f)   %11.1f (%5.1f)\n", settings[i].name, a, a / unit, b, b / unit);
    }
    return constrained(peaked, flat, unit);
}
