/*
 * test_cache.c — the unified cache: forks share KV blocks instead of copying them,
 * copy-on-write keeps both branches exact, reset returns to the empty state; the
 * faster compute modes keep K/V in BF16, and copies keep their source's form.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "kernels/kernels.h"
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

/* Rows t of every attention layer's keys in the step just captured (hook_k, one
 * entry per layer, (n, n_kv, hd)) against the cache's keys at p0 + t: stored as
 * they came (fp32 KV) or rounded to BF16 to nearest even (kv_bf16), bit for bit. */
static void check_keys_stored(const strata_model *m, const strata_capture *cap, const strata_cache *c, int p0, int n)
{
    strata_error err;
    const strata_model_info *info = strata_model_get_info(m);
    int hd = info->head_dim, checked = 0;
    float *row = malloc(sizeof(float) * (size_t)hd);
    for (int e = 0; e < strata_capture_count(cap); e++) {
        strata_tensor_view v;
        int L;
        cr_assert_eq(strata_capture_get(cap, e, &v, &err), STRATA_OK);
        cr_assert_eq(sscanf(v.name, "blocks.%d.", &L), 1);
        cr_assert_eq(v.shape[0], n);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < info->kv_heads; h++) {
                cache_kv_get(c, m->layers[L].state_index, 0, h, p0 + t, row);
                const float *k = (const float *)v.data + ((size_t)t * (size_t)info->kv_heads + (size_t)h) * (size_t)hd;
                for (int i = 0; i < hd; i++) {
                    float want = c->kv_bf16 ? bf16_widen(bf16_round(k[i])) : k[i];
                    cr_assert_eq(memcmp(&row[i], &want, 4), 0, "%s: position %d head %d [%d] is %a, not %a",
                                 v.name, p0 + t, h, i, row[i], want);
                    checked++;
                }
            }
    }
    cr_assert_gt(checked, 0);
    free(row);
}

static void run_captured(strata_runner *r, strata_cache *c, strata_capture *cap, const int32_t *ids, int n)
{
    strata_error err;
    float *logits = malloc(sizeof(float) * 512 * (size_t)n);
    strata_capture_clear(cap);
    strata_seq s = {.cache = c, .tokens = ids, .n_tokens = n, .logits = logits, .capture = cap};
    cr_assert_eq(strata_runner_step(r, &s, 1, &err), STRATA_OK, "%s", err.message);
    free(logits);
}

/* The faster compute modes keep K/V in BF16 (half the bytes a token, in the model's
 * figures and a cache's); a cache made before a switch keeps fp32 K/V, and so do its
 * copies, whose shared blocks stay as they were. */
Test(cache, bf16_mode_keeps_kv_in_bf16_and_copies_keep_their_source_form)
{
    strata_error err;
    strata_model *m;
    cr_assert_eq(strata_model_load(shared_path("fixtures/models/hybrid-small"), &m, &err), STRATA_OK);
    const strata_model_info *info = strata_model_get_info(m);
    uint64_t fixed32 = info->state_bytes_fixed, token32 = info->state_bytes_per_token;
    int32_t ids[80];
    for (int i = 0; i < 80; i++)
        ids[i] = (int32_t)((i * 37 + 11) % 512);
    strata_capture *cap;
    cr_assert_eq(strata_capture_new(m, &cap, &err), STRATA_OK);
    cr_assert_eq(strata_capture_add(cap, "blocks.*.mixer.hook_k", &err), STRATA_OK, "%s", err.message);
    strata_runner *r;
    strata_cache *old, *fresh, *copy;
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(m, &old, &err), STRATA_OK);
    run_captured(r, old, cap, ids, 70);
    check_keys_stored(m, cap, old, 0, 70);
    strata_runner_free(r);

    cr_assert_eq(strata_model_set_compute(m, "bf16", &err), STRATA_OK);
    cr_assert_eq(info->state_bytes_per_token * 2, token32, "BF16 K/V: half the bytes a token");
    cr_assert_lt(info->state_bytes_fixed, fixed32, "the SSM state in BF16");
    cr_assert_eq(strata_runner_new(m, &r, &err), STRATA_OK);
    cr_assert_eq(strata_cache_new(m, &fresh, &err), STRATA_OK);
    cr_assert(fresh->kv_bf16);
    run_captured(r, fresh, cap, ids, 70);
    check_keys_stored(m, cap, fresh, 0, 70);
    run_captured(r, fresh, cap, ids + 70, 1);
    check_keys_stored(m, cap, fresh, 70, 1);
    cr_assert_eq(strata_cache_state_bytes(fresh), info->state_bytes_fixed + 71 * info->state_bytes_per_token);

    cr_assert_eq(strata_cache_copy(old, &copy, &err), STRATA_OK);
    cr_assert(!copy->kv_bf16 && cache_shares_block(old, copy, 0), "the copy shares fp32 blocks");
    cr_assert_eq(strata_cache_state_bytes(copy), info->state_bytes_fixed + 70 * token32);
    run_captured(r, copy, cap, ids + 70, 5);    /* appends into a private copy of block 1 */
    check_keys_stored(m, cap, copy, 70, 5);
    run_captured(r, old, cap, ids + 70, 3);
    check_keys_stored(m, cap, old, 70, 3);
    strata_cache_free(copy);
    strata_cache_free(fresh);
    strata_cache_free(old);
    strata_runner_free(r);
    strata_capture_free(cap);
    strata_model_free(m);
}
