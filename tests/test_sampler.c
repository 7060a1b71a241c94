/*
 * test_sampler.c — the sampler's distributions: greedy and its log probability,
 * top_k, top_p and min_p keep exactly the tokens their definitions keep, the
 * frequencies of seeded draws follow the renormalised probabilities (on a 131072-token
 * vocabulary too), seeds replay, and every cut on a large flat vocabulary keeps the
 * set a full sort keeps.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/isa.h"
#include "strata.h"
#include "util.h"

#define DRAWS 4000

static strata_sampler *sampler(float temperature, int top_k, float top_p, float min_p, uint64_t seed, int vocab)
{
    strata_sampling p;
    strata_sampling_default(&p);
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    strata_sampler *s = NULL;
    strata_error err;
    cr_assert_eq(strata_sampler_new(&p, vocab, &s, &err), STRATA_OK, "%s", err.message);
    return s;
}

/* counts[v] over DRAWS draws from logits (vocab). */
static void histogram(strata_sampler *s, const float *logits, int vocab, int *counts)
{
    memset(counts, 0, sizeof(int) * (size_t)vocab);
    strata_sample out;
    strata_error err;
    for (int i = 0; i < DRAWS; i++) {
        cr_assert_eq(strata_sampler_sample(s, logits, &out, &err), STRATA_OK);
        cr_assert(out.token >= 0 && out.token < vocab);
        counts[out.token]++;
    }
}

/* logits over 64 tokens: the first four carry probabilities 0.5, 0.3, 0.15, 0.05
 * (up to the tail of 60 tokens at e^-30 below the first). */
static void four_token_logits(float *l)
{
    const double p[4] = {0.5, 0.3, 0.15, 0.05};
    for (int v = 0; v < 64; v++)
        l[v] = v < 4 ? (float)log(p[v]) : (float)(log(0.5) - 30.0);
}

/* Each of the first `keep` tokens is drawn in proportion to its probability
 * renormalised over them (4 standard deviations), and no other token is. */
static void assert_frequencies(const int *counts, int keep)
{
    const double p[4] = {0.5, 0.3, 0.15, 0.05};
    double z = 0;
    for (int v = 0; v < keep; v++)
        z += p[v];
    for (int v = 0; v < 64; v++) {
        if (v >= keep) {
            cr_assert_eq(counts[v], 0, "token %d drawn %d times, outside the cut of %d", v, counts[v], keep);
            continue;
        }
        double q = p[v] / z, sd = sqrt(DRAWS * q * (1 - q));
        cr_assert(fabs(counts[v] - DRAWS * q) <= 4 * sd + 1, "token %d: %d draws, expected %.0f", v, counts[v],
                  DRAWS * q);
    }
}

Test(sampler, greedy_picks_the_maximum_with_its_log_probability)
{
    float l[1000];
    for (int v = 0; v < 1000; v++)
        l[v] = (float)sin(v * 0.37) * 5.0f;
    l[613] = 9.5f;
    strata_sampler *s = sampler(0.0f, 0, 1.0f, 0.0f, 1, 1000);
    strata_sample out;
    strata_error err;
    cr_assert_eq(strata_sampler_sample(s, l, &out, &err), STRATA_OK);
    cr_assert_eq(out.token, 613);
    double z = 0;
    for (int v = 0; v < 1000; v++)
        z += exp((double)l[v] - 9.5);
    cr_assert_float_eq(out.logprob, -log(z), 1e-5, "logprob %g, expected %g", out.logprob, -log(z));
    strata_sampler_free(s);
}

Test(sampler, untruncated_draws_follow_the_softmax)
{
    float l[64];
    int counts[64];
    four_token_logits(l);
    strata_sampler *s = sampler(1.0f, 0, 1.0f, 0.0f, 7, 64);
    histogram(s, l, 64, counts);
    assert_frequencies(counts, 4);
    strata_sampler_free(s);
}

Test(sampler, top_k_top_p_and_min_p_cut_where_defined)
{
    float l[64];
    int counts[64];
    four_token_logits(l);
    struct { int top_k; float top_p, min_p; int keep; } cases[] = {
        {1, 1.0f, 0.0f, 1},     /* top_k 1 is greedy */
        {3, 1.0f, 0.0f, 3},
        {0, 0.75f, 0.0f, 2},    /* 0.5, then 0.8 >= 0.75 */
        {0, 0.85f, 0.0f, 3},
        {3, 0.9f, 0.0f, 3},     /* top_p over the top 3 (0.95): 0.53, 0.84, 1 */
        {2, 0.5f, 0.0f, 1},     /* 0.625 of the top 2 >= 0.5 */
        {0, 1.0f, 0.25f, 3},    /* relative 1, 0.6, 0.3, 0.1 */
        {0, 1.0f, 0.7f, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        strata_sampler *s = sampler(1.0f, cases[i].top_k, cases[i].top_p, cases[i].min_p, 100 + i, 64);
        histogram(s, l, 64, counts);
        assert_frequencies(counts, cases[i].keep);
        strata_sampler_free(s);
    }
}

Test(sampler, same_seed_same_draws)
{
    float l[512];
    for (int v = 0; v < 512; v++)
        l[v] = (float)cos(v * 1.3) * 2.0f;
    strata_sampler *a = sampler(0.9f, 40, 0.95f, 0.01f, 42, 512), *b = sampler(0.9f, 40, 0.95f, 0.01f, 42, 512);
    strata_sample x, y;
    strata_error err;
    int first = -1, varied = 0;
    for (int i = 0; i < 200; i++) {
        strata_sampler_sample(a, l, &x, &err);
        strata_sampler_sample(b, l, &y, &err);
        cr_assert_eq(x.token, y.token, "draw %d", i);
        first = first < 0 ? x.token : first;
        varied |= x.token != first;
    }
    cr_assert(varied, "200 draws gave one token");
    strata_sampler_free(a);
    strata_sampler_free(b);
}

static const float *sort_keys;

static int by_key_desc(const void *a, const void *b)
{
    float x = sort_keys[*(const int *)a], y = sort_keys[*(const int *)b];
    return x != y ? (x < y ? 1 : -1) : *(const int *)a - *(const int *)b;
}

/* How many tokens of the sorted order (ids sorted by logit) the cuts keep, by their
 * definitions: the top k, then the smallest prefix holding top_p of their mass,
 * then those within min_p of the best. */
static int kept_by_definition(const float *l, const int *ids, int V, int top_k, float top_p, float min_p)
{
    int keep = top_k > 0 && top_k < V ? top_k : V;
    double z = 0, cum = 0;
    for (int i = 0; i < keep; i++)
        z += exp((double)l[ids[i]] - l[ids[0]]);
    int n = 0;
    while (n < keep) {
        double w = exp((double)l[ids[n]] - l[ids[0]]);
        if (n > 0 && w < min_p)
            break;
        cum += w / z;
        n++;
        if (cum >= top_p - 1e-6)
            break;
    }
    return n;
}

/* A flat vocabulary (every token within a few nats) makes the candidate search take
 * most of it: the drawn tokens must lie in the set a full sort keeps, and the draws
 * must spread over it. */
Test(sampler, truncations_on_a_flat_vocabulary_match_a_full_sort)
{
    enum { V = 50003 };  /* not a multiple of 16 or of 1024: every tail runs */
    float *l = malloc(sizeof(float) * V);
    int *ids = malloc(sizeof(int) * V);
    char *allowed = malloc(V);
    srand(3);
    for (int v = 0; v < V; v++)
        l[v] = (float)rand() / (float)RAND_MAX * 6.0f, ids[v] = v;
    sort_keys = l;
    qsort(ids, V, sizeof *ids, by_key_desc);
    struct { int top_k; float top_p, min_p; } cases[] = {
        {0, 0.3f, 0.0f}, {0, 0.95f, 0.0f}, {40, 1.0f, 0.0f}, {5000, 0.5f, 0.0f}, {0, 1.0f, 0.5f},
        {100, 0.9f, 0.9f}, {0, 0.99f, 0.01f},
    };
    /* on every kernel path this CPU runs: the sampler takes its passes from the
     * path $STRATA_KERNEL names (vocab.h) */
    const char *paths[] = {"avx512", "avx2", "portable"};
    for (size_t c = 0; c < 3 * (sizeof cases / sizeof *cases); c++) {
        if (!kernel_by_name(paths[c % 3]))
            continue;
        setenv("STRATA_KERNEL", paths[c % 3], 1);
        int n_allowed = kept_by_definition(l, ids, V, cases[c / 3].top_k, cases[c / 3].top_p, cases[c / 3].min_p);
        memset(allowed, 0, V);
        for (int i = 0; i < n_allowed; i++)
            allowed[ids[i]] = 1;
        float edge = l[ids[n_allowed - 1]];
        strata_sampler *s = sampler(1.0f, cases[c / 3].top_k, cases[c / 3].top_p, cases[c / 3].min_p, 9 + c, V);
        strata_sample out;
        strata_error err;
        int distinct = 0;
        char *hit = calloc(V, 1);
        for (int i = 0; i < 150; i++) {
            cr_assert_eq(strata_sampler_sample(s, l, &out, &err), STRATA_OK);
            cr_assert(allowed[out.token] || fabsf(l[out.token] - edge) < 1e-5f,
                      "case %zu (%s): token %d is outside the %d the cuts keep", c / 3, paths[c % 3], out.token,
                      n_allowed);
            distinct += !hit[out.token];
            hit[out.token] = 1;
        }
        int want = n_allowed < 140 ? n_allowed / 2 : 70;
        cr_assert_geq(distinct, want, "case %zu (%s): only %d distinct tokens from a set of %d", c / 3, paths[c % 3],
                      distinct, n_allowed);
        strata_sampler_free(s);
        free(hit);
    }
    free(allowed);
    free(ids);
    free(l);
}

/* A large vocabulary with three clear leaders over a flat tail: top_k 3 draws them
 * in proportion to their probabilities, whatever the tail's size. */
Test(sampler, top_k_frequencies_on_a_large_vocabulary)
{
    enum { V = 131072 };
    float *l = malloc(sizeof(float) * V);
    int *counts = malloc(sizeof(int) * V);
    for (int v = 0; v < V; v++)
        l[v] = (float)(v % 101) * 0.01f;
    const int lead[3] = {70000, 5, 131071};
    const double p[3] = {0.5, 0.3, 0.2};
    for (int i = 0; i < 3; i++)
        l[lead[i]] = 20.0f + (float)log(p[i]);
    enum { N = 400 };
    strata_sampler *s = sampler(1.0f, 3, 1.0f, 0.0f, 77, V);
    strata_sample out;
    strata_error err;
    memset(counts, 0, sizeof(int) * V);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(strata_sampler_sample(s, l, &out, &err), STRATA_OK);
        counts[out.token]++;
    }
    for (int i = 0; i < 3; i++) {
        double sd = sqrt(N * p[i] * (1 - p[i]));
        cr_assert(fabs(counts[lead[i]] - N * p[i]) <= 4 * sd, "token %d: %d draws, expected %.0f", lead[i],
                  counts[lead[i]], N * p[i]);
    }
    cr_assert_eq(counts[lead[0]] + counts[lead[1]] + counts[lead[2]], N, "a token outside the top 3");
    strata_sampler_free(s);
    free(counts);
    free(l);
}

/* strata_runner_sample over many rows on two threads (the demo model: 4096 tokens a
 * row, enough to split the rows) gives each row exactly what its sampler gives
 * alone, round after round (penalties and random streams advancing), and refuses a
 * row without a sampler. */
Test(sampler, runner_sample_equals_one_by_one)
{
    enum { ROWS = 12, ROUNDS = 8 };
    strata_error err;
    strata_model *m;
    strata_runner *r;
    cr_assert_eq(strata_model_load(shared_path("models/strata-demo"), &m, &err), STRATA_OK, "%s",
                 err.message);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    cr_assert_eq(strata_runner_set_threads(r, 2, &err), STRATA_OK);
    int V = strata_model_get_info(m)->vocab_size;
    strata_sampler *batch[ROWS], *alone[ROWS];
    for (int i = 0; i < ROWS; i++) {
        strata_sampling p;
        strata_sampling_default(&p);
        p.temperature = i % 4 == 0 ? 0.0f : 0.5f + 0.25f * (float)(i % 3);
        p.top_p = i % 3 == 1 ? 0.8f : 1.0f;
        p.top_k = i % 5 == 2 ? 7 : 0;
        p.min_p = i % 6 == 5 ? 0.05f : 0.0f;
        p.frequency_penalty = i % 4 == 3 ? 0.5f : 0.0f;
        p.top_logprobs = i % 2 ? 3 : 0;
        p.seed = 1000 + (uint64_t)i;
        cr_assert_eq(strata_sampler_new(&p, V, &batch[i], &err), STRATA_OK);
        cr_assert_eq(strata_sampler_new(&p, V, &alone[i], &err), STRATA_OK);
    }
    float *l = malloc(sizeof(float) * (size_t)ROWS * (size_t)V);
    const float *rows[ROWS];
    strata_sample got[ROWS], want;
    srand(21);
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t k = 0; k < (size_t)ROWS * (size_t)V; k++)
            l[k] = (float)rand() / (float)RAND_MAX * 4.0f;
        for (int i = 0; i < ROWS; i++)
            rows[i] = l + (size_t)i * (size_t)V;
        cr_assert_eq(strata_runner_sample(r, batch, rows, got, ROWS, &err), STRATA_OK, "%s", err.message);
        for (int i = 0; i < ROWS; i++) {
            cr_assert_eq(strata_sampler_sample(alone[i], rows[i], &want, &err), STRATA_OK);
            cr_assert_eq(got[i].token, want.token, "round %d row %d", round, i);
            cr_assert_eq(got[i].logprob, want.logprob, "round %d row %d", round, i);
            cr_assert_eq(got[i].n_top, want.n_top);
            for (int t = 0; t < want.n_top; t++)
                cr_assert_eq(got[i].top[t].id, want.top[t].id);
            strata_sampler_accept(batch[i], got[i].token, 1);
            strata_sampler_accept(alone[i], want.token, 1);
        }
    }
    strata_sampler *kept = batch[3];
    batch[3] = NULL;
    cr_assert_eq(strata_runner_sample(r, batch, rows, got, ROWS, &err), STRATA_E_INVALID);
    batch[3] = kept;
    for (int i = 0; i < ROWS; i++) {
        strata_sampler_free(batch[i]);
        strata_sampler_free(alone[i]);
    }
    free(l);
    strata_runner_free(r);
    strata_model_free(m);
}

/* NaN and infinite logits, under every kind of setting, give a token of the
 * vocabulary (an infinite logit wins; NaNs never do), never a crash. */
Test(sampler, non_finite_logits_give_a_valid_token)
{
    enum { V = 1001 };
    float l[V];
    struct { float t; int top_k; float top_p, min_p; } cases[] = {
        {0.0f, 0, 1.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, {0.8f, 5, 1.0f, 0.0f}, {1.2f, 0, 0.5f, 0.0f}, {1.0f, 0, 1.0f, 0.2f},
    };
    for (int pattern = 0; pattern < 4; pattern++) {
        for (int v = 0; v < V; v++)
            l[v] = pattern == 3 ? NAN : v % 7 == 0 ? NAN : v % 11 == 0 ? -INFINITY : (float)(v % 13);
        if (pattern == 1)
            l[500] = INFINITY;
        if (pattern == 2)
            for (int v = 0; v < V; v++)
                l[v] = -INFINITY;
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            strata_sampler *s = sampler(cases[c].t, cases[c].top_k, cases[c].top_p, cases[c].min_p, 3, V);
            strata_sample out;
            strata_error err;
            for (int i = 0; i < 20; i++) {
                cr_assert_eq(strata_sampler_sample(s, l, &out, &err), STRATA_OK);
                cr_assert(out.token >= 0 && out.token < V, "pattern %d case %zu: token %d", pattern, c, out.token);
                if (pattern == 1)
                    cr_assert_eq(out.token, 500, "case %zu: the infinite logit lost to %d", c, out.token);
                if (pattern == 0)
                    cr_assert(l[out.token] == l[out.token], "case %zu: drew a NaN logit", c);
            }
            strata_sampler_free(s);
        }
    }
}

/* V logits of 400 values (many ties) from seed, + shift; ids sorted by them, best
 * first (ties by id). Returns Σ exp(l - max). */
static double tied_logits_sorted(float *l, int *ids, int V, unsigned seed, float shift)
{
    srand(seed);
    for (int v = 0; v < V; v++)
        l[v] = (float)(rand() % 400) * 0.01f + shift, ids[v] = v;
    sort_keys = l;
    qsort(ids, (size_t)V, sizeof *ids, by_key_desc);
    double z = 0;
    for (int v = 0; v < V; v++)
        z += exp((double)l[v] - l[ids[0]]);
    return z;
}

/* The alternatives are the top_logprobs best logits of a full sort (ties by id),
 * best first, with their log softmax. */
Test(sampler, top_logprobs_are_the_best_of_a_full_sort)
{
    enum { V = 5003 };
    float *l = malloc(sizeof(float) * V);
    int *ids = malloc(sizeof(int) * V);
    double z = tied_logits_sorted(l, ids, V, 8, 0.0f);
    for (int k = 1; k <= STRATA_MAX_TOP_LOGPROBS; k += 19) {
        strata_sampling p;
        strata_sampling_default(&p);
        p.temperature = 0.0f;
        p.top_logprobs = k;
        strata_sampler *s = NULL;
        strata_error err;
        cr_assert_eq(strata_sampler_new(&p, V, &s, &err), STRATA_OK);
        strata_sample out;
        cr_assert_eq(strata_sampler_sample(s, l, &out, &err), STRATA_OK);
        cr_assert_eq(out.n_top, k);
        for (int i = 0; i < k; i++) {
            cr_assert_eq(out.top[i].id, ids[i], "k %d, alternative %d: id %d, expected %d", k, i, out.top[i].id, ids[i]);
            double lp = (double)l[ids[i]] - l[ids[0]] - log(z);
            cr_assert(fabs(out.top[i].logprob - lp) < 1e-5, "alternative %d: %g, expected %g", i, out.top[i].logprob, lp);
        }
        strata_sampler_free(s);
    }
    free(ids);
    free(l);
}

/* A given token scored: its log softmax, and the best alternatives of a full sort
 * (ties by id) with theirs; ids and counts out of range are refused. */
Test(sampler, scoring_a_token_gives_its_log_softmax_and_the_best_alternatives)
{
    enum { V = 5003 };
    float *l = malloc(sizeof(float) * V);
    int *ids = malloc(sizeof(int) * V);
    double z = tied_logits_sorted(l, ids, V, 9, -2.0f);
    strata_error err;
    strata_sample out;
    int32_t scored[] = {ids[0], ids[V / 2], ids[V - 1], 0, V - 1};
    int tops[] = {0, 1, 5, STRATA_MAX_TOP_LOGPROBS};
    for (size_t c = 0; c < sizeof scored / sizeof *scored; c++)
        for (size_t t = 0; t < sizeof tops / sizeof *tops; t++) {
            cr_assert_eq(strata_logits_score(l, V, scored[c], tops[t], &out, &err), STRATA_OK, "%s", err.message);
            cr_assert_eq(out.token, scored[c]);
            double want = (double)l[scored[c]] - l[ids[0]] - log(z);
            cr_assert(fabs(out.logprob - want) < 1e-5, "token %d: %g, expected %g", scored[c], out.logprob, want);
            cr_assert_eq(out.n_top, tops[t]);
            for (int i = 0; i < out.n_top; i++) {
                cr_assert_eq(out.top[i].id, ids[i], "alternative %d: id %d, expected %d", i, out.top[i].id, ids[i]);
                double lp = (double)l[ids[i]] - l[ids[0]] - log(z);
                cr_assert(fabs(out.top[i].logprob - lp) < 1e-5);
            }
        }
    cr_assert_eq(strata_logits_score(l, V, V, 1, &out, &err), STRATA_E_INVALID);
    cr_assert(strstr(err.message, "outside the vocabulary"), "%s", err.message);
    cr_assert_eq(strata_logits_score(l, V, -1, 1, &out, &err), STRATA_E_INVALID);
    cr_assert_eq(strata_logits_score(l, V, 3, STRATA_MAX_TOP_LOGPROBS + 1, &out, &err), STRATA_E_INVALID);
    cr_assert_eq(strata_logits_score(NULL, V, 3, 1, &out, &err), STRATA_E_INVALID);
    free(ids);
    free(l);
}

/* strata_runner_score over many rows on two threads gives each row exactly what
 * strata_logits_score gives it alone; one id out of range refuses the call before
 * any row is scored. */
Test(sampler, runner_score_equals_one_by_one)
{
    enum { ROWS = 12 };
    strata_error err;
    strata_model *m;
    strata_runner *r;
    cr_assert_eq(strata_model_load(shared_path("models/strata-demo"), &m, &err), STRATA_OK, "%s", err.message);
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    cr_assert_eq(strata_runner_set_threads(r, 2, &err), STRATA_OK);
    int V = strata_model_get_info(m)->vocab_size;
    float *l = malloc(sizeof(float) * (size_t)ROWS * (size_t)V);
    int32_t ids[ROWS];
    strata_sample got[ROWS], want;
    srand(22);
    for (size_t k = 0; k < (size_t)ROWS * (size_t)V; k++)
        l[k] = (float)rand() / (float)RAND_MAX * 6.0f;
    for (int i = 0; i < ROWS; i++)
        ids[i] = rand() % V;
    cr_assert_eq(strata_runner_score(r, l, ids, ROWS, 4, got, &err), STRATA_OK, "%s", err.message);
    for (int i = 0; i < ROWS; i++) {
        cr_assert_eq(strata_logits_score(l + (size_t)i * (size_t)V, V, ids[i], 4, &want, &err), STRATA_OK);
        cr_assert_eq(got[i].token, ids[i]);
        cr_assert_eq(got[i].logprob, want.logprob, "row %d", i);
        cr_assert_eq(got[i].n_top, 4);
        for (int t = 0; t < 4; t++)
            cr_assert(got[i].top[t].id == want.top[t].id && got[i].top[t].logprob == want.top[t].logprob);
    }
    memset(got, 0xff, sizeof got);
    ids[5] = V;
    cr_assert_eq(strata_runner_score(r, l, ids, ROWS, 4, got, &err), STRATA_E_INVALID);
    cr_assert(strstr(err.message, "row 5"), "%s", err.message);
    cr_assert_eq(got[0].token, -1, "no row is scored");
    cr_assert_eq(strata_runner_score(r, l, ids, 0, 4, NULL, &err), STRATA_OK);
    free(l);
    strata_runner_free(r);
    strata_model_free(m);
}
