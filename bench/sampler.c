/*
 * bench/sampler.c — the cost of choosing one token (a benchmark, not a test) over a
 * 131072-token vocabulary, the Nemotron-H size: per sampling setting and per shape
 * of the logits — peaked (a trained model's), flat (a random checkpoint's, sd 0.64:
 * the worst case for the truncations) — in µs per token, and as passes: that time
 * over the time of one vector pass reading the logits (the kernel path's maximum,
 * as wide as the CPU allows: the cache's read rate), measured in the same run. Each
 * figure is the best of 5 rounds of 200 tokens, in CPU time. $STRATA_KERNEL picks a
 * narrower path, as for the matmuls.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

static double token_us(const setting *st, const float *l)
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
    strata_sampler *s;
    strata_error err;
    if (strata_sampler_new(&p, V, &s, &err) != STRATA_OK) {
        fprintf(stderr, "sampler: %s\n", err.message);
        exit(1);
    }
    strata_sample out;
    double best = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = cpu_us();
        for (int k = 0; k < TOKENS; k++)
            strata_sampler_sample(s, l, &out, NULL);
        double t = (cpu_us() - t0) / TOKENS;
        best = t < best ? t : best;
    }
    strata_sampler_free(s);
    return best;
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
        double a = token_us(&settings[i], peaked), b = token_us(&settings[i], flat);
        printf("  %-28s %11.1f (%5.1f)   %11.1f (%5.1f)\n", settings[i].name, a, a / unit, b, b / unit);
    }
    return 0;
}
