/*
 * test_prefix_cache.c — the radix tree of state snapshots: longest usable prefix,
 * branch points, exact continuation from a hit, and eviction under the budget.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static strata_model *M;
static strata_runner *R;

static void setup(void)
{
    strata_error err;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &M, &err), STRATA_OK);
    cr_assert_eq(strata_runner_new(M, &R, &err), STRATA_OK);
}

static void teardown(void)
{
    strata_runner_free(R);
    strata_model_free(M);
}

static strata_cache *state_after(const int32_t *p, int n, float *logits)
{
    strata_error err;
    strata_cache *c;
    cr_assert_eq(strata_cache_new(M, &c, &err), STRATA_OK);
    strata_seq s = {.cache = c, .tokens = p, .n_tokens = n, .logits = logits};
    cr_assert_eq(strata_runner_step(R, &s, 1, &err), STRATA_OK);
    return c;
}

TestSuite(prefix_cache, .init = setup, .fini = teardown, .timeout = 60);

Test(prefix_cache, hits_branches_and_exact_continuation)
{
    strata_error err;
    strata_prefix_cache *pc;
    cr_assert_eq(strata_prefix_cache_new(M, 64 << 20, &pc, &err), STRATA_OK);
    int32_t sys_a[40], other[40];
    for (int i = 0; i < 40; i++) {
        sys_a[i] = (int32_t)(i * 7 % 512);
        other[i] = i < 25 ? sys_a[i] : (int32_t)(300 + i);
    }
    strata_cache *fork;
    int reused, branch;
    cr_assert_eq(strata_prefix_cache_lookup(pc, sys_a, 40, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_null(fork);
    cr_assert_eq(branch, 0);
    cr_assert_eq(strata_prefix_cache_insert(pc, sys_a, 40, state_after(sys_a, 30, NULL), NULL, &err), STRATA_OK);
    /* the other prompt shares 25 tokens: no snapshot that deep, but the branch is known */
    cr_assert_eq(strata_prefix_cache_lookup(pc, other, 40, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_null(fork);
    cr_assert_eq(branch, 25);
    cr_assert_eq(strata_prefix_cache_insert(pc, other, 40, state_after(other, 25, NULL), NULL, &err), STRATA_OK);
    /* now both share the snapshot at the branch; sys_a also has its own at 30 */
    cr_assert_eq(strata_prefix_cache_lookup(pc, other, 40, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 25);
    float a[512], b[512];
    strata_seq s = {.cache = fork, .tokens = other + 25, .n_tokens = 15, .logits = a};
    cr_assert_eq(strata_runner_step(R, &s, 1, &err), STRATA_OK);
    strata_cache_free(state_after(other, 40, b));
    cr_assert_eq(memcmp(a, b, sizeof a), 0, "continuing from the snapshot is exact");
    strata_cache_free(fork);
    cr_assert_eq(strata_prefix_cache_lookup(pc, sys_a, 40, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 30);
    strata_cache_free(fork);
    cr_assert_eq(strata_prefix_cache_lookup(pc, sys_a, 30, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_eq(reused, 25, "at most n - 1 tokens: the last token must give logits");
    strata_cache_free(fork);
    strata_prefix_stats st;
    strata_prefix_cache_get_stats(pc, &st);
    cr_assert_eq(st.snapshots, 2);
    cr_assert_eq(st.hits, 3);
    cr_assert_eq(st.lookups, 5);
    strata_prefix_cache_free(pc);
}

Test(prefix_cache, the_budget_evicts_the_least_useful)
{
    strata_error err;
    strata_prefix_cache *pc;
    strata_cache *probe = state_after((int32_t[]){1, 2, 3, 4}, 4, NULL);
    uint64_t one = strata_cache_state_bytes(probe);
    strata_cache_free(probe);
    cr_assert_eq(strata_prefix_cache_new(M, one * 3, &pc, &err), STRATA_OK);
    int32_t p[8][4];
    for (int k = 0; k < 8; k++) {
        for (int i = 0; i < 4; i++)
            p[k][i] = (int32_t)(k * 10 + i + 1);
        cr_assert_eq(strata_prefix_cache_insert(pc, p[k], 4, state_after(p[k], 4, NULL), NULL, &err), STRATA_OK);
    }
    strata_prefix_stats st;
    strata_prefix_cache_get_stats(pc, &st);
    cr_assert_leq(st.bytes, one * 3);
    cr_assert_eq(st.evictions, 5);
    strata_cache *fork;
    int reused, branch;
    cr_assert_eq(strata_prefix_cache_lookup(pc, (int32_t[]){71, 72, 73, 74, 75}, 5, &fork, &reused, &branch, NULL,
                                            &err), STRATA_OK);
    cr_assert_eq(reused, 4, "the most recent survives");
    strata_cache_free(fork);
    strata_prefix_cache_free(pc);
}

/* A snapshot kept with the logits after its last token serves the same prompt whole
 * (to a caller that takes the logits); the logits count in the bytes held. */
Test(prefix_cache, a_whole_prompt_comes_back_with_its_last_logits)
{
    strata_error err;
    strata_prefix_cache *pc;
    cr_assert_eq(strata_prefix_cache_new(M, 64 << 20, &pc, &err), STRATA_OK);
    int32_t p[30];
    for (int i = 0; i < 30; i++)
        p[i] = (int32_t)(i * 11 % 512);
    float *kept = malloc(sizeof(float) * 512), want[512];
    strata_cache *snap = state_after(p, 30, kept);
    uint64_t state = strata_cache_state_bytes(snap);
    memcpy(want, kept, sizeof want);
    cr_assert_eq(strata_prefix_cache_insert(pc, p, 30, snap, kept, &err), STRATA_OK);
    strata_prefix_stats st;
    strata_prefix_cache_get_stats(pc, &st);
    cr_assert_eq(st.bytes, state + sizeof want, "the logits are held and counted");
    strata_cache *fork;
    int reused, branch;
    const float *logits;
    cr_assert_eq(strata_prefix_cache_lookup(pc, p, 30, &fork, &reused, &branch, &logits, &err), STRATA_OK);
    cr_assert_eq(reused, 30);
    cr_assert_not_null(logits);
    cr_assert_eq(memcmp(logits, want, sizeof want), 0);
    cr_assert_eq(strata_cache_n_tokens(fork), 30);
    strata_cache_free(fork);
    cr_assert_eq(strata_prefix_cache_lookup(pc, p, 30, &fork, &reused, &branch, NULL, &err), STRATA_OK);
    cr_assert_null(fork, "without taking logits: at most n - 1 tokens");
    cr_assert_eq(reused, 0);
    cr_assert_eq(strata_prefix_cache_lookup(pc, p, 29, &fork, &reused, &branch, &logits, &err), STRATA_OK);
    cr_assert_null(fork, "a shorter prompt does not reach the snapshot");
    cr_assert_null(logits);
    int32_t longer[31];
    memcpy(longer, p, sizeof p);
    longer[30] = 5;
    cr_assert_eq(strata_prefix_cache_lookup(pc, longer, 31, &fork, &reused, &branch, &logits, &err), STRATA_OK);
    cr_assert_eq(reused, 30, "a longer prompt continues from the snapshot");
    cr_assert_null(logits, "and computes its own last logits");
    strata_cache_free(fork);
    /* a second insert of the same state without logits keeps the logits held */
    cr_assert_eq(strata_prefix_cache_insert(pc, p, 30, state_after(p, 30, NULL), NULL, &err), STRATA_OK);
    cr_assert_eq(strata_prefix_cache_lookup(pc, p, 30, &fork, &reused, &branch, &logits, &err), STRATA_OK);
    cr_assert_eq(reused, 30);
    cr_assert_not_null(logits);
    strata_cache_free(fork);
    strata_prefix_cache_free(pc);
}
