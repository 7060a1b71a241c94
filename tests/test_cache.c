/*
 * test_cache.c — the unified cache: forks share KV blocks instead of copying them,
 * copy-on-write keeps both branches exact, reset returns to the empty state.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "util.h"

static void run(strata_runner *r, strata_cache *c, const int32_t *ids, int n, float *logits)
{
    strata_error err;
    strata_seq s = {.cache = c, .tokens = ids, .n_tokens = n, .logits = logits};
    cr_assert_eq(strata_runner_step(r, &s, 1, &err), STRATA_OK, "%s", err.message);
}

Test(cache, fork_shares_kv_and_both_branches_stay_exact)
{
    strata_error err;
    strata_model *m;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &m, &err), STRATA_OK);
    strata_runner *r;
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    int32_t ids[140];
    for (int i = 0; i < 140; i++)
        ids[i] = (int32_t)((i * 37 + 11) % 512);
    int V = 512;
    float *a = malloc(sizeof(float) * (size_t)V), *b = malloc(sizeof(float) * (size_t)V);
    strata_cache *base, *fork;
    cr_assert_eq(strata_cache_new(m, &base, &err), STRATA_OK);
    run(r, base, ids, 100, a);
    cr_assert_eq(strata_cache_copy(base, &fork, &err), STRATA_OK);
    cr_assert(cache_shares_block(base, fork, 0) && cache_shares_block(base, fork, 99), "the fork copies no KV");
    cr_assert_eq(strata_cache_n_tokens(fork), 100);
    /* branch one: base + ids[100..120); branch two: fork + ids[120..140) */
    run(r, base, ids + 100, 20, a);
    run(r, fork, ids + 120, 20, b);
    cr_assert(cache_shares_block(base, fork, 0), "full blocks stay shared");
    cr_assert(!cache_shares_block(base, fork, 99), "the partial block was copied on write");
    int32_t seq2[120];
    memcpy(seq2, ids, 100 * sizeof(int32_t));
    memcpy(seq2 + 100, ids + 120, 20 * sizeof(int32_t));
    float *fa = malloc(sizeof(float) * (size_t)V), *fb = malloc(sizeof(float) * (size_t)V);
    strata_cache *c1, *c2;
    cr_assert_eq(strata_cache_new(m, &c1, &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(m, &c2, &err), STRATA_OK);
    run(r, c1, ids, 120, fa);
    run(r, c2, seq2, 120, fb);
    cr_assert_eq(memcmp(a, fa, sizeof(float) * (size_t)V), 0, "branch one equals a fresh run");
    cr_assert_eq(memcmp(b, fb, sizeof(float) * (size_t)V), 0, "branch two equals a fresh run");
    /* freeing the original leaves the fork intact */
    strata_cache_free(base);
    run(r, fork, ids, 1, b);
    strata_cache_reset(fork);
    run(r, fork, ids, 120, b);
    cr_assert_eq(memcmp(b, fa, sizeof(float) * (size_t)V), 0, "reset gives the empty state");
    strata_cache_free(fork);
    strata_cache_free(c1);
    strata_cache_free(c2);
    strata_runner_free(r);
    strata_model_free(m);
    free(a);
    free(b);
    free(fa);
    free(fb);
}
